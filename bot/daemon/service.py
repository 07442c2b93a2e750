"""The daemon: wires the jobs to session triggers and runs them, either on the wall
clock with APScheduler (paper/live) or on a simulated clock as fast as it can (replay).
Both ask the same triggers for fire times and run the same job functions."""

from __future__ import annotations

import datetime as dt
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from apscheduler.events import EVENT_JOB_MISSED
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger

from bot.clock import SimulatedClock
from bot.daemon.jobs import TradingJobs
from bot.daemon.retries import CLOSE_PLAN, OPEN_PLAN, RetryingJob, RetryPlan, RetrySlotTrigger
from bot.daemon.sessions import SessionCalendar
from bot.daemon.triggers import SessionTrigger, WeekStartTrigger
from bot.daemon.watch import JobWatch
from bot.errors import BotError

log = structlog.get_logger(__name__)

#: how late a job may still run after its time (a restart within this window runs it)
MISFIRE_GRACE = dt.timedelta(hours=2)

#: the signals that stop the daemon between jobs (Ctrl-C, `kill`, systemd, Docker)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@dataclass
class JobSpec:
    name: str
    trigger: BaseTrigger
    # A trading job returns False when it failed; None when it had nothing to do (a
    # retry slot with no failure pending), which the replay does not count as a job.
    run: Callable[[], bool | None]
    replay_trigger: BaseTrigger | None = None  # replay's own time grid, if it differs
    catch_up: bool = False  # a (re)start within `grace` after its time runs it
    executor: str = "default"  # the jobs' one worker thread; the heartbeat has its own
    # How late the job may still run: after a (re)start (catch_up) or a machine that slept.
    grace: dt.timedelta = MISFIRE_GRACE
    # A backlog of fire times (the machine slept) runs once. A session job does not
    # coalesce: each session it missed is reported (coalescing reported only the last),
    # and at most one of its times fits in the grace, so it still runs at most once.
    coalesce: bool = True

    def first_run(self, now: dt.datetime) -> dt.datetime | None:
        """When the job first runs if the daemon starts at `now` (see first_run_time)."""
        if self.catch_up:
            return first_run_time(self.trigger, now, self.grace)
        return self.trigger.get_next_fire_time(None, now)


@dataclass
class Schedule:
    jobs: list[JobSpec] = field(default_factory=list)
    # Told of a job whose time passed beyond its grace while the daemon could not run it
    # (the machine slept, the process was stopped): (job name, its time).
    on_missed: Callable[[str, dt.datetime], None] | None = None
    # Set when the daemon stops: a job not started yet then does not start, and a long
    # one that can stop between its steps (the calendar's reads) does.
    stopping: threading.Event = field(default_factory=threading.Event)


def build_schedule(
    jobs: TradingJobs,
    poll_every: dt.timedelta = dt.timedelta(minutes=2),
    heartbeat: Path | None = None,
) -> Schedule:
    """The daemon's timetable: regime before each week, decision 5 minutes after the
    open, order polling, marking 20 minutes after the close, each failed decision or
    close tried again at its retry slots (bot.daemon.retries); and, live, a heartbeat
    file touched every minute for the container's and systemd's health checks."""
    cal = jobs.ctx.calendar

    def wrap(name: str, fn: Callable[[], None]) -> Callable[[], bool]:
        return lambda: jobs.run(name, fn)

    def retrying(name: str, fn: Callable[..., None], plan: RetryPlan, **kw) -> RetryingJob:
        return RetryingJob(name, fn, plan, cal, jobs.ctx.clock.now, jobs.run, **kw)

    decision = retrying("open", jobs.open_job, OPEN_PLAN, refusal=jobs.decision_retry_refusal)
    close = retrying("close", jobs.close_job, CLOSE_PLAN)
    schedule = Schedule(
        [
            JobSpec("regime", WeekStartTrigger(cal, dt.timedelta(hours=2)),
                    wrap("regime", jobs.regime_job), catch_up=True, coalesce=False),
            JobSpec("open", SessionTrigger(cal, "open", OPEN_PLAN.offset), decision.regular,
                    catch_up=True, coalesce=False),
            JobSpec("open-retry", RetrySlotTrigger(cal, OPEN_PLAN), decision.retry),
            JobSpec(
                "poll",
                IntervalTrigger(seconds=poll_every.total_seconds()),
                wrap("poll", jobs.poll_job),
                replay_trigger=SessionTrigger(cal, "open", dt.timedelta(minutes=10)),
            ),
            # The evening's close may run until the plan's last safe time (long before
            # the next open, holdings unchanged): a restart at 19:00 still records it.
            JobSpec("close", SessionTrigger(cal, "close", CLOSE_PLAN.offset), close.regular,
                    catch_up=True, grace=CLOSE_PLAN.catch_up_grace, coalesce=False),
            JobSpec("close-retry", RetrySlotTrigger(cal, CLOSE_PLAN), close.retry),
        ]
    )
    retrying_jobs = {"open-retry": decision, "close-retry": close}

    def on_missed(name: str, when: dt.datetime) -> None:
        retry = retrying_jobs.get(name)
        if retry is not None and retry.pending is None:
            return  # a retry slot with no failure to retry: nothing was missed
        jobs.note_missed(name, when)

    schedule.on_missed = on_missed
    if cal.source_may_hang:
        add_calendar_refresh(schedule, cal, jobs.ctx.clock.now)
    if heartbeat is not None:
        add_heartbeat(schedule, heartbeat, jobs.watch)
    return schedule


