"""Drives the engine over history on a simulated clock with the simulated broker.

Each trading day t: fills of orders sent the day before (at the open of t, or the close
for series without an open, or the close of t for the `next_close` model), then the
engine decides on the close of t, then (for `same_close`, the peers' convention) fills at
that close, then the day's equity is recorded.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bot.broker.simulated import CostModel, SimulatedBroker, close_prices, next_open_prices
from bot.config import Settings
from bot.data.base import MarketData
from bot.engine import Engine, carried_marks
from bot.store.tradelog import TradeLog
from bot.types import Fill, Regime

Progress = Callable[[int, int], None]


@dataclass
class BacktestResult:
    """Daily series of one simulated run, ready for metrics and charts."""

    name: str
    symbols: tuple[str, ...]
    dates: np.ndarray
    equity: np.ndarray
    cash: np.ndarray
    holdings: np.ndarray  # (days, assets) quantities after each day's fills
    closes: np.ndarray  # (days, assets) closes used to value them
    regimes: list[Regime | None]
    fills: list[Fill]

    def equity_series(self) -> pd.Series:
        return pd.Series(self.equity, index=pd.DatetimeIndex(self.dates), name=self.name)

    def weights_frame(self) -> pd.DataFrame:
        """Actual end-of-day weights per symbol, plus CASH. A holding is valued at its
        last close on a day without one, as the equity values it (not at 0)."""
        values = self.holdings * carried_marks(self.closes)
        frame = pd.DataFrame(
            values / self.equity[:, None], index=pd.DatetimeIndex(self.dates), columns=self.symbols
        )
        frame["CASH"] = self.cash / self.equity
        return frame

    def regime_series(self) -> pd.Series:
        labels = [r.value if r is not None else None for r in self.regimes]
        return pd.Series(labels, index=pd.DatetimeIndex(self.dates), name="regime")

    def fills_frame(self) -> pd.DataFrame:
        columns = list(Fill._fields)
        frame = pd.DataFrame(self.fills, columns=columns)
        if not frame.empty:
            frame["side"] = frame["side"].map(lambda s: s.value)
            frame["filled_at"] = pd.to_datetime(frame["filled_at"], utc=True)
        return frame


def cost_model(settings: Settings) -> CostModel:
    """The simulated venue's costs from the config (backtest and replay alike)."""
    bt = settings.backtest
    return CostModel(bt.commission_per_share, bt.commission_bps, bt.slippage_bps)


def scratch_tradelog(name: str) -> TradeLog:
    """An in-memory trade log for runs nobody needs to keep (reference portfolios,
    benchmarks): the engine records as always, nothing reaches a file."""
    from bot.store.scratch import memory_tradelog

    log = memory_tradelog()
    log.start_run(
        mode="backtest", strategy=name, config_hash="-", config={}, code_version="-",
        data_source="-", synthetic=False, started_at=dt.datetime.now(dt.UTC),
    )
    return log


