"""The NYSE trading calendar offline (exchange_calendars XNYS): sessions, week ends,
"every N trading days". Live, Alpaca's calendar endpoint is checked against it."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from bot.session_table import days_between, session_table, xnys_calendar


def session_mask(dates: np.ndarray) -> np.ndarray:
    """Whether each date is an NYSE trading session (no weekend, no exchange holiday)."""
    days = session_table().days
    dates = dates.astype("datetime64[D]")
    i = np.clip(np.searchsorted(days, dates), 0, len(days) - 1)
    return days[i] == dates


def sessions(start: dt.date | str, end: dt.date | str) -> np.ndarray:
    """Trading days between start and end inclusive, as datetime64[D]. Dates outside
    the calendar get exchange_calendars' own error."""
    lo, hi = pd.Timestamp(start), pd.Timestamp(end)
    if _is_day(lo) and _is_day(hi):
        stored = days_between(lo.date(), hi.date())
        if stored is not None:
            return stored
    found = xnys_calendar().sessions_in_range(lo, hi)
    return found.values.astype("datetime64[D]")


def _is_day(ts: pd.Timestamp) -> bool:
    """A plain date (midnight, no time zone): anything else goes to exchange_calendars,
    which refuses it with its own error."""
    return ts.tz is None and ts == ts.normalize()


def next_session(day: dt.date) -> dt.date:
    """The first trading day after `day` (which need not be a trading day)."""
    days = session_table().days
    if not isinstance(day, dt.datetime):  # a datetime goes to the library, as before
        i = int(np.searchsorted(days, np.datetime64(day), side="right"))
        if days[0] <= np.datetime64(day) and i < len(days):
            return days[i].item()
    cal = xnys_calendar()  # outside the table: the library answers, or raises its own error
    ts = pd.Timestamp(day)
    nxt = cal.date_to_session(ts, direction="next")
    if nxt == ts:
        nxt = cal.next_session(ts)
    return nxt.date()


def last_closed_session(at: dt.datetime) -> dt.date:
    """The last NYSE session that had closed at `at` (an aware time), early closes
    included: the last day whose daily bar is final."""
    table = session_table()
    moment = np.datetime64(at.astimezone(dt.UTC).replace(tzinfo=None), "ns")
    i = int(np.searchsorted(table.closes, moment, side="right")) - 1
    if i < 0:
        raise ValueError(f"no NYSE session closed before {at.isoformat()}")
    return table.days[i].item()


def week_numbers(dates: np.ndarray) -> np.ndarray:
    """Monday-based week number of each day (the epoch, 1970-01-01, was a Thursday)."""
    return (dates.astype("datetime64[D]").astype(np.int64) + 3) // 7


def week_number(day: dt.date) -> int:
    """`week_numbers` of one date, in plain Python (asked on every engine step)."""
    return (day.toordinal() - _EPOCH_ORDINAL + 3) // 7


_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()


def week_ends(dates: np.ndarray) -> np.ndarray:
    """True for each trading day that is the last of its Monday-based week. Inside
    `dates` the next day answers it; for the last day the exchange calendar does (the
    calendar is known in advance, so this is not look-ahead on prices)."""
    week = week_numbers(dates)
    ends = np.empty(len(week), dtype=bool)
    ends[:-1] = week[1:] != week[:-1]
    if len(week):
        last = dates[-1].astype("datetime64[D]").astype(dt.date)
        following = week_numbers(np.array([np.datetime64(next_session(last))]))[0]
        ends[-1] = following != week[-1]
    return ends
