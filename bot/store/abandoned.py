"""Runs left 'running' by a process that ended without recording their end.

A process killed outright (SIGKILL, the OOM killer, a power cut) never marks its run
finished or failed. Three things prove such a process gone: its holder (bot.store.holder)
names a process of this host that no longer runs; a backtest or replay of another host
has not written the run's heartbeat for longer than the lease (bot.store.heartbeat); or,
for a paper or live session, the strategy's lock is free (bot.daemon.instance). Either way the
run is marked failed with an `abandoned` incident naming the run that found it, so the
trade log never shows a dead run as in progress.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from bot.logs import get_logger
from bot.store.heartbeat import LEASE, database_now, process_state
from bot.store.holder import holder_state
from bot.store.queries import FINAL_STATUSES
from bot.store.tradelog import INCIDENTS, ORDER_EVENTS, ORDERS, RUNS, TradeLog
from bot.types import OrderStatus

log = get_logger(__name__)

LEASED_MODES = ("backtest", "replay")  # closed by an old heartbeat (bot.store.heartbeat)


def close_dead_runs(tradelog: TradeLog, run_id: int, now: dt.datetime) -> list[int]:
    """Mark abandoned every other 'running' run whose holder is known gone; returns them."""
    with tradelog.engine.connect() as conn:
        held = conn.execute(
            sa.select(RUNS.c.id, RUNS.c.mode, RUNS.c.holder, RUNS.c.heartbeat_at).where(
                (RUNS.c.status == "running") & RUNS.c.holder.is_not(None) & (RUNS.c.id != run_id)
            ).order_by(RUNS.c.id)
        ).all()
        clock = database_now(conn, now)  # the clock heartbeats are written by
    # A holder of this host is checked in /proc; a backtest or replay of another host
    # (where /proc cannot tell) is dead once its heartbeat is older than the lease. A
    # paper or live session is closed by its strategy's lock instead, which a session
    # that was only suspended still holds.
    gone, silent = [], []
    for rid, mode, holder, beat in held:
        if holder_state(holder) == "gone":  # by /proc: the proof the incident names
            gone.append(rid)
        elif mode in LEASED_MODES and process_state(holder, beat, clock) == "gone":
            silent.append(rid)
    lease = f"no heartbeat for more than {LEASE.total_seconds() / 60:g} minutes"
    # Only a process proven gone has its simulated orders canceled: one whose heartbeat
    # stopped may be suspended and resume, and its venue would then fill them. Once its
    # last heartbeat is a day old, it is taken for gone and they are canceled then.
    marked = (mark_abandoned(tradelog, gone, run_id, now, "its process is gone")
              + mark_abandoned(tradelog, silent, run_id, now, lease, cancel_orders=False))
    _cancel_long_silent(tradelog, clock - LONG_SILENT, now)
    return marked


#: a silent simulation's open orders are canceled once its last heartbeat is this old
LONG_SILENT = dt.timedelta(days=1)


def _cancel_long_silent(tradelog: TradeLog, before: dt.datetime, now: dt.datetime) -> None:
    """Cancel the open orders of failed backtests and replays last heard of before
    `before` (closed as silent, their orders left for a process that might resume)."""
    has_open = sa.exists().where(_open_orders(RUNS.c.id))
    with tradelog.engine.begin() as conn:
        long_dead = conn.execute(sa.select(RUNS.c.id).where(
            (RUNS.c.status == "failed") & RUNS.c.mode.in_(LEASED_MODES)
            & (RUNS.c.heartbeat_at < before) & has_open
        )).scalars().all()
        for old in long_dead:
            canceled = _cancel_simulated_orders(conn, old, now)
            conn.execute(sa.insert(INCIDENTS).values(
                run_id=old, at=now, kind="abandoned_orders",
                message=(f"run {old}'s {canceled} open order(s) canceled: its process was last "
                         f"heard of more than {LONG_SILENT.days} day(s) ago"),
                context={"canceled_orders": canceled},
            ))


def mark_abandoned(
    tradelog: TradeLog, run_ids: Sequence[int], found_by: int, now: dt.datetime, proof: str,
    *, cancel_orders: bool = True,
) -> list[int]:
    """Mark `run_ids` failed, each with an `abandoned` incident saying how it was known
    dead (`proof`); a run that ended meanwhile is left as it ended. Returns those marked.

    Its end is its last heartbeat, if it wrote one (when it was last known alive, not
    when this run found it). With `cancel_orders` (the process is known gone), a
    backtest's or replay's orders still open are canceled: their venue died with the
    process and nothing will fill them (a paper or live run's are at Alpaca, where the
    next start's reconciliation finds them)."""
    marked = []
    with tradelog.engine.begin() as conn:
        for old in run_ids:
            row = conn.execute(sa.select(RUNS.c.mode, RUNS.c.heartbeat_at)
                               .where(RUNS.c.id == old)).first()
            last_seen = row.heartbeat_at if row is not None and row.heartbeat_at else now
            done = conn.execute(sa.update(RUNS).where(
                (RUNS.c.id == old) & (RUNS.c.status == "running")
            ).values(status="failed", finished_at=min(last_seen, now)))
            if done.rowcount != 1:
                continue
            marked.append(old)
            simulated = cancel_orders and row.mode in LEASED_MODES
            canceled = _cancel_simulated_orders(conn, old, now) if simulated else 0
            conn.execute(sa.insert(INCIDENTS).values(
                run_id=old, at=now, kind="abandoned",
                message=(f"run {old} ended without recording its end (killed, or the machine "
                         f"went down: {proof}); marked failed by run {found_by} at its start"
                         + (f"; its {canceled} open order(s) canceled" if canceled else "")
                         + ("; its open orders are left for a day, in case it resumes"
                            if row.mode in LEASED_MODES and not cancel_orders else "")),
                context={"found_by_run": found_by, "proof": proof, "canceled_orders": canceled,
                         "last_heartbeat": row.heartbeat_at.isoformat() if row.heartbeat_at else None},
            ))
    for old in marked:
        log.warning("abandoned run marked failed", run=old, found_by=found_by, proof=proof)
    return marked


ABANDONED_ORDER = "canceled: the run ended (killed) before its simulated venue filled it"


def _cancel_simulated_orders(conn: sa.Connection, run_id: int, now: dt.datetime) -> int:
    """Cancel run `run_id`'s open orders, each with its status event; returns how many."""
    open_orders = conn.execute(
        sa.select(ORDERS.c.id, ORDERS.c.filled_quantity).where(_open_orders(run_id))
    ).all()
    if not open_orders:
        return 0
    ids = [order_id for order_id, _ in open_orders]
    conn.execute(sa.update(ORDERS).where(ORDERS.c.id.in_(ids)).values(
        status=OrderStatus.CANCELED.value, status_message=ABANDONED_ORDER, updated_at=now))
    conn.execute(sa.insert(ORDER_EVENTS), [
        {"order_id": order_id, "status": OrderStatus.CANCELED.value, "at": now,
         "message": ABANDONED_ORDER, "filled_quantity": filled}
        for order_id, filled in open_orders
    ])
    return len(open_orders)


def _open_orders(run_id: Any) -> sa.ColumnElement[bool]:
    """The orders of run `run_id` (a value or a column) not yet in a final status."""
    return (ORDERS.c.run_id == run_id) & ORDERS.c.status.not_in(FINAL_STATUSES)
