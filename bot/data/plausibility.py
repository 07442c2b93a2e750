"""Plausibility rules every loader applies before anything trades on its data.

A file or an API answer can be well formed and still wrong: a split the vendor did not
adjust (the price jumps 10x), an open typed 50x the close, VIX at -50, a row dated on a
Saturday or in 2300. Such values do not fail loudly later; they silently change every
weight, stop and regime after them. So the CSV loader, the Alpaca bars, the FRED series
and the shared price alignment all call this one module, and a value that breaks a rule
stops the load with a DataError naming the source, the row (date, and line of a file),
the value and the rule.

Prices (per symbol, on its own dates):
- dates are NYSE sessions (exchange_calendars XNYS), none after today, none before 1900;
- every open/high/low/close present is finite, positive and below MAX_PRICE;
- high >= max(open, close) and low <= min(open, close), within a rounding tolerance;
- no daily move is implausible for *this* series: a close-to-close, overnight (close to
  next open) or intraday (open to close) log move is flagged when it exceeds both
  `jump_floor` and `jump_scale_multiple` x the series' robust daily scale (1.4826 x the
  median absolute deviation of its close-to-close log returns). The scale adapts the bound
  to the asset: 25 x scale is ~0.19 for SPY (so the 0.25 floor decides) and ~0.66 for
  TQQQ, whose real crash days (-34% on 2020-03-16, a log move of 0.42) pass while a
  halving or a 10x jump does not. Calibrated on the 22 bundled series, 1993-2024 (the
  highest ratio is UDOW's 22.1 on 2020-03-16).
- no close repeats unchanged more than STALE_RUN sessions in a row in a series that
  normally moves (robust daily scale at least STALE_MIN_SCALE): a vendor that carried
  the last price forward over a gap or a halted feed looks like a calm market, and the
  20-day volatility falling toward 0 sends inverse-volatility weight to that fund. A
  bill fund (BIL sits at one price for 18 sessions in 2011) moves too little to judge.

Macro series: values within the range the series can take (VIX 5-150, 10y-2y spread
within +-10 points, policy uncertainty positive and at most 3000, bill rates -5 to 30%),
dates not after today nor before 1900, and no weekend dates for series published on
business days only (VIX, T10Y2Y, DTB3, DGS3MO; USEPUINDXD is daily).

Live, a latest trade price that moved implausibly far from the last close is not used
to size orders (the close is, with a warning): see plausible_sizing_prices.

A real extreme day is accepted knowingly, one symbol (or series) and day at a time, with
`data.allow_extreme = ["TQQQ:2020-03-16"]`: the move and range rules then skip that row
(and say so in the log). Dates and non-finite or non-positive prices are never waived:
such a row is not an extreme day, it is a broken row to fix or delete.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import structlog

from bot.data.base import RISK_FREE, SPREAD, UNCERTAINTY, VIX, MacroSeries, PriceHistory
from bot.errors import DataError

if TYPE_CHECKING:
    from bot.config import DataSettings
    from bot.data.align import SymbolBars

log = structlog.get_logger(__name__)

EARLIEST = np.datetime64("1900-01-01")
#: no exchange-traded share is quoted near this; above it a number is a unit or typo error
MAX_PRICE = 1e7
#: adjusted prices are rounded by vendors: a high a hair below the close is not an error
OHLC_TOLERANCE = 1e-6
#: MAD -> standard deviation for normal data, so the scale reads like a daily volatility
MAD_TO_SIGMA = 1.4826
#: fewer close-to-close returns than this give no scale of their own: a halving or a
#: doubling in a day is then the bound
MIN_RETURNS_FOR_SCALE = 20
SHORT_HISTORY_BOUND = float(np.log(2.0))

#: unchanged closes in a row (after the first) beyond which a moving series is stale
STALE_RUN = 4
#: a series whose robust daily scale is below this (0.3%) may sit still: bills, cash funds
STALE_MIN_SCALE = 0.003

DEFAULT_JUMP_SCALE_MULTIPLE = 25.0
DEFAULT_JUMP_FLOOR = 0.25

#: (lowest, highest) plausible value of each macro series we know, in its own units
MACRO_RANGES: dict[str, tuple[float, float]] = {
    VIX: (5.0, 150.0),
    SPREAD: (-10.0, 10.0),
    UNCERTAINTY: (0.0, 3000.0),  # exclusive of 0: an index level, always positive
    RISK_FREE: (-5.0, 30.0),
    "DGS3MO": (-5.0, 30.0),
}
#: macro series published on business days only (a weekend date is a broken row)
BUSINESS_DAY_SERIES = frozenset({VIX, SPREAD, RISK_FREE, "DGS3MO"})


def allowed_day(entry: str) -> tuple[str, np.datetime64]:
    """("TQQQ", 2020-03-16) from "TQQQ:2020-03-16"; ValueError says the expected form."""
    from bot.config import parse_iso_date  # here: the data layer does not need pydantic

    name, sep, day = entry.partition(":")
    try:
        if not sep or not name.strip():
            raise ValueError
        parsed = parse_iso_date(day.strip())
    except ValueError:
        raise ValueError(
            f"expected SYMBOL:YYYY-MM-DD (a symbol or macro series and a day), got {entry!r}"
        ) from None
    return name.strip(), np.datetime64(parsed, "D")


@dataclass(frozen=True)
class PlausibilityRules:
    """The configurable part of the rules: data.jump_scale_multiple, data.jump_floor and
    the (name, day) pairs of data.allow_extreme."""

    jump_scale_multiple: float = DEFAULT_JUMP_SCALE_MULTIPLE
    jump_floor: float = DEFAULT_JUMP_FLOOR
    allowed: frozenset[tuple[str, np.datetime64]] = field(default_factory=frozenset)

    @classmethod
    def from_entries(
        cls,
        allow_extreme: Iterable[str] = (),
        jump_scale_multiple: float = DEFAULT_JUMP_SCALE_MULTIPLE,
        jump_floor: float = DEFAULT_JUMP_FLOOR,
    ) -> PlausibilityRules:
        allowed = frozenset(allowed_day(e) for e in allow_extreme)
        return cls(jump_scale_multiple, jump_floor, allowed)

    @classmethod
    def from_settings(cls, data: DataSettings) -> PlausibilityRules:
        """The rules a config asks for (its `[data]` section)."""
        return cls.from_entries(data.allow_extreme, data.jump_scale_multiple, data.jump_floor)

    def allows(self, name: str, day: np.datetime64) -> bool:
        return (name, day) in self.allowed


DEFAULT_RULES = PlausibilityRules()


def _where(day: np.datetime64, lines: np.ndarray | None, i: int) -> str:
    """`2020-03-16 (line 1234)`: the row as the user finds it in the file."""
    return f"{day}" + (f" (line {int(lines[i])})" if lines is not None else "")


def _accept_hint(name: str, day: np.datetime64) -> str:
    return f'if the day is real, accept it with data.allow_extreme = ["{name}:{day}"]'


# --- dates ------------------------------------------------------------------------------


def check_dates(
    source: str,
    dates: np.ndarray,
    lines: np.ndarray | None = None,
    *,
    sessions_only: bool = False,
    weekdays_only: bool = False,
) -> None:
    """No row after today or before 1900; with `sessions_only` every date an NYSE
    session, with `weekdays_only` none on a weekend."""
    if not dates.size:
        return
    latest = np.datetime64(dt.datetime.now(dt.UTC).date(), "D")  # never behind New York's
    late = np.flatnonzero(dates > latest)
    early = np.flatnonzero(dates < EARLIEST)
    for bad, what in ((late, f"is after today ({latest})"), (early, f"is before {EARLIEST}")):
        if bad.size:
            i = int(bad[0])
            raise DataError(
                source, "date",
                f"{_where(dates[i], lines, i)}: the date {what}; fix or delete the row",
            )
    if weekdays_only:
        weekend = np.flatnonzero(~np.is_busday(dates, weekmask="1111100"))
        if weekend.size:
            i = int(weekend[0])
            raise DataError(
                source, "date",
                f"{_where(dates[i], lines, i)}: a {_weekday(dates[i])}, but this series "
                "is published on business days only; fix or delete the row",
            )
    if sessions_only:
        from bot.calendar import session_mask

        off = np.flatnonzero(~session_mask(dates))
        if off.size:
            i = int(off[0])
            kind = "a " + _weekday(dates[i]) if not np.is_busday(dates[i]) else "an exchange holiday"
            raise DataError(
                source, "date",
                f"{_where(dates[i], lines, i)}: {kind}, not an NYSE trading day; "
                "fix or delete the row",
            )


def _weekday(day: np.datetime64) -> str:
    return day.astype(dt.date).strftime("%A")


# --- prices -----------------------------------------------------------------------------


def check_bars(symbol: str, bars: SymbolBars, rules: PlausibilityRules = DEFAULT_RULES) -> None:
    """Every price rule on one symbol's bars (on its own dates, before alignment)."""
    check_dates(bars.name, bars.dates, bars.lines, sessions_only=True)
    columns = {"close": bars.close, "open": bars.open, "high": bars.high, "low": bars.low}
    for column, values in columns.items():
        if values is not None:
            check_price_column(
                bars.name, column, values, bars.dates, bars.lines, required=column == "close"
            )
    _check_ohlc(symbol, bars, rules)
    _check_moves(symbol, bars, rules)
    _check_stale(symbol, bars, rules)


