"""Walk-forward: pick the best combination on each training window, keep only what it
did in the test window after it, and chain those test windows into one curve.

Windows cut the backtest's trading days. Test windows follow each other without gap or
overlap: the first starts after one full training length, each lasts the test length
(the last may be shorter), and each one's training window is the training length just
before it (rolling, not anchored). A window's pick uses only the equity inside its
training window, which the engine computed from data up to that window's last day.

A combination's test-window returns are those of its own run over the whole span: the
positions, stops and drawdown peak it holds when the window opens are what those
parameters built from the data before it, as a live account would have them. The
stitched curve starts at the initial cash on the last training day and compounds each
test day's return (close t-1 to close t) of the combination picked for that window.
A change of pick trades the account from the old pick's weights to the new one's at
the close before the window: that costs what the simulated broker charges for the
traded value (switch_rate), taken from the account on the window's first day.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bot.broker.simulated import CostModel
from bot.errors import BotError

_LENGTH = re.compile(r"(\d+)\s*([ymd]?)")
_UNITS = {"y": "years", "m": "months", "d": "trading days", "": "trading days"}


@dataclass(frozen=True)
class Length:
    """A window length: calendar years or months, or a number of trading days."""

    count: int
    unit: str  # "y", "m" or "d"

    def __str__(self) -> str:
        return f"{self.count}{self.unit}"

    def offset(self) -> pd.DateOffset | None:
        if self.unit == "y":
            return pd.DateOffset(years=self.count)
        if self.unit == "m":
            return pd.DateOffset(months=self.count)
        return None


@dataclass(frozen=True)
class WalkForwardSpec:
    train: Length
    test: Length

    def __str__(self) -> str:
        return f"{self.train}:{self.test}"


@dataclass(frozen=True)
class Window:
    """Index ranges [lo, hi) into the run's trading days."""

    train_lo: int
    train_hi: int
    test_lo: int
    test_hi: int


def _length(text: str, spec: str) -> Length:
    match = _LENGTH.fullmatch(text.strip().lower())
    if not match or int(match.group(1)) < 1:
        raise BotError(
            f"--walk-forward {spec!r}: {text!r} is not a length; expected e.g. 3y, 18m or "
            "756 (trading days)"
        )
    return Length(int(match.group(1)), match.group(2) or "d")


def parse_spec(spec: str) -> WalkForwardSpec:
    """TRAIN:TEST, each `Ny` (years), `Nm` (months) or `N`/`Nd` (trading days)."""
    train, sep, test = spec.partition(":")
    if not sep:
        raise BotError(f"--walk-forward {spec!r}: expected TRAIN:TEST, e.g. 3y:1y or 756:252")
    return WalkForwardSpec(_length(train, spec), _length(test, spec))


def _forward(dates: pd.DatetimeIndex, i: int, length: Length) -> int:
    """Index of the first day `length` after day i (len(dates) when past the end)."""
    offset = length.offset()
    if offset is None:
        return min(i + length.count, len(dates))
    return int(dates.searchsorted(dates[i] + offset, side="left"))


def _back(dates: pd.DatetimeIndex, i: int, length: Length) -> int:
    """Index of the first day of the `length` that ends just before day i."""
    offset = length.offset()
    if offset is None:
        return max(i - length.count, 0)
    return int(dates.searchsorted(dates[i] - offset, side="left"))


def windows(dates: np.ndarray, spec: WalkForwardSpec) -> list[Window]:
    """The windows over `dates` (the run's trading days); an error if none fits."""
    index = pd.DatetimeIndex(dates)
    n = len(index)
    found: list[Window] = []
    test_lo = _forward(index, 0, spec.train) if n else 0
    while test_lo < n:
        test_hi = max(_forward(index, test_lo, spec.test), test_lo + 1)
        train_lo = _back(index, test_lo, spec.train)
        if test_lo - train_lo >= 2:  # a training window needs one return at least
            found.append(Window(train_lo, test_lo, test_lo, min(test_hi, n)))
        test_lo = test_hi
    if not found:
        span = f"{index[0]:%Y-%m-%d}..{index[-1]:%Y-%m-%d}" if n else "(empty)"
        raise BotError(
            f"--walk-forward {spec}: the span {span} ({n} trading days) is too short for one "
            "training window and a test day after it"
        )
    return found


@dataclass(frozen=True)
class Pick:
    """What one window chose: the combination (by grid position) and its training score."""

    window: Window
    position: int | None  # None: no combination could be scored on this window
    score: float | None


def pick(
    windows_: Sequence[Window], scores: Mapping[int, Sequence[float | None]]
) -> list[Pick]:
    """On each window the highest training score wins (ties: the earlier combination);
    `scores[position][k]` is that combination's score on window k, None if it has none."""
    picks = []
    for k, window in enumerate(windows_):
        scored = [(s[k], pos) for pos, s in sorted(scores.items()) if s[k] is not None]
        if not scored:
            picks.append(Pick(window, None, None))
            continue
        best = max(scored, key=lambda item: (item[0], -item[1]))
        picks.append(Pick(window, best[1], best[0]))
    return picks


def switch_rate(
    old: Mapping[str, float],
    new: Mapping[str, float],
    prices: Mapping[str, float],
    costs: CostModel,
) -> float:
    """What trading from weights `old` to `new` costs, as a fraction of the equity: each
    asset's |w_new - w_old| of the equity, in shares at `prices`, at the simulated
    broker's costs (CostModel.trade_cost). Weights absent are 0 (cash)."""
    rate = 0.0
    for symbol in sorted(old.keys() | new.keys()):
        traded = abs(new.get(symbol, 0.0) - old.get(symbol, 0.0))  # per unit of equity
        if traded:
            price = prices[symbol]
            rate += costs.trade_cost(traded / price, price)
    return rate


def after_switch(equity: float, rate: float) -> float:
    """The stitched account's equity once switching into a window's pick is paid for
    (`rate`: switch_rate's fraction of the equity at the last training close): what the
    pick's test window starts from. The one place the cost comes out: the curve (stitch)
    compounds the pick's returns on it and its fills are sized to it (the sweep runner)."""
    return equity * (1.0 - rate)


def stitch(
    dates: np.ndarray,
    picks: Sequence[Pick],
    equities: Mapping[int, np.ndarray],
    initial: float,
    switch_rates: Sequence[float] | None = None,
) -> pd.Series:
    """The out-of-sample curve: the initial cash on the day before the first test day,
    then each test day's return of that window's pick (no pick: flat, in cash).
    `switch_rates[k]`: the fraction of the equity that switching into window k's pick
    costs, paid on its first day (the trades fill after the close the curve shows)."""
    first = picks[0].window.test_lo
    values = [initial]
    days = [dates[first - 1]]
    for k, p in enumerate(picks):
        lo, hi = p.window.test_lo, p.window.test_hi
        if p.position is None:
            growth = np.ones(hi - lo)
        else:
            equity = equities[p.position]
            if len(equity) != len(dates):  # indexed by position: it must be these days
                raise ValueError(f"walk-forward: combination {p.position} has {len(equity)} "
                                 f"equity days, the windows' span {len(dates)}")
            growth = equity[lo:hi] / equity[lo - 1 : hi - 1]
        start = after_switch(values[-1], switch_rates[k] if switch_rates else 0.0)
        values.extend(start * np.cumprod(growth))
        days.extend(dates[lo:hi])
    return pd.Series(values, index=pd.DatetimeIndex(days), name="walk-forward (out of sample)")
