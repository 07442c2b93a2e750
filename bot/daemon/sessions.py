"""Trading sessions for scheduling: the broker's calendar when online, the exchange's
(exchange_calendars XNYS) offline. Both give regular open and close in UTC, early
closes included, so daylight-saving changes and half days are right."""

from __future__ import annotations

import bisect
import datetime as dt
import time
from collections.abc import Callable

import numpy as np
import structlog

from bot.broker.base import TradingSession
from bot.errors import BotError
from bot.session_table import session_table, xnys_calendar

log = structlog.get_logger(__name__)

SessionSource = Callable[[dt.date, dt.date], list[TradingSession]]

#: how many days past a moment's week SessionCalendar.around asks for sessions
DAYS_AHEAD = 21


def exchange_sessions(start: dt.date, end: dt.date) -> list[TradingSession]:
    """NYSE sessions from exchange_calendars (offline), from a per-year index: the
    scheduler asks for overlapping windows hundreds of times a replay, and a pandas
    query each time cost more than the jobs themselves."""
    return _EXCHANGE.between(start, end)


def exchange_calendar_bounds() -> tuple[dt.date, dt.date]:
    """The first and last session the offline exchange calendar knows (exchange_calendars
    ends its calendar about a year after the day it is built)."""
    return _EXCHANGE.bounds()


def exchange_sessions_uncached(start: dt.date, end: dt.date) -> list[TradingSession]:
    """NYSE sessions from exchange_calendars, queried now (what the index is built from)."""
    import pandas as pd

    cal = xnys_calendar()
    days = cal.sessions_in_range(pd.Timestamp(start), pd.Timestamp(end))
    opens = cal.opens.loc[days]
    closes = cal.closes.loc[days]
    return [
        TradingSession(d.date(), o.to_pydatetime(), c.to_pydatetime())
        for d, o, c in zip(days, opens, closes, strict=True)
    ]


class _YearIndex:
    """The exchange's sessions, loaded a calendar year at a time and answered by bisection.
    Spans outside the calendar's first and last session (and empty ones) go to the
    uncached query, so its errors (DateOutOfBounds) and answers stay the same."""

    def __init__(self) -> None:
        self._years: dict[int, tuple[list[dt.date], list[TradingSession]]] = {}
        self._bounds: tuple[dt.date, dt.date] | None = None

    def bounds(self) -> tuple[dt.date, dt.date]:
        if self._bounds is None:
            days = session_table().days
            self._bounds = (days[0].item(), days[-1].item())
        return self._bounds

    def between(self, start: dt.date, end: dt.date) -> list[TradingSession]:
        first, last = self.bounds()
        if end < start or start < first or end > last:
            return exchange_sessions_uncached(start, end)
        out: list[TradingSession] = []
        for year in range(start.year, end.year + 1):
            days, sessions = self._year(year)
            lo = bisect.bisect_left(days, start) if year == start.year else 0
            hi = bisect.bisect_right(days, end) if year == end.year else len(days)
            out.extend(sessions[lo:hi])
        return out

    def _year(self, year: int) -> tuple[list[dt.date], list[TradingSession]]:
        """One calendar year's sessions from the stored table (bot.session_table): the
        same days and hours as the calendar, without building it in every process."""
        if year not in self._years:
            table = session_table()
            lo, hi = np.searchsorted(
                table.days, [np.datetime64(f"{year:04d}-01-01"), np.datetime64(f"{year + 1:04d}-01-01")]
            )
            days: list[dt.date] = table.days[lo:hi].tolist()
            sessions = [
                TradingSession(day, _utc(opened), _utc(closed))
                for day, opened, closed in zip(
                    days, table.opens[lo:hi].tolist(), table.closes[lo:hi].tolist(), strict=True
                )
            ]
            self._years[year] = (days, sessions)
        return self._years[year]


