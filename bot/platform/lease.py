"""Keeping an account's lease while its task works.

A task holds two things for its account: the account's lock in Redis (no other task of
the account runs beside it) and, for a rebalance or a close, its task row's claim (no
other delivery takes the task over). Both lapse after BOT_PLATFORM_LEASE, so a worker
that died frees the account. A task that is alive renews both before its broker
requests, at most every third of the lease, and while it waits its turn at the shared
request budget (many workers on a small budget wait long). A task that stopped making
requests (hung) renews nothing and lets them lapse, as a dead one does.

Once either is found taken by another execution, every later request of this one raises
before it is sent: a lost claim as ClaimTaken (a later delivery finishes the task; this
one writes nothing more), a lost lock as LockLost (a transient error: the task is retried
and resumes from its recorded plan).
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import time
from collections.abc import Callable, Iterator

import sqlalchemy as sa

from bot.errors import BotError
from bot.platform import store
from bot.platform.throttle import AccountLocks, TokenBucket
from bot.store.tradelog import ClaimTaken


class LockLost(BotError):
    """Another task holds this one's account lock now (its lease ran out unrenewed)."""


class Lease:
    """One execution's hold on an account: its lock token and, for a task with a row,
    its claim. `keep()` renews both when a third of the lease has passed."""

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
        self.engine = engine
        self.row = row
        self.every = locks.lease_ms / 1000 / 3
        self._now = now
        self._monotonic = monotonic
        self._renewed = monotonic()
        self.lost: BotError | None = None

    def keep(self) -> None:
        """Renew the lease if a third of it has passed; raises once it is lost (and on
        every later call, so no request of this execution goes out after that)."""
        if self.lost is not None:
            raise self.lost
        if self._monotonic() - self._renewed < self.every:
            return
        if (self.row is not None and self.engine is not None
                and not store.renew_claim(self.engine, self.row, self._now())):
            self.lost = ClaimTaken(f"platform task {self.row.id} was taken over by a later "
                                   "delivery; this execution stops")
            raise self.lost
        if not self.locks.renew(self.account_id, self.token):
            self.lost = LockLost(f"account {self.account_id}'s lock was taken by another task "
                                 "after its lease ran out")
            raise self.lost
        self._renewed = self._monotonic()


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
