"""A trigger that raises ends APScheduler's thread; the daemon must then exit (for systemd
or Docker to restart it), not live on trading nothing."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from apscheduler.triggers.base import BaseTrigger

from bot.daemon import service
from bot.daemon.service import JobSpec, Schedule, run_on_wall_clock
from bot.errors import BotError


class BrokenCalendarTrigger(BaseTrigger):
    """Fires at once, then fails to compute its next time, as a calendar beyond its
    table did (DateOutOfBounds)."""

    def __init__(self) -> None:
        self.asked = 0

    def get_next_fire_time(self, previous_fire_time, now):
        self.asked += 1
        if previous_fire_time is None:
            return now
        raise RuntimeError("DateOutOfBounds: the calendar ends before the next session")


# the scheduler thread's own exception is what this test provokes
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_the_daemon_exits_when_its_scheduler_thread_dies(monkeypatch) -> None:
    monkeypatch.setattr(service, "WATCHDOG_SECONDS", 0.05)
    ran, stopped = threading.Event(), []
    schedule = Schedule([JobSpec("decision", BrokenCalendarTrigger(), lambda: ran.set() or True)])
    with pytest.raises(BotError, match="the scheduler stopped"):
        run_on_wall_clock(schedule, threading.Event(), on_stop=lambda: stopped.append(True))
    assert stopped == [True]  # the last records are still written


def test_a_healthy_scheduler_runs_until_asked_to_stop(monkeypatch) -> None:
    monkeypatch.setattr(service, "WATCHDOG_SECONDS", 0.05)
    stop = threading.Event()
    spec = JobSpec("noop", _Never(), lambda: True)
    threading.Timer(0.3, stop.set).start()
    run_on_wall_clock(Schedule([spec]), stop)  # returns, no error
    assert stop.is_set()


class _Never(BaseTrigger):
    def get_next_fire_time(self, previous_fire_time, now):
        return now + dt.timedelta(days=1)


def test_the_daemon_exits_when_a_job_hangs(monkeypatch) -> None:
    """A job past its limit used to withhold the heartbeat only: Compose does not restart
    an unhealthy container, and the unit has no watchdog, so the daemon stayed up trading
    nothing. It now ends the process (exit status 70) for the supervisor to restart."""
    from apscheduler.triggers.date import DateTrigger

    from bot.daemon.watch import JobWatch

    monkeypatch.setattr(service, "WATCHDOG_SECONDS", 0.05)
    watch = JobWatch(limit=0.3)
    release, stop, exits = threading.Event(), threading.Event(), []

    def hanging_job() -> None:
        with watch.running("open"):
            release.wait(10)

    def exit_process(status: int) -> None:  # the real one is os._exit
        exits.append(status)
        release.set()
        stop.set()

    now = dt.datetime.now(dt.UTC)
    schedule = Schedule([JobSpec("open", DateTrigger(now), hanging_job)])
    run_on_wall_clock(schedule, stop, watch=watch, exit_process=exit_process)
    assert exits == [service.EXIT_HUNG]


def test_a_job_queued_behind_the_running_one_does_not_start_once_the_daemon_stops(monkeypatch) -> None:
    """SIGTERM while a poll retried through 429s: the 09:35 decision queued behind it still
    started once the poll ended, sent its orders and could outlast the supervisor's stop
    timeout. The running job finishes; the queued one does not start."""
    from apscheduler.triggers.date import DateTrigger

    monkeypatch.setattr(service, "WATCHDOG_SECONDS", 0.05)
    start = dt.datetime.now(dt.UTC)
    polling, ran = threading.Event(), []

    def poll() -> bool:
        polling.set()
        stop.wait(5)
        ran.append("poll")
        return True

    stop = threading.Event()
    schedule = Schedule([
        JobSpec("poll", DateTrigger(start + dt.timedelta(seconds=0.2)), poll),
        JobSpec("open", DateTrigger(start + dt.timedelta(seconds=0.4)), lambda: ran.append("open") or True),
    ])
    def stop_during_the_poll() -> None:
        polling.wait(5)
        time_left = (start + dt.timedelta(seconds=0.6) - dt.datetime.now(dt.UTC)).total_seconds()
        threading.Event().wait(max(0.0, time_left))  # the open job is queued by then
        stop.set()

    threading.Thread(target=stop_during_the_poll, daemon=True).start()
    run_on_wall_clock(schedule, stop)
    assert ran == ["poll"]


def test_the_calendar_refresh_ends_between_its_reads_when_the_daemon_stops() -> None:
    from bot.daemon.sessions import SessionCalendar

    calendar = SessionCalendar.__new__(SessionCalendar)
    asked = []
    calendar.around = lambda when: asked.append(when)  # type: ignore[method-assign]
    stopping = threading.Event()
    calendar.refresh_ahead(dt.datetime(2024, 11, 25, tzinfo=dt.UTC),
                           stopping=lambda: (len(asked) == 2 and stopping.set()) or stopping.is_set())
    assert len(asked) == 2  # of its five weeks
