"""Where the daemon's jobs get market history: a fixed history for replay, fresh
downloads for paper and live (bot.daemon.live_feed)."""

from __future__ import annotations

import datetime as dt
from typing import Protocol

import numpy as np

from bot.data.base import MarketData
from bot.errors import DataError


class MarketFeed(Protocol):
    def history(self, through: dt.date) -> MarketData:
        """Daily history of the universe with a bar for `through` (and none after it
        that the engine may use), plus the macro series known now."""
        ...

    def sizing_prices(self, symbols: tuple[str, ...]) -> np.ndarray | None:
        """Prices to size orders on now (None: the decision day's close)."""
        ...


class HistoryFeed:
    """Replay: one history loaded up front (CSV directory or synthetic market). The
    engine reads only up to the day it decides on, so no slicing is needed."""

    def __init__(self, market: MarketData) -> None:
        self.market = market

    def history(self, through: dt.date) -> MarketData:
        return self.market

    def sizing_prices(self, symbols: tuple[str, ...]) -> np.ndarray | None:
        """Replay sizes on the close, exactly as the backtest does."""
        return None


def index_of_day(market: MarketData, day: dt.date, source: str) -> int:
    """Row of `day` in the history; a DataError if the bar is missing, for the whole
    market or for one listed symbol (stale data is never traded on)."""
    dates = market.prices.dates
    t = int(np.searchsorted(dates, np.datetime64(day)))
    if t >= len(dates) or dates[t] != np.datetime64(day):
        last = dates[-1].astype("datetime64[D]") if len(dates) else "nothing"
        raise DataError(source, "bars", f"no daily bar for {day} (latest is {last})")
    _check_every_symbol_current(market, t, day, source)
    return t


def _check_every_symbol_current(market: MarketData, t: int, day: dt.date, source: str) -> None:
    """Every symbol listed by `day` must have a close on it. The live loader leaves a
    symbol NaN after its last bar, so one that stopped updating shows here instead of
    being valued and traded at a days-old close. (Replay data is forward-filled by the
    CSV loader, as in the backtest, so this never fires there on a short gap.)"""
    prices = market.prices
    listed = np.isfinite(prices.close[: t + 1]).any(axis=0)
    stale = np.flatnonzero(listed & ~np.isfinite(prices.close[t]))
    if not stale.size:
        return
    real = np.isfinite(prices.close) if prices.filled is None else (
        np.isfinite(prices.close) & ~prices.filled
    )
    described = ", ".join(
        f"{prices.symbols[j]} (latest {_last_bar(prices.dates, real[:, j])})" for j in stale
    )
    raise DataError(source, "bars", f"no daily bar for {day} for {described}")


def _last_bar(dates: np.ndarray, real: np.ndarray) -> str:
    """The day of the last real bar (not a carried one) in a column mask."""
    rows = np.flatnonzero(real)
    return str(dates[rows[-1]].astype("datetime64[D]")) if rows.size else "nothing"