def check_price_column(
    source: str,
    column: str,
    values: np.ndarray,
    dates: np.ndarray,
    lines: np.ndarray | None = None,
    *,
    required: bool,
) -> None:
    """Finite, positive and below MAX_PRICE; empty (NaN) only where not `required`."""
    with np.errstate(invalid="ignore"):
        bad = ~(values > 0) | ~(values < MAX_PRICE)
    if not required:
        bad &= ~np.isnan(values)
    wrong = np.flatnonzero(bad)
    if wrong.size:
        i = int(wrong[0])
        value = values[i]
        why = (
            "missing or not a finite number" if not np.isfinite(value)
            else "not positive" if value <= 0
            else f"above {MAX_PRICE:g}, where no share trades (a unit or typing error?)"
        )
        raise DataError(source, column, f"{_where(dates[i], lines, i)}: {column} {value:g} is {why}")


def _check_ohlc(symbol: str, bars: SymbolBars, rules: PlausibilityRules) -> None:
    """high >= close >= low, where high and low exist. The open is not held to them:
    Alpaca's daily open is the listing exchange's official open, a print that does not
    set the bar's high or low, so a real bar can open above its high (AAAA 2021-04-01:
    O 25.05, H 25.04). A wrong open is caught by its own move check (_check_moves)."""
    top = bottom = bars.close
    for column, values, broken in (
        ("high", bars.high, lambda v: v < top * (1 - OHLC_TOLERANCE)),
        ("low", bars.low, lambda v: v > bottom * (1 + OHLC_TOLERANCE)),
    ):
        if values is None:
            continue
        with np.errstate(invalid="ignore"):
            wrong = np.flatnonzero(broken(values))  # NaN (empty) compares False
        wrong = [i for i in wrong.tolist() if not _waived(symbol, bars, i, rules, column)]
        if wrong:
            i = wrong[0]
            side = "below" if column == "high" else "above"
            raise DataError(
                bars.name, column,
                f"{_where(bars.dates[i], bars.lines, i)}: {column} {values[i]:g} is {side} the "
                f"close {bars.close[i]:g}, but it must be the day's {column}est price. "
                + _accept_hint(symbol, bars.dates[i]),
            )


