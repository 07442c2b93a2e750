"""Per-key request budgets: a token bucket per API key, in this process.

A key with a budget of N requests a minute may send N at once (the bucket's size) and
then one every 60/N seconds. The buckets live in the server's memory: `bot serve` runs one
process, so that is every request the key makes to it; behind several servers each one
counts its own requests (divide the budget by their number).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


MAX_BUCKETS = 10_000  # past this, buckets idle long enough to be full again are dropped


class TokenBuckets:
    """One bucket per name (an API key id, or a client address for failed logins)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, name: str, per_minute: int) -> float:
        """Spend one request of `name`'s budget: 0.0 if allowed, else the seconds until
        the next request would be (nothing is spent then)."""
        return self._use(name, per_minute, spend=True)

    def wait(self, name: str, per_minute: int) -> float:
        """What `take` would answer, without spending anything."""
        return self._use(name, per_minute, spend=False)

    def _use(self, name: str, per_minute: int, *, spend: bool) -> float:
        rate = per_minute / 60.0
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(name)
            if bucket is None:
                if len(self._buckets) >= MAX_BUCKETS:
                    self._prune(now)
                bucket = self._buckets[name] = _Bucket(float(per_minute), now)
            bucket.tokens = min(float(per_minute), bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
            if bucket.tokens >= 1.0:
                if spend:
                    bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / rate

    def _prune(self, now: float) -> None:
        """Forget buckets untouched for a minute or more: any budget refills within a
        minute, so a new bucket for them would be the same."""
        for name in [n for n, b in self._buckets.items() if now - b.updated >= 60.0]:
            del self._buckets[name]


def retry_after(wait: float) -> str:
    """The Retry-After header's whole seconds, rounded up (at least 1)."""
    return str(max(1, math.ceil(wait)))
