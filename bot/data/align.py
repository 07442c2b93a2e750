"""Aligning per-symbol daily bars on one calendar: the one rule every loader follows.

All symbols go on the union of their dates. Before a symbol's first bar its close is NaN
(not listed yet). A short hole after it (a halt, a day without a trade on a thin feed) is
forward-filled and marked in `PriceHistory.filled`, open NaN, so returns can use the
carried close but no order ever fills at it; a longer hole is an error. NYSE sessions
missing from every symbol at once (which the union of dates cannot show) are put back
as rows and filled the same way, so a few days' move never counts as one day's. A loader may
also say how long a symbol may lag behind the others at the end (`carry_after_last`):
later days stay NaN, so a symbol that stopped updating cannot look current.

Every symbol's bars pass the plausibility rules (bot.data.plausibility) here, before they
are aligned: this is the one door through which every loader's prices come in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import structlog

from bot.data.base import PriceHistory
from bot.data.plausibility import DEFAULT_RULES, PlausibilityRules, check_bars
from bot.errors import DataError

log = structlog.get_logger(__name__)

#: the longest hole (trading days) forward-filled; a longer one is an error
MAX_FILLED_GAP = 5


class SymbolBars(NamedTuple):
    """One symbol's bars on its own dates; `name` says where they came from (errors).
    High and low are only checked (nothing trades on them); None when the source has none.
    `lines` are the rows' line numbers in a file, for error messages."""

    name: str
    dates: np.ndarray  # datetime64[D], ascending
    open: np.ndarray  # NaN where the source has no open
    close: np.ndarray
    high: np.ndarray | None = None
    low: np.ndarray | None = None
    lines: np.ndarray | None = None


def align_prices(
    symbols: tuple[str, ...],
    bars: Sequence[SymbolBars],
    carry_after_last: int | None = None,
    rules: PlausibilityRules = DEFAULT_RULES,
) -> PriceHistory:
    """`bars` (one per symbol, in `symbols` order), checked, on the union of their dates.

    `carry_after_last`: how many days past its last bar a symbol is carried; None fills
    to the end (a file is complete as written)."""
    for symbol, b in zip(symbols, bars, strict=True):
        check_bars(symbol, b, rules)
    dates = np.unique(np.concatenate([b.dates for b in bars]))
    dates = _with_common_holes(dates, [b.name for b in bars])
    close = np.full((len(dates), len(bars)), np.nan)
    opens = np.full((len(dates), len(bars)), np.nan)
    filled = np.zeros((len(dates), len(bars)), dtype=bool)
    for j, b in enumerate(bars):
        rows = np.searchsorted(dates, b.dates)
        close[rows, j], opens[rows, j] = b.close, b.open
        filled[:, j] = _fill_gaps(b.name, dates, rows, close[:, j], carry_after_last)
    return PriceHistory(
        dates=dates, symbols=symbols, close=close, open=opens,
        filled=filled if filled.any() else None,
    )


def _with_common_holes(dates: np.ndarray, names: list[str]) -> np.ndarray:
    """`dates` with the NYSE sessions missing from every symbol at once put back (each
    symbol's _fill_gaps then carries its close over them, marked filled), with a warning
    naming each hole. The union of the dates cannot show such a hole: three days deleted
    from every file (or from a one-symbol backtest's file) were one day's move to the
    volatility windows, the stops and the drawdown, where a hole in one file is filled.
    A hole longer than a filled one may be is refused: nothing can stand in for it."""
    expected = _sessions_between(dates)
    if expected is None or len(expected) == len(dates):
        return dates
    starts, lengths = _missing_runs(np.isin(expected, dates))
    series = ", ".join(names) if len(names) <= 3 else f"all {len(names)} price series"
    hole = _first_long_hole(starts, lengths)
    if hole is not None:
        start, length = hole
        first, last = expected[start], expected[start + length - 1]
        raise DataError(
            series,
            "date",
            f"{length} NYSE sessions missing from every one, {first} to {last}: the "
            "history has a hole, which would count as one day; fill it or start after it",
        )
    for start, length in zip(starts.tolist(), lengths.tolist(), strict=True):
        log.warning("sessions_missing_from_every_series_forward_filled", series=series,
                    days=length, first_missing=str(expected[start]),
                    last_missing=str(expected[start + length - 1]))
    return np.union1d(dates, expected)


def _sessions_between(dates: np.ndarray) -> np.ndarray | None:
    """The NYSE sessions from the first to the last of `dates` (datetime64[D]); None when
    there is nothing to compare (under two dates, or beyond the exchange calendar)."""
    if len(dates) < 2:
        return None
    from bot.calendar import sessions

    try:
        return np.asarray(sessions(str(dates[0]), str(dates[-1])), dtype="datetime64[D]")
    except Exception:  # noqa: BLE001 - beyond the exchange calendar: nothing to check against
        return None


def _fill_gaps(
    name: str, dates: np.ndarray, rows: np.ndarray, close: np.ndarray, carry: int | None
) -> np.ndarray:
    """Forward-fill (in place) the holes after the first row, up to `carry` days past the
    last one; returns which days were filled."""
    first, last = int(rows[0]), int(rows[-1])
    end = len(dates) if carry is None else min(len(dates), last + carry + 1)
    filled = np.zeros(len(dates), dtype=bool)
    present = np.zeros(end - first, dtype=bool)
    present[rows - first] = True
    if present.all():
        return filled
    starts, lengths = _missing_runs(present)
    hole = _first_long_hole(starts, lengths)
    if hole is not None:
        start, length = hole
        raise DataError(
            name,
            "date",
            f"{length} consecutive trading days missing from {dates[first + start]} "
            f"(other symbols have them); at most {MAX_FILLED_GAP} are forward-filled",
        )
    last_seen = np.maximum.accumulate(np.where(present, np.arange(present.size), 0))
    segment = close[first:end]
    segment[:] = segment[last_seen]
    filled[first:end] = ~present
    log.warning(
        "price_gaps_forward_filled",
        path=name,  # the file, or "alpaca:SYMBOL"
        days=int(lengths.sum()),
        first_missing=str(dates[first + starts[0]]),
    )
    return filled


def _first_long_hole(starts: np.ndarray, lengths: np.ndarray) -> tuple[int, int] | None:
    """(offset, length) of the first of the missing runs (_missing_runs) longer than
    MAX_FILLED_GAP, if any."""
    too_long = np.flatnonzero(lengths > MAX_FILLED_GAP)
    if not too_long.size:
        return None
    k = int(too_long[0])
    return int(starts[k]), int(lengths[k])


def _missing_runs(present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start offsets and lengths of each stretch of consecutive False values."""
    edges = np.diff(np.concatenate(([0], (~present).astype(np.int8), [0])))
    starts = np.flatnonzero(edges == 1)
    return starts, np.flatnonzero(edges == -1) - starts
