"""Per-key request budgets: a token bucket per API key.

A key with a budget of N requests a minute may send N at once (the bucket's size) and
then one every 60/N seconds. `TokenBuckets` keep them in the server's memory: right for
one `bot serve`, but behind several servers each would count only its own requests.
`RedisTokenBuckets` keep them in Redis (`bot serve --redis`, or BOT_REDIS_URL, the
platform's Redis), updated by one Lua script on Redis's own clock, so every server draws
from the same bucket. If Redis stops answering, each server falls back to its own
buckets (and says so in the log) rather than refusing every request.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import structlog

from bot.redis_bucket import REFILL

if TYPE_CHECKING:
    import redis

log = structlog.get_logger(__name__)


class Buckets(Protocol):
    def take(self, name: str, per_minute: int) -> float: ...

    def wait(self, name: str, per_minute: int) -> float: ...

    def give_back(self, name: str, per_minute: int) -> None: ...


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

    def give_back(self, name: str, per_minute: int) -> None:
        """Return one request taken ahead of a check that passed (up to the bucket's size)."""
        with self._lock:
            bucket = self._buckets.get(name)
            if bucket is not None:
                bucket.tokens = min(float(per_minute), bucket.tokens + 1.0)

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


#: KEYS[1] the bucket; ARGV rate (tokens/s), size, spend (1/0). Returns the microseconds
#: until a token is there: 0 means there is one (and it was spent if asked).
USE_TOKEN = REFILL + """
if tokens < 1 then
  return math.ceil((1 - tokens) / rate * 1000000)
end
if ARGV[3] == '1' then
  tokens = tokens - 1
  redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(at))
  redis.call('PEXPIRE', KEYS[1], math.ceil((size - tokens) / rate * 1000) + 1000)
end
return 0
"""


#: KEYS[1] the bucket; ARGV rate, size: one token returned (up to the size).
GIVE_BACK = REFILL + """
tokens = math.min(size, tokens + 1)
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(at))
redis.call('PEXPIRE', KEYS[1], math.ceil((size - tokens) / rate * 1000) + 1000)
return 0
"""


class RedisTokenBuckets:
    """TokenBuckets shared by every server through Redis, under `prefix`."""

    WARN_EVERY = 60.0  # seconds between two warnings that Redis does not answer

    def __init__(self, client: redis.Redis, prefix: str,
                 fallback: TokenBuckets | None = None) -> None:
        self.prefix = prefix
        self._use = client.register_script(USE_TOKEN)
        self._give_back = client.register_script(GIVE_BACK)
        self._fallback = fallback or TokenBuckets()
        self._warned = -math.inf

    def take(self, name: str, per_minute: int) -> float:
        return self._ask(name, per_minute, spend=True)

    def wait(self, name: str, per_minute: int) -> float:
        return self._ask(name, per_minute, spend=False)

    def give_back(self, name: str, per_minute: int) -> None:
        import redis

        try:
            self._give_back(keys=[f"{self.prefix}:{name}"], args=[repr(per_minute / 60.0), per_minute])
        except redis.RedisError:
            self._fallback.give_back(name, per_minute)  # taken there too, while Redis is away

    def _ask(self, name: str, per_minute: int, *, spend: bool) -> float:
        import redis

        try:
            micros = self._use(keys=[f"{self.prefix}:{name}"],
                               args=[repr(per_minute / 60.0), per_minute, int(spend)])
        except redis.RedisError as error:
            now = time.monotonic()
            if now - self._warned >= self.WARN_EVERY:
                self._warned = now
                log.warning("api.rate_limit_local", reason=str(error),
                            detail="Redis does not answer: this server counts requests alone")
            return self._fallback.take(name, per_minute) if spend else (
                self._fallback.wait(name, per_minute))
        return int(micros) / 1e6


def retry_after(wait: float) -> str:
    """The Retry-After header's whole seconds, rounded up (at least 1)."""
    return str(max(1, math.ceil(wait)))
