"""`bot backtest` end to end: settings, data, trade log, engine runs, report files."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import structlog
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from bot import __version__
from bot.backtest import BacktestResult, run_backtest, scratch_tradelog, span_indices
from bot.config import (
    Settings,
    describe_override,
    load_settings,
    parse_settings,
    resolve_data_dir,
    resolve_store_url,
)
from bot.data.base import RISK_FREE, MarketData
from bot.data.history import load_history
from bot.decay import decay_section
from bot.errors import BotError
from bot.heap import long_lived
from bot.metrics import risk_free_gap_note
from bot.reference import NEVER, backtest_extras, reference_settings
from bot.report import RunSeries, build_report, make_dir, render_table, write_charts, write_json
from bot.store.abandoned import close_dead_runs
from bot.store.engines import mask_url
from bot.store.holder import this_process
from bot.store.locate import reading_options, report_dir, where_recorded
from bot.store.tradelog import TradeLog
from bot.tearsheet.page import write_tearsheet
from bot.terminal import console as make_console
from bot.terminal import print_whole

log = structlog.get_logger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class BacktestOptions:
    config: Path
    start: str | None = None
    end: str | None = None
    weighting: str | None = None
    fill: str | None = None
    data_dir: Path | None = None
    synthetic: bool = False
    out: Path | None = None
    charts: bool = True
    benchmarks: bool = True
    database: str | None = None
    overrides: tuple[str, ...] = ()  # --set KEY=VALUE, as `bot sweep --grid` sets them


def code_version() -> str:
    """Package version plus the git commit when run from a checkout."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=2,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{__version__}+{commit}" if commit else __version__


def start_run(
    tradelog: TradeLog, settings: Settings, mode: str, data_source: str, synthetic: bool
) -> int:
    """Open a run in the trade log with what identifies it: mode, the secret-free
    validated config and its hash, the code version, the data and whether it is real,
    and this process as its holder; then close the runs whose holders died before
    recording their end (bot.store.abandoned)."""
    now = dt.datetime.now(dt.UTC)
    run_id = tradelog.start_run(
        mode=mode,
        strategy=settings.strategy.name,
        config_hash=settings.fingerprint(),
        config=settings.stored_dict(),
        code_version=code_version(),
        data_source=data_source,
        synthetic=synthetic,
        started_at=now,
        holder=this_process(),
    )
    close_dead_runs(tradelog, run_id, now)
    return run_id


def apply_overrides(settings: Settings, options: BacktestOptions, source: str) -> Settings:
    """Command-line overrides, validated like the file itself."""
    from bot.sweep.grid import parse_assignment, set_dotted

    raw = settings.model_dump(mode="json")
    for key, value in (parse_assignment(spec) for spec in options.overrides):
        set_dotted(raw, key, value)
    for key, value in (("start", options.start), ("end", options.end), ("fill", options.fill)):
        if value is not None:
            raw["backtest"][key] = value
    if options.weighting:
        raw["strategy"]["weighting"] = options.weighting
    if options.synthetic:
        raw["data"]["source"] = "synthetic"
    if not options.benchmarks:
        raw["backtest"]["benchmarks"] = False
    # A value given on the command line is named as such: the file does not hold it.
    flags = [f"--{k} {v}" for k, v in (("start", options.start), ("end", options.end),
                                       ("fill", options.fill), ("weighting", options.weighting))
             if v] + [f"--set {describe_override(spec)}" for spec in options.overrides]
    return parse_settings(raw, f"{source} with {' '.join(flags)}" if flags else source)


def warn_unpriced(
    symbols: tuple[str, ...], close: np.ndarray, dates: np.ndarray, lo: int, hi: int
) -> list[str]:
    """Warn of each fund with no price in the span's days [lo, hi): the run trades
    without it (as before a fund lists), which a full report would otherwise not say.
    Returns them."""
    unpriced = []
    for j, symbol in enumerate(symbols):
        if np.isfinite(close[lo:hi, j]).any():
            continue
        unpriced.append(symbol)
        priced = np.flatnonzero(np.isfinite(close[:, j]))
        log.warning("a fund of the universe has no price in the span: the run trades without it",
                    symbol=symbol, prices_from=str(dates[priced[0]]) if priced.size else None,
                    prices_to=str(dates[priced[-1]]) if priced.size else None)
    return unpriced


#: a span end this far past the data's edge is the user's ask, not a weekend or holiday
SPAN_SLACK = np.timedelta64(7, "D")


