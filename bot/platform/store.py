"""The platform's rows in the trade log: each batch's profile decisions, one task row per
account and batch, and the batch's summary.

A task row is claimed with one UPDATE (atomic on SQLite and PostgreSQL) before any work,
and marked done in the same transaction as the records the work made, so:
- a task delivered again after it finished finds its row done and does nothing;
- a task delivered again after its worker died (RabbitMQ's redelivered flag) takes the
  row over and resumes from what was recorded;
- a copy of a task that is still running elsewhere waits (retried later), never runs
  beside it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from bot.store.models import METADATA
from bot.store.upsert import dialect_insert

TASKS = METADATA.tables["platform_tasks"]
DECISIONS = METADATA.tables["platform_decisions"]
BATCHES = METADATA.tables["platform_batches"]
INCIDENTS = METADATA.tables["incidents"]
RUNS = METADATA.tables["runs"]
ACCOUNTS = METADATA.tables["accounts"]
ORDERS = METADATA.tables["orders"]

FINAL = ("done", "dead")
#: the order statuses after which nothing more happens (bot.types.OrderStatus.is_final)
_FINAL_ORDER_STATUSES = ("filled", "canceled", "rejected", "expired")
#: the strategy name of a platform batch's run
PLATFORM_STRATEGY = "platform"
#: the status message of an order a rebalance planned and has not sent yet
PLANNED = "planned: recorded before it is sent"
#: the incident kind of a profile the weekly decision could not decide
PROFILE_FAILED = "profile_failed"


@dataclass(frozen=True)
class TaskRow:
    id: int
    run_id: int
    account_id: int
    kind: str
    day: dt.date
    status: str
    phase: str | None
    attempts: int
    retries: int
    claimed_by: str | None
    claimed_at: dt.datetime | None  # when the claim was taken, or last renewed


@dataclass(frozen=True)
class Claim:
    """What a delivery of a task may do: `go` (work; `row` is the claimed row), `done`
    (finished before: nothing to do), `busy` (another delivery runs it: try later),
    `exhausted` (it was started too often: dead-letter it)."""

    verdict: str
    row: TaskRow


@dataclass(frozen=True)
class StoredDecision:
    """One profile's targets of a batch, as the workers read them."""

    run_id: int
    profile: str
    day: dt.date
    rebalance_id: str
    weights: dict[str, float]
    stops: dict[str, float | None] | None


@dataclass(frozen=True)
class BatchSummary:
    run_id: int
    day: dt.date | None
    status: str  # the run's: running, finished, failed
    accounts: int
    done: int
    dead: int
    retried: int  # tasks that needed more than one try (a retry or a redelivery)
    waiting: int  # not final yet
    orders: int
    started_at: dt.datetime
    last_finished_at: dt.datetime | None
    failed_profiles: dict[str, str] = field(default_factory=dict)  # profile -> error
    superseded_by: int | None = None  # a second decide of the day: the batch's run instead
    skipped: dict[str, int] = field(default_factory=dict)  # of those done, not traded: why -> accounts

    @property
    def shown_status(self) -> str:
        """The run's status, or which batch a superseded decide gave way to."""
        return self.status if self.superseded_by is None else f"superseded by run {self.superseded_by}"

    @property
    def complete(self) -> bool:
        return self.waiting == 0

    @property
    def seconds(self) -> float | None:
        if self.last_finished_at is None:
            return None
        return (self.last_finished_at - self.started_at).total_seconds()

    def as_dict(self) -> dict[str, Any]:
        return {
            "accounts": self.accounts, "done": self.done, "dead": self.dead,
            "retried": self.retried, "waiting": self.waiting, "orders": self.orders,
            "decision_day": self.day.isoformat() if self.day else None,
            "seconds": self.seconds, "failed_profiles": self.failed_profiles,
            "superseded_by": self.superseded_by, "skipped": sum(self.skipped.values()),
            "skipped_because": self.skipped,
        }


def _task(row: sa.Row[Any]) -> TaskRow:
    return TaskRow(
        int(row.id), int(row.run_id), int(row.account_id), row.kind, row.day, row.status,
        row.phase, int(row.attempts), int(row.retries), row.claimed_by, row.claimed_at,
    )


