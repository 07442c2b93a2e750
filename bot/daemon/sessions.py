"""Trading sessions for scheduling: the broker's calendar when online, the exchange's
(exchange_calendars XNYS) offline. Both give regular open and close in UTC, early
closes included, so daylight-saving changes and half days are right."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import structlog

from bot.broker.base import TradingSession

log = structlog.get_logger(__name__)

SessionSource = Callable[[dt.date, dt.date], list[TradingSession]]


def exchange_sessions(start: dt.date, end: dt.date) -> list[TradingSession]:
    """NYSE sessions from exchange_calendars (offline)."""
    import pandas as pd

    from bot.calendar import _xnys

    cal = _xnys()
    days = cal.sessions_in_range(pd.Timestamp(start), pd.Timestamp(end))
    opens = cal.opens.loc[days]
    closes = cal.closes.loc[days]
    return [
        TradingSession(d.date(), o.to_pydatetime(), c.to_pydatetime())
        for d, o, c in zip(days, opens, closes, strict=True)
    ]


class SessionCalendar:
    """Cached sessions from a source, with the exchange calendar as fallback."""

    def __init__(self, source: SessionSource | None = None) -> None:
        self._source = source or exchange_sessions
        self._cache: dict[tuple[dt.date, dt.date], list[TradingSession]] = {}

    def between(self, start: dt.date, end: dt.date) -> list[TradingSession]:
        key = (start, end)
        if key not in self._cache:
            try:
                sessions = self._source(start, end)
            except Exception as exc:  # noqa: BLE001 - any broker failure falls back
                log.warning("calendar source failed; using the exchange calendar", error=str(exc))
                sessions = exchange_sessions(start, end)
            self._cache[key] = sessions
        return self._cache[key]

    def around(self, when: dt.datetime, days_back: int = 7, days_ahead: int = 21) -> list[TradingSession]:
        """Sessions in a window around `when`, on a weekly grid so the cache is reused."""
        anchor = when.date() - dt.timedelta(days=when.date().weekday())
        return self.between(anchor - dt.timedelta(days=days_back), anchor + dt.timedelta(days=days_ahead))

    def session_on(self, day: dt.date) -> TradingSession | None:
        for s in self.between(day - dt.timedelta(days=7), day + dt.timedelta(days=7)):
            if s.day == day:
                return s
        return None

    def in_session(self, now: dt.datetime, before_close: dt.timedelta = dt.timedelta(0)) -> bool:
        """`now` is inside a regular session, and at least `before_close` from its end."""
        session = self.session_on(now.astimezone(dt.UTC).date())
        return session is not None and session.open <= now < session.close - before_close

    def previous_session(self, day: dt.date) -> TradingSession:
        """The last session strictly before `day`."""
        sessions = [s for s in self.between(day - dt.timedelta(days=14), day) if s.day < day]
        if not sessions:
            raise LookupError(f"no trading session in the two weeks before {day}")
        return sessions[-1]
