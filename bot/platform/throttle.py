"""What the workers share in Redis: the broker's request budget and one lock per account.

The budget is a token bucket in one Redis hash, updated by a Lua script (atomic: Redis
runs one script at a time) on Redis's own clock, so every thread of every worker on every
machine draws from the same bucket. A request that finds the bucket empty reserves the
next token anyway (the count goes below zero) and is told how long to wait for it: the
waiters are served in order at exactly the rate, with one round trip each and no polling.
Plugged into `BrokerPlatform`'s throttle hook, it runs before every HTTP attempt,
retries included.

The account lock keeps two tasks of one account (a rebalance and a poll, say) from
working at once. Each execution holds it under its own token, the task's id and a random
suffix: a task that RabbitMQ delivers again (its worker died, or its connection dropped)
takes over a lock held under its own task id at once, while other tasks (and a second
copy of a task still running) wait for it to be released or for the lease to run out (a
working task renews it: bot.platform.lease); an earlier execution that goes on after the
takeover cannot release the new holder's lock.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import redis
import structlog

from bot.redis_bucket import REFILL

log = structlog.get_logger(__name__)

#: KEYS[1] the bucket; ARGV rate (tokens/s), burst (the size). Returns microseconds to
#: wait (0: go).
TAKE_TOKEN = REFILL + """
tokens = tokens - 1
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(at))
redis.call('PEXPIRE', KEYS[1], math.ceil((size - tokens) / rate * 1000) + 60000)
if tokens >= 0 then
  return 0
end
return math.ceil(-tokens / rate * 1000000)
"""

#: KEYS[1] the lock; ARGV token, lease in ms, 1 if this delivery is a redelivery, the
#: token prefix every execution of this task shares. 1: taken (it was free or expired);
#: 2: this token holds it already (renewed); 3: taken over from an earlier execution of
#: the same task (a redelivery: that one's worker died); 0: someone else holds it.
TAKE_LOCK = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  if holder == false then
    return 1
  end
  return 2
end
if ARGV[3] == '1' and string.sub(holder, 1, string.len(ARGV[4])) == ARGV[4] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 3
end
return 0
"""

#: KEYS[1] the lock; ARGV token, lease in ms. Extends the lock only for its holder and
#: returns the holder now: ARGV[1] if extended, another token, or '' (it lapsed: another
#: task may have worked on the account meanwhile, so it is not taken back).
RENEW_LOCK = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return holder
end
if holder == false then
  return ''
end
return holder
"""

#: KEYS[1] the lock; ARGV token. Deletes it only if this token holds it.
RELEASE_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class TokenBucket:
    """A request budget shared through Redis: `per_second` tokens a second, at most
    `burst` saved up. Call it (the BrokerPlatform throttle hook) before each request."""

    def __init__(
        self,
        client: redis.Redis,
        key: str,
        per_second: float,
        burst: int,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if per_second <= 0 or burst < 1:
            raise ValueError("a token bucket needs a positive rate and a burst of at least 1")
        self.key = key
        self.per_second = per_second
        self.burst = burst
        self._take = client.register_script(TAKE_TOKEN)
        self._sleep = sleep

    def reserve(self) -> float:
        """Take a token; returns the seconds to wait before using it (0: at once)."""
        return int(self._take(keys=[self.key], args=[repr(self.per_second), self.burst])) / 1e6

    def __call__(self) -> None:
        wait = self.reserve()
        if wait > 0:
            self._sleep(wait)


class AccountLocks:
    """One lock per client account, held by a task id for at most `lease` seconds."""

    def __init__(self, client: redis.Redis, prefix: str, lease: float) -> None:
        self.prefix = prefix
        self.lease_ms = max(1, int(lease * 1000))
        self._take = client.register_script(TAKE_LOCK)
        self._renew = client.register_script(RENEW_LOCK)
        self._release = client.register_script(RELEASE_LOCK)

    def key(self, account_id: int) -> str:
        return f"{self.prefix}:account-lock:{account_id}"

    def acquire(self, account_id: int, delivery: str, *, redelivered: bool = False) -> str | None:
        """Take the account's lock for one execution of task `delivery` (the Celery task
        id, the same in every delivery of one message); returns the execution's own token,
        or None if the lock is held. A lock an earlier execution of the same task holds is
        taken over if this delivery is RabbitMQ's redelivery (that execution's worker died
        or lost its connection), else refused (it still runs). Each execution has its own
        token, so an earlier one that is still running cannot release the lock of the
        one that took it over."""
        token = f"{delivery}#{uuid.uuid4().hex}"
        answer = int(self._take(keys=[self.key(account_id)],
                                args=[token, self.lease_ms, "1" if redelivered else "0", f"{delivery}#"]))
        return token if answer else None

    def renew(self, account_id: int, token: str) -> str:
        """Hold the lock under `token` for another lease, if it still does; returns the
        lock's holder now: `token` when renewed, another execution's token, or '' when
        it lapsed (not taken back: another task may have had the account meanwhile)."""
        holder = self._renew(keys=[self.key(account_id)], args=[token, self.lease_ms])
        return holder.decode() if isinstance(holder, bytes) else str(holder or "")

    def release(self, account_id: int, token: str) -> None:
        """Let the lock go; with Redis unreachable it lapses after its lease instead. Called
        in a `finally`: raising there replaced the task's own outcome (a retry already
        scheduled) with Redis's error, which Celery then retried a second time."""
        try:
            self._release(keys=[self.key(account_id)], args=[token])
        except redis.RedisError as exc:
            log.warning("account lock not released: it lapses after its lease",
                        account=account_id, lease_seconds=self.lease_ms / 1000, error=str(exc))