def task_rows(
    run_id: int, kind: str, day: dt.date, account_ids: Iterable[int]
) -> list[dict[str, Any]]:
    """New rows for a batch's tasks (inserted with the batch's other records)."""
    return [
        {"run_id": run_id, "account_id": a, "kind": kind, "day": day, "status": "pending",
         "phase": None, "attempts": 0, "retries": 0}
        for a in account_ids
    ]


def insert_tasks(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    if rows:
        conn.execute(sa.insert(TASKS), rows)


def tasks_of(engine: sa.Engine, run_id: int, kind: str, statuses: Iterable[str] | None = None
             ) -> list[TaskRow]:
    stmt = sa.select(TASKS).where(TASKS.c.run_id == run_id, TASKS.c.kind == kind)
    if statuses is not None:
        stmt = stmt.where(TASKS.c.status.in_(list(statuses)))
    with engine.connect() as conn:
        return [_task(r) for r in conn.execute(stmt.order_by(TASKS.c.id))]


def get_task(engine: sa.Engine, task_id: int) -> TaskRow | None:
    with engine.connect() as conn:
        row = conn.execute(sa.select(TASKS).where(TASKS.c.id == task_id)).first()
    return None if row is None else _task(row)


def claim(
    engine: sa.Engine,
    task_id: int,
    delivery: str,
    redelivered: bool,
    now: dt.datetime,
    lease: dt.timedelta,
    max_attempts: int,
    worker: str | None = None,
) -> Claim:
    """Claim a task row for this delivery (`delivery`: the task id, the same for every
    delivery of one message). A pending or retrying row is taken; a running one only by
    a redelivery of the message that claimed it (its worker died) or once its claim is
    older than `lease` (its worker stopped answering: a live one renews it, bot.platform.lease)."""
    started = {"status": "running", "attempts": TASKS.c.attempts + 1, "claimed_by": delivery,
               "claimed_at": now, "worker": worker}
    with engine.begin() as conn:
        row = conn.execute(
            sa.update(TASKS)
            .where(TASKS.c.id == task_id, TASKS.c.status.in_(("pending", "retrying")))
            .values(started)
            .returning(*TASKS.c)
        ).first()
        if row is None:
            takeover = [TASKS.c.claimed_at < now - lease]
            if redelivered:
                takeover.append(TASKS.c.claimed_by == delivery)
            row = conn.execute(
                sa.update(TASKS)
                .where(TASKS.c.id == task_id, TASKS.c.status == "running", sa.or_(*takeover))
                .values(started)
                .returning(*TASKS.c)
            ).first()
        taken = row is not None
        if row is None:
            row = conn.execute(sa.select(TASKS).where(TASKS.c.id == task_id)).first()
    if row is None:
        raise LookupError(f"platform task {task_id} is not in the trade log")
    current = _task(row)
    if not taken:
        return Claim("done" if current.status in FINAL else "busy", current)
    if current.attempts > max_attempts:
        return Claim("exhausted", current)
    return Claim("go", current)


def set_phase(task_id: int, phase: str, outcome: Mapping[str, Any] | None = None) -> sa.Executable:
    """The statement marking a task's phase (committed with the records of that phase)."""
    values: dict[str, Any] = {"phase": phase}
    if outcome is not None:
        values["outcome"] = dict(outcome)
    return sa.update(TASKS).where(TASKS.c.id == task_id).values(values)


def mark_done(task_id: int, now: dt.datetime, outcome: Mapping[str, Any]) -> sa.Executable:
    return (
        sa.update(TASKS)
        .where(TASKS.c.id == task_id)
        .values(status="done", finished_at=now, outcome=dict(outcome), error=None)
    )


def fence(row: TaskRow) -> sa.Executable:
    """The statement that proves `row`'s claim still holds, run first in the transaction
    that writes the task's records (TradeLog.flush's `claim`): it returns no row once a
    later delivery took the task over (RabbitMQ redelivers a message whose connection
    dropped while its first execution goes on), and the flush then writes nothing."""
    return (
        sa.update(TASKS)
        .where(TASKS.c.id == row.id, TASKS.c.status == "running", TASKS.c.attempts == row.attempts)
        .values(claimed_at=TASKS.c.claimed_at)
        .returning(TASKS.c.id)
    )


def renew_claim(engine: sa.Engine, row: TaskRow, now: dt.datetime) -> bool:
    """Move `row`'s claim time to `now` while the claim holds (the task is alive: no
    other delivery may take it over for another lease); False once a later delivery
    took the task over, or the task is final."""
    with engine.begin() as conn:
        return bool(conn.execute(
            sa.update(TASKS)
            .where(TASKS.c.id == row.id, TASKS.c.status == "running", TASKS.c.attempts == row.attempts)
            .values(claimed_at=now)
        ).rowcount)


def _held(task: int | TaskRow) -> sa.ColumnElement[bool]:
    """A task row by id, or (given its claimed row) only while that claim holds: not
    final, and no later delivery has claimed it (each claim counts an attempt). The
    claim's own retry count may have moved it to 'retrying' before it dead-letters."""
    if isinstance(task, int):
        return TASKS.c.id == task
    return sa.and_(TASKS.c.id == task.id, TASKS.c.status.not_in(FINAL),
                   TASKS.c.attempts == task.attempts)


def mark_retrying(engine: sa.Engine, task: int | TaskRow, error: str) -> int | None:
    """Count a retry after a transient error; returns the retries so far, or None if the
    claimed row given was taken over meanwhile (nothing written)."""
    task_id = task if isinstance(task, int) else task.id
    with engine.begin() as conn:
        changed = conn.execute(
            sa.update(TASKS).where(_held(task))
            .values(status="retrying", retries=TASKS.c.retries + 1, error=error[:2000])
        ).rowcount
        if not changed:
            return None
        return int(conn.execute(sa.select(TASKS.c.retries).where(TASKS.c.id == task_id)).scalar_one())


def mark_dead(engine: sa.Engine, task: int | TaskRow, now: dt.datetime, error: str) -> bool:
    """Dead-letter a task row; False if the claimed row given was taken over meanwhile."""
    with engine.begin() as conn:
        return bool(conn.execute(
            sa.update(TASKS).where(_held(task))
            .values(status="dead", finished_at=now, error=error[:2000])
        ).rowcount)


# -- decisions -----------------------------------------------------------------------------


def decision_rows(run_id: int, decisions: Iterable[StoredDecision], config_hashes: Mapping[str, str],
                  now: dt.datetime) -> list[dict[str, Any]]:
    return [
        {"run_id": run_id, "profile": d.profile, "day": d.day, "rebalance_id": d.rebalance_id,
         "config_hash": config_hashes[d.profile], "weights": d.weights, "stops": d.stops,
         "created_at": now}
        for d in decisions
    ]


def load_decisions(engine: sa.Engine, run_id: int) -> dict[str, StoredDecision]:
    with engine.connect() as conn:
        return decisions_of(conn, run_id)


def decisions_of(conn: sa.Connection, run_id: int) -> dict[str, StoredDecision]:
    """Each profile's decision in batch run `run_id` (none for any other run)."""
    rows = conn.execute(sa.select(DECISIONS).where(DECISIONS.c.run_id == run_id)).all()
    return {
        r.profile: StoredDecision(
            int(r.run_id), r.profile, r.day, r.rebalance_id,
            {k: float(v) for k, v in r.weights.items()}, r.stops,
        )
        for r in rows
    }


def batch_of_day(engine: sa.Engine, day: dt.date, mode: str) -> int | None:
    """The run of the batch that decided on `day`'s close in `mode`, if one exists."""
    stmt = sa.select(BATCHES.c.run_id).where(
        BATCHES.c.day == day, BATCHES.c.mode == mode, BATCHES.c.run_id.is_not(None))
    with engine.connect() as conn:
        found = conn.execute(stmt).scalar()
    return None if found is None else int(found)


def claim_day(engine: sa.Engine, run_id: int, day: dt.date, mode: str, now: dt.datetime) -> sa.Executable:
    """The statement that makes `run_id` the batch of (`day`, `mode`): it inserts the row,
    or takes over the row of the decision waiting since its publish (record_published);
    it writes nothing if another run is that batch already (TradeLog.flush's `claim`)."""
    insert = dialect_insert(engine, BATCHES).values(
        {"run_id": run_id, "day": day, "mode": mode, "created_at": now})
    return insert.on_conflict_do_update(
        index_elements=["day", "mode"],
        set_={"run_id": insert.excluded.run_id, "created_at": insert.excluded.created_at},
        where=BATCHES.c.run_id.is_(None),
    ).returning(BATCHES.c.run_id)


@dataclass(frozen=True)
class WaitingDecision:
    """A weekly decision published and not yet taken by a worker."""

    day: dt.date
    mode: str
    published_at: dt.datetime


def record_published(engine: sa.Engine, day: dt.date, mode: str, now: dt.datetime) -> bool:
    """Record the decision of (`day`, `mode`) as published and waiting for a worker: a
    `platform_batches` row without a run, which the batch's claim takes over. Nothing is
    written if the day has a row already (its batch, or a decision already waiting).
    Returns whether this call wrote the row (withdraw it if the publish then fails)."""
    insert = dialect_insert(engine, BATCHES).values(
        {"run_id": None, "day": day, "mode": mode, "created_at": now, "published_at": now})
    with engine.begin() as conn:
        written = conn.execute(
            insert.on_conflict_do_nothing(index_elements=["day", "mode"]).returning(BATCHES.c.id)
        ).first()
    return written is not None


def drop_waiting(engine: sa.Engine, day: dt.date, mode: str) -> bool:
    """Forget the waiting decision of (`day`, `mode`) (its publish failed, or a worker
    took it and gave up: the error is an incident); a batch's row is never touched.
    Returns whether there was one."""
    with engine.begin() as conn:
        return conn.execute(
            sa.delete(BATCHES).where(BATCHES.c.day == day, BATCHES.c.mode == mode,
                                     BATCHES.c.run_id.is_(None))
        ).rowcount > 0


def waiting_decisions(engine: sa.Engine) -> list[WaitingDecision]:
    """The decisions published and not yet taken by a worker, oldest first."""
    stmt = (sa.select(BATCHES.c.day, BATCHES.c.mode, BATCHES.c.published_at)
            .where(BATCHES.c.run_id.is_(None)).order_by(BATCHES.c.published_at, BATCHES.c.id))
    with engine.connect() as conn:
        return [WaitingDecision(r.day, r.mode, r.published_at) for r in conn.execute(stmt)]


def newest_decision_day(engine: sa.Engine, mode: str) -> dt.date | None:
    """The latest close a decision of `mode` was published or decided on (a batch, or a
    decision waiting for a worker); None before the first."""
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.max(BATCHES.c.day)).where(BATCHES.c.mode == mode)).scalar()