def _utc(nanoseconds: int) -> dt.datetime:
    """An aware UTC datetime from a datetime64[ns] value's integer (tolist() gives those:
    datetime cannot hold nanoseconds; session times are whole minutes)."""
    return dt.datetime.fromtimestamp(nanoseconds // 1_000_000_000, dt.UTC)


_EXCHANGE = _YearIndex()


#: how old a broker's calendar may get before the daemons ask again (a closure
#: announced during the week must reach them before the next session)
CALENDAR_MAX_AGE_S = 3 * 3600.0

#: how many weeks past the current one the calendar job reads ahead: the triggers look
#: up to DAYS_AHEAD past the next fire time's week for their next fire time
REFRESH_WEEKS = 4


def week_window(
    day: dt.date, days_back: int = 7, days_ahead: int = DAYS_AHEAD
) -> tuple[dt.date, dt.date]:
    """The window of sessions SessionCalendar reads for `day`: from `days_back` before its
    week's Monday to `days_ahead` after it, on a weekly grid so the cache is reused."""
    monday = day - dt.timedelta(days=day.weekday())
    return monday - dt.timedelta(days=days_back), monday + dt.timedelta(days=days_ahead)


class SessionCalendar:
    """Cached sessions from a source, with the exchange calendar as fallback.

    With `max_age` (seconds) a window is asked for again once it is that old, so a
    closure the exchange announces during the week (a storm, a national day of
    mourning) reaches a running daemon; `version` counts the answers that changed, for
    the triggers' own caches. A failed refresh keeps the window the source gave before.

    With `source_may_hang` (a broker over HTTP, whose retries can take minutes) the
    scheduler's triggers never ask the source themselves (see planned_around): the
    daemon's calendar job asks it ahead of time (refresh_ahead), off the scheduler's
    thread."""

    def __init__(
        self, source: SessionSource | None = None, *, max_age: float | None = None,
        monotonic: Callable[[], float] = time.monotonic, source_may_hang: bool = False,
    ) -> None:
        self._source = source or exchange_sessions
        self._max_age = max_age
        self._monotonic = monotonic
        self.source_may_hang = source_may_hang
        self._cache: dict[tuple[dt.date, dt.date], tuple[float, list[TradingSession]]] = {}
        self.version = 0

    def between(self, start: dt.date, end: dt.date) -> list[TradingSession]:
        key = (start, end)
        cached = self._cache.get(key)
        now = self._monotonic()
        if cached is not None and (self._max_age is None or now - cached[0] < self._max_age):
            return cached[1]
        try:
            sessions = self._source(start, end)
            if not sessions and (end - start).days >= 14:  # no two weeks pass without one
                raise ValueError(f"the calendar answer holds no session from {start} to {end}")
        except Exception as exc:  # noqa: BLE001 - any broker failure falls back
            if cached is not None:
                log.warning("calendar refresh failed; keeping the sessions read before",
                            error=str(exc))
                self._cache[key] = (now, cached[1])
                return cached[1]
            log.warning("calendar source failed; using the exchange calendar", error=str(exc))
            sessions = exchange_sessions(start, end)
        if cached is not None and sessions != cached[1]:
            self.version += 1
            log.warning("the exchange calendar changed", start=str(start), end=str(end))
        elif cached is None and self.source_may_hang:
            self.version += 1  # the triggers may have planned this window on the exchange's
        self._cache[key] = (now, sessions)
        return sessions

    def planned_around(self, when: dt.datetime) -> list[TradingSession]:
        """The sessions around `when` for the scheduler's triggers, which run on the
        scheduler's own thread: while they wait, no job starts and the heartbeat stops.
        When the source may hang, this never asks it: the window it gave before (however
        old), else the exchange calendar's, until refresh_ahead brings the source's."""
        if not self.source_may_hang:
            return self.around(when)
        window = week_window(when.date())
        cached = self._cache.get(window)
        return cached[1] if cached is not None else exchange_sessions(*window)

    def refresh_ahead(self, now: dt.datetime, weeks: int = REFRESH_WEEKS,
                      stopping: Callable[[], bool] = lambda: False) -> None:
        """Ask the source for the windows of `now`'s week and the `weeks` after it (each
        only once it is older than the max age): the ones the triggers plan on. Ends
        between two reads once `stopping` says so: each read may retry for minutes while
        the broker is down, and a stopping daemon waited for all of them."""
        for week in range(weeks + 1):
            if stopping():
                return
            self.around(now + dt.timedelta(weeks=week))

    def around(self, when: dt.datetime, days_back: int = 7, days_ahead: int = DAYS_AHEAD) -> list[TradingSession]:
        """Sessions in a window around `when`, on a weekly grid so the cache is reused."""
        return self._week(when.date(), days_back, days_ahead)

    def _week(self, day: dt.date, days_back: int = 7, days_ahead: int = DAYS_AHEAD) -> list[TradingSession]:
        return self.between(*week_window(day, days_back, days_ahead))

    def session_on(self, day: dt.date) -> TradingSession | None:
        """From the cached window of `day`'s week (it holds the whole week)."""
        for s in self._week(day):
            if s.day == day:
                return s
        return None

    def in_session(self, now: dt.datetime, before_close: dt.timedelta = dt.timedelta(0)) -> bool:
        """`now` is inside a regular session, and at least `before_close` from its end."""
        session = self.session_on(now.astimezone(dt.UTC).date())
        return session is not None and session.open <= now < session.close - before_close

    def previous_session(self, day: dt.date) -> TradingSession:
        """The last session strictly before `day`, at most two weeks back. The cached
        window of `day`'s week reaches a week before it, which holds one but after the
        longest closures (a week after 9/11)."""
        window = self._week(day)
        if not window or window[0].day >= day:
            window = self.between(day - dt.timedelta(days=14), day)
        sessions = [s for s in window if s.day < day]
        if not sessions:
            raise BotError(f"no trading session in the two weeks before {day} in the calendar")
        return sessions[-1]