def warn_span_cut(dates: np.ndarray, start: str | None, end: str | None, lo: int, hi: int) -> list[str]:
    """Warn when the data does not reach the span asked for (--start 1990-01-02 on data
    from 2008, --end 2030-01-01): the run covers less than the user asked, which the
    report's dates alone would leave them to notice. Returns the warnings' texts."""
    said = []
    first, last = dates[lo].astype("datetime64[D]"), dates[hi - 1].astype("datetime64[D]")
    if start is not None and first - np.datetime64(start, "D") > SPAN_SLACK:
        said.append(f"backtest.start {start} is before the data's first day: the run starts on {first}")
    if end is not None and np.datetime64(end, "D") - last > SPAN_SLACK:
        said.append(f"backtest.end {end} is after the data's last day: the run ends on {last}")
    for text in said:
        log.warning("the data does not cover the span asked for", detail=text)
    return said


def macro_series(market: MarketData, name: str) -> pd.Series | None:
    series = market.macro.get(name)
    if series is None:
        return None
    return pd.Series(series.values, index=pd.DatetimeIndex(series.dates), name=name)


def closes_frame(market: MarketData) -> pd.DataFrame:
    """Every symbol's closes as one frame (NaN before a symbol listed)."""
    prices = market.prices
    return pd.DataFrame(prices.close, index=pd.DatetimeIndex(prices.dates), columns=list(prices.symbols))


def price_series(market: MarketData, symbol: str) -> pd.Series | None:
    if symbol not in market.prices.symbols:
        return None
    i = market.prices.index_of(symbol)
    return pd.Series(market.prices.close[:, i], index=pd.DatetimeIndex(market.prices.dates)).dropna()


def _progress_bar(console: Console):
    """A progress bar on a terminal; nothing when output is piped."""
    if not console.is_terminal:
        return None, None
    bar = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
        TimeRemainingColumn(), console=console, transient=True,
    )
    task = bar.add_task("backtest", total=1)
    return bar, lambda done, total: bar.update(task, completed=done, total=total)


def run_backtest_command(options: BacktestOptions) -> int:
    """`bot backtest`; SIGTERM ends it like Ctrl-C (the run is marked failed)."""
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return _backtest(options)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _backtest(options: BacktestOptions) -> int:
    console = make_console()
    settings = apply_overrides(load_settings(options.config), options, str(options.config))
    data_dir = options.data_dir or resolve_data_dir(settings, options.config)
    url = options.database or resolve_store_url(settings, options.config)  # a bad one: before the data
    with long_lived():
        market = load_history(settings, data_dir, backtest_extras(settings))
    # The user's input is checked before a run is recorded: a span outside the data or an
    # --out that cannot be a folder is an error, not a failed run in the trade log.
    traded = market.prices.select(settings.symbols)
    lo, hi = span_indices(traded.dates, settings.backtest.start, settings.backtest.end)
    cut = warn_span_cut(traded.dates, settings.backtest.start, settings.backtest.end, lo, hi)
    late_rate = risk_free_gap_note(macro_series(market, RISK_FREE), pd.Timestamp(traded.dates[lo]))
    if late_rate is not None:
        log.warning(late_rate)
        cut = [*cut, late_rate]
    if len(warn_unpriced(settings.symbols, traded.close, traded.dates, lo, hi)) == len(settings.symbols):
        # nothing to trade: a run and a report of zeros, exit 0, said nothing was wrong
        raise BotError(f"no fund of the universe has a price from {traded.dates[lo]} to "
                       f"{traded.dates[hi - 1]} in {market.label}: choose a span the data covers")
    if options.out is not None:
        make_dir(options.out)
    tradelog = TradeLog.open(url)
    run_id = start_run(tradelog, settings, "backtest", market.label, market.synthetic)
    # The factor model has no `weighting`: name its profile instead (report meta, log).
    weighting = (
        settings.strategy.weighting if settings.strategy.kind == "leverage"
        else f"factor:{settings.factor.profile}"
    )
    log.info("backtest started", run=run_id, data=market.label, weighting=weighting)
    worker = Background()  # the reference portfolios, then the charts, beside this process
    try:
        references = (worker.start(run_references, settings, market)
                      if settings.backtest.benchmarks else list)
        result = _simulate(settings, market, tradelog, run_id, console)
        if not result.fills:  # settings that trade nothing are accepted one by one
            log.warning("no order filled in the whole run: see `bot orders` for why (costs, "
                        "rebalance.min_trade_notional / min_trade_shares against "
                        "backtest.initial_cash)", run=run_id)
        out = make_dir(options.out or report_dir(url, run_id))
        tradelog.flush()  # while the references run; a failure from here on keeps the records
        strategy, benchmarks = _series(result, with_details=True), [_series(r) for r in references()]
        if options.charts:
            worker.submit(write_charts, strategy, benchmarks, out, data_label=market.label)
        risk_free = macro_series(market, RISK_FREE)
        report = build_report(
            strategy,
            benchmarks,
            risk_free=risk_free,
            market=price_series(market, "SPY"),
            periods=[tuple(p) for p in settings.backtest.periods],
            data_label=market.label,
            synthetic=market.synthetic,
            meta={
                "run_id": run_id,
                "config": str(options.config),
                "config_hash": settings.fingerprint(),
                "weighting": weighting,
                "fill_model": settings.backtest.fill,
                "code_version": code_version(),
                "database": mask_url(url.split("?")[0]) if url.startswith("sqlite") else "postgresql",
            },
            sections={"decay": decay_section(
                closes_frame(market), settings.universe, strategy.regimes,
                pd.DatetimeIndex(strategy.equity.index), risk_free,
            )},
            strategy_kind=settings.strategy.kind,
        )
        if options.charts:
            worker.submit(write_tearsheet, report, strategy, benchmarks, out,
                          risk_free=macro_series(market, RISK_FREE))
        tradelog.finish_run("finished", dt.datetime.now(dt.UTC), summary=report["summary"][0])
    except BaseException as exc:  # Ctrl-C too: the run must not stay 'running' with nothing stored
        try:
            worker.abort()  # no waiting at exit for work of a run that failed
        finally:  # even if the worker cannot be stopped cleanly
            _record_failure(tradelog, exc)
        raise
    tradelog.close()
    write_json(report, out / "report.json")
    render_table(report, console)
    for text in cut:  # below the table too: the log's warning scrolled past long ago
        console.print(f"note: {text}", markup=False)
    # paths, not markup (an --out folder named `we[/ird]` failed with MarkupError), and
    # never wrapped: these lines are copied
    print_whole(console, f"run {run_id}: report {out / 'report.json'}")
    for line in where_recorded(run_id, url, options.config, options.database):
        print_whole(console, line)
    try:
        charts = worker.wait()
    except KeyboardInterrupt:  # the run and its report are saved; only drawings are lost
        worker.abort()
        print_whole(console, f"charts not drawn (interrupted); the run is saved: `bot report "
                    f"--run {run_id}{reading_options(options.config, options.database)}` draws them")
        raise
    for chart in charts:
        print_whole(console, f"chart: {chart}")
    return 0


