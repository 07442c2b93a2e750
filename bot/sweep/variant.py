"""One combination of a sweep, run where a worker is (a local process or a Dask worker):
the same `run_backtest` as `bot backtest`, the same summary row, and what the sweep
needs back. Nothing here touches the database: the worker may be on another machine.
"""

from __future__ import annotations

import functools
import time
import traceback
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import sqlalchemy as sa

from bot.backtest import BacktestResult, run_backtest
from bot.config import Settings
from bot.data.base import RISK_FREE, MarketData
from bot.errors import BotError
from bot.metrics import performance
from bot.report import RunSeries, build_report
from bot.runner import macro_series, price_series
from bot.store.tradelog import PreparedRecords, TradeLog
from bot.types import Order

# Metrics a sweep can rank by; for each, higher is better (max_drawdown is negative).
RANK_METRICS = ("sharpe", "sortino", "cagr", "calmar", "total_return", "max_drawdown")


@dataclass(frozen=True)
class VariantTask:
    """What a worker needs besides the market: the combination, its run id (for order ids
    and records), whether to send its records back (and the database dialect to convert
    them for), and the training windows to score."""

    position: int
    run_id: int
    settings: Settings
    record_full: bool = False
    dialect: str | None = None  # e.g. "sqlite+pysqlite" (tradelog.dialect_key), no secrets
    metric: str = "sharpe"
    train_windows: tuple[tuple[int, int], ...] = ()  # [lo, hi) into the run's days
    keep_fills: bool = False


@dataclass
class VariantOutcome:
    """A combination's result, or its error; `log` holds its records for --record full."""

    position: int
    run_id: int
    summary: dict | None = None
    equity: np.ndarray | None = None
    fills: pd.DataFrame | None = None
    train_scores: list[float | None] = field(default_factory=list)
    # per training window, the weights held at its last close (symbol: weight, cash left
    # out): what a walk-forward switching into or out of this combination trades
    switch_weights: list[dict[str, float]] = field(default_factory=list)
    log: TradeLog | None = None
    prepared: PreparedRecords | None = None  # `log`'s rows converted, so the writer only inserts
    error: str | None = None
    detail: str | None = None  # the traceback of an unexpected error
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return self.error is not None

    @property
    def final_equity(self) -> float | None:
        return None if self.equity is None or not len(self.equity) else float(self.equity[-1])


def failed_outcome(task: VariantTask, error: BaseException | str) -> VariantOutcome:
    """The outcome of a combination whose worker could not return one."""
    message = error if isinstance(error, str) else one_line(error)
    return VariantOutcome(task.position, task.run_id, error=message)


def one_line(error: BaseException) -> str:
    """An error as one line: a BotError's own message, else its type and first line."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if isinstance(error, BotError):
        return text or type(error).__name__
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class DetachedLog(TradeLog):
    """A trade log that only buffers, recording as run `run_id`. The engine records into
    it as always; the sweep attaches the database and writes it (--record full).

    The one thing the engine asks its log (`knows_order`: was a stop order for an asset
    it does not hold sent this period?) is answered from the buffer: the run is new and
    its order ids are its own, so no database holds one of them (asking the database it
    does not have failed the combination)."""

    def __init__(self, run_id: int) -> None:
        super().__init__(engine=None)  # type: ignore[arg-type]  # attached by the sweep
        self.run_id = run_id

    def knows_order(self, client_order_id: str) -> bool:
        return client_order_id in self._orders


def detached_log(run_id: int) -> DetachedLog:
    return DetachedLog(run_id)


class DiscardingLog(TradeLog):
    """A trade log that keeps nothing, for --record summary, whose runs store only their
    summary, but the ids of the orders it was given: the engine's one question to its log
    (`knows_order`) is answered from them, so it decides exactly as with a real one (the
    tests compare with `bot backtest`). Skipping the bookkeeping (a dict per order, fill,
    target and day) saves about a sixth of the CPU time of a full-strategy run.
    The log's own checks (duplicate order ids, naive times) run only with a real log."""

    def __init__(self, run_id: int) -> None:
        super().__init__(engine=None)  # type: ignore[arg-type]  # never writes
        self.run_id = run_id
        self._sent: set[str] = set()

    def _discard(self, *args: object, **kwargs: object) -> None:
        return None

    regime = targets = risk_event = order_status = execution = fill = equity = positions = _discard
    snapshot = _discard

    def order(self, o: Order, *, notional: object = None) -> None:
        self._sent.add(o.request.client_order_id)

    def knows_order(self, client_order_id: str) -> bool:
        return client_order_id in self._sent