def latest_batch(engine: sa.Engine, mode: str | None = None) -> int | None:
    stmt = sa.select(sa.func.max(BATCHES.c.run_id))
    if mode is not None:
        stmt = stmt.where(BATCHES.c.mode == mode)
    with engine.connect() as conn:
        found = conn.execute(stmt).scalar()
    return None if found is None else int(found)


def failed_profiles(engine: sa.Engine, run_id: int) -> dict[str, str]:
    """The profiles a batch could not decide, each with its error (their accounts are
    dead-lettered)."""
    stmt = sa.select(INCIDENTS.c.context).where(
        INCIDENTS.c.run_id == run_id, INCIDENTS.c.kind == PROFILE_FAILED).order_by(INCIDENTS.c.id)
    with engine.connect() as conn:
        return {c["profile"]: c["error"] for c in conn.execute(stmt).scalars()}


# -- summaries -----------------------------------------------------------------------------


def summarize(engine: sa.Engine, run_id: int) -> BatchSummary:
    """Where a batch stands: accounts done (and of those, skipped without trading, by
    reason), dead-lettered, retried, still waiting."""
    t = TASKS
    rebalance = sa.and_(t.c.run_id == run_id, t.c.kind == "rebalance")
    with engine.connect() as conn:
        run = conn.execute(sa.select(RUNS).where(RUNS.c.id == run_id)).first()
        if run is None or run.strategy != PLATFORM_STRATEGY:
            from bot.errors import BotError

            what = "is not a platform batch" if run is not None else "is not in this trade log"
            raise BotError(f"run {run_id} {what}; see `bot platform status`")
        counts = dict(
            conn.execute(sa.select(t.c.status, sa.func.count()).where(rebalance).group_by(t.c.status)).all()
        )
        retried = conn.execute(
            sa.select(sa.func.count()).where(rebalance, sa.or_(t.c.retries > 0, t.c.attempts > 1))
        ).scalar_one()
        last = conn.execute(sa.select(sa.func.max(t.c.finished_at)).where(rebalance)).scalar()
        orders = conn.execute(
            sa.select(sa.func.count()).select_from(ORDERS).where(
                ORDERS.c.run_id == run_id, ORDERS.c.account_id.is_not(None)
            )
        ).scalar_one()
        day = conn.execute(
            sa.select(sa.func.min(DECISIONS.c.day)).where(DECISIONS.c.run_id == run_id)
        ).scalar()
        why = t.c.outcome["skipped"].as_string()
        skipped = {str(reason): int(n) for reason, n in conn.execute(
            sa.select(why, sa.func.count()).where(rebalance, t.c.status == "done", why.is_not(None))
            .group_by(why).order_by(sa.func.count().desc(), why)
        )}
    total = sum(counts.values())
    done, dead = counts.get("done", 0), counts.get("dead", 0)
    last = _aware(last)
    return BatchSummary(
        run_id, day, run.status, total, done, dead, int(retried), total - done - dead,
        int(orders), run.started_at, last, failed_profiles(engine, run_id),
        _superseded_by(run.summary), skipped,
    )


