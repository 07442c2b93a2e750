"""A run's sign of life, for runs whose process may die on another machine.

On its own host a dead holder is proven by /proc (bot.store.holder). A trade log on a
shared PostgreSQL also sees runs of other machines, where /proc tells nothing: a run
killed there would read 'running' for ever. So while a process holds runs, a thread
writes `runs.heartbeat_at` for each of them every INTERVAL; a run of another host whose
heartbeat is older than LEASE is known dead (bot.store.abandoned).

The lease is ten beats: a database that refuses a few writes (a restart, a lock) does
not get a live run closed, and clocks of machines kept by NTP differ by far less. A
beat that fails is logged and tried again at the next one; it never stops the run.

The thread must not hold a lock when the process forks (the backtest's reference
worker, the sweep's pool): a child would inherit it held and block on it. Each beat
runs under the heartbeat's own lock, and a fork waits for that lock (os.register_at_fork),
so a child never starts inside a beat. The thread itself does not exist in a child.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import weakref

import sqlalchemy as sa

from bot.logs import get_logger
from bot.store.holder import holder_state
from bot.store.models import RUNS

log = get_logger(__name__)

INTERVAL = dt.timedelta(seconds=60)
LEASE = 10 * INTERVAL


def beat(engine: sa.Engine, holder: str, now: dt.datetime) -> int:
    """Mark every 'running' run of `holder` alive at `now`; returns how many there are."""
    with engine.begin() as conn:
        done = conn.execute(
            sa.update(RUNS)
            .where((RUNS.c.holder == holder) & (RUNS.c.status == "running"))
            .values(heartbeat_at=now)
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
    stop(); the first beat comes one interval after start (start_run writes the first)."""

    def __init__(self, engine: sa.Engine, holder: str, interval: float | None = None) -> None:
        self.engine = engine
        self.holder = holder
        self.interval = INTERVAL.total_seconds() if interval is None else interval
        self.beats = 0  # beats written, for tests and the log
        self._stop = threading.Event()
        self._lock = threading.Lock()  # held during a beat; a fork waits for it
        self._thread = threading.Thread(target=self._run, name="run-heartbeat", daemon=True)
        self._had_runs = True

    def start(self) -> Heartbeat:
        _LIVE.add(self)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop beating; waits for a beat in progress (never longer than one write)."""
        self._stop.set()
        _LIVE.discard(self)
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                if self._stop.is_set():
                    return
                self._beat_once()

    def _beat_once(self) -> None:
        try:
            running = beat(self.engine, self.holder, dt.datetime.now(dt.UTC))
        except Exception as exc:  # the database is away: the next beat tries again
            log.warning("run heartbeat not written", error=str(exc).splitlines()[0][:300])
            return
        self.beats += 1
        if running == 0 and self._had_runs:
            # Every run of this process was ended by another one: it saw no heartbeat for
            # longer than the lease (this process was suspended, or cut off the database).
            log.warning("this process's runs were closed by another process",
                        holder=self.holder, lease_seconds=LEASE.total_seconds())
        self._had_runs = running > 0


_LIVE: weakref.WeakSet[Heartbeat] = weakref.WeakSet()
_HELD_FOR_FORK: list[Heartbeat] = []


def _before_fork() -> None:
    for heartbeat in list(_LIVE):
        heartbeat._lock.acquire()
        _HELD_FOR_FORK.append(heartbeat)


def _after_fork_in_parent() -> None:
    while _HELD_FOR_FORK:
        _HELD_FOR_FORK.pop()._lock.release()


def _after_fork_in_child() -> None:
    # The child has the locks, held, but not the threads: release and forget them. Its
    # Event may have been mid-wait in the parent's thread: a new one, already set.
    while _HELD_FOR_FORK:
        heartbeat = _HELD_FOR_FORK.pop()
        heartbeat._lock.release()
        heartbeat._stop = threading.Event()
        heartbeat._stop.set()
    _LIVE.clear()


os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
)