#: how often the calendar job asks the broker's calendar (each window only once it is
#: older than CALENDAR_MAX_AGE_S)
CALENDAR_REFRESH_SECONDS = 3600.0
CALENDAR_EXECUTOR = "calendar"


def add_calendar_refresh(
    schedule: Schedule, calendar: SessionCalendar, now: Callable[[], dt.datetime]
) -> None:
    """Read the broker's calendar ahead now and every hour, on a thread of its own: the
    triggers plan on what it read (SessionCalendar.planned_around), so a broker that
    hangs for minutes delays neither the scheduler nor the trading jobs' thread."""
    calendar.refresh_ahead(now())
    stopping = schedule.stopping.is_set
    schedule.jobs.append(JobSpec("calendar", IntervalTrigger(seconds=CALENDAR_REFRESH_SECONDS),
                                 lambda: calendar.refresh_ahead(now(), stopping=stopping),
                                 executor=CALENDAR_EXECUTOR))


#: how often the heartbeat file is touched
HEARTBEAT_SECONDS = 60.0


def add_heartbeat(
    schedule: Schedule, path: Path, watch: JobWatch | None = None,
    every: float = HEARTBEAT_SECONDS,
) -> None:
    """Touch `path` now and every minute: a container health check reads its age. With a
    `watch` of the jobs, on a thread of its own, while no job has run for longer than a
    job can (bot.daemon.watch); without one, on the jobs' thread, between jobs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if watch is None:
        beat: Callable[[], None] = lambda: touch_heartbeat(path)  # noqa: E731
        executor = "default"
    else:
        beat, executor = _watched_beat(path, watch), HEARTBEAT_EXECUTOR
    schedule.jobs.append(JobSpec("heartbeat", IntervalTrigger(seconds=every), beat,
                                 executor=executor))
    touch_heartbeat(path)


HEARTBEAT_EXECUTOR = "heartbeat"


def _watched_beat(path: Path, watch: JobWatch) -> Callable[[], None]:
    """The heartbeat of a daemon whose jobs `watch` follows: withheld, and said so once
    per job, while a job runs for longer than a job can."""
    reported: list[tuple[str, float]] = []

    def beat() -> None:
        hung = watch.hung()
        if hung is None:
            touch_heartbeat(path)
            return
        if not reported or reported[-1][0] != hung[0] or hung[1] < reported[-1][1]:
            log.error("job hung: heartbeat withheld, the health check will fail",
                      job=hung[0], seconds=round(hung[1]))
        reported[:] = [hung]

    return beat


def touch_heartbeat(path: Path) -> None:
    """The daemon is alive and its scheduler is running jobs. The file holds the beating
    process's id, so a daemon that stops removes only a heartbeat that is its own."""
    path.write_text(f"{os.getpid()}\n")


def remove_heartbeat(path: Path) -> None:
    """A stopping daemon's heartbeat goes with it, so `bot health` fails at once, not a
    --max-age later; one that another daemon beat into since (two sharing the path) stays."""
    try:
        if path.read_text().strip() == str(os.getpid()):
            path.unlink()
    except (OSError, UnicodeDecodeError):  # gone already, or not a file we wrote
        pass


#: How far in the future a heartbeat may be before it says nothing: clocks of a host and
#: a container, or of two hosts sharing a volume, may differ by a little.
FUTURE_TOLERANCE_S = 60.0


def heartbeat_age(path: Path, now: float | None = None) -> float | None:
    """Seconds since the last heartbeat; None if there is none (a folder or anything but
    a regular file at the path is none: its time says nothing about the daemon).
    Negative for a heartbeat in the future (see heartbeat_in_future)."""
    import time

    if not path.is_file():
        return None
    return (time.time() if now is None else now) - path.stat().st_mtime