def _superseded_by(summary: object) -> int | None:
    """The batch run a superseded decide's run names in its summary (decision.py)."""
    winner = summary.get("superseded_by") if isinstance(summary, dict) else None
    return int(winner) if isinstance(winner, int) else None


#: the incident kind of a decide whose worker died before it committed a batch
INTERRUPTED_DECIDE = "decide_interrupted"
#: a decide run older than this without a batch, whose day has its batch, is dead: a
#: decide takes seconds, a minute or two when the data source throttles it
DECIDE_GRACE = dt.timedelta(minutes=10)


def close_interrupted_decides(engine: sa.Engine, mode: str, now: dt.datetime) -> list[int]:
    """Close the decide runs of `mode` started over DECIDE_GRACE ago, still 'running'
    without being a batch, whose day has its batch now: each as superseded by that batch,
    with an incident. A worker that died between starting its run and committing the
    batch left it 'running' for ever, with 0 accounts; the decision delivered again made
    the day's batch under another run. (A decide of a day with no batch yet is left: its
    delivery again will make one.)"""
    no_batch = ~sa.exists(sa.select(BATCHES.c.run_id).where(BATCHES.c.run_id == RUNS.c.id))
    stmt = sa.select(RUNS.c.id, RUNS.c.config).where(
        RUNS.c.strategy == PLATFORM_STRATEGY, RUNS.c.status == "running", RUNS.c.mode == mode,
        RUNS.c.started_at < now - DECIDE_GRACE, no_batch,
    )
    closed = []
    with engine.begin() as conn:
        for run_id, config in conn.execute(stmt).all():
            day = config.get("decision_day") if isinstance(config, dict) else None
            winner = conn.execute(sa.select(BATCHES.c.run_id).where(
                BATCHES.c.day == dt.date.fromisoformat(day), BATCHES.c.mode == mode,
                BATCHES.c.run_id.is_not(None))).scalar() if isinstance(day, str) else None
            if winner is None:
                continue
            changed = conn.execute(
                sa.update(RUNS).where(RUNS.c.id == run_id, RUNS.c.status == "running")
                .values(status="failed", finished_at=now,
                        summary={"superseded_by": winner, "interrupted": True})
            ).rowcount
            if not changed:
                continue
            closed.append(int(run_id))
            conn.execute(sa.insert(INCIDENTS).values(
                run_id=run_id, at=now, kind=INTERRUPTED_DECIDE,
                message=(f"the decide of {day} in run {run_id} stopped before it committed a "
                         f"batch (its worker died or lost the database); run {winner} is "
                         "the day's batch"),
                context={"superseded_by": winner, "decision_day": day},
            ))
    return closed


