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

import datetime as dt
import fcntl
import hashlib
import os
import time
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa

from bot.errors import BotError
from bot.store.abandoned import mark_abandoned
from bot.store.tradelog import RUNS, TradeLog

#: A holder killed a moment ago may still hold a PostgreSQL lock until the server sees
#: its connection close: a start waits this long before it is refused. A file lock is
#: freed as its holder exits, so a start there waits only for one that is exiting.
WAIT_SECONDS = {"postgresql": 10.0, "file": 1.0}
_POLL_SECONDS = 0.2


class InstanceBusy(BotError):
    """Another process holds the lock of this strategy instance on this trade log."""


class InstanceLock:
    """The held lock of one (mode, instance) on one trade log; `release` or `with` frees it."""

    def __init__(self, key: str, release: Any) -> None:
        self.key = key
        self._release = release

    @classmethod
    def acquire(
        cls, tradelog: TradeLog, mode: str, instance: str, wait: float | None = None
    ) -> InstanceLock:
        """Take the lock, retrying for `wait` seconds (WAIT_SECONDS by default);
        InstanceBusy if it stays held."""
        key = f"leverbot:{mode}:{instance}"
        kind = "postgresql" if tradelog.engine.dialect.name == "postgresql" else "file"
        take = _postgres_lock if kind == "postgresql" else _file_lock
        deadline = time.monotonic() + (WAIT_SECONDS[kind] if wait is None else wait)
        while True:
            release, holder = take(tradelog.engine, key)
            if release is not None:
                return cls(key, release)
            if time.monotonic() >= deadline:
                raise InstanceBusy(
                    f"another bot is already trading {instance!r} ({mode}) on this trade log "
                    f"({holder}); stop it first: two would send every order twice"
                )
            time.sleep(_POLL_SECONDS)

    def release(self) -> None:
        if self._release is not None:
            self._release()
            self._release = None

    def __enter__(self) -> InstanceLock:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


def _file_lock(engine: sa.Engine, key: str) -> tuple[Any, str]:
    """flock on `<database file>.<key>.lock`; an in-memory database needs none (no other
    process can open it)."""
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return (lambda: None), ""
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

    def release() -> None:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()

    return release, ""


def _postgres_lock(engine: sa.Engine, key: str) -> tuple[Any, str]:
    """pg_try_advisory_lock on a connection of its own, kept open while the lock is held."""
    number = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)
    conn = engine.connect()
    try:
        taken = conn.execute(sa.select(sa.func.pg_try_advisory_lock(number))).scalar_one()
        conn.commit()  # the lock is the session's, not the transaction's
    except BaseException:
        conn.close()
        raise
    if not taken:
        conn.close()
        return None, f"PostgreSQL advisory lock {number} held by another session"

    def release() -> None:
        try:
            conn.execute(sa.select(sa.func.pg_advisory_unlock(number)))
            conn.commit()
        finally:
            conn.close()

    return release, ""


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