def heartbeat_in_future(age: float) -> bool:
    """A heartbeat newer than now (beyond FUTURE_TOLERANCE_S) proves nothing: the clock
    was stepped back, or the file was copied or touched with a later time. Taken for
    fresh, it kept a stopped daemon healthy until the clock caught up with it."""
    return age < -FUTURE_TOLERANCE_S


def first_run_time(
    trigger: BaseTrigger, now: dt.datetime, grace: dt.timedelta = MISFIRE_GRACE
) -> dt.datetime | None:
    """When a job first runs after the daemon starts at `now`: its latest fire time in
    the last `grace`, if it has one (the daemon was down then, or killed while running
    it), else its next one. Left alone, APScheduler asks the trigger for the next fire
    time from now, so a daemon restarted at 09:37 would skip the 09:35 decision and one
    restarted at 16:22 the day's close; the jobs are safe to run again, so a restart
    reruns one that had finished."""
    missed = trigger.get_next_fire_time(None, now - grace)
    if missed is None or missed > now:
        return trigger.get_next_fire_time(None, now)
    while True:
        following = trigger.get_next_fire_time(missed, missed)
        if following is None or following > now:
            return missed
        missed = following


def _unless_stopping(spec: JobSpec, *stops: threading.Event) -> Callable[[], bool | None]:
    """The job, not started once the daemon stops (any of `stops` set): a job queued
    behind the running one (the 09:35 decision behind a poll retrying through 429s)
    started after SIGTERM, sent its orders, and could outlast the supervisor's stop
    timeout."""
    def run() -> bool | None:
        if any(stop.is_set() for stop in stops):
            log.info("job not started: the daemon is stopping", job=spec.name)
            return None
        return spec.run()

    return run


def make_scheduler(schedule: Schedule, now: dt.datetime | None = None,
                   stop: threading.Event | None = None) -> BackgroundScheduler:
    """One worker thread (jobs never overlap), coalesced misfires (a backlog runs once;
    session jobs report each time they missed, see JobSpec.coalesce),
    a grace time (a restart shortly after a job's time still runs it: see first_run_time)."""
    scheduler = BackgroundScheduler(
        executors={"default": ThreadPoolExecutor(max_workers=1),
                   HEARTBEAT_EXECUTOR: ThreadPoolExecutor(max_workers=1),
                   CALENDAR_EXECUTOR: ThreadPoolExecutor(max_workers=1)},
        job_defaults={
            "coalesce": True,
            "max_instances": 1,
            "misfire_grace_time": int(MISFIRE_GRACE.total_seconds()),
        },
        timezone=dt.UTC,
    )
    now = now or dt.datetime.now(dt.UTC)
    for spec in schedule.jobs:
        first = spec.first_run(now)
        # next_run_time=None would add the job paused: pass it only when there is one
        when = {"next_run_time": first} if first is not None else {}
        stops = (schedule.stopping,) if stop is None else (schedule.stopping, stop)
        scheduler.add_job(_unless_stopping(spec, *stops), spec.trigger, id=spec.name, name=spec.name,
                          executor=spec.executor, coalesce=spec.coalesce,
                          misfire_grace_time=int(spec.grace.total_seconds()), **when)
    on_missed = schedule.on_missed
    if on_missed is not None:
        scheduler.add_listener(
            lambda event: on_missed(event.job_id, event.scheduled_run_time), EVENT_JOB_MISSED
        )
    return scheduler


class StopRequest(threading.Event):
    """Set when the daemon should stop between jobs; remembers the signal that asked."""

    signal_name: str | None = None


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Inside, SIGTERM and SIGINT set `stop` instead of ending the process (or raising
    KeyboardInterrupt in the middle of a trade-log write), so the running job finishes
    and its records are flushed. The previous handlers come back on exit. Only the main
    thread may install handlers; elsewhere this does nothing."""
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in STOP_SIGNALS:
            previous[sig] = signal.signal(sig, lambda signum, _frame: _request_stop(stop, signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _request_stop(stop: threading.Event, signum: int) -> None:
    """The handler only records: it may run while the main thread is writing a log line,
    and writing to the same stream from here could fail as a reentrant call."""
    if isinstance(stop, StopRequest) and stop.signal_name is None:
        stop.signal_name = signal.Signals(signum).name
    stop.set()


#: how often the daemon checks that its scheduler still runs
WATCHDOG_SECONDS = 30.0


def scheduler_alive(scheduler: BackgroundScheduler) -> bool:
    """Whether the scheduler's thread runs (APScheduler 3 keeps it as `_thread`)."""
    thread = getattr(scheduler, "_thread", None)
    return thread is not None and thread.is_alive()


#: the exit status of a daemon that ended itself because a job hung (EX_SOFTWARE)
EXIT_HUNG = 70