def robust_scale(log_returns: np.ndarray) -> float | None:
    """1.4826 x MAD of the returns (a standard deviation that a few wild days cannot
    inflate), or None when there are too few returns to say."""
    if log_returns.size < MIN_RETURNS_FOR_SCALE:
        return None
    return MAD_TO_SIGMA * float(np.median(np.abs(log_returns - np.median(log_returns))))


def move_bound(log_returns: np.ndarray, rules: PlausibilityRules) -> tuple[float, str]:
    """The largest plausible |log move| of a series in one day, and how it was set."""
    scale = robust_scale(log_returns)
    if scale is None:
        return SHORT_HISTORY_BOUND, (
            f"a halving or doubling (fewer than {MIN_RETURNS_FOR_SCALE} returns give no scale)"
        )
    bound = max(rules.jump_floor, rules.jump_scale_multiple * scale)
    how = (
        f"{rules.jump_scale_multiple:g} x its robust daily scale {scale:.4f}, "
        f"at least data.jump_floor {rules.jump_floor:g}"
    )
    return bound, how


def _check_moves(symbol: str, bars: SymbolBars, rules: PlausibilityRules) -> None:
    """Close-to-close, overnight and intraday log moves within the series' own bound."""
    close = np.log(bars.close)
    opens = np.log(bars.open)
    daily = np.diff(close)
    bound, how = move_bound(daily, rules)
    moves = (
        ("close", "from the previous close", daily, 1, bars.close[:-1]),
        ("open", "from the previous close (overnight)", opens[1:] - close[:-1], 1, bars.close[:-1]),
        ("close", "from the day's open (intraday)", close - opens, 0, bars.open),
    )
    for column, what, move, offset, reference in moves:
        with np.errstate(invalid="ignore"):
            over = np.flatnonzero(np.abs(move) > bound)  # NaN (no open) compares False
        for k in over.tolist():
            i = k + offset
            if _waived(symbol, bars, i, rules, column):
                continue
            value = bars.close[i] if column == "close" else bars.open[i]
            ref = float(reference[k])
            raise DataError(
                bars.name, column,
                f"{_where(bars.dates[i], bars.lines, i)}: {column} {value:g} is a "
                f"x{value / ref:.4g} move {what} {ref:g}; this series' plausible daily move is "
                f"|ln| <= {bound:.3f} ({how}): an unadjusted split or a wrong value? "
                + _accept_hint(symbol, bars.dates[i]),
            )


