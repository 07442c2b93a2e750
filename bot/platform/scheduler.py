"""`bot run --platform`: the platform's timetable. It only publishes tasks; the workers
(`bot worker`) do the work, so the scheduler never blocks on an account. Its one use of
the trade log is to record each weekly decision it publishes as waiting, which `bot
platform status` shows until a worker takes it; without a trade log it publishes all
the same.

The jobs are the daemon's, on the same session triggers (bot.daemon.triggers):
- decision: 5 minutes after the open of each week's first session, the weekly decision
  on the close of the session before it (the last of the previous week);
- poll: every 2 minutes, a poll round (accounts with open orders are followed, finished
  batches closed with their summary);
- close: 20 minutes after each close, every account's equity and positions.

A decision or close whose publish fails (RabbitMQ down) is owed and published again
before each poll round until it goes out; a scheduler (re)started within 6 hours of a
decision's time or 8 hours of a close's publishes it then. Both are idempotent at the
workers (one batch per day and mode, one close task per account and day), so a second
publish does nothing twice.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
import structlog
from apscheduler.triggers.interval import IntervalTrigger

from bot.daemon.service import (
    JobSpec,
    Schedule,
    add_calendar_refresh,
    add_heartbeat,
    run_on_wall_clock,
)
from bot.daemon.sessions import SessionCalendar
from bot.daemon.triggers import SessionTrigger, WeekStartTrigger
from bot.logs import mask_text
from bot.platform import store

log = structlog.get_logger(__name__)


class Publisher:
    """What the scheduler's jobs publish (the Celery tasks, or a test's recorder).

    With a trade log (`engine`) a weekly decision is recorded as waiting before it is
    published (bot.platform.store.record_published), so that `bot platform status` shows
    it until a worker takes it, even while no worker runs; a publish that fails withdraws
    the record it made. A record that cannot be written is logged and never stops the
    publish."""

    def __init__(
        self,
        mode: str,
        send: Callable[[str, tuple], None] | None = None,
        engine: sa.Engine | None = None,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self.mode = mode
        self._send = send or _send_task
        self._engine = engine
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))

    def decide(self, day: dt.date) -> None:
        recorded = self._record_waiting(day)
        try:
            self._send("leverbot.platform.decide", (day.isoformat(), self.mode))
        except BaseException:
            if recorded:  # nothing waits: the decision never reached the queue
                self._withdraw(day)
            raise

    def _record_waiting(self, day: dt.date) -> bool:
        if self._engine is None:
            return False
        try:
            return store.record_published(self._engine, day, self.mode, self._clock())
        except Exception as exc:  # noqa: BLE001 - the record is for status; the publish counts
            log.warning("decision not recorded as waiting", day=str(day), mode=self.mode,
                        error=mask_text(str(exc)))
            return False

    def _withdraw(self, day: dt.date) -> None:
        try:
            store.drop_waiting(self._engine, day, self.mode)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - the publish's own error is the one to raise
            log.warning("waiting decision not withdrawn", day=str(day), mode=self.mode,
                        error=mask_text(str(exc)))

    def poll_round(self) -> None:
        self._send("leverbot.platform.poll_round", ())

    def close_round(self, day: dt.date) -> None:
        self._send("leverbot.platform.close_round", (day.isoformat(),))


def _send_task(name: str, args: tuple) -> None:
    from bot.platform.tasks import app

    app.send_task(name, args=list(args))


def weekly_decision_day(calendar: SessionCalendar, now: dt.datetime) -> dt.date | None:
    """The close this week's decision is made on: the session before today's (today
    being the week's first session); None if the market does not open today."""
    today = calendar.session_on(now.astimezone(dt.UTC).date())
    if today is None:
        return None
    return calendar.previous_session(today.day).day


#: how late after its time a decision or close is still published, after a restart
#: (the decision: the rest of the session; the close: the evening, as the daemon's)
DECISION_GRACE = dt.timedelta(hours=6)
CLOSE_DELAY = dt.timedelta(minutes=20)  # after the close: the day's bars are final
CLOSE_GRACE = dt.timedelta(hours=8)


def build_platform_schedule(
    calendar: SessionCalendar,
    publisher: Publisher,
    clock: Callable[[], dt.datetime],
    poll_every: dt.timedelta = dt.timedelta(minutes=2),
    heartbeat: Path | None = None,
) -> Schedule:
    # Publishes that failed (RabbitMQ down at 09:35): tried again before every poll round
    # until they go out or their time is past, so a week's decision or a day's close is
    # late, never lost, and never sent when it would do harm: a close after the next
    # session opened would value that morning's holdings at the old close, and a week's
    # decision is dropped once a newer one is due.
    owed: dict[str, tuple[Callable[[], None], dt.datetime | None]] = {}

    def publish(name: str, action: Callable[[], None]) -> Callable[[], bool]:
        def run() -> bool:
            try:
                action()
                return True
            except Exception as exc:  # noqa: BLE001 - a failed publish never stops the scheduler
                log.error("publish failed", job=name, error=mask_text(str(exc)),
                          exc_type=type(exc).__name__)
                return False
        return run

    def owing(key: str, action: Callable[[], None], until: dt.datetime | None) -> None:
        """`action` now; if it fails, owed until `until` (and the error raised, so the
        job says so)."""
        try:
            action()
        except Exception:
            owed[key] = (action, until)
            raise
        owed.pop(key, None)

    def pay_owed() -> None:
        now = clock()
        for key, (action, until) in list(owed.items()):
            if until is not None and now > until:
                del owed[key]
                log.error("owed publish dropped: too late to send", publish=key,
                          due_by=until.isoformat())
                continue
            try:
                action()
            except Exception as exc:  # noqa: BLE001 - still owed: the next round tries again
                log.warning("owed publish failed again", publish=key, error=mask_text(str(exc)))
                continue
            del owed[key]
            log.warning("owed publish sent late", publish=key)

    def drop_owed_decisions() -> None:
        for key in [k for k in owed if k.startswith("decision ")]:
            del owed[key]
            log.error("owed publish dropped: a newer weekly decision is due", publish=key)

    def decision() -> None:
        day = weekly_decision_day(calendar, clock())
        if day is not None:
            drop_owed_decisions()  # last week's, if it never went out
            owing(f"decision {day}", lambda: publisher.decide(day), None)
            log.info("weekly decision published", day=str(day))

    def close() -> None:
        # The session whose close job time passed last: after a restart in the evening
        # (past midnight UTC) that is the day before's, not the date of the moment.
        now = clock()
        due = [s for s in calendar.around(now) if s.close + CLOSE_DELAY <= now]
        if due:
            day = due[-1].day
            after = [s for s in calendar.around(now) if s.day > day]
            owing(f"close {day}", lambda: publisher.close_round(day),
                  after[0].open if after else None)

    def poll() -> None:
        pay_owed()
        publisher.poll_round()

    schedule = Schedule([
        JobSpec("decision", WeekStartTrigger(calendar, -dt.timedelta(minutes=5)),
                publish("decision", decision), catch_up=True, grace=DECISION_GRACE),
        JobSpec("poll", IntervalTrigger(seconds=poll_every.total_seconds()),
                publish("poll", poll)),
        JobSpec("close", SessionTrigger(calendar, "close", CLOSE_DELAY),
                publish("close", close), catch_up=True, grace=CLOSE_GRACE),
    ])
    if calendar.source_may_hang:
        add_calendar_refresh(schedule, calendar, clock)
    if heartbeat is not None:
        add_heartbeat(schedule, heartbeat)
    return schedule


def run_scheduler(schedule: Schedule, stop: threading.Event | None = None) -> None:
    """APScheduler on the wall clock until SIGTERM/SIGINT (the running job finishes)."""
    run_on_wall_clock(schedule, stop)