def finish_if_complete(engine: sa.Engine, run_id: int, now: dt.datetime) -> BatchSummary | None:
    """Close a batch's run once every task is final, with its summary (once: the run must
    still be running). Returns the summary if this call closed it."""
    summary = summarize(engine, run_id)
    if not summary.complete or summary.status != "running":
        return None
    status = "finished" if summary.dead == 0 else "failed"
    # Only while every task is still final (retry-dead may have revived one meanwhile).
    open_task = sa.exists(sa.select(TASKS.c.id).where(
        TASKS.c.run_id == run_id, TASKS.c.kind == "rebalance", TASKS.c.status.not_in(FINAL)))
    with engine.begin() as conn:
        changed = conn.execute(
            sa.update(RUNS).where(RUNS.c.id == run_id, RUNS.c.status == "running", ~open_task)
            .values(status=status, finished_at=now, summary=summary.as_dict())
        ).rowcount
    return summary if changed else None


def _waiting_plan() -> sa.ColumnElement[bool]:
    """An order a rebalance planned and has not sent, whose task is not final: that task
    sends it (looking it up first) when it runs again, so no poll or close may follow it
    (it would find it absent at the venue and close it as never placed)."""
    task = sa.select(TASKS.c.id).where(
        TASKS.c.run_id == ORDERS.c.run_id, TASKS.c.account_id == ORDERS.c.account_id,
        TASKS.c.kind == "rebalance", TASKS.c.status.not_in(FINAL),
    )
    return sa.and_(
        ORDERS.c.status == "new", ORDERS.c.broker_order_id.is_(None),
        sa.func.coalesce(ORDERS.c.status_message, "") == PLANNED, sa.exists(task),
    )