class Background:
    """Work done in another process while this one goes on: the reference portfolios
    while the strategy runs and its trade log is written, then the charts and the
    tearsheet while the report is built. `wait` returns the drawings' paths, in the
    order submitted.

    The references cost as much as the strategy's own run, and matplotlib and plotly
    need a second or two from a cold start, so on Linux a forked process does them
    meanwhile. Elsewhere (spawn would re-import everything, and fork is unsafe on macOS)
    they are done at once, here. A failure surfaces where its result is asked for: the
    references' before the report, a drawing's from `wait`, after the run is saved.
    """

    def __init__(self) -> None:
        self._pool = None
        if sys.platform == "linux":
            self._pool = ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("fork"),
                initializer=_die_with_parent,
            )
        self._drawings: list[Callable[[], list[Path]]] = []

    def start(self, work: Callable[..., T], *args: Any, **kwargs: Any) -> Callable[[], T]:
        """Begin `work(*args, **kwargs)`; the callable returned waits for its result."""
        if self._pool is None:
            result = work(*args, **kwargs)
            return lambda: result
        return self._pool.submit(work, *args, **kwargs).result

    def submit(self, draw: Callable[..., list[Path]], *args: Any, **kwargs: Any) -> None:
        """Begin a drawing whose paths `wait` returns."""
        self._drawings.append(self.start(draw, *args, **kwargs))

    def abort(self) -> None:
        """Stop now: end the worker instead of letting exit wait for it."""
        if self._pool is not None:
            # None once the pool is shut down (wait's own cleanup, interrupted)
            for process in list((getattr(self._pool, "_processes", None) or {}).values()):
                process.terminate()
            self._pool.shutdown(wait=False, cancel_futures=True)

    def wait(self) -> list[Path]:
        try:
            return [path for result in self._drawings for path in result()]
        finally:
            if self._pool is not None:
                self._pool.shutdown()