def _check_stale(symbol: str, bars: SymbolBars, rules: PlausibilityRules) -> None:
    """No run of more than STALE_RUN unchanged closes in a series that normally moves;
    the waiver names the run's first unchanged day."""
    daily = np.diff(bars.close)
    scale = robust_scale(np.diff(np.log(bars.close)))
    if scale is None or scale < STALE_MIN_SCALE:
        return
    unchanged = np.concatenate(([False], daily == 0, [False])).astype(np.int8)
    edges = np.diff(unchanged)
    # a run: the close of row `first` repeated on every row up to `last`
    firsts, lasts = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    for first, last in zip(firsts.tolist(), lasts.tolist(), strict=True):
        if last - first <= STALE_RUN or _waived(symbol, bars, first, rules, "close"):
            continue
        raise DataError(
            bars.name, "close",
            f"{_where(bars.dates[first], bars.lines, first)}: close {bars.close[first]:g} "
            f"repeats unchanged in the next {last - first} sessions, to {bars.dates[last]}, "
            f"in a series that moves {scale:.2%} a day (robust scale): a price carried "
            "forward over missing days or a stalled feed? Fill in the real closes or "
            "delete the rows. " + _accept_hint(symbol, bars.dates[first]),
        )


def _waived(symbol: str, bars: SymbolBars, i: int, rules: PlausibilityRules, column: str) -> bool:
    """Whether the row is an accepted extreme day (logged, so the waiver stays visible)."""
    day = bars.dates[i]
    if not rules.allows(symbol, day):
        return False
    log.warning("extreme value accepted by data.allow_extreme", source=bars.name,
                symbol=symbol, day=str(day), column=column)
    return True