def open_order_accounts(engine: sa.Engine) -> list[int]:
    """Accounts with orders not final in the trade log (what the poll round follows),
    leaving out plans their rebalance task has yet to send."""
    from bot.types import OrderStatus

    final = [s.value for s in OrderStatus if s.is_final]
    stmt = (
        sa.select(ORDERS.c.account_id).distinct()
        .where(ORDERS.c.account_id.is_not(None), ORDERS.c.status.not_in(final), ~_waiting_plan())
    )
    with engine.connect() as conn:
        return sorted(int(a) for (a,) in conn.execute(stmt))


def unfinished_rebalances(engine: sa.Engine, account_id: int) -> set[int]:
    """The batches (run ids) whose rebalance of the account is not final: their planned
    orders not sent yet are that task's to send."""
    stmt = sa.select(TASKS.c.run_id).where(
        TASKS.c.account_id == account_id, TASKS.c.kind == "rebalance", TASKS.c.status.not_in(FINAL))
    with engine.connect() as conn:
        return {int(r) for r in conn.execute(stmt).scalars()}


def has_open_orders(conn_engine: sa.Engine, account_id: int) -> bool:
    from bot.types import OrderStatus

    final = [s.value for s in OrderStatus if s.is_final]
    stmt = (
        sa.select(ORDERS.c.id)
        .where(ORDERS.c.account_id == account_id, ORDERS.c.status.not_in(final))
        .limit(1)
    )
    with conn_engine.connect() as conn:
        return conn.execute(stmt).first() is not None


def running_batches(engine: sa.Engine, mode: str) -> list[int]:
    """The batches of `mode` not closed yet. Only runs that are a day's batch: a decide
    still running has no task yet and would be closed as finished with 0 accounts."""
    is_batch = sa.exists(sa.select(BATCHES.c.run_id).where(BATCHES.c.run_id == RUNS.c.id))
    stmt = sa.select(RUNS.c.id).where(
        RUNS.c.strategy == PLATFORM_STRATEGY, RUNS.c.mode == mode, RUNS.c.status == "running",
        is_batch,
    )
    with engine.connect() as conn:
        return [int(r) for r in conn.execute(stmt.order_by(RUNS.c.id)).scalars()]


def stranded_rebalances(
    engine: sa.Engine, run_id: int, now: dt.datetime, quiet: dt.timedelta, lease: dt.timedelta
) -> list[TaskRow]:
    """The batch's rebalance tasks not final and idle for `quiet`, in a batch where no
    task was claimed for `quiet` either: never claimed since the batch was made, retrying
    since their last claim, or running past their claim's lease. Their message was lost
    (a publish or a retry that RabbitMQ refused, a message acked after an error no retry
    covered): nothing would ever run them. A batch still claiming tasks is only slow (a
    large one takes longer than `quiet` at the broker's request budget)."""
    with engine.connect() as conn:
        made = conn.execute(
            sa.select(BATCHES.c.created_at).where(BATCHES.c.run_id == run_id)).scalar()
        moved = conn.execute(sa.select(sa.func.max(TASKS.c.claimed_at)).where(
            TASKS.c.run_id == run_id, TASKS.c.kind == "rebalance")).scalar()
        rows = conn.execute(sa.select(TASKS).where(
            TASKS.c.run_id == run_id, TASKS.c.kind == "rebalance",
            TASKS.c.status.in_(("pending", "retrying", "running")),
        ).order_by(TASKS.c.id)).all()
    moved = _aware(moved)
    if moved is not None and now - moved <= quiet:
        return []  # the batch is moving: its queue is long, not lost
    stranded = []
    for row in map(_task, rows):
        since = _aware(row.claimed_at) or _aware(made)
        if since is None:
            continue
        idle = now - since
        if idle > (quiet + lease if row.status == "running" else quiet):
            stranded.append(row)
    return stranded


