"""Sweep benchmark: 100 full-strategy combinations over 2010-03-01..2024-12-31 on real data.

    python benchmarks/sweep.py [--data-dir ../shared/data] [--workers 2] [--no-cold] [--no-full]

Issue 10's target: 100 variants in under 30 s on 2 cores. Measured three ways:
  1. `bot sweep` as a user runs it (a fresh process: imports, data, pool, trade log,
     report files, heatmap), wall time;
  2. the same in this process with a clock on each stage: data load, the combinations
     (workers' busy time), the trade-log writes, the report files;
  3. one combination alone, warm, best of 3, split into simulation and summary metrics:
     100 x that / workers is what a perfect pool would take.
It also times 10 combinations with `--record full` (every order, fill and equity point
written to SQLite, as `bot backtest` records), the optional detailed mode.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

import bot.sweep.runner as sweep_runner
from bot.backtest import run_backtest
from bot.config import load_settings
from bot.logs import configure_logging
from bot.sweep.grid import with_overrides
from bot.sweep.runner import SweepOptions, market_for, run_sweep
from bot.sweep.variant import DiscardingLog, detached_log, summary_row

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config" / "diversified_leverage.toml"
START, END = "2010-03-01", "2024-12-31"
# 5 x 5 x 4 = 100 combinations of the full strategy (regime, inverse vol, every guard rule).
GRID = (
    "risk.vol_high=1.25,1.5,1.75,2,2.5",
    "rebalance.every_days=2,3,4,6,8",
    "risk.stop_alpha=2,3,4,5",
)


def cold_command(data_dir: Path, workers: int, tmp: Path) -> tuple[float, dict]:
    """`bot sweep` in a new process, wall time; its sweep.json."""
    args = [sys.executable, "-m", "bot", "sweep", "--config", str(CONFIG), "--data-dir",
            str(data_dir), "--start", START, "--end", END, "--workers", str(workers),
            "--database", f"sqlite:///{tmp}/cold.sqlite", "--out", str(tmp / "cold")]
    for spec in GRID[:2]:  # two parameters: the heatmap is drawn too
        args += ["--grid", spec]
    args += ["--grid", GRID[2]]
    t0 = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, cwd=tmp)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"bot sweep failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return seconds, json.loads((tmp / "cold" / "sweep.json").read_text())


class Clock:
    """Wraps functions of the sweep runner to add up the time spent in each."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.originals: list[tuple[object, str, object]] = []

    def restore(self) -> None:
        for owner, name, fn in self.originals:
            setattr(owner, name, fn)

    def wrap(self, owner: object, name: str, label: str) -> None:
        real = getattr(owner, name)
        self.originals.append((owner, name, real))

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return real(*args, **kwargs)
            finally:
                self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - t0

        setattr(owner, name, timed)


def in_process(data_dir: Path, workers: int, tmp: Path, record: str, grid=GRID, name="warm"):
    clock = Clock()
    clock.wrap(sweep_runner, "market_for", "load data")
    clock.wrap(sweep_runner, "finish_sweep_runs", "closing runs (batched)")
    clock.wrap(sweep_runner.RunCloser, "_write_records", "writing full records")
    clock.wrap(sweep_runner, "_write_files", "report files and charts")
    options = SweepOptions(
        config=CONFIG, grid=grid, start=START, end=END, data_dir=data_dir, workers=workers,
        record=record, database=f"sqlite:///{tmp}/{name}.sqlite", out=tmp / name,
    )
    t0 = time.perf_counter()
    try:
        result = run_sweep(options, Console(file=open(os.devnull, "w")))  # noqa: SIM115
    finally:
        clock.restore()
    total = time.perf_counter() - t0
    busy = sum(row["seconds"] or 0.0 for row in result.rows)
    return total, clock.seconds, busy, result


def one_combination(data_dir: Path) -> dict[str, float]:
    """Best of 3, warm: the simulation recording as `bot backtest` does, the same with
    the records dropped (--record summary), and the summary metrics."""
    base = load_settings(CONFIG)
    settings = with_overrides(base, [("backtest.start", START), ("backtest.end", END)], "bench")
    market = market_for(settings, data_dir)
    times: dict[str, list[float]] = {"recorded": [], "dropped": [], "metrics": [], "cpu": []}
    for _ in range(4):
        t0 = time.perf_counter()
        run_backtest(settings, market, detached_log(1), order_prefix="bt1")
        t1 = time.perf_counter()
        c1 = time.process_time()
        result = run_backtest(settings, market, DiscardingLog(1), order_prefix="bt1")
        t2 = time.perf_counter()
        summary_row(result, market, result.fills_frame())
        t3 = time.perf_counter()
        cpu = time.process_time() - c1
        for key, seconds in zip(times, (t1 - t0, t2 - t1, t3 - t2, cpu), strict=True):
            times[key].append(seconds)
    return {key: min(values[1:]) for key, values in times.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-full", dest="full", action="store_false",
                    help="skip timing 10 combinations with --record full")
    ap.add_argument("--no-cold", action="store_true", help="skip the fresh-process run")
    args = ap.parse_args(argv)
    configure_logging("WARNING", "console")
    n = 1
    for spec in GRID:
        n *= len(spec.split("=", 1)[1].split(","))
    print(f"{n} combinations of the full strategy, {START}..{END}, {args.workers} workers, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")

    one = one_combination(args.data_dir)
    per = one["dropped"] + one["metrics"]
    print(f"\none combination alone (warm, best of 3): simulation {one['recorded']:.3f} s "
          f"recording as `bot backtest` does, {one['dropped']:.3f} s with the records dropped "
          f"(--record summary); summary metrics {one['metrics']:.3f} s")
    print(f"  a perfect pool, --record summary: {n} x {per:.3f} s / {args.workers} = "
          f"{n * per / args.workers:.1f} s (CPU time of one: {one['cpu']:.3f} s, so on "
          f"{args.workers} idle cores {n * one['cpu'] / args.workers:.1f} s)")

    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        if not args.no_cold:
            seconds, report = cold_command(args.data_dir, args.workers, tmp)
            verdict = "met" if seconds < 30 else "NOT met"
            print(f"\n`bot sweep` cold (fresh process, {n} combinations, --record summary): "
                  f"{seconds:.1f} s  -> target < 30 s {verdict}")
            print(f"  inside it, from opening the trade log to the last write: "
                  f"{report['meta']['seconds']:.1f} s")

        total, stages, busy, result = in_process(args.data_dir, args.workers, tmp, "summary")
        print(f"\nin this process (imports warm), --record summary: {total:.1f} s")
        for label, seconds in stages.items():
            print(f"  {label:>36}: {seconds:6.2f} s")
        print(f"  {'workers busy (sum over combinations)':>36}: {busy:6.2f} s "
              f"= {busy / n:.3f} s per combination, {busy / args.workers:.1f} s per worker")
        print(f"  {'pool efficiency':>36}: {busy / args.workers / total:6.0%} "
              "(workers' busy time / wall time)")
        assert not result.failed, "a combination failed"

        if args.full:
            grid = (GRID[0], "rebalance.every_days=2,4")  # 10 combinations
            total, stages, busy, result = in_process(
                args.data_dir, args.workers, tmp, "full", grid=grid, name="full"
            )
            k = len(result.rows)
            writes = stages.get("writing full records", 0.0)
            print(f"\n--record full, {k} combinations: {total:.1f} s; trade-log writes "
                  f"{writes:.1f} s ({writes / k:.2f} s per combination, in the main process)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
