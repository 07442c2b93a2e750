"""One trading process per strategy instance and trade log, and the runs of those that died.

Two daemons deciding for the same strategy instance (or a daemon and `bot once
--execute`) would each send the same rebalance and each record it. So a paper or live
session first takes the instance's lock, and a second one is refused while the first
holds it. The lock is one that the operating system or the database server releases
when its holder dies, even by SIGKILL or a power cut: `flock` on a file beside a SQLite
trade log, a session advisory lock on PostgreSQL (on the connection kept for it).

So whoever holds the lock knows that every other run of its instance still marked
'running' belongs to a process that is gone: `close_abandoned_runs` marks those failed,
each with an `abandoned` incident, instead of leaving them 'running' for ever.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import os
import threading
import time
from pathlib import Path
from typing import IO, Protocol

import sqlalchemy as sa
from apscheduler.triggers.interval import IntervalTrigger

from bot.daemon.service import JobSpec
from bot.errors import BotError
from bot.logs import get_logger
from bot.store.abandoned import mark_abandoned
from bot.store.engines import sqlite_file
from bot.store.tradelog import RUNS, TradeLog

log = get_logger(__name__)

#: A holder killed a moment ago may still hold a PostgreSQL lock until the server sees
#: its connection close: a start waits this long before it is refused. A file lock is
#: freed as its holder exits, so a start there waits only for one that is exiting.
WAIT_SECONDS = {"postgresql": 10.0, "file": 1.0}
_POLL_SECONDS = 0.2


class InstanceBusy(BotError):
    """Another process holds the lock of this strategy instance on this trade log."""


class _Held(Protocol):
    def still_held(self) -> bool: ...

    def release(self) -> None: ...


class InstanceLock:
    """The held lock of one (mode, instance) on one trade log; `release` or `with` frees it."""

    def __init__(self, key: str, held: _Held) -> None:
        self.key = key
        self._held: _Held | None = held

    @classmethod
    def acquire(
        cls, tradelog: TradeLog, mode: str, instance: str, wait: float | None = None
    ) -> InstanceLock:
        """Take the lock, retrying for `wait` seconds (WAIT_SECONDS by default);
        InstanceBusy if it stays held."""
        key = f"leverbot:{mode}:{instance}"
        kind = "postgresql" if tradelog.engine.dialect.name == "postgresql" else "file"
        take = _PostgresLock.take if kind == "postgresql" else _FileLock.take
        deadline = time.monotonic() + (WAIT_SECONDS[kind] if wait is None else wait)
        while True:
            held, holder = take(tradelog.engine, key)
            if held is not None:
                return cls(key, held)
            if time.monotonic() >= deadline:
                raise InstanceBusy(
                    f"another bot is already trading {instance!r} ({mode}) on this trade log "
                    f"({holder}); stop it first: two would send every order twice"
                )
            time.sleep(_POLL_SECONDS)

    def still_held(self) -> bool:
        """Whether this process still holds the lock: a PostgreSQL lock ends with its
        connection (a server restart, a dropped link), and is then taken again if no one
        else took it meanwhile. False: another process holds it now."""
        return self._held is not None and self._held.still_held()

    def release(self) -> None:
        if self._held is not None:
            self._held.release()
            self._held = None

    def __enter__(self) -> InstanceLock:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


def _in_memory(url: sa.URL) -> bool:
    """A SQLite URL of a database no other process can open: `file::memory:`, or a
    `file:` URI with mode=memory."""
    database = url.database or ""
    return database.startswith("file::memory:") or "mode=memory" in database or (
        url.query.get("mode") == "memory"
    )


class _FileLock:
    """flock on `<database file>.<key>.lock`; the file stays open while the lock is held.
    An in-memory database needs none (no other process can open it): `handle` None."""

    def __init__(self, handle: IO[str] | None) -> None:
        self.handle = handle

    @classmethod
    def take(cls, engine: sa.Engine, key: str) -> tuple[_FileLock | None, str]:
        database = sqlite_file(engine.url)  # a `file:` URI's path too
        if database is None or _in_memory(engine.url):
            return cls(None), ""
        path = Path(f"{database}.{key.replace(':', '-')}.lock")
        handle: IO[str] = open(path, "a+")  # noqa: SIM115 - held open for as long as the lock
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown process"
            handle.close()
            return None, f"lock file {path} held by {holder}"
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
        handle.flush()
        return cls(handle), ""

    def still_held(self) -> bool:
        return True  # only this process's death or release() frees it

    def release(self) -> None:
        if self.handle is not None:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()


class _PostgresLock:
    """pg_try_advisory_lock on a connection of its own, kept open while the lock is held."""

    def __init__(self, engine: sa.Engine, number: int, conn: sa.Connection) -> None:
        self.engine, self.number, self.conn = engine, number, conn

    @classmethod
    def take(cls, engine: sa.Engine, key: str) -> tuple[_PostgresLock | None, str]:
        number = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)
        conn = cls._try(engine, number)
        if conn is None:
            return None, f"PostgreSQL advisory lock {number} held by another session"
        return cls(engine, number, conn), ""

    @staticmethod
    def _try(engine: sa.Engine, number: int) -> sa.Connection | None:
        conn = engine.connect()
        try:
            taken = conn.execute(sa.select(sa.func.pg_try_advisory_lock(number))).scalar_one()
            conn.commit()  # the lock is the session's, not the transaction's
        except BaseException:
            conn.close()
            raise
        if not taken:
            conn.close()
            return None
        return conn

    def still_held(self) -> bool:
        try:
            self.conn.execute(sa.text("SELECT 1"))
            self.conn.commit()
            return True
        except sa.exc.DBAPIError:  # the session is gone, and its lock with it
            with contextlib.suppress(Exception):
                self.conn.close()
        conn = self._try(self.engine, self.number)
        if conn is None:
            return False
        self.conn = conn
        log.warning("instance lock taken again: its database connection had ended",
                    lock=self.number)
        return True

    def release(self) -> None:
        try:
            self.conn.execute(sa.select(sa.func.pg_advisory_unlock(self.number)))
            self.conn.commit()
        finally:
            self.conn.close()


def lock_watch(
    lock: InstanceLock, tradelog: TradeLog, stop: threading.Event, lost: threading.Event,
    every: dt.timedelta = dt.timedelta(minutes=1),
) -> JobSpec:
    """A daemon job that checks every minute that the daemon still holds its lock; if
    another process holds it now (it took it while this one's database connection was
    down), the daemon records why and stops, so that only one of them trades."""

    def check() -> bool:
        if lock.still_held():
            return True
        now = dt.datetime.now(dt.UTC)
        message = (f"the strategy's lock ({lock.key}) is held by another process now: its "
                   "database connection ended and another bot took the lock; stopping")
        log.error("instance lock lost", lock=lock.key)
        with contextlib.suppress(Exception):  # the stop matters more than its record
            tradelog.incident(now, "lock_lost", message, {"lock": lock.key})
        lost.set()
        stop.set()
        return False

    return JobSpec("instance-lock", IntervalTrigger(seconds=every.total_seconds()), check)


def close_abandoned_runs(tradelog: TradeLog, run_id: int, now: dt.datetime) -> list[int]:
    """Mark failed every earlier run of run `run_id`'s mode and strategy still marked
    'running', with an `abandoned` incident each; call while holding the instance's lock
    (their processes are then known to be gone, on any host). Returns their ids."""
    with tradelog.engine.connect() as conn:
        mode, strategy = conn.execute(
            sa.select(RUNS.c.mode, RUNS.c.strategy).where(RUNS.c.id == run_id)
        ).one()
        abandoned = conn.execute(
            sa.select(RUNS.c.id).where(
                (RUNS.c.status == "running") & (RUNS.c.mode == mode)
                & (RUNS.c.strategy == strategy) & (RUNS.c.id < run_id)
            ).order_by(RUNS.c.id)
        ).scalars().all()
    return mark_abandoned(tradelog, abandoned, run_id, now, "no process holds its strategy's lock")
