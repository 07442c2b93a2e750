"""Keeping an account's lease while its task works.

A task holds two things for its account: the account's lock in Redis (no other task of
the account runs beside it) and, for a rebalance or a close, its task row's claim (no
other delivery takes the task over). Both lapse after BOT_PLATFORM_LEASE, so a worker
that died frees the account. A task that is alive keeps them from its broker and data
requests: before each one it checks the lock is still its own and extends it (one Redis
round trip, beside the request budget's), and once a third of the lease has passed it
renews its claim too; it also keeps them while it waits its turn at the request budget.
A task that stopped making requests (hung) keeps nothing and lets them lapse, as a
dead one does. The platform's request policies keep every single wait and retry budget
well inside the lease (`request_limits`), so no working task lets it lapse.

Once either is gone, this execution's next request raises before it is sent, and every
later one: a redelivery of its own task took over (the lock now held under the same task
id, or the claim moved on) as ClaimTaken: that one finishes the task, this one writes
nothing more; any other loss as LockLost (a transient error: the task is retried and
resumes from its recorded plan). A lock that lapsed is not taken back: another task
may have had the account meanwhile, and this one's memory of it is stale. Both are
ExecutionStopped, which no catch-all that goes on may swallow.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import time
from collections.abc import Callable, Iterator

import sqlalchemy as sa

from bot.errors import ExecutionStopped
from bot.platform import store
from bot.platform.throttle import AccountLocks, TokenBucket
from bot.store.tradelog import ClaimTaken


class LockLost(ExecutionStopped):
    """Another task holds this one's account lock now, or it lapsed unrenewed."""


class Lease:
    """One execution's hold on an account: its lock token and, for a task with a row,
    its claim. `keep()` checks and extends the lock every call, and renews the claim
    when a third of the lease has passed."""

    def __init__(
        self,
        locks: AccountLocks,
        account_id: int,
        token: str,
        *,
        engine: sa.Engine | None = None,
        row: store.TaskRow | None = None,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if (engine is None) != (row is None):
            raise ValueError("a task row's claim is renewed through its engine: give both or neither")
        self.locks = locks
        self.account_id = account_id
        self.token = token
        self.delivery = token.partition("#")[0]  # the task id every delivery shares
        self.engine = engine
        self.row = row
        self.every = locks.lease_ms / 1000 / 3
        self._now = now
        self._monotonic = monotonic
        self._renewed = monotonic()
        self.lost: ExecutionStopped | None = None

    def keep(self) -> None:
        """Check the lease is still this execution's and extend it (the claim once a
        third of the lease has passed); raises once it is lost, and on every later call,
        so no request of this execution goes out after that."""
        if self.lost is not None:
            raise self.lost
        due = self._monotonic() - self._renewed >= self.every
        if (due and self.row is not None and self.engine is not None
                and not store.renew_claim(self.engine, self.row, self._now())):
            self.lost = ClaimTaken(f"platform task {self.row.id} was taken over by a later "
                                   "delivery; this execution stops")
            raise self.lost
        holder = self.locks.renew(self.account_id, self.token)
        if holder != self.token:
            self.lost = self._loss(holder)
            raise self.lost
        if due:
            self._renewed = self._monotonic()

    def _loss(self, holder: str) -> ExecutionStopped:
        if holder.startswith(f"{self.delivery}#"):  # RabbitMQ delivered this task again
            what = f"platform task {self.row.id}" if self.row is not None else "this poll"
            return ClaimTaken(f"{what} was taken over by a later delivery; this execution stops")
        if not holder:
            return LockLost(f"account {self.account_id}'s lock lapsed (no request for a whole "
                            "lease); another task may have had the account since")
        return LockLost(f"account {self.account_id}'s lock was taken by another task after "
                        "its lease ran out")


def request_limits(lease_seconds: float) -> dict[str, float]:
    """RetryPolicy limits that keep every wait of a task's request inside its lease: a
    Retry-After longer than a quarter of the lease is not waited for (the request fails
    as transient; the task is retried later, its account free meanwhile), and a request's
    retries stop after a third of it (threads waiting on a shared call wait no longer)."""
    return {"max_retry_after": min(120.0, lease_seconds / 4), "budget": min(300.0, lease_seconds / 3)}


def keep_current() -> None:
    """Keep the lease of the task this thread works for, if any: a throttle hook for
    requests outside the shared budget (market data), and a check before a write that
    no fence guards (a poll's records)."""
    lease = _current.get()
    if lease is not None:
        lease.keep()


_current: contextvars.ContextVar[Lease | None] = contextvars.ContextVar("platform_lease", default=None)


@contextlib.contextmanager
def held(lease: Lease) -> Iterator[Lease]:
    """Make `lease` the one this thread's broker requests keep (LeasedBudget)."""
    reset = _current.set(lease)
    try:
        yield lease
    finally:
        _current.reset(reset)


class LeasedBudget:
    """The shared request budget as a BrokerPlatform throttle hook that also keeps the
    calling task's lease: before the request, and between slices of a long wait for a
    token (each at most a third of the lease)."""

    def __init__(self, bucket: TokenBucket, sleep: Callable[[float], None] = time.sleep) -> None:
        self.bucket = bucket
        self._sleep = sleep

    def __call__(self) -> None:
        lease = _current.get()  # None: a request outside an account's task (the decision)
        if lease is not None:
            lease.keep()
        wait = self.bucket.reserve()
        while wait > 0:
            step = wait if lease is None else min(wait, lease.every)
            self._sleep(step)
            wait -= step
            if lease is not None:
                lease.keep()
