"""`bot run --platform`: the platform's timetable. It only publishes tasks; the workers
(`bot worker`) do the work, so the scheduler needs no database and never blocks on an
account.

The jobs are the daemon's, on the same session triggers (bot.daemon.triggers):
- decision: 5 minutes after the open of each week's first session, the weekly decision
  on the close of the session before it (the last of the previous week);
- poll: every 2 minutes, a poll round (accounts with open orders are followed, finished
  batches closed with their summary);
- close: 20 minutes after each close, every account's equity and positions.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from pathlib import Path

import structlog
from apscheduler.triggers.interval import IntervalTrigger

from bot.daemon.service import (
    JobSpec,
    Schedule,
    add_heartbeat,
    run_on_wall_clock,
)
from bot.daemon.sessions import SessionCalendar
from bot.daemon.triggers import SessionTrigger, WeekStartTrigger

log = structlog.get_logger(__name__)


class Publisher:
    """What the scheduler's jobs publish (the Celery tasks, or a test's recorder)."""

    def __init__(self, mode: str, send: Callable[[str, tuple], None] | None = None) -> None:
        self.mode = mode
        self._send = send or _send_task

    def decide(self, day: dt.date) -> None:
        self._send("leverbot.platform.decide", (day.isoformat(), self.mode))

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


def build_platform_schedule(
    calendar: SessionCalendar,
    publisher: Publisher,
    clock: Callable[[], dt.datetime],
    poll_every: dt.timedelta = dt.timedelta(minutes=2),
    heartbeat: Path | None = None,
) -> Schedule:
    def publish(name: str, action: Callable[[], None]) -> Callable[[], bool]:
        def run() -> bool:
            try:
                action()
                return True
            except Exception as exc:  # noqa: BLE001 - a failed publish never stops the scheduler
                log.error("publish failed", job=name, error=str(exc), exc_type=type(exc).__name__)
                return False
        return run

    def decision() -> None:
        day = weekly_decision_day(calendar, clock())
        if day is not None:
            publisher.decide(day)
            log.info("weekly decision published", day=str(day))

    def close() -> None:
        today = calendar.session_on(clock().date())
        if today is not None:
            publisher.close_round(today.day)

    schedule = Schedule([
        JobSpec("decision", WeekStartTrigger(calendar, -dt.timedelta(minutes=5)),
                publish("decision", decision)),
        JobSpec("poll", IntervalTrigger(seconds=poll_every.total_seconds()),
                publish("poll", publisher.poll_round)),
        JobSpec("close", SessionTrigger(calendar, "close", dt.timedelta(minutes=20)),
                publish("close", close)),
    ])
    if heartbeat is not None:
        add_heartbeat(schedule, heartbeat)
    return schedule


def run_scheduler(schedule: Schedule, stop: threading.Event | None = None) -> None:
    """APScheduler on the wall clock until SIGTERM/SIGINT (the running job finishes)."""
    run_on_wall_clock(schedule, stop)