def summary_row(result: BacktestResult, market: MarketData, fills: pd.DataFrame) -> dict:
    """The run's summary exactly as `bot backtest` stores it in runs.summary."""
    report = build_report(
        RunSeries(result.name, result.equity_series(), fills=fills),
        [],
        risk_free=macro_series(market, RISK_FREE),
        market=price_series(market, "SPY"),
        periods=[],
        data_label=market.label,
        meta={},
    )
    return report["summary"][0]


def window_score(
    equity: pd.Series, lo: int, hi: int, metric: str, risk_free: pd.Series | None
) -> float | None:
    """`metric` of the equity inside one training window [lo, hi)."""
    value = performance(equity.iloc[lo:hi], risk_free=risk_free)[metric]
    return None if value is None else float(value)


def run_variant(market: MarketData, task: VariantTask) -> VariantOutcome:
    """Run one combination; an error becomes the outcome's, never the worker's."""
    started = time.perf_counter()
    log = detached_log(task.run_id) if task.record_full else DiscardingLog(task.run_id)
    try:
        outcome = _run(market, task, log)
    except Exception as exc:
        outcome = failed_outcome(task, exc)
        if not isinstance(exc, BotError):
            outcome.detail = traceback.format_exc()
        # As `bot backtest` keeps a failed run's records, --record full keeps these.
        outcome.log = log if task.record_full else None
    if outcome.log is not None and task.dialect:
        outcome.prepared = prepared_records(outcome.log, task.dialect)
    outcome.seconds = time.perf_counter() - started
    return outcome


def prepared_records(log: TradeLog, dialect: str) -> PreparedRecords | None:
    """The log's records converted for `dialect` here in the worker, so the process that
    writes every combination's run only inserts them; None if they cannot be (that
    process then converts them and reports the error as any flush does)."""
    try:
        return log.prepare(_dialect(dialect))
    except Exception:
        return None


@functools.cache
def _dialect(key: str) -> sa.Dialect:
    """A dialect of SQLAlchemy's for 'backend+driver', unconnected: it converts values as
    the writer's does (tests compare the two)."""
    return sa.engine.make_url(f"{key}://").get_dialect()()


def _run(market: MarketData, task: VariantTask, log: TradeLog) -> VariantOutcome:
    settings = task.settings
    # As in `bot backtest`: the run's name and its order ids (unique in the trade log).
    result = run_backtest(
        settings, market, log, name=settings.strategy.name, order_prefix=f"bt{task.run_id}"
    )
    equity = result.equity_series()
    scores = []
    if task.train_windows:
        risk_free = macro_series(market, RISK_FREE)
        scores = [window_score(equity, lo, hi, task.metric, risk_free) for lo, hi in task.train_windows]
    fills = result.fills_frame()
    return VariantOutcome(
        task.position,
        task.run_id,
        summary=summary_row(result, market, fills),
        equity=result.equity,
        fills=fills if task.keep_fills else None,
        train_scores=scores,
        switch_weights=switch_weights(result, task.train_windows),
        log=log if task.record_full else None,
    )


def switch_weights(
    result: BacktestResult, train_windows: tuple[tuple[int, int], ...]
) -> list[dict[str, float]]:
    """The weights held at the last close of each training window (nonzero ones only)."""
    if not train_windows:
        return []
    frame = result.weights_frame().drop(columns="CASH")
    rows = [frame.iloc[hi - 1] for _, hi in train_windows]
    return [{str(s): float(w) for s, w in row.items() if w != 0.0} for row in rows]

