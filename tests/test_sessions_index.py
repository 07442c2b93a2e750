"""The session index answers as the exchange calendar queried each time did: every day of
spans with daylight-saving changes, half days, a year end and the week after 9/11."""

from __future__ import annotations

import datetime as dt

import pytest
from exchange_calendars.errors import DateOutOfBounds

from bot.daemon.sessions import SessionCalendar, exchange_sessions, exchange_sessions_uncached

SPANS = [
    (dt.date(2023, 12, 1), dt.date(2025, 3, 31)),  # DST March and November 2024, half days
    (dt.date(2001, 8, 27), dt.date(2001, 10, 8)),  # closed 11-14 September 2001
]


def days(start: dt.date, end: dt.date):
    while start <= end:
        yield start
        start += dt.timedelta(days=1)


def session_on_queried(day: dt.date):
    """SessionCalendar.session_on as it was: a query of the two weeks around `day`."""
    found = [s for s in exchange_sessions_uncached(day - dt.timedelta(days=7), day + dt.timedelta(days=7))
             if s.day == day]
    return found[0] if found else None


def previous_session_queried(day: dt.date):
    return [s for s in exchange_sessions_uncached(day - dt.timedelta(days=14), day) if s.day < day][-1]


@pytest.mark.parametrize(("start", "end"), SPANS, ids=["2024", "2001"])
def test_session_on_and_previous_session_answer_as_the_queries_did(start, end):
    calendar = SessionCalendar()
    for day in days(start, end):
        assert calendar.session_on(day) == session_on_queried(day), day
        assert calendar.previous_session(day) == previous_session_queried(day), day


@pytest.mark.parametrize(("start", "end"), SPANS, ids=["2024", "2001"])
def test_exchange_sessions_between_answers_as_the_query(start, end):
    everything = exchange_sessions_uncached(start, end)
    assert exchange_sessions(start, end) == everything
    assert any(s.close.hour in (17, 18) for s in everything) or start.year == 2001  # half days
    for first in days(start, start + dt.timedelta(days=40)):
        for length in (0, 1, 6, 13, 28, 400):
            last = first + dt.timedelta(days=length)
            assert exchange_sessions(first, last) == exchange_sessions_uncached(first, last)
    # DST: 09:30 New York is 14:30 UTC in winter and 13:30 UTC in summer
    assert {s.open.hour for s in exchange_sessions(dt.date(2024, 3, 1), dt.date(2024, 3, 20))} == {13, 14}


def test_outside_the_calendar_it_fails_as_the_query_does():
    assert exchange_sessions(dt.date(2024, 1, 5), dt.date(2024, 1, 1)) == []
    with pytest.raises(DateOutOfBounds):
        exchange_sessions(dt.date(1899, 12, 1), dt.date(1900, 1, 10))
    with pytest.raises(DateOutOfBounds):
        exchange_sessions(dt.date(2024, 1, 1), dt.date(2200, 1, 1))


def test_a_broker_calendar_is_asked_for_whole_weeks_only():
    """session_on and previous_session read the weekly windows the triggers use, so a
    live daemon asks the broker for a new window once a week, not for every day."""
    asked = []

    def broker(start, end):
        asked.append((start, end))
        return exchange_sessions_uncached(start, end)

    calendar = SessionCalendar(broker)
    for day in days(dt.date(2024, 11, 25), dt.date(2024, 12, 1)):
        assert calendar.session_on(day) == session_on_queried(day)
        assert calendar.previous_session(day) == previous_session_queried(day)
        calendar.around(dt.datetime.combine(day, dt.time(15), dt.UTC))
    assert len(asked) == 1