def _exit_now(status: int) -> None:
    """End the process at once: a normal exit would wait for the hung job's thread."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def run_on_wall_clock(
    schedule: Schedule,
    stop: threading.Event | None = None,
    on_stop: Callable[[], None] | None = None,
    watch: JobWatch | None = None,
    exit_process: Callable[[int], None] = _exit_now,
) -> None:
    """APScheduler on the wall clock until SIGTERM/SIGINT: one worker thread so jobs never
    overlap, coalesced misfires, a grace time for restarts. On a stop the running job
    finishes first, then `on_stop` runs (the daemon's last records). With a `watch` of the
    jobs, a job running past its limit ends the process (`exit_process`): Docker and
    systemd restart a process that exits, not one whose health check fails, and every
    job is safe to run again."""
    stop = stop or StopRequest()
    scheduler = make_scheduler(schedule, stop=stop)  # the stop request itself, at once
    with stop_on_signals(stop):
        scheduler.start()
        for job in scheduler.get_jobs():
            log.info("scheduled", job=job.name, next_run=str(job.next_run_time))
        try:
            while not stop.wait(WATCHDOG_SECONDS):
                hung = watch.hung() if watch is not None else None
                if hung is not None:
                    log.error("job hung: the daemon exits for the supervisor to restart it",
                              job=hung[0], seconds=round(hung[1]), status=EXIT_HUNG)
                    exit_process(EXIT_HUNG)
                if not scheduler_alive(scheduler):
                    # An error in a trigger ends APScheduler's thread: the process would
                    # live on, trading nothing. Exit instead, so systemd or Docker start
                    # a fresh daemon (restarts are safe by design).
                    log.error("scheduler thread died: exiting for the supervisor to restart")
                    raise BotError("the scheduler stopped (see the log's last error); "
                                   "the daemon exits so that it is restarted")
            if isinstance(stop, StopRequest) and stop.signal_name:
                log.info("signal received", signal=stop.signal_name)
        finally:
            schedule.stopping.set()  # what is queued behind the running job does not start
            log.info("stopping: waiting for the running job to finish")
            scheduler.shutdown(wait=True)
            if on_stop is not None:
                on_stop()
            log.info("stopped")


def run_live(schedule: Schedule, jobs: TradingJobs, stop: threading.Event | None = None) -> None:
    """The trading daemon on the wall clock; once stopped, the trade log is flushed and
    closed."""

    def last_records() -> None:
        # Fills made since the last poll are recorded before the process ends.
        jobs.run("final poll", jobs.final_poll)
        jobs.close()  # queued notifications out, undelivered ones recorded
        jobs.ctx.tradelog.close()

    run_on_wall_clock(schedule, stop, last_records, watch=jobs.watch)


@dataclass(frozen=True)
class ReplayLoop:
    """What the replay loop did: jobs run, which failed (name and simulated time), and
    whether a stop request ended it before its end time."""

    jobs_run: int
    failures: list[tuple[str, dt.datetime]]
    interrupted: bool


def run_replay(
    schedule: Schedule,
    jobs: TradingJobs,
    clock: SimulatedClock,
    end: dt.datetime,
    stop: threading.Event | None = None,
    progress: Callable[[dt.datetime], None] | None = None,
) -> ReplayLoop:
    """Jump the simulated clock from one fire time to the next and run that job, until
    `end` or until `stop` is set (checked between jobs, so a job is never cut short).
    Every log line of a job carries its simulated time; `progress` hears of each one."""
    triggers = {s.name: (s.replay_trigger or s.trigger) for s in schedule.jobs}
    runs = {s.name: s.run for s in schedule.jobs}
    next_time = {name: trig.get_next_fire_time(None, clock.now()) for name, trig in triggers.items()}
    order = {s.name: i for i, s in enumerate(schedule.jobs)}
    count, failures, interrupted = 0, [], False
    while True:
        pending = [(when, order[name], name) for name, when in next_time.items() if when is not None]
        if not pending:
            break
        when, _, name = min(pending)
        if when > end:
            break
        if stop is not None and stop.is_set():
            interrupted = True
            break
        if when > clock.now():  # a job that ran long delays the next, as live
            clock.set(when)
        with structlog.contextvars.bound_contextvars(simulated=f"{when:%Y-%m-%d %H:%M}"):
            done = runs[name]()
        if done is False:
            failures.append((name, when))
        if done is not None:
            count += 1
        if progress is not None:
            progress(when)
        next_time[name] = triggers[name].get_next_fire_time(when, when)
    jobs.commit()  # the last batch (a replay commits in batches: bot.daemon.commits)
    return ReplayLoop(count, failures, interrupted)
