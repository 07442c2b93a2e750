"""Trying a failed session job again later in its session: the decision within the
trading day while it is still safe, the close job later that evening.

A job that fails (market data still rate-limited after the HTTP retry budget, a broker
outage) would otherwise lose the day: no decision, or no equity and positions for it.
The retry slots are fire times of their own trigger, so the live scheduler and the replay
loop run them alike; a slot does nothing unless its job's last run failed. Every failure
is an incident naming the session, the retry and the next slot (or why there is none).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import structlog

from bot.broker.base import TradingSession
from bot.daemon.sessions import SessionCalendar
from bot.daemon.triggers import _CalendarTrigger

log = structlog.get_logger(__name__)

M = dt.timedelta(minutes=1)


@dataclass(frozen=True)
class RetryPlan:
    """When a session job runs (`offset` after the session's `anchor`) and when it is
    tried again after a failure (`delays` after that), never later than `cutoff` after
    the anchor."""

    anchor: Literal["open", "close"]
    offset: dt.timedelta
    delays: tuple[dt.timedelta, ...]
    cutoff: Callable[[TradingSession], dt.datetime]

    def regular(self, session: TradingSession) -> dt.datetime:
        return getattr(session, self.anchor) + self.offset

    def slots(self, session: TradingSession) -> list[dt.datetime]:
        base, last = self.regular(session), self.cutoff(session)
        return [base + d for d in self.delays if base + d <= last]

    @property
    def catch_up_grace(self) -> dt.timedelta:
        """How late the regular run may still start (a restart, a machine that slept):
        until the last safe time, measured on a regular session."""
        day = TradingSession(dt.date(2024, 1, 2), dt.datetime(2024, 1, 2, 14, 30, tzinfo=dt.UTC),
                             dt.datetime(2024, 1, 2, 21, 0, tzinfo=dt.UTC))
        return self.cutoff(day) - self.regular(day)


#: The decision 5 minutes after the open; again after 10, 25, 55 and 115 minutes, but
#: never in the last hour of the session: sells must fill and the buys go out after them.
OPEN_PLAN = RetryPlan(
    "open", 5 * M, (10 * M, 25 * M, 55 * M, 115 * M), lambda s: s.close - 60 * M
)
#: The close job 20 minutes after the close; again 15, 45, 105 and 225 minutes later
#: (the evening, long before the next open).
CLOSE_PLAN = RetryPlan(
    "close", 20 * M, (15 * M, 45 * M, 105 * M, 225 * M), lambda s: s.close + 8 * 60 * M
)


class RetrySlotTrigger(_CalendarTrigger):
    """Fires at every retry slot of a plan (the job decides whether there is work)."""

    def __init__(self, calendar: SessionCalendar, plan: RetryPlan) -> None:
        self.calendar = calendar
        self.plan = plan

    def _times(self, around: dt.datetime) -> list[dt.datetime]:
        return sorted(t for s in self.calendar.planned_around(around) for t in self.plan.slots(s))

    def __str__(self) -> str:
        return f"retry[{self.plan.anchor}+{self.plan.offset}]"


Runner = Callable[[str, Callable[[], None], Callable[[], dict]], bool]


class RetryingJob:
    """A session job with its retries. `run_job` is TradingJobs.run; `job(day)` does the
    work for the session `day` (None: the session of today, as at its regular time);
    `refusal(day)` says why a retry would be unsafe now (None: it is safe)."""

    def __init__(
        self,
        name: str,
        job: Callable[..., None],
        plan: RetryPlan,
        calendar: SessionCalendar,
        now: Callable[[], dt.datetime],
        run_job: Runner,
        refusal: Callable[[dt.date], str | None] = lambda _day: None,
    ) -> None:
        self.name = name
        self.job = job
        self.plan = plan
        self.calendar = calendar
        self.now = now
        self.run_job = run_job
        self.refusal = refusal
        self.pending: TradingSession | None = None  # the session whose job failed
        self.retries = 0

    def regular(self) -> bool:
        """The job at its regular time, or later after a restart (within its grace): for
        the session whose regular time passed last (the evening's close job runs after
        midnight UTC for the session of the day before)."""
        now = self.now()
        session = self._latest_due(now)
        self.pending, self.retries = None, 0
        if session is None:
            # A fire time computed before the calendar changed (a closure announced after
            # it was scheduled): the session it was for is gone, and the one before it
            # was done at its own time. Doing it again would decide on an old close.
            log.warning("job skipped: no session is due at this time (the calendar "
                        "changed since it was scheduled)", job=self.name, at=now.isoformat())
            return True
        ok = self.run_job(self.name, lambda: self.job(session.day), lambda: self._after_failure(session))
        if not ok and self._next_slot(session) is not None:
            self.pending = session
        return ok

    def retry(self) -> bool | None:
        """A retry slot: the failed job again, if one is pending and still safe to run;
        None when there was nothing to do."""
        session = self.pending
        if session is None:
            return None
        reason = self._refused(session)
        if reason is not None:
            self.pending = None
            log.warning("job retry skipped", job=self.name, session=str(session.day), reason=reason)
            return None
        self.retries += 1
        ok = self.run_job(
            self.name, lambda: self.job(session.day), lambda: self._after_failure(session)
        )
        if ok:
            log.info("job recovered", job=self.name, session=str(session.day), retry=self.retries)
            self.pending = None
        elif self._next_slot(session) is None:
            log.error("job gave up", job=self.name, session=str(session.day), retries=self.retries)
            self.pending = None
        return ok

    def _latest_due(self, now: dt.datetime) -> TradingSession | None:
        """The session whose regular time passed last, if it passed within the catch-up
        grace (the scheduler's own: no later run of it is a regular one)."""
        grace = self.plan.catch_up_grace
        due = [s for s in self.calendar.around(now) if self.plan.regular(s) <= now]
        return due[-1] if due and now - self.plan.regular(due[-1]) <= grace else None

    def _refused(self, session: TradingSession) -> str | None:
        if self.now() > self.plan.cutoff(session):
            return f"past the last safe time {self.plan.cutoff(session):%Y-%m-%d %H:%M} UTC"
        return self.refusal(session.day)

    def _next_slot(self, session: TradingSession) -> dt.datetime | None:
        if self.refusal(session.day) is not None:
            return None
        now = self.now()
        return next((t for t in self.plan.slots(session) if t > now), None)

    def _after_failure(self, session: TradingSession) -> dict:
        """What the failure's incident records about retrying it."""
        details: dict = {"session": session.day.isoformat(), "retry": self.retries}
        slot = self._next_slot(session)
        details["next_retry"] = slot.isoformat() if slot is not None else None
        if slot is None:
            details["no_retry"] = self.refusal(session.day) or "no retry slot left in the session"
        return details
