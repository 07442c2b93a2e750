"""The bot process of the soak.

It is the live daemon's own service: the instance lock, `runner.start_run`, the closing
of runs that died before it, `build_live` (the alpaca-py trading and data clients, FRED,
SellsFirst with its market-hours rule, reconciliation at start), and the jobs of `build_schedule` with their session triggers, on a SimulatedClock
instead of the wall clock (APScheduler only runs on the wall clock). The harness sends
one command at a time over a pipe: `next` (the daemon's next job and its time, from the
triggers as the daemon's scheduler has them: JobSpec.first_run after a start, a job
missed in the grace time before it included, then each trigger's next fire time),
`run` (set the clock, run that job through the daemon's wrapper), `arm`/`disarm` (a
pause point, see PAUSES) and `stop` (what SIGTERM does: a final poll, the run finished,
the log closed). In mode "once" it does what `bot once --execute` does instead.

A pause writes ("paused", point) to the pipe and blocks; the harness then SIGKILLs the
process. Pauses are installed here only, in the child, by wrapping the bot's functions:
the bot's code is not changed for the soak.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import bot.store.tradelog as tradelog_module

# Imported here so a forkserver that preloads this module has them ready for every child.
from bot import runner
from bot.broker.sequenced import SellsFirst
from bot.clock import SimulatedClock
from bot.config import load_settings
from bot.daemon import reconcile as reconcile_module
from bot.daemon.instance import InstanceLock, close_abandoned_runs
from bot.daemon.live import build_live, instance_name
from bot.daemon.once import decide_once
from bot.daemon.service import build_schedule
from bot.daemon.sessions import SessionCalendar
from bot.daemon.triggers import _CalendarTrigger
from bot.engine import Engine
from bot.logs import configure_logging
from bot.store.tradelog import TradeLog

#: where a pause can be armed, and what the process has done when it stops there
PAUSES = {
    "answers_not_logged": "the venue answered the orders; the trade log has not written them",
    "mid_flush": "inside the trade log's transaction, order rows written, events not yet",
    "after_release": "the poll sent the queued buys; nothing of it is recorded yet",
    "close_job": "the close job polled and refreshed; equity and positions not marked yet",
    "close_flush": "inside the close job's transaction, before the equity row",
    "reconcile": "reconciliation at start matched and adopted orders, before its catch-up poll",
}


@dataclass(frozen=True)
class ChildSpec:
    """What a bot process needs: the trade log, its start time, the venue's URLs."""

    database_url: str
    start: dt.datetime
    env: dict[str, str]
    config: str
    log_path: str
    mode: str = "daemon"  # or "once": `bot once --execute`
    pauses: tuple[str, ...] = ()  # armed from the start (e.g. reconcile)
    poll_after_open: tuple[int, ...] = (7, 9, 11, 13, 16, 20, 30, 45, 60, 90, 120, 180, 240, 300)
    poll_around_close: tuple[int, ...] = (-20, -8, -3, 70)


class SoakPollTrigger(_CalendarTrigger):
    """Order polls at fixed minutes after each open and around each close. The daemon
    polls every 2 minutes; these 18 a session reach the same states (sells filled, buys
    released, the cut-off before the close, the night) with a tenth of the requests."""

    def __init__(self, calendar: SessionCalendar, after_open: tuple[int, ...],
                 around_close: tuple[int, ...]) -> None:
        self.calendar = calendar
        self.after_open = after_open
        self.around_close = around_close

    def _times(self, around: dt.datetime) -> list[dt.datetime]:
        out = []
        for s in self.calendar.around(around):
            out += [s.open + dt.timedelta(minutes=m) for m in self.after_open]
            out += [s.close + dt.timedelta(minutes=m) for m in self.around_close]
        return sorted(out)


class Pauses:
    """Points where this process stops and waits to be killed."""

    def __init__(self, conn, armed: tuple[str, ...]) -> None:
        self.conn = conn
        self.armed = set(armed)

    def arm(self, point: str) -> None:
        if point not in PAUSES:
            raise ValueError(f"unknown pause point {point!r}; one of {sorted(PAUSES)}")
        self.armed.add(point)

    def hit(self, point: str) -> None:
        if point not in self.armed:
            return
        self.armed.discard(point)
        sys.stderr.flush()
        self.conn.send(("paused", point))
        while True:  # the harness SIGKILLs us here
            time.sleep(60)

    def install(self) -> None:
        """Wrap the bot's functions at the pause points (in this process only)."""
        pauses = self
        flush = TradeLog.flush

        def flush_paused(log: TradeLog, *args, **kwargs) -> None:
            if log._orders or log._updates:  # order records waiting to be written
                pauses.hit("answers_not_logged")
            flush(log, *args, **kwargs)

        TradeLog.flush = flush_paused  # type: ignore[method-assign]

        release = SellsFirst._release

        def release_paused(broker: SellsFirst, now, released) -> None:
            release(broker, now, released)
            if released:
                pauses.hit("after_release")

        SellsFirst._release = release_paused  # type: ignore[method-assign]

        record_close = Engine.record_close

        def record_close_paused(engine: Engine, t: int, snapshot: bool | None = None):
            pauses.hit("close_job")
            return record_close(engine, t, snapshot)

        Engine.record_close = record_close_paused  # type: ignore[method-assign]

        catch_up = reconcile_module._catch_up

        def catch_up_paused(tradelog, venue, now):
            pauses.hit("reconcile")
            return catch_up(tradelog, venue, now)

        reconcile_module._catch_up = catch_up_paused

    def watch(self) -> None:
        """Pauses inside the trade log's transactions: at the INSERT of the order events
        (the orders written, their events not) and of the equity rows. Hooked where the
        flush inserts a table, so on either backend: PostgreSQL's rows go in by COPY,
        which no cursor event sees."""
        pauses = self
        insert = tradelog_module.insert_prepared

        def insert_paused(conn, table, prepared, **kwargs):
            if prepared.count and table.name == "order_events":
                pauses.hit("mid_flush")
            elif prepared.count and table.name == "equity":
                pauses.hit("close_flush")
            return insert(conn, table, prepared, **kwargs)

        tradelog_module.insert_prepared = insert_paused