def _die_with_parent() -> None:
    """In the chart worker: be killed with `bot backtest` (killed itself, it would leave
    the worker waiting on its pipe forever, holding the inherited database connection)."""
    import ctypes

    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the parent's "fail the run" handler
    # Ctrl-C reaches the whole process group: the parent handles it (and ends this
    # worker); here it only printed a second traceback, from the idle worker's pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() == 1:  # the parent died before the line above
        os._exit(1)


def _terminate(signum: int, _frame: object) -> None:
    """SIGTERM ends `bot backtest` like Ctrl-C: the run is marked failed with its records."""
    raise KeyboardInterrupt(f"signal {signum}")


def _simulate(
    settings: Settings, market: MarketData, tradelog: TradeLog, run_id: int, console: Console
) -> BacktestResult:
    """The strategy's own run, with a progress bar on a terminal."""
    bar, progress = _progress_bar(console)
    try:
        if bar is not None:
            bar.start()
        return run_backtest(
            settings, market, tradelog, name=settings.strategy.name, order_prefix=f"bt{run_id}",
            progress=progress,
        )
    finally:
        if bar is not None:
            bar.stop()


def _record_failure(tradelog: TradeLog, exc: BaseException) -> None:
    """Mark the run failed with an incident saying why (`interrupted` for Ctrl-C or a
    stop signal, `run_failed` otherwise, as the daemon's), keeping what it recorded;
    never hide the error that got here."""
    from bot.logs import mask_text

    now = dt.datetime.now(dt.UTC)
    stopped = isinstance(exc, KeyboardInterrupt | SystemExit)
    kind = "interrupted" if stopped else "run_failed"
    reason = "stopped (Ctrl-C or a stop signal)" if stopped else f"{type(exc).__name__}: {exc}"
    if tradelog.run_id is not None:
        try:  # on its own: the run's status below matters more than the incident
            tradelog.incident(now, kind, mask_text(f"backtest failed: {reason}")[:1000],
                              {"error_type": type(exc).__name__})
        except Exception as error:  # noqa: BLE001 - the run's own error is the one to raise
            log.error("backtest.incident_not_stored", run=tradelog.run_id,
                      error=mask_text(str(error)))
    try:
        tradelog.finish_run("failed", now)
    except BotError as exc:  # e.g. the disk is still full: said in one line, as the cause is
        log.error("backtest.failure_not_fully_recorded", run=tradelog.run_id, error=str(exc))
    except Exception:
        log.exception("backtest.failure_not_fully_recorded", run=tradelog.run_id)
    finally:
        tradelog.discard()


def run_references(settings: Settings, market: MarketData) -> list[BacktestResult]:
    """The comparison portfolios, through the same engine, not written to the trade log."""
    results = []
    for name, ref in reference_settings(settings).items():
        if not all(sym in market.prices.symbols for sym in ref.symbols):
            log.warning("reference skipped: missing data", reference=name)
            continue
        if ref.rebalance.every_days >= NEVER:  # buy and hold: one purchase, on a priced day
            bought = _bought_when_listed(name, ref, market)
            if bought is None:
                log.warning("reference skipped: a fund has no price in the span", reference=name)
                continue
            name, ref = bought
        scratch = scratch_tradelog(name)
        results.append(run_backtest(ref, market, scratch, name=name, order_prefix="ref"))
        scratch.discard()
    return results


def _bought_when_listed(
    name: str, ref: Settings, market: MarketData
) -> tuple[str, Settings] | None:
    """A buy-and-hold reference as it runs: from the first day of its span on which every
    one of its funds has a close, renamed to say so if that is after the span's start
    (started before a fund listed, its one purchase found no price and it stayed cash);
    None if that day never comes."""
    import numpy as np

    prices = market.prices.select(ref.symbols)
    lo, hi = span_indices(prices.dates, ref.backtest.start, ref.backtest.end)
    priced = np.flatnonzero(np.isfinite(prices.close[lo:hi]).all(axis=1))
    if not priced.size:
        return None
    if priced[0] == 0:
        return name, ref
    day = prices.dates[lo + int(priced[0])].astype("datetime64[D]").astype(dt.date)
    listed = ref.model_copy(update={
        "backtest": ref.backtest.model_copy(update={"start": day.isoformat()})})
    return f"{name} (from {day:%Y-%m-%d}, when it listed)", listed


def _series(result: BacktestResult, with_details: bool = False) -> RunSeries:
    return RunSeries(
        result.name,
        result.equity_series(),
        fills=result.fills_frame(),
        weights=result.weights_frame() if with_details else None,
        regimes=result.regime_series() if with_details else None,
    )