# --- macro series -----------------------------------------------------------------------


def check_macro(
    source: str,
    series: MacroSeries,
    rules: PlausibilityRules = DEFAULT_RULES,
    lines: np.ndarray | None = None,
) -> None:
    """Dates and the value range of one macro series, by its name (VIX, T10Y2Y, ...)."""
    check_dates(source, series.dates, lines, weekdays_only=series.name in BUSINESS_DAY_SERIES)
    _check_daily(source, series)
    with np.errstate(invalid="ignore"):
        broken = ~np.isfinite(series.values)
    span = MACRO_RANGES.get(series.name)
    if span is not None:
        low, high = span
        with np.errstate(invalid="ignore"):
            outside = (series.values > high) | (
                (series.values <= low) if series.name == UNCERTAINTY else (series.values < low)
            )
        broken |= outside
    for i in np.flatnonzero(broken).tolist():
        day = series.dates[i]
        if np.isfinite(series.values[i]) and rules.allows(series.name, day):
            log.warning("extreme value accepted by data.allow_extreme", source=source,
                        series=series.name, day=str(day))
            continue
        value = series.values[i]
        expected = "a finite number" if span is None else _range_text(series.name, span)
        hint = "" if not np.isfinite(value) else "; " + _accept_hint(series.name, day)
        raise DataError(
            source, "value",
            f"{_where(day, lines, i)}: {series.name} {value:g} is outside its plausible "
            f"range ({expected}){hint}",
        )


#: the median spacing of a daily series' values, in days, above which it is not daily
MAX_DAILY_SPACING = 4


def _check_daily(source: str, series: MacroSeries) -> None:
    """Every macro series the strategy reads is daily. A weekly or monthly file under a
    daily name would give the regime values dated before they were published: a monthly
    index is dated the 1st of its month and published in the next."""
    if len(series.dates) < 3:
        return
    spacing = float(np.median(np.diff(series.dates.astype("datetime64[D]").astype(np.int64))))
    if spacing > MAX_DAILY_SPACING:
        raise DataError(
            source, "date",
            f"{series.name} is a daily series, but its values are {spacing:g} days apart "
            "(median): a weekly or monthly series (such as USEPUINDXM) under its name "
            "would give the regime values before they were published",
        )


def _range_text(name: str, span: tuple[float, float]) -> str:
    low, high = span
    return f"above {low:g} up to {high:g}" if name == UNCERTAINTY else f"{low:g} to {high:g}"


# --- live sizing prices -----------------------------------------------------------------


def plausible_sizing_prices(
    prices: PriceHistory,
    t: int,
    symbols: tuple[str, ...],
    latest: np.ndarray | None,
    rules: PlausibilityRules,
) -> np.ndarray | None:
    """Latest trade prices (one per symbol of `symbols`) with each one that moved
    implausibly far from its close of day `t` replaced by NaN, so the engine sizes that
    symbol on the close, with a warning: a wrong tick (50x) must not size an order, and
    sizing on the close is worse than on a live price, not wrong. Same bound as a day's
    move; None stays None."""
    if latest is None:
        return None
    checked = np.array(latest, dtype=float)
    for j, symbol in enumerate(symbols):
        closes = prices.close[: t + 1, prices.index_of(symbol)]
        closes = closes[np.isfinite(closes)]
        if not closes.size or not np.isfinite(checked[j]) or checked[j] <= 0:
            continue
        bound, how = move_bound(np.diff(np.log(closes)), rules)
        move = float(np.log(checked[j] / closes[-1]))
        if abs(move) > bound:
            log.warning(
                "implausible latest price; sizing on the close", symbol=symbol,
                latest=float(checked[j]), close=float(closes[-1]), bound=round(bound, 3), rule=how,
            )
            checked[j] = np.nan
    return checked
