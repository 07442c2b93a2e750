"""Which daemon job is running and since when, for the heartbeat.

The heartbeat file proves to a health check (Docker, systemd) that the daemon is alive.
Touched by the jobs' own worker thread, it went stale whenever one job ran long, and a
job retrying through an Alpaca outage legitimately runs for minutes: the container was
reported unhealthy while it worked as designed. The heartbeat now has a thread of its
own and asks this watch instead: it stops only when a job has run longer than any job
can legitimately take (HUNG_JOB_SECONDS), so a hung job still fails the health check and
the restart it leads to is safe (every job is safe to run again).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

#: A job running this long is taken for hung. Every broker or data call gives up within
#: five minutes of retries; a decision makes a few dozen calls at most, nearly all quick.
HUNG_JOB_SECONDS = 1800.0


class JobWatch:
    """The running job's name and start (monotonic seconds), thread-safe."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, limit: float = HUNG_JOB_SECONDS
    ) -> None:
        self._clock = clock
        self.limit = limit
        self._running: tuple[str, float] | None = None
        self._lock = threading.Lock()

    @contextmanager
    def running(self, name: str) -> Iterator[None]:
        with self._lock:
            outer, self._running = self._running, (name, self._clock())
        try:
            yield
        finally:
            with self._lock:
                self._running = outer  # a job run from inside another: the outer one again

    def hung(self) -> tuple[str, float] | None:
        """(name, seconds) of a job running for longer than the limit; None otherwise."""
        with self._lock:
            running = self._running
        if running is None:
            return None
        seconds = self._clock() - running[1]
        return (running[0], seconds) if seconds > self.limit else None
