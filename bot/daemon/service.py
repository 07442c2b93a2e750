"""The daemon: wires the jobs to session triggers and runs them, either on the wall
clock with APScheduler (paper/live) or on a simulated clock as fast as it can (replay).
Both ask the same triggers for fire times and run the same job functions."""

from __future__ import annotations

import datetime as dt
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger

from bot.clock import SimulatedClock
from bot.daemon.jobs import TradingJobs
from bot.daemon.triggers import SessionTrigger, WeekStartTrigger

log = structlog.get_logger(__name__)

#: how late a job may still run after its time (a restart within this window runs it)
MISFIRE_GRACE = dt.timedelta(hours=2)


@dataclass
class JobSpec:
    name: str
    trigger: BaseTrigger
    run: object  # zero-argument callable
    replay_trigger: BaseTrigger | None = None  # replay's own time grid, if it differs


@dataclass
class Schedule:
    jobs: list[JobSpec] = field(default_factory=list)


def build_schedule(
    jobs: TradingJobs,
    poll_every: dt.timedelta = dt.timedelta(minutes=2),
    heartbeat: Path | None = None,
) -> Schedule:
    """The daemon's timetable: regime before each week, decision 5 minutes after the
    open, order polling, marking 20 minutes after the close; and, live, a heartbeat file
    touched every minute for the container's and systemd's health checks."""
    cal = jobs.ctx.calendar

    def wrap(name, fn):
        return lambda: jobs.run(name, fn)

    schedule = Schedule(
        [
            JobSpec("regime", WeekStartTrigger(cal, dt.timedelta(hours=2)), wrap("regime", jobs.regime_job)),
            JobSpec("open", SessionTrigger(cal, "open", dt.timedelta(minutes=5)), wrap("open", jobs.open_job)),
            JobSpec(
                "poll",
                IntervalTrigger(seconds=poll_every.total_seconds()),
                wrap("poll", jobs.poll_job),
                replay_trigger=SessionTrigger(cal, "open", dt.timedelta(minutes=10)),
            ),
            JobSpec("close", SessionTrigger(cal, "close", dt.timedelta(minutes=20)), wrap("close", jobs.close_job)),
        ]
    )
    if heartbeat is not None:
        heartbeat.parent.mkdir(parents=True, exist_ok=True)
        schedule.jobs.append(
            JobSpec("heartbeat", IntervalTrigger(seconds=60), lambda: touch_heartbeat(heartbeat))
        )
        touch_heartbeat(heartbeat)
    return schedule


def touch_heartbeat(path: Path) -> None:
    """The daemon is alive and its scheduler is running jobs."""
    path.touch()


def heartbeat_age(path: Path, now: float | None = None) -> float | None:
    """Seconds since the last heartbeat; None if there is none."""
    import time

    if not path.exists():
        return None
    return (now or time.time()) - path.stat().st_mtime


def make_scheduler(schedule: Schedule) -> BackgroundScheduler:
    """One worker thread (jobs never overlap), coalesced misfires (a backlog runs once),
    a grace time (a restart shortly after a job's time still runs it)."""
    scheduler = BackgroundScheduler(
        executors={"default": ThreadPoolExecutor(max_workers=1)},
        job_defaults={
            "coalesce": True,
            "max_instances": 1,
            "misfire_grace_time": int(MISFIRE_GRACE.total_seconds()),
        },
        timezone=dt.UTC,
    )
    for spec in schedule.jobs:
        scheduler.add_job(spec.run, spec.trigger, id=spec.name, name=spec.name)
    return scheduler


def run_live(schedule: Schedule, jobs: TradingJobs, stop: threading.Event | None = None) -> None:
    """APScheduler on the wall clock: one worker thread so jobs never overlap, coalesced
    misfires, a grace time for restarts; SIGTERM/SIGINT let the running job finish, then
    the trade log is flushed and closed."""
    stop = stop or threading.Event()
    scheduler = make_scheduler(schedule)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda signum, _frame: _request_stop(stop, signum))
    scheduler.start()
    for job in scheduler.get_jobs():
        log.info("scheduled", job=job.name, next_run=str(job.next_run_time))
    try:
        stop.wait()
    finally:
        log.info("stopping: waiting for the running job to finish")
        scheduler.shutdown(wait=True)
        jobs.ctx.tradelog.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        log.info("stopped")


def _request_stop(stop: threading.Event, signum: int) -> None:
    log.info("signal received", signal=signal.Signals(signum).name)
    stop.set()


def run_replay(
    schedule: Schedule, jobs: TradingJobs, clock: SimulatedClock, end: dt.datetime
) -> int:
    """Jump the simulated clock from one fire time to the next and run that job, until
    `end`. Returns the number of jobs run."""
    triggers = {s.name: (s.replay_trigger or s.trigger) for s in schedule.jobs}
    runs = {s.name: s.run for s in schedule.jobs}
    next_time = {name: trig.get_next_fire_time(None, clock.now()) for name, trig in triggers.items()}
    order = {s.name: i for i, s in enumerate(schedule.jobs)}
    count = 0
    while True:
        pending = [(when, order[name], name) for name, when in next_time.items() if when is not None]
        if not pending:
            break
        when, _, name = min(pending)
        if when > end:
            break
        clock.set(when)
        runs[name]()
        count += 1
        next_time[name] = triggers[name].get_next_fire_time(when, when)
    jobs.ctx.tradelog.flush()
    return count
