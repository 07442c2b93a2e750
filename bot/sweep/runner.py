"""`bot sweep` end to end: the grid validated, the data loaded once, every combination
run through the same `run_backtest` as `bot backtest` on a process pool or a Dask
cluster, each recorded as a run tagged with the sweep, then the ranking, the optional
walk-forward, the report files and the tables.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import signal
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
import structlog
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from bot.backtest import cost_model, span_indices
from bot.config import Settings, load_settings, resolve_data_dir, resolve_store_url
from bot.data.base import RISK_FREE, MarketData
from bot.data.history import load_history
from bot.errors import BotError
from bot.heap import long_lived
from bot.metrics import slice_fills
from bot.reference import backtest_extras
from bot.report import RunSeries, build_report, make_dir
from bot.runner import (
    BacktestOptions,
    _terminate,
    apply_overrides,
    code_version,
    macro_series,
    price_series,
)
from bot.store.abandoned import close_dead_runs
from bot.store.heartbeat import Heartbeat, needs_heartbeat
from bot.store.holder import this_process
from bot.store.locate import sweep_report_dir
from bot.store.models import to_plain
from bot.store.sweeps import finish_sweep, finish_sweep_runs, start_sweep, start_sweep_runs
from bot.store.tradelog import TradeLog, dialect_key
from bot.sweep import report, walk_forward
from bot.sweep.cli import DEFAULT_MAX_COMBINATIONS
from bot.sweep.executors import Executor, open_executor
from bot.sweep.grid import Axis, Variant, describe, expand, format_value, parse_grid
from bot.sweep.variant import RANK_METRICS, VariantOutcome, VariantTask, one_line
from bot.terminal import print_whole

log = structlog.get_logger(__name__)

RECORD_MODES = ("summary", "full")


@dataclass(frozen=True)
class SweepOptions:
    config: Path
    grid: tuple[str, ...]
    walk_forward: str | None = None
    metric: str = "sharpe"
    workers: int | None = None
    cluster: str | None = None
    record: str = "summary"
    start: str | None = None
    end: str | None = None
    data_dir: Path | None = None
    synthetic: bool = False
    database: str | None = None
    out: Path | None = None
    charts: bool = True
    max_combinations: int = DEFAULT_MAX_COMBINATIONS


@dataclass(frozen=True)
class Plan:
    """What a sweep runs, all checked before the trade log is touched."""

    base: Settings
    axes: list[Axis]
    variants: list[Variant]
    market: MarketData
    days: np.ndarray  # the span's trading days
    windows: list[walk_forward.Window]  # empty without --walk-forward


@dataclass
class SweepResult:
    """What a finished sweep holds; `rows` ranked best first."""

    sweep_id: int
    rows: list[dict[str, Any]]
    walk_forward: dict[str, Any] | None
    curve: pd.Series | None
    out: Path
    files: list[Path]
    status: str = "finished"  # "failed": no combination ran

    @property
    def failed(self) -> int:
        return sum(1 for row in self.rows if row["error"])


def run_sweep_command(options: SweepOptions) -> int:
    """`bot sweep`; SIGTERM ends it like Ctrl-C (the sweep is marked failed). Exit 1
    when a combination failed (the others are still ranked and recorded)."""
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        console = Console() if sys.stdout.isatty() else Console(width=200)
        result = run_sweep(options, console)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 1 if result.failed else 0


def market_for(settings: Settings, data_dir: Path, also: Sequence[str] = ()) -> MarketData:
    """The same history `bot backtest` loads for this config (its symbols, SPY and the
    reference portfolios'), so every combination sees exactly the data a backtest would;
    plus `also`, symbols a grid adds to the universe."""
    return load_history(settings, data_dir, sorted({*backtest_extras(settings), *also}))


def _check_symbols(market: MarketData, variants: Sequence[Variant]) -> None:
    """Every combination's universe must be in the data (a grid may add symbols)."""
    for variant in variants:
        missing = [s for s in variant.settings.symbols if s not in market.prices.symbols]
        if missing:
            raise BotError(
                f"--grid: the combination {variant.label} trades {', '.join(missing)}, "
                f"which the data ({market.label}) does not have"
            )


def run_sweep(options: SweepOptions, console: Console) -> SweepResult:
    if options.metric not in RANK_METRICS:
        raise BotError(f"--metric {options.metric}: expected one of {', '.join(RANK_METRICS)}")
    if options.record not in RECORD_MODES:
        raise BotError(f"--record {options.record}: expected one of {', '.join(RECORD_MODES)}")
    base_options = BacktestOptions(
        config=options.config, start=options.start, end=options.end, synthetic=options.synthetic
    )
    source = str(options.config)
    base = apply_overrides(load_settings(options.config), base_options, source)
    spec = walk_forward.parse_spec(options.walk_forward) if options.walk_forward else None
    axes = parse_grid(options.grid, walk_forward=spec is not None)
    count = math.prod(len(a.values) for a in axes)
    if count > options.max_combinations:  # before validating each: 21 KB and a run apiece
        raise BotError(f"--grid: {count:,} combinations, more than --max-combinations "
                       f"{options.max_combinations:,}; each is a backtest and a run in the "
                       "trade log: narrow the grid, or raise the limit to run them all")
    variants = expand(base, axes, source)
    if options.out is not None:  # a folder that cannot be made fails before the work
        make_dir(Path(options.out))
    executor = open_executor(options.cluster, options.workers)  # a bad cluster fails first
    try:
        symbols = {s for v in variants for s in v.settings.symbols} - set(base.symbols)
        data_dir = options.data_dir or resolve_data_dir(base, options.config)
        with long_lived():  # frozen before the workers fork: they share it, uncopied
            market = market_for(base, data_dir, sorted(symbols))
        _check_symbols(market, variants)
        days = _run_days(market, base)
        windows = walk_forward.windows(days, spec) if spec is not None else []
        url = options.database or resolve_store_url(base, options.config)
        plan = Plan(base, axes, variants, market, days, windows)
        return _run(options, console, plan, executor, url)
    finally:
        executor.close()


def _run_days(market: MarketData, base: Settings) -> np.ndarray:
    """The trading days of the base span (every combination's, unless the grid varies
    backtest.start/end); a span outside the data is an error here, before any work."""
    dates = market.prices.dates
    lo, hi = span_indices(dates, base.backtest.start, base.backtest.end)
    return dates[lo:hi]


def _run(
    options: SweepOptions, console: Console, plan: Plan, executor: Executor, url: str
) -> SweepResult:
    base, axes, variants, market = plan.base, plan.axes, plan.variants, plan.market
    started = time.perf_counter()
    tradelog = TradeLog.open(url)
    engine = tradelog.engine
    now = dt.datetime.now(dt.UTC)
    version = code_version()
    holder = this_process()  # this sweep closes its runs when it ends
    heartbeat: Heartbeat | None = None
    sweep_id = start_sweep(engine, {
        "strategy": base.strategy.name,
        "config_hash": base.fingerprint(),
        "config": base.stored_dict(),  # the store password masked
        "grid": [[axis.key, list(axis.values)] for axis in axes],
        "metric": options.metric,
        "walk_forward": options.walk_forward,
        "record": options.record,
        "executor": executor.label,
        "code_version": version,
        "data_source": market.label,
        "synthetic": market.synthetic,
        "started_at": now,
    })
    log.info("sweep started", sweep=sweep_id, combinations=len(variants), executor=executor.label,
             data=market.label, record=options.record)
    try:
        run_ids = start_sweep_runs(
            engine,
            sweep_id,
            [_run_row(v.settings, version, market, now, holder) for v in variants],
            [(v.position, v.params) for v in variants],
        )
        if holder is not None and needs_heartbeat(engine):  # alive while this process is
            heartbeat = Heartbeat(engine, holder).start()
            heartbeat.beat_now()  # their first beat, by the database's clock
        close_dead_runs(tradelog, run_ids[0], now)  # as every command that starts runs
        tasks = [
            VariantTask(
                v.position, run_id, v.settings,
                record_full=options.record == "full",
                dialect=dialect_key(engine.dialect),
                metric=options.metric,
                train_windows=tuple((w.train_lo, w.train_hi) for w in plan.windows),
                keep_fills=bool(plan.windows),
            )
            for v, run_id in zip(variants, run_ids, strict=True)
        ]
        outcomes: dict[int, VariantOutcome] = {}
        closer = RunCloser(engine)
        try:
            for outcome in _with_progress(executor.outcomes(market, tasks), len(tasks), console):
                closer.add(outcome)
                outcomes[outcome.position] = outcome
        finally:
            try:
                closer.flush()  # the ends still batched, whatever stopped the loop
            finally:
                _stop(heartbeat)  # every run has ended: nothing left to beat for
        rows = rank(variants, outcomes, run_ids, options.metric)
        # with no combination run there is nothing to pick: no walk-forward, a failed sweep
        any_ran = any(row["error"] is None for row in rows)
        wf, curve = (
            _walk_forward(plan, outcomes, run_ids, options) if plan.windows and any_ran
            else (None, None)
        )
        seconds = time.perf_counter() - started
        result = to_plain({
            "meta": {
                "sweep_id": sweep_id, "config": str(options.config), "metric": options.metric,
                "grid": {axis.key: list(axis.values) for axis in axes},
                "combinations": len(variants), "failed": sum(1 for r in rows if r["error"]),
                "record": options.record, "executor": executor.label, "data_label": market.label,
                "code_version": version, "seconds": round(seconds, 3),
            },
            "ranking": rows,
            "walk_forward": wf,
        })
        status = "finished" if any_ran else "failed"
        finish_sweep(engine, sweep_id, status, dt.datetime.now(dt.UTC), result)
    except BaseException:  # Ctrl-C too: neither the sweep nor its runs may stay 'running'
        try:
            _stop(heartbeat)
        finally:  # a second Ctrl-C during the stop still fails the sweep
            _fail(engine, sweep_id)
        raise
    finally:
        tradelog.close()
    out = options.out or sweep_report_dir(url, sweep_id)
    files = _write_files(out, result, rows, axes, curve, options, market.label, sweep_id)
    done = SweepResult(sweep_id, rows, wf, curve, out, files, status)
    _print(console, done, axes, options, market.label, seconds, executor.label)
    return done


def _stop(heartbeat: Heartbeat | None) -> None:
    if heartbeat is not None:
        heartbeat.stop()


def _run_row(
    settings: Settings, version: str, market: MarketData, now: dt.datetime, holder: str | None
) -> dict:
    """A combination's `runs` row, as `bot backtest` writes its own (bot.runner.start_run)."""
    return {
        "mode": "backtest",
        "strategy": settings.strategy.name,
        "config_hash": settings.fingerprint(),
        "config": settings.stored_dict(),  # the store password masked
        "code_version": version,
        "data_source": market.label,
        "synthetic": market.synthetic,
        "started_at": now,
        "holder": holder,
    }


def _with_progress(
    outcomes: Iterator[VariantOutcome], total: int, console: Console
) -> Iterator[VariantOutcome]:
    """A progress bar on a terminal, started once the workers run (a pool forks at its
    first task; the bar's thread must not exist then)."""
    if not console.is_terminal:
        yield from outcomes
        return
    bar = Progress(
        TextColumn("[bold]sweep"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=console, transient=True,
    )
    task = bar.add_task("sweep", total=total)
    try:
        for outcome in outcomes:
            if not bar.live.is_started:
                bar.start()
            bar.advance(task)
            yield outcome
    finally:
        bar.stop()


class RunCloser:
    """Closes each combination's run as its outcome arrives. --record full writes the run's
    records with its end, one transaction per run; summary ends are batched, one
    transaction a second at most (each commit waits for the disk), and written before
    the sweep ends or fails, so no finished combination is lost."""

    BATCH_SECONDS = 1.0

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._ends: list[dict[str, Any]] = []
        self._written = time.monotonic()

    def add(self, outcome: VariantOutcome) -> None:
        now = dt.datetime.now(dt.UTC)
        status = "failed" if outcome.failed else "finished"
        if outcome.log is not None:
            self._write_records(outcome, status, now)
            status = "failed" if outcome.failed else status
        if outcome.failed:
            log.warning("sweep combination failed", run=outcome.run_id, error=outcome.error)
            if outcome.detail:
                log.debug("sweep combination traceback", run=outcome.run_id, detail=outcome.detail)
        self._ends.append({"run_id": outcome.run_id, "status": status, "finished_at": now,
                           "summary": outcome.summary, "error": outcome.error})
        if outcome.log is None and time.monotonic() - self._written < self.BATCH_SECONDS:
            return
        self.flush()

    def _write_records(self, outcome: VariantOutcome, status: str, now: dt.datetime) -> None:
        """Everything the combination's engine recorded, with the run's end."""
        assert outcome.log is not None
        outcome.log.engine = self.engine  # the worker's buffered records, written here
        try:
            outcome.log.finish_run(status, now, summary=outcome.summary, prepared=outcome.prepared)
        except Exception as exc:
            outcome.error = outcome.error or f"trade log: {one_line(exc)}"
        finally:
            outcome.log = outcome.prepared = None  # written (or in an incident): free them

    def flush(self) -> None:
        finish_sweep_runs(self.engine, self._ends)
        self._ends.clear()
        self._written = time.monotonic()


def _fail(engine: sa.Engine, sweep_id: int) -> None:
    try:
        finish_sweep(engine, sweep_id, "failed", dt.datetime.now(dt.UTC))
    except Exception:
        log.exception("sweep.failure_not_recorded", sweep=sweep_id)


def rank(
    variants: Sequence[Variant],
    outcomes: dict[int, VariantOutcome],
    run_ids: Sequence[int],
    metric: str,
) -> list[dict[str, Any]]:
    """One row per combination, best `metric` first (ties: grid order); combinations
    without a value come next, failed ones last. Only scored rows get a rank."""
    rows = []
    for variant, run_id in zip(variants, run_ids, strict=True):
        outcome = outcomes.get(variant.position)
        error = "did not run" if outcome is None else outcome.error
        rows.append({
            "rank": None,
            "position": variant.position,
            "run_id": run_id,
            "params": variant.params,
            "summary": None if outcome is None else outcome.summary,
            "final_equity": None if outcome is None else outcome.final_equity,
            "error": error,
            "seconds": None if outcome is None else round(outcome.seconds, 4),  # in its worker
        })

    def key(row: dict[str, Any]) -> tuple:
        value = (row["summary"] or {}).get(metric)
        return (row["error"] is not None, value is None, -(value or 0.0), row["position"])

    rows.sort(key=key)
    rank_ = 0
    for row in rows:
        if row["error"] is None and (row["summary"] or {}).get(metric) is not None:
            rank_ += 1
            row["rank"] = rank_
    return rows


def _walk_forward(
    plan: Plan, outcomes: dict[int, VariantOutcome], run_ids: Sequence[int], options: SweepOptions
) -> tuple[dict[str, Any], pd.Series]:
    """Picks per window, the stitched out-of-sample curve and its summary."""
    variants, market = plan.variants, plan.market
    ok = {p: o for p, o in outcomes.items() if not o.failed}
    picks = walk_forward.pick(plan.windows, {p: o.train_scores for p, o in ok.items()})
    equities = {p: o.equity for p, o in ok.items()}
    rates = _switch_rates(plan, picks, ok)
    curve = walk_forward.stitch(plan.days, picks, equities, plan.base.backtest.initial_cash, rates)
    run_of = {v.position: run_id for v, run_id in zip(variants, run_ids, strict=True)}
    params_of = {v.position: v.params for v in variants}
    dates = pd.DatetimeIndex(plan.days)
    fills, rows = [], []
    for k, p in enumerate(picks):
        w = p.window
        anchor = curve.loc[dates[w.test_lo - 1]]  # before the switch is paid
        end_value = curve.loc[dates[w.test_hi - 1]]
        if p.position is not None:
            start = walk_forward.after_switch(float(anchor), rates[k])
            fills.append(_scaled_fills(ok[p.position], dates, w, start))
        rows.append({
            "train": [f"{dates[w.train_lo]:%Y-%m-%d}", f"{dates[w.train_hi - 1]:%Y-%m-%d}"],
            # trading from the previous window's pick to this one's, paid on the first test day
            "switch_cost": float(anchor) * rates[k],
            "test": [f"{dates[w.test_lo]:%Y-%m-%d}", f"{dates[w.test_hi - 1]:%Y-%m-%d}"],
            "position": p.position,
            "run_id": None if p.position is None else run_of[p.position],
            "params": None if p.position is None else params_of[p.position],
            "train_score": p.score,
            # 0: the pick won its training window idle (e.g. no drawdown for never trading)
            "train_trades": None if p.position is None else _trades_in(ok[p.position], dates, w),
            # from the last training close, so net of switch_cost (taken on its first day)
            "test_return": float(end_value / anchor - 1.0),
            # every combination's training score, in grid order (None: failed or unscored)
            "scores": [
                ok[v.position].train_scores[k] if v.position in ok else None for v in variants
            ],
        })
    stitched_fills = pd.concat(fills, ignore_index=True) if fills else None
    summary = build_report(
        RunSeries(str(curve.name), curve, fills=stitched_fills),
        [],
        risk_free=macro_series(market, RISK_FREE),
        market=price_series(market, "SPY"),
        periods=[],
        data_label=market.label,
        meta={},
    )["summary"][0]
    # Round trips would pair one run's buys with another run's sells: not meaningful.
    summary.update(win_rate=None, profit_loss_ratio=None)
    result = {
        "spec": options.walk_forward,
        "metric": options.metric,
        # the picks were made among the combinations that ran; the failed were no candidates
        "failed_combinations": len(variants) - len(ok),
        "windows": rows,
        "summary": summary,
        "switch_costs": sum(row["switch_cost"] for row in rows),
        # each window's test_return is net of its switch_cost, not to be taken off again
        "test_return_net_of_switch_cost": True,
        "final_equity": float(curve.iloc[-1]),
        "equity": [[f"{d:%Y-%m-%d}", float(v)] for d, v in curve.items()],
    }
    return result, curve


def _trades_in(outcome: VariantOutcome, dates: pd.DatetimeIndex, w: walk_forward.Window) -> int:
    """How many fills the combination made in the window's training days."""
    part = slice_fills(outcome.fills, dates[w.train_lo], dates[w.train_hi - 1])
    return 0 if part is None else len(part)


def _switch_rates(
    plan: Plan, picks: Sequence[walk_forward.Pick], ok: dict[int, VariantOutcome]
) -> list[float]:
    """Per window, the fraction of the stitched equity that changing pick at its start
    costs (0 for the first window, whose pick the account starts with, and for a pick
    kept); at the costs of the combination traded into (out of, for cash)."""
    settings_of = {v.position: v.settings for v in plan.variants}
    rates = [0.0]
    for k in range(1, len(picks)):
        old, new = picks[k - 1].position, picks[k].position
        if old == new:
            rates.append(0.0)
            continue
        weights_old = {} if old is None else ok[old].switch_weights[k]
        weights_new = {} if new is None else ok[new].switch_weights[k]
        day = plan.days[picks[k].window.test_lo - 1]
        prices = _closes(plan.market, day, weights_old.keys() | weights_new.keys())
        costs = cost_model(settings_of[new if new is not None else old])
        rates.append(walk_forward.switch_rate(weights_old, weights_new, prices, costs))
    return rates


def _closes(market: MarketData, day: np.datetime64, symbols: Iterable[str]) -> dict[str, float]:
    """Each symbol's close on `day` (the last one, where a loader carried it)."""
    row = int(np.searchsorted(market.prices.dates, day))
    return {s: float(market.prices.close[row, market.prices.index_of(s)]) for s in symbols}


def _scaled_fills(
    outcome: VariantOutcome, dates: pd.DatetimeIndex, w: walk_forward.Window, start: float
) -> pd.DataFrame:
    """The picked run's fills inside the test window, sized to the stitched account, so
    turnover and costs are in scale: `start`, the account's equity the window's returns
    compound on (walk_forward.after_switch: the switch cost already paid), over the run's
    equity at the same close."""
    part = slice_fills(outcome.fills, dates[w.test_lo], dates[w.test_hi - 1])
    assert part is not None and outcome.equity is not None
    scale = start / float(outcome.equity[w.test_lo - 1])
    part = part.copy()
    for column in ("quantity", "commission", "slippage_cost"):
        part[column] = part[column].astype(float) * scale
    return part


def _write_files(
    out: Path,
    result: dict[str, Any],
    rows: list[dict[str, Any]],
    axes: list[Axis],
    curve: pd.Series | None,
    options: SweepOptions,
    data_label: str,
    sweep_id: int,
) -> list[Path]:
    """sweep.json (everything), ranking.csv, and with charts on: heatmap.png (two-parameter
    grids), walk_forward.csv and walk_forward.png."""
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "sweep.json", out / "ranking.csv"]
    files[0].write_text(json.dumps(result, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    report.ranking_frame(rows, axes).to_csv(files[1], index=False)
    if curve is not None:
        path = out / "walk_forward.csv"
        curve.rename("equity").rename_axis("day").to_csv(path)
        files.append(path)
    if options.charts and len(axes) == 2:
        title = f"Sweep {sweep_id}: {report.metric_header(options.metric)} — {data_label}"
        files.append(report.write_heatmap(rows, axes, options.metric, out / "heatmap.png", title))
    if options.charts and curve is not None:
        title = f"Sweep {sweep_id}: walk-forward {options.walk_forward}, out of sample — {data_label}"
        wf_windows = result["walk_forward"]["windows"]
        files.append(report.write_walk_forward_chart(curve, wf_windows, out / "walk_forward.png", title))
    return files


def _print(
    console: Console,
    done: SweepResult,
    axes: list[Axis],
    options: SweepOptions,
    data_label: str,
    seconds: float,
    executor: str,
) -> None:
    title = f"Sweep {done.sweep_id}"
    report.render_ranking(done.rows, axes, options.metric, console, title=title, data_label=data_label)
    if done.walk_forward is not None:
        report.render_walk_forward(done.walk_forward, console)
    runs = [row["run_id"] for row in done.rows]
    failed = f", {done.failed} failed" if done.failed else ""
    console.print(
        f"sweep {done.sweep_id}: {len(done.rows)} combinations{failed} in {seconds:.1f} s on "
        f"{executor}; runs {min(runs)}..{max(runs)} recorded in the trade log "
        f"({options.record}); report: {done.out}", markup=False,  # a path, not markup
    )
    if done.status == "failed":
        skipped = "; no walk-forward: nothing to pick from" if options.walk_forward else ""
        console.print(f"sweep {done.sweep_id} failed: none of its {len(done.rows)} combinations "
                      f"ran (each one's error is in the table){skipped}", markup=False)
    for key in inert_keys(done.rows, axes):
        console.print(f"warning: --grid {key}: every value gave the same result, whatever the "
                      "other keys: it changes nothing under this config, and its ranking is "
                      "grid order", markup=False)
    best = next((row for row in done.rows if row["rank"] == 1), None)
    if best is not None:
        # never wrapped: a pasted command wrapped at the console's width lost a value
        print_whole(console, f"best ({describe(best['params'])}): {reproduce(options, best['params'])}")
    for path in done.files:
        if path.suffix == ".png":
            print_whole(console, f"chart: {path}")


def inert_keys(rows: Sequence[dict[str, Any]], axes: Sequence[Axis]) -> list[str]:
    """The grid keys whose values all gave the same result (final equity and summary)
    for every combination of the other keys: a key the config does not use (the robo
    model has no `rebalance.every_days`), or one that only names things. A researcher
    would otherwise tune it, and a walk-forward pick among its values by grid order."""
    done = [r for r in rows if r["error"] is None and r["summary"] is not None]
    if len(done) != len(rows):
        return []  # a failed combination leaves its group incomplete: say nothing
    inert = []
    for axis in axes:
        if len(axis.values) < 2:
            continue
        groups: dict[str, set[str]] = {}
        for r in done:
            others = describe({k: v for k, v in r["params"].items() if k != axis.key})
            outcome = repr((r["final_equity"], sorted(r["summary"].items())))
            groups.setdefault(others, set()).add(outcome)
        if all(len(outcomes) == 1 for outcomes in groups.values()):
            inert.append(axis.key)
    return inert


def reproduce(options: SweepOptions, params: dict[str, Any]) -> str:
    """The `bot backtest` command that runs one combination on its own."""
    import shlex

    words = ["bot", "backtest", "--config", str(options.config)]
    # `bot backtest` applies --start/--end after --set: a combination that sets the span
    # itself is reproduced without them
    for flag, value, key in (("--start", options.start, "backtest.start"),
                             ("--end", options.end, "backtest.end"),
                             ("--data-dir", options.data_dir, None)):
        if value is not None and key not in params:
            words += [flag, str(value)]
    if options.synthetic:
        words.append("--synthetic")
    if options.database is not None:  # beside the sweep's runs, not in the default log
        from bot.store.engines import mask_url

        words += ["--database", mask_url(options.database)]  # a password: never printed
    for key, value in params.items():
        words += ["--set", f"{key}={format_value(value)}"]
    return " ".join(shlex.quote(w) for w in words)