def _aware(when: dt.datetime | None) -> dt.datetime | None:
    return when.replace(tzinfo=dt.UTC) if when is not None and when.tzinfo is None else when


def close_tasks(engine: sa.Engine, run_id: int, day: dt.date) -> list[TaskRow]:
    """The close tasks of `day` under `run_id`: one per active account, created once;
    returns those not final yet."""
    existing = sa.select(TASKS.c.id).where(
        TASKS.c.run_id == run_id, TASKS.c.kind == "close", TASKS.c.day == day,
        TASKS.c.account_id == ACCOUNTS.c.id,
    )
    accounts = sa.select(
        sa.literal(run_id, sa.BigInteger), ACCOUNTS.c.id, sa.literal("close"),
        sa.literal(day, sa.Date), sa.literal("pending"), sa.literal(0), sa.literal(0),
    ).where(ACCOUNTS.c.status == "active", ~sa.exists(existing))
    columns = ["run_id", "account_id", "kind", "day", "status", "attempts", "retries"]
    with engine.begin() as conn:
        # Two close rounds at once (an owed publish beside the timetable's) both find no
        # row and insert: the second's rows are the first's, not an IntegrityError.
        conn.execute(dialect_insert(conn, TASKS).from_select(columns, accounts).on_conflict_do_nothing())
    return [r for r in tasks_of(engine, run_id, "close") if r.day == day and r.status not in FINAL]


def revive_dead(engine: sa.Engine, run_id: int, now: dt.datetime) -> tuple[list[TaskRow], int]:
    """Give the batch's dead-lettered rebalance tasks another round (an operator's call
    after a broker outage outlasted the retries): each is pending again with a fresh
    retry count, and the batch's run is reopened so its summary is made again when they
    end. Returns the revived rows and how many dead ones could not be: a task dead from
    the start (its profile was not decided) or whose recorded plan was closed unsent
    since (the poll closes a dead task's plan): sending the rest would trade half a plan.
    Its attempt count restarts at 1, so the next claim reads it as resumed (reconciled
    with the broker, no stale positions); `claimed_at` is now, so the poll round
    republishes it only if it is still not taken in 15 minutes."""
    closed_plan = sa.exists(sa.select(ORDERS.c.id).where(
        ORDERS.c.run_id == TASKS.c.run_id, ORDERS.c.account_id == TASKS.c.account_id,
        ORDERS.c.broker_order_id.is_(None), ORDERS.c.status.in_(_FINAL_ORDER_STATUSES)))
    dead = sa.and_(TASKS.c.run_id == run_id, TASKS.c.kind == "rebalance", TASKS.c.status == "dead")
    revivable = sa.and_(dead, TASKS.c.attempts > 0,
                        sa.or_(TASKS.c.phase.is_(None), TASKS.c.phase != "planned", ~closed_plan))
    with engine.begin() as conn:
        rows = conn.execute(
            sa.update(TASKS).where(revivable)
            .values(status="pending", attempts=1, retries=0, claimed_by=None, claimed_at=now,
                    finished_at=None, error=None)
            .returning(*TASKS.c)
        ).all()
        left = conn.execute(sa.select(sa.func.count()).where(dead)).scalar_one()
        if rows:
            conn.execute(sa.update(RUNS).where(RUNS.c.id == run_id, RUNS.c.status != "running")
                         .values(status="running", finished_at=None))
    return sorted(map(_task, rows), key=lambda r: r.id), int(left)


def dead_letters(engine: sa.Engine, run_id: int) -> list[dict[str, Any]]:
    """The batch's dead-lettered accounts with the error that ended each."""
    stmt = (
        sa.select(TASKS.c.account_id, ACCOUNTS.c.broker_account_id, TASKS.c.kind, TASKS.c.error)
        .join(ACCOUNTS, ACCOUNTS.c.id == TASKS.c.account_id)
        .where(TASKS.c.run_id == run_id, TASKS.c.status == "dead")
        .order_by(TASKS.c.account_id)
    )
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(stmt)]