def session_seconds(dates: np.ndarray) -> tuple[list[int], list[int]]:
    """POSIX seconds of the regular open (09:30) and close (16:00) in New York per day.

    Seconds, not datetimes: building 7,000 datetime objects up front cost a tenth of a
    fixed-weight backtest; the loop makes one only for a day that needs it (`utc`).
    Early closes are ignored here: they only move the timestamps written to the log."""
    local = pd.DatetimeIndex(dates).tz_localize("America/New_York")
    epoch = pd.Timestamp("1970-01-01", tz="UTC")

    def seconds(offset: pd.Timedelta) -> list[int]:
        return ((local + offset - epoch) // pd.Timedelta(seconds=1)).tolist()

    return seconds(pd.Timedelta(hours=9, minutes=30)), seconds(pd.Timedelta(hours=16))


def utc(seconds: int) -> dt.datetime:
    """An aware UTC datetime; plain datetime.timezone.utc, whose utcoffset() the trade
    log asks of every timestamp, is ~50x quicker to answer than pandas' tz objects."""
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def span_indices(dates: np.ndarray, start: str | None, end: str | None) -> tuple[int, int]:
    """[lo, hi) of the trading days inside start..end (inclusive).

    Both errors are the user's input (a bad date, a span outside the data), so they are
    BotErrors the command line prints, not tracebacks."""
    from bot.config import parse_iso_date
    from bot.errors import BotError

    for name, value in (("start", start), ("end", end)):
        if value is None:
            continue
        try:
            parse_iso_date(value)
        except ValueError as exc:
            raise BotError(f"backtest.{name}: {exc}, got {value!r}") from None
    lo = 0 if start is None else int(np.searchsorted(dates, np.datetime64(start), side="left"))
    hi = len(dates) if end is None else int(np.searchsorted(dates, np.datetime64(end), side="right"))
    if hi - lo < 2:
        first, last = (str(d)[:10] for d in (dates[0], dates[-1])) if len(dates) else ("-", "-")
        span = f"{start or '(start)'}..{end or '(end)'}"
        raise BotError(
            f"backtest span {span} holds fewer than 2 trading days of data "
            f"(the data covers {first} to {last})"
        )
    return lo, hi


def run_backtest(
    settings: Settings,
    market: MarketData,
    log: TradeLog,
    *,
    name: str = "strategy",
    order_prefix: str = "bt",
    progress: Progress | None = None,
    initial_weights: np.ndarray | None = None,
) -> BacktestResult:
    """Simulate `settings` over `market` between backtest.start and backtest.end.

    With `initial_weights` (per symbol, the rest cash) the run starts holding that
    portfolio, bought at the first day's close without costs, as if it had been
    rebalanced to it that day; otherwise it starts in cash."""
    bt = settings.backtest
    symbols = settings.symbols
    broker = SimulatedBroker(symbols, bt.initial_cash, cost_model(settings), settings.rebalance.fractional)
    engine = Engine(settings, market, broker, log, order_prefix)
    dates = engine.dates
    lo, hi = span_indices(dates, bt.start, bt.end)
    close = engine.close
    if initial_weights is not None:
        _start_from(engine, broker, initial_weights, lo, bt.initial_cash)
    traded = market.prices.select(symbols)
    fill_open = next_open_prices(traded)
    fill_close = close_prices(traded)
    open_seconds, close_seconds = session_seconds(dates[lo:hi])

    n = hi - lo
    equity: list[float] = []
    cash: list[float] = []
    regimes: list[Regime | None] = []
    fills: list[Fill] = []
    # The book only changes with a fill: it is copied on the days that had one, and
    # spread over the days after them at the end (a copy a day cost more than the rest
    # of the day's bookkeeping here).
    books: list[np.ndarray] = []
    book_days: list[int] = []
    fills_seen = -1

    fromtimestamp = dt.datetime.fromtimestamp
    fill_model = bt.fill
    same_close = fill_model == "same_close"

    def settle(prices: np.ndarray, when: dt.datetime) -> None:
        for order, fill in broker.execute(prices, when):
            engine.on_execution(order, fill, when)
            if fill is not None:
                fills.append(fill)

    for k in range(n):
        t = lo + k
        closing = fromtimestamp(close_seconds[k], dt.UTC)  # utc(), without a call a day
        if broker.open_order_count():
            if fill_model == "next_open":
                settle(fill_open[t], utc(open_seconds[k]))
            elif fill_model == "next_close":
                settle(fill_close[t], closing)
        engine.step(t, closing)
        stepped_fills = len(fills)
        if same_close and broker.open_order_count():
            settle(fill_close[t], closing)
        # unpacked: each field read by name is a descriptor call, three a day
        _, point_equity, point_cash, _, _, regime = engine.record_close(
            t, unchanged_since_step=len(fills) == stepped_fills
        )
        equity.append(point_equity)
        cash.append(point_cash)
        regimes.append(regime)
        if len(fills) != fills_seen:
            fills_seen = len(fills)
            books.append(broker.shares.copy())
            book_days.append(k)
        if progress is not None and (k & 63) == 0:
            progress(k, n)
    if progress is not None:
        progress(n, n)
    ended = fromtimestamp(close_seconds[-1], dt.UTC) if n else None
    for order in broker.cancel_pending("backtest ended before the fill day"):
        # recorded only, as a replay's end records them: the run is over, no stop to arm
        log.execution(order, None, ended or order.submitted_at)
    holdings = np.repeat(np.array(books), np.diff(book_days, append=n), axis=0)
    return BacktestResult(
        name, symbols, dates[lo:hi], np.array(equity), np.array(cash), holdings, close[lo:hi],
        regimes, fills,
    )


def _start_from(
    engine: Engine, broker: SimulatedBroker, weights: np.ndarray, t: int, cash: float
) -> None:
    """Hold `weights` of `cash` at the close of day t; an asset without a price then
    stays in cash. The engine remembers them as the targets of a rebalance that day."""
    prices = engine.close[t]
    held = np.where(np.isfinite(prices) & (prices > 0), np.asarray(weights, dtype=float), 0.0)
    shares = np.divide(held * cash, prices, out=np.zeros_like(held), where=held > 0)
    broker.start_with(shares, cash * (1.0 - float(held.sum())))
    engine.state.targets = held
    engine.state.last_rebalance_day = engine.dates[t].astype("datetime64[D]").astype(object)
