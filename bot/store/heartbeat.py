"""A run's sign of life, for runs whose process may die on another machine.

On its own host a dead holder is proven by /proc (bot.store.holder). A trade log on a
shared PostgreSQL also sees runs of other machines, where /proc tells nothing: a run
killed there would read 'running' for ever. So while a process holds runs, a thread
writes `runs.heartbeat_at` for each of them every INTERVAL; a backtest or replay run of
another host whose heartbeat is older than LEASE is known dead (bot.store.abandoned).
Paper and live sessions have a stronger proof, their strategy's lock, which a session
that was only suspended still holds (bot.daemon.instance): the lease does not close them.

- The lease is ten beats: a database that refuses a few writes (a restart, a lock) does
  not get a live run closed. A beat that fails is logged and tried again at the next
  one; it never stops the run.
- On PostgreSQL the beat and the judge both read the database's clock, so machines
  whose clocks differ still agree. SQLite is one machine's file: its clock.
- A beat never waits for a row another transaction holds (FOR NO KEY UPDATE SKIP LOCKED,
  in id order): a run being ended meanwhile needs no beat, and two writers taking the
  same rows in different orders could deadlock.
- The thread must not hold a lock when the process forks (the backtest's reference
  worker, the sweep's pool): a child would inherit it held and block on it. Each beat
  runs under the heartbeat's own lock, and a fork waits for it (os.register_at_fork),
  so a child never starts inside a beat. The thread itself does not exist in a child.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import weakref
from typing import Any

import sqlalchemy as sa

from bot.logs import get_logger
from bot.store.engines import sqlite_file
from bot.store.holder import holder_state
from bot.store.models import RUNS

log = get_logger(__name__)

INTERVAL = dt.timedelta(seconds=60)
LEASE = 10 * INTERVAL
BEAT_TIMEOUT_S = 10  # longest wait for a beat: its statement, a stop, a fork


def needs_heartbeat(engine: sa.Engine) -> bool:
    """Whether other processes can see this database (not an in-memory SQLite one)."""
    return engine.dialect.name != "sqlite" or sqlite_file(engine.url) is not None


def database_now(conn: sa.Connection, local: dt.datetime | None = None) -> dt.datetime:
    """The time heartbeats are written and judged by: the server's clock on PostgreSQL;
    on SQLite this machine's (`local` if given, the caller's reading of it)."""
    if conn.dialect.name == "postgresql":
        return conn.execute(sa.select(sa.func.now())).scalar_one().astimezone(dt.UTC)
    return dt.datetime.now(dt.UTC) if local is None else local


def now_value(dialect_name: str) -> Any:
    """What a heartbeat writes: the database's now() on PostgreSQL (see database_now)."""
    return sa.func.now() if dialect_name == "postgresql" else dt.datetime.now(dt.UTC)


def beat(engine: sa.Engine, holder: str) -> int:
    """Mark `holder`'s 'running' runs alive now; returns how many it marked."""
    with engine.begin() as conn:
        postgres = conn.dialect.name == "postgresql"
        if postgres:  # a dead server or a held lock must not hold the beat (nor a fork)
            conn.exec_driver_sql(f"SET LOCAL statement_timeout = {BEAT_TIMEOUT_S * 1000}")
        mine = (
            sa.select(RUNS.c.id)
            .where((RUNS.c.holder == holder) & (RUNS.c.status == "running"))
            .order_by(RUNS.c.id)
            # FOR NO KEY UPDATE: an order or incident being inserted for a run (which
            # takes FOR KEY SHARE on it) neither waits for a beat nor is skipped by it
            .with_for_update(skip_locked=True, key_share=True)
        )
        done = conn.execute(
            sa.update(RUNS)
            .where(RUNS.c.id.in_(mine))
            .values(heartbeat_at=now_value(conn.dialect.name))
        )
    return done.rowcount


def is_stale(heartbeat_at: dt.datetime | None, now: dt.datetime) -> bool:
    """Whether a run's last heartbeat is older than the lease (False if it never beat:
    a run recorded before heartbeats, or one no single process holds)."""
    return heartbeat_at is not None and now - heartbeat_at > LEASE


def process_state(holder: str | None, heartbeat_at: dt.datetime | None, now: dt.datetime) -> str:
    """'alive' or 'gone' for a running run's process: by /proc on this host, by the
    heartbeat's age on another; 'unknown' when neither can tell."""
    state = holder_state(holder)
    if state == "unknown" and heartbeat_at is not None:
        return "gone" if is_stale(heartbeat_at, now) else "alive"
    return state


class Heartbeat:
    """Beats for `holder`'s runs every `interval` seconds in a daemon thread until
    stop(); the first beat comes one interval after start (the run's start is the
    first). A run closed as abandoned while its process was suspended is no longer
    beaten; when the process ends it, TradeLog.finish_run records a `resumed` incident."""

    def __init__(self, engine: sa.Engine, holder: str, interval: float | None = None) -> None:
        self.engine = engine
        self.holder = holder
        self.interval = INTERVAL.total_seconds() if interval is None else interval
        self.beats = 0  # beats written, for tests and the log
        self._stop = threading.Event()
        self._lock = threading.Lock()  # held during a beat; a fork waits for it
        self._thread = threading.Thread(target=self._run, name="run-heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        with _LIVE_LOCK:
            _LIVE.add(self)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop beating. Waits for a beat in progress, BEAT_TIMEOUT_S at most: a beat
        stuck on a dead connection ends on its own, with nothing left to do."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(BEAT_TIMEOUT_S)
        with _LIVE_LOCK:
            _LIVE.discard(self)

    def beat_now(self) -> None:
        """One beat in the caller's thread, failures logged like the thread's."""
        with self._lock:
            self._beat_once()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                if self._stop.is_set():
                    return
                self._beat_once()

    def _beat_once(self) -> None:
        try:
            beat(self.engine, self.holder)
        except Exception as exc:  # the database is away: the next beat tries again
            log.warning("run heartbeat not written", error=str(exc).splitlines()[0][:300])
            return
        self.beats += 1


# Fork safety. Held through a fork: the set of live heartbeats, and each one's lock.
_LIVE: weakref.WeakSet[Heartbeat] = weakref.WeakSet()
_LIVE_LOCK = threading.Lock()
_HELD_FOR_FORK: list[Heartbeat] = []


def _before_fork() -> None:
    _LIVE_LOCK.acquire()
    for heartbeat in list(_LIVE):
        # A beat stuck past its own timeout (a connection that hangs) would hold every
        # fork: go on without it, and later forks no longer wait for it.
        if heartbeat._lock.acquire(timeout=BEAT_TIMEOUT_S):
            _HELD_FOR_FORK.append(heartbeat)
        else:
            _LIVE.discard(heartbeat)


def _after_fork_in_parent() -> None:
    while _HELD_FOR_FORK:
        _HELD_FOR_FORK.pop()._lock.release()
    _LIVE_LOCK.release()


def _after_fork_in_child() -> None:
    # The child has the locks, held, but not the threads: release and forget them. Its
    # Event may have been mid-wait in the parent's thread: a new one, already set.
    global _LIVE_LOCK
    while _HELD_FOR_FORK:
        heartbeat = _HELD_FOR_FORK.pop()
        heartbeat._lock.release()
        heartbeat._stop = threading.Event()
        heartbeat._stop.set()
    _LIVE.clear()
    _LIVE_LOCK = threading.Lock()


os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
)