def child_main(conn, spec: ChildSpec) -> None:
    """Entry point of the bot process (multiprocessing target)."""
    os.environ.update(spec.env)
    for key in ("BOT_LIVE_CONFIRM", "BOT_DATABASE_URL", "BOT_SECRETS_FILE"):
        os.environ.pop(key, None)
    log_file = Path(spec.log_path).open("a", buffering=1)  # noqa: SIM115 - the process's life
    sys.stderr = log_file  # the bot logs to stderr: keep it in the process's log file
    configure_logging("INFO", "json")
    pauses = Pauses(conn, spec.pauses)
    pauses.install()
    clock = SimulatedClock(spec.start)
    settings = load_settings(Path(spec.config))
    tradelog = TradeLog.open(spec.database_url)
    pauses.watch()
    # Held for the process's life, as `bot run` holds it; a SIGKILL frees it.
    _lock = InstanceLock.acquire(tradelog, "paper", instance_name(settings))
    run_id = runner.start_run(tradelog, settings, "paper", "alpaca+fred", False)
    try:
        close_abandoned_runs(tradelog, run_id, dt.datetime.now(dt.UTC))
        jobs = build_live(settings, tradelog, run_id, live=False, clock=clock)
    except Exception as exc:  # noqa: BLE001 - as `bot run`: the run failed, exit 1
        traceback.print_exc()
        tradelog.finish_run("failed", dt.datetime.now(dt.UTC))
        tradelog.close()
        conn.send(("start_failed", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", run_id))
    if spec.mode == "once":
        once(conn, jobs, tradelog, clock)
        return
    daemon(conn, spec, jobs, tradelog, clock, pauses)


def once(conn, jobs, tradelog: TradeLog, clock: SimulatedClock) -> None:
    """`bot once --execute`: one decision now, its fills recorded, the run finished (or
    failed if the decision raised), as the command does."""
    _command, when = conn.recv()
    clock.set(when)
    try:
        decide_once(jobs, execute=True)
    except Exception as exc:  # noqa: BLE001 - the command exits 1 with the error
        traceback.print_exc()
        tradelog.finish_run("failed", dt.datetime.now(dt.UTC))
        tradelog.close()
        conn.send(("done", "once", False, f"{type(exc).__name__}: {exc}"))
        return
    tradelog.finish_run("finished", dt.datetime.now(dt.UTC))
    tradelog.close()
    conn.send(("done", "once", True, None))


def daemon(conn, spec: ChildSpec, jobs, tradelog: TradeLog, clock: SimulatedClock,
           pauses: Pauses) -> None:
    """The daemon's schedule, one job per `run` command, until `stop`."""
    schedule = build_schedule(jobs)
    for spec_job in schedule.jobs:
        if spec_job.name == "poll":
            spec_job.trigger = SoakPollTrigger(
                jobs.ctx.calendar, spec.poll_after_open, spec.poll_around_close
            )
    specs = {s.name: s for s in schedule.jobs}
    order = {s.name: i for i, s in enumerate(schedule.jobs)}
    # As the daemon's scheduler starts (make_scheduler): each job's first time, a job
    # missed within the grace time included, which then runs at once.
    upcoming = {s.name: s.first_run(clock.now()) for s in schedule.jobs}
    while True:
        command, *args = conn.recv()
        if command == "next":
            pending = [(when, order[name], name) for name, when in upcoming.items() if when]
            when, _, name = min(pending)
            conn.send(("next", max(when, clock.now()), name))
        elif command == "run":
            name, when = args
            clock.set(when)
            ok = specs[name].run()
            fired = upcoming[name]
            upcoming[name] = specs[name].trigger.get_next_fire_time(fired, when)
            conn.send(("done", name, ok is not False, None))
        elif command == "arm":
            pauses.arm(args[0])
            conn.send(("armed", args[0]))
        elif command == "disarm":
            pauses.armed.discard(args[0])
            conn.send(("disarmed", args[0]))
        elif command == "stop":
            (when,) = args
            clock.set(when)
            jobs.run("final poll", jobs.final_poll)
            tradelog.finish_run("finished", dt.datetime.now(dt.UTC))
            tradelog.close()
            conn.send(("stopped",))
            return
        else:
            raise ValueError(f"unknown command {command!r}")
