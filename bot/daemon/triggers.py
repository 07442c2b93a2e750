"""APScheduler triggers that fire relative to trading sessions, not wall-clock crons:
a cron cannot know holidays or early closes, and in UTC it drifts an hour at every
daylight-saving change. The replay loop asks the same triggers for fire times."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from apscheduler.triggers.base import BaseTrigger

from bot.daemon.sessions import SessionCalendar

_TICK = dt.timedelta(microseconds=1)
# A trigger with no fire time left in its moment's window looks this far further on.
_PROBE_AHEAD = dt.timedelta(days=21)


class _CalendarTrigger(BaseTrigger):
    """A trigger whose fire times are listed by `_times` for a window around a moment.
    The window is the calendar's for the moment's week (SessionCalendar.around), so the
    list is kept per week: a replay asks for the next fire time thousands of times."""

    _KEEP_WEEKS = 8

    def _times(self, around: dt.datetime) -> list[dt.datetime]:
        raise NotImplementedError

    def _week_times(self, around: dt.datetime) -> list[dt.datetime]:
        day = around.date()
        week = day - dt.timedelta(days=day.weekday())  # SessionCalendar.around's grid
        # made here: the subclasses set their fields without calling this class's __init__
        cache: dict[dt.date, list[dt.datetime]] = self.__dict__.setdefault("_by_week", {})
        version = getattr(getattr(self, "calendar", None), "version", 0)
        if self.__dict__.get("_calendar_version") != version:  # the sessions changed
            cache.clear()
            self.__dict__["_calendar_version"] = version
        if week not in cache:
            if len(cache) >= self._KEEP_WEEKS:
                cache.clear()
            cache[week] = self._times(around)
        return cache[week]

    def get_next_fire_time(self, previous_fire_time, now):
        after = previous_fire_time + _TICK if previous_fire_time else now
        for probe in (after, after + _PROBE_AHEAD):
            for when in self._week_times(probe):
                if when >= after:
                    return when
        return None


class SessionTrigger(_CalendarTrigger):
    """Fires `offset` after each session's open or close (offset may be negative)."""

    def __init__(
        self, calendar: SessionCalendar, anchor: Literal["open", "close"], offset: dt.timedelta
    ) -> None:
        self.calendar = calendar
        self.anchor = anchor
        self.offset = offset

    def _times(self, around: dt.datetime) -> list[dt.datetime]:
        return [getattr(s, self.anchor) + self.offset for s in self.calendar.planned_around(around)]

    def __str__(self) -> str:
        return f"session[{self.anchor}{'+' if self.offset >= dt.timedelta(0) else ''}{self.offset}]"


class WeekStartTrigger(_CalendarTrigger):
    """Fires `lead` before the open of the first session of each week (the regime job)."""

    def __init__(self, calendar: SessionCalendar, lead: dt.timedelta) -> None:
        self.calendar = calendar
        self.lead = lead

    def _times(self, around: dt.datetime) -> list[dt.datetime]:
        out, last_week = [], None
        for s in self.calendar.planned_around(around):
            week = s.day.isocalendar()[:2]
            if week != last_week:
                out.append(s.open - self.lead)
                last_week = week
        return out

    def __str__(self) -> str:
        return f"week-start[-{self.lead}]"
