"""In-memory market history: what every data source produces and the engine reads.

Arrays rather than frames, because the engine touches them every simulated day and
numpy indexing is an order of magnitude cheaper than pandas indexing.
"""

from __future__ import annotations

import datetime as dt
from bisect import bisect_left
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

# Macro series the strategy knows, by the name used in config and in data/macro/<NAME>.csv.
VIX = "VIX"
SPREAD = "T10Y2Y"
UNCERTAINTY = "USEPUINDXD"
RISK_FREE = "DTB3"
MACRO_SERIES = (VIX, SPREAD, UNCERTAINTY, RISK_FREE)


@dataclass(frozen=True)
class MacroSeries:
    """A daily macro series as published: dates ascending, unique; no NaN values."""

    name: str
    dates: np.ndarray  # datetime64[D]
    values: np.ndarray  # float64
    #: first and last day a download answered, blank days included (FRED's "."): the
    #: span it speaks for, so a stored day in it the answer has no value for was
    #: withdrawn. None when not known (a file).
    observed: tuple[dt.date, dt.date] | None = field(default=None, compare=False)

    def last_before(self, day: dt.date) -> tuple[float, dt.date] | None:
        """The last value observed strictly before `day`, with its date; None if none
        (never a later one). The weekly regime asks three series every week: bisecting
        plain ints costs a tenth of numpy's scalar date arithmetic and search."""
        ordinals, values = self._by_ordinal
        i = bisect_left(ordinals, day.toordinal()) - 1
        if i < 0:
            return None
        return values[i], dt.date.fromordinal(ordinals[i])

    def mean_before(self, day: dt.date, days: int) -> tuple[float, dt.date] | None:
        """The mean of the values observed in the `days` calendar days up to the last
        observation strictly before `day`, with that observation's date; None if none."""
        ordinals, values = self._by_ordinal
        end = bisect_left(ordinals, day.toordinal())
        if end == 0:
            return None
        start = bisect_left(ordinals, ordinals[end - 1] - days + 1)
        window = values[start:end]
        return sum(window) / len(window), dt.date.fromordinal(ordinals[end - 1])

    @cached_property
    def _by_ordinal(self) -> tuple[list[int], list[float]]:
        """The dates as proleptic ordinals and the values as floats, made on first use."""
        days = self.dates.astype("datetime64[D]").astype(np.int64) + _EPOCH_ORDINAL
        return days.tolist(), self.values.tolist()


_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()  # datetime64[D] counts days from here


@dataclass(frozen=True)
class PriceHistory:
    """Daily adjusted prices on one calendar of trading days.

    `close` and `open` are (T, N) float64 arrays aligned to `dates` and `symbols`. NaN in
    `close` means the asset did not trade yet (before listing); NaN in `open` means the
    source has no open for that day (some of the bundled series are close-only).
    `filled` (T, N) bool marks the days a loader forward-filled because the symbol had no
    bar while others did (a halt, a thin feed): the close there is the last real one,
    fine for returns, but no order may fill at it. None means nothing was filled.
    """

    dates: np.ndarray  # datetime64[D], ascending, unique
    symbols: tuple[str, ...]
    close: np.ndarray
    open: np.ndarray
    filled: np.ndarray | None = None

    def index_of(self, symbol: str) -> int:
        return self.symbols.index(symbol)

    def select(self, symbols: tuple[str, ...] | list[str]) -> PriceHistory:
        """The same history restricted to `symbols`, in that order."""
        idx = [self.index_of(s) for s in symbols]
        filled = None if self.filled is None else self.filled[:, idx]
        return PriceHistory(
            self.dates, tuple(symbols), self.close[:, idx], self.open[:, idx], filled
        )

    def between(self, start: np.datetime64 | None, end: np.datetime64 | None) -> PriceHistory:
        lo = 0 if start is None else int(np.searchsorted(self.dates, start, side="left"))
        hi = len(self.dates) if end is None else int(np.searchsorted(self.dates, end, side="right"))
        filled = None if self.filled is None else self.filled[lo:hi]
        return PriceHistory(
            self.dates[lo:hi], self.symbols, self.close[lo:hi], self.open[lo:hi], filled
        )


@dataclass(frozen=True)
class MarketData:
    """Prices plus macro series, and a plain statement of where they came from."""

    prices: PriceHistory
    macro: dict[str, MacroSeries] = field(default_factory=dict)
    source: str = "unknown"
    synthetic: bool = False

    @property
    def label(self) -> str:
        """How reports and logs name the data; synthetic data always says so."""
        return f"SYNTHETIC market ({self.source})" if self.synthetic else self.source
