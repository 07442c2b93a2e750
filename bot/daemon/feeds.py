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
    """Row of `day` in the history; a DataError if the bar is missing (stale data is
    never traded on)."""
    dates = market.prices.dates
    t = int(np.searchsorted(dates, np.datetime64(day)))
    if t >= len(dates) or dates[t] != np.datetime64(day):
        last = dates[-1].astype("datetime64[D]") if len(dates) else "nothing"
        raise DataError(source, "bars", f"no daily bar for {day} (latest is {last})")
    return t
