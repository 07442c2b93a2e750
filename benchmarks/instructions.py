"""Instructions per backtest, counted by valgrind (callgrind): a repeatable speed measure.

    python benchmarks/instructions.py [--data-dir ../shared/data] [fixed hold full]

Wall times on a shared machine move by 20-50% from one minute to the next; the number
of instructions a run executes does not (the same total twice, whatever else the machine
is doing). Use it to see what a change to the engine saves: run it before and after.
The cases are benchmarks/run.py's: `fixed` the fixed-weight portfolio, `hold` the same
with one rebalance (the daily step alone), `full` the full strategy, 2010-2024.

Each case runs in its own process under `valgrind --tool=callgrind` with collection
off; after loading the data and one untimed run, collection is switched on for one run
only (callgrind_control), so imports and data loading are not counted (creating the
run's in-memory trade log is, as in run.py's timings). valgrind must be
installed (Debian: apt-get install valgrind); a run takes about 30 s per case.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CASES = ("fixed", "hold", "full")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=HERE.parents[1] / "shared" / "data")
    ap.add_argument("--run-case", choices=CASES, help=argparse.SUPPRESS)  # the child's job
    ap.add_argument("cases", nargs="*", metavar="case", help=f"any of {', '.join(CASES)} (default: all)")
    args = ap.parse_args(argv)
    if args.run_case:
        return _run_case(args.run_case, args.data_dir)
    unknown = [c for c in args.cases if c not in CASES]
    if unknown:
        ap.error(f"unknown case {', '.join(unknown)}: expected any of {', '.join(CASES)}")
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            print(f"{tool} not found: install valgrind (apt-get install valgrind)", file=sys.stderr)
            return 2
    for case in args.cases or CASES:
        print(f"{case:>6}: {_count(case, args.data_dir) / 1e6:9.1f} M instructions per run")
    return 0


def _count(case: str, data_dir: Path) -> int:
    """Instructions of one run of `case`, from callgrind's total."""
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            ["valgrind", "--tool=callgrind", "--instr-atstart=no",
             f"--callgrind-out-file={tmp}/callgrind.out", sys.executable, __file__,
             "--data-dir", str(data_dir), "--run-case", case],
            capture_output=True, text=True, check=True,
        )
    found = re.search(r"Collected : (\d+)", proc.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{proc.stderr[-2000:]}")
    return int(found.group(1))


def _run_case(case: str, data_dir: Path) -> int:
    """In the child under valgrind: load, warm up, then count one run."""
    sys.path.insert(0, str(HERE))
    import run as bench  # benchmarks/run.py: the same cases and settings

    from bot.config import load_settings, parse_settings
    from bot.data.csv_source import load_csv_directory
    from bot.logs import configure_logging

    configure_logging("WARNING")
    base = load_settings(bench.CONFIG)
    market = load_csv_directory(data_dir, list(base.symbols))
    if case == "full":
        raw = base.model_dump(mode="json")
        raw["backtest"].update(start=bench.START, end=bench.END)
        settings = parse_settings(raw, "instructions: full strategy")
    else:
        settings = bench.fixed_settings(base, every=bench.EVERY if case == "fixed" else None)
    once = bench.engine_case(settings, market)
    once()
    gc.collect()  # the warm-up's garbage now, not in a collection inside the counted run
    pid = str(os.getpid())
    subprocess.run(["callgrind_control", "-i", "on", pid], check=True, capture_output=True)
    once()
    subprocess.run(["callgrind_control", "-i", "off", pid], check=True, capture_output=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
