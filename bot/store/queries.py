"""Filtered reads of the trade log for people: the inspection commands and the dashboard.

Unlike TradeLog's load_* readers (floats, for analysis) these keep money exact
(Decimal), so an export shows what was recorded, digit for digit. They return Rows, not
DataFrames, so printing them needs no pandas; `.frame()` makes the DataFrame.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from typing import Any

import sqlalchemy as sa

from bot.errors import BotError
from bot.store.heartbeat import database_now, is_stale, process_state
from bot.store.models import METADATA
from bot.store.rows import Rows
from bot.types import OrderStatus

_T = METADATA.tables
RUNS, REGIMES, TARGETS = _T["runs"], _T["regime_decisions"], _T["targets"]
RISK_EVENTS, ORDERS, FILLS = _T["risk_events"], _T["orders"], _T["fills"]
EQUITY, POSITIONS, INCIDENTS = _T["equity"], _T["positions"], _T["incidents"]
ACCOUNTS = _T["accounts"]

FINAL_STATUSES = tuple(s.value for s in OrderStatus if s.is_final)
OPEN_STATUSES = tuple(s.value for s in OrderStatus if not s.is_final)


@dataclass(frozen=True)
class Filters:
    """What to show: one run (None: every run), one client account (accounts.id; None:
    every account), a UTC date range, a symbol, the last N rows. `count_all`: also count
    the rows the limit leaves out (Rows.total), for a table that says "the last 100 of
    5,665" without fetching and converting the 5,665."""

    run: int | None = None
    account: int | None = None
    since: dt.date | None = None
    until: dt.date | None = None
    symbol: str | None = None
    limit: int | None = None
    count_all: bool = False

    def __post_init__(self) -> None:
        """A reversed range matches nothing; say so instead of printing an empty table."""
        if self.since is not None and self.until is not None and self.until < self.since:
            raise BotError(
                f"--until {self.until} is before --since {self.since}; "
                "expected --since on or before --until"
            )


def latest_run(conn: sa.Connection, account: int | None = None) -> int:
    """The newest run that recorded something (equity or orders), for `account` if given.
    A run with nothing in it (`bot once` without --execute, a daemon stopped before its
    first job) would make every command answer "no rows match" while the previous run
    holds the records."""
    equity, orders = sa.select(EQUITY.c.run_id), sa.select(ORDERS.c.run_id)
    if account is not None:
        equity = equity.where(EQUITY.c.account_id == account)
        orders = orders.where(ORDERS.c.account_id == account)
    recorded = sa.union(equity, orders).subquery()
    run = conn.execute(sa.select(sa.func.max(recorded.c.run_id))).scalar_one_or_none()
    if run is None and account is not None:
        raise BotError(f"account {account} has no orders or equity in the trade log yet")
    if run is None:
        run = conn.execute(sa.select(sa.func.max(RUNS.c.id))).scalar_one_or_none()
    if run is None:
        raise BotError("the trade log has no runs yet: run a backtest (or the daemon) first")
    return int(run)


def run_accounts(conn: sa.Connection, run_id: int) -> dict[int | None, str | None]:
    """The accounts run `run_id` recorded equity or positions for, each with its broker
    account id; None stands for the rows without an account (the single-account daemon)."""
    held = sa.union(
        sa.select(EQUITY.c.account_id).where(EQUITY.c.run_id == run_id),
        sa.select(POSITIONS.c.account_id).where(POSITIONS.c.run_id == run_id),
    ).subquery()
    stmt = sa.select(held.c.account_id, ACCOUNTS.c.broker_account_id).select_from(
        held.outerjoin(ACCOUNTS, ACCOUNTS.c.id == held.c.account_id)
    )
    rows = sorted(conn.execute(stmt).all(), key=lambda r: (r[0] is None, r[0] or 0))
    return {r[0]: r[1] for r in rows}


class RunNotFound(BotError):
    """A run id the trade log does not hold (the dashboard answers it with a 404)."""


def require_run(conn: sa.Connection, run_id: int) -> None:
    if conn.execute(sa.select(RUNS.c.id).where(RUNS.c.id == run_id)).first() is None:
        known = conn.execute(sa.select(RUNS.c.id).order_by(RUNS.c.id)).scalars().all()
        listed = ", ".join(str(r) for r in known[-10:]) or "none"
        raise RunNotFound(f"no run {run_id} in the trade log (latest runs: {listed}); see `bot runs`")


@dataclass(frozen=True)
class Liveness:
    """Whether a run's process still runs, as `bot runs` judges it: a process killed
    outright leaves its run 'running' until the next run marks it failed, so its status
    alone reads as a run in progress."""

    process: str | None  # 'alive', 'gone' or 'unknown' for a 'running' run; else None
    heartbeat_at: dt.datetime | None  # its last sign of life (None: it never beat)
    heartbeat_stale: bool  # a 'running' run's last beat is older than the lease

    @property
    def doubtful(self) -> bool:
        """A 'running' run whose process is gone or has stopped beating: its status does not
        mean it is in progress. The one test of it: `bot report`'s warning and the
        dashboard's banner (through /api/summary's run) both read this."""
        return self.process == "gone" or self.heartbeat_stale


def run_process(status: str, holder: str | None, heartbeat_at: dt.datetime | None,
                now: dt.datetime) -> str | None:
    """The process state of a 'running' run (bot.store.heartbeat.process_state); None for
    a run that ended, whose process no longer matters."""
    return process_state(holder, heartbeat_at, now) if status == "running" else None


def liveness(conn: sa.Connection, run_id: int) -> Liveness:
    """Run `run_id`'s Liveness, judged by the clock heartbeats are written by."""
    row = conn.execute(
        sa.select(RUNS.c.status, RUNS.c.holder, RUNS.c.heartbeat_at).where(RUNS.c.id == run_id)
    ).one()
    now = database_now(conn)
    running = row.status == "running"
    return Liveness(run_process(row.status, row.holder, row.heartbeat_at, now), row.heartbeat_at,
                    running and is_stale(row.heartbeat_at, now))


def synthetic_runs(conn: sa.Connection, run_ids: set[int]) -> set[int]:
    """Which of `run_ids` traded a synthetic market."""
    if not run_ids:
        return set()
    stmt = sa.select(RUNS.c.id).where(RUNS.c.id.in_(sorted(run_ids)), RUNS.c.synthetic.is_(True))
    return {int(i) for i in conn.execute(stmt).scalars()}


def run_is_synthetic(conn: sa.Connection, run_id: int) -> bool:
    """Whether the run traded a synthetic market (its tables are then labelled so)."""
    return bool(conn.execute(sa.select(RUNS.c.synthetic).where(RUNS.c.id == run_id)).scalar())


def _day_range(stmt: sa.Select[Any], column: sa.ColumnElement[Any], f: Filters) -> sa.Select[Any]:
    if f.since is not None:
        stmt = stmt.where(column >= f.since)
    if f.until is not None:
        stmt = stmt.where(column <= f.until)
    return stmt


def _time_range(stmt: sa.Select[Any], column: sa.ColumnElement[Any], f: Filters) -> sa.Select[Any]:
    """Timestamps filtered by UTC calendar day, `until` inclusive."""
    if f.since is not None:
        stmt = stmt.where(column >= dt.datetime.combine(f.since, dt.time(), dt.UTC))
    if f.until is not None and f.until < dt.date.max:  # 9999-12-31: no upper bound (no day after it)
        end = dt.datetime.combine(f.until + dt.timedelta(days=1), dt.time(), dt.UTC)
        stmt = stmt.where(column < end)
    return stmt


def resolve_account(conn: sa.Connection, ref: str) -> int:
    """The registry id of an account named by its id or its broker account id, read as
    `bot accounts` reads them (a UUID with or without hyphens, an id in range)."""
    from bot.accounts.registry import account_where

    where = account_where(ref)
    found = None if where is None else conn.execute(
        sa.select(ACCOUNTS.c.id).where(where)
    ).scalar_one_or_none()
    if found is None:
        raise BotError(
            f"--account {ref}: no such account in the registry (expected its id or broker "
            "account id); see `bot accounts list`"
        )
    return int(found)


#: The command that shows each table, for errors: the user typed `bot regimes`, and
#: never saw the name regime_decisions.
COMMAND_OF = {"fills": "trades", "regime_decisions": "regimes", "risk_events": "risk-events"}


def _shown_by(table: sa.Table) -> str:
    """`bot regimes` for the regime_decisions table: what a user typed."""
    return f"`bot {COMMAND_OF.get(table.name, table.name)}`"


def _common(stmt: sa.Select[Any], table: sa.Table, f: Filters) -> sa.Select[Any]:
    if f.run is not None and "run_id" in table.c:
        stmt = stmt.where(table.c.run_id == f.run)
    if f.account is not None:
        if "account_id" not in table.c:
            raise BotError(f"--account does not apply to {_shown_by(table)}: its rows are not "
                           "per account")
        stmt = stmt.where(table.c.account_id == f.account)
    if f.symbol is not None:
        if "symbol" not in table.c:
            raise BotError(f"--symbol does not apply to {_shown_by(table)}: its rows are not "
                           "per asset")
        stmt = stmt.where(table.c.symbol == f.symbol.upper())
    return stmt


def _rows(conn: sa.Connection, stmt: sa.Select[Any], f: Filters, order: list[Any]) -> Rows:
    """Rows in chronological order; with a limit, the most recent `limit` of them."""
    if not f.limit:
        return _fetch(conn, stmt.order_by(*order))
    inner = stmt.order_by(*(o.desc() for o in order)).limit(f.limit).subquery()
    rows = _fetch(conn, sa.select(inner).order_by(*(inner.c[o.name] for o in order)))
    if f.count_all and len(rows) == f.limit:  # fewer would mean all of them are here
        total = conn.execute(sa.select(sa.func.count()).select_from(stmt.subquery())).scalar_one()
        rows = replace(rows, total=int(total))
    return rows


def _fetch(conn: sa.Connection, stmt: sa.Select[Any]) -> Rows:
    result = conn.execute(stmt)
    return Rows(tuple(result.keys()), [tuple(row) for row in result])


def runs(conn: sa.Connection, f: Filters, documents: bool = False) -> Rows:
    """The runs; with `documents`, also each one's stored config and summary (an export
    has every column: a table has no room for them)."""
    t = RUNS
    columns = [c for c in t.c if documents or c.name not in ("config", "summary")]
    stmt = _time_range(sa.select(*columns), t.c.started_at, f)
    if f.run is not None:
        stmt = stmt.where(t.c.id == f.run)
    if f.symbol is not None:
        traded = sa.select(ORDERS.c.run_id).where(ORDERS.c.symbol == f.symbol.upper())
        stmt = stmt.where(t.c.id.in_(traded))
    if f.account is not None:
        ordered = sa.select(ORDERS.c.run_id).where(ORDERS.c.account_id == f.account)
        marked = sa.select(EQUITY.c.run_id).where(EQUITY.c.account_id == f.account)
        stmt = stmt.where(t.c.id.in_(ordered) | t.c.id.in_(marked))
    rows = _rows(conn, stmt, f, [t.c.id])
    # Whether a 'running' run's process still runs: a killed one's run stays 'running'
    # until the next run started marks it failed (bot.store.abandoned).
    now = database_now(conn)  # the clock heartbeats are written by
    process = [
        run_process(status, holder, beat, now)
        for status, holder, beat in zip(
            rows.column("status"), rows.column("holder"), rows.column("heartbeat_at"), strict=True
        )
    ]
    return rows.inserted(rows.columns.index("status") + 1, "process", process)


def trades(conn: sa.Connection, f: Filters) -> Rows:
    t = FILLS
    value = (t.c.quantity, t.c.price)
    stmt = sa.select(
        t.c.run_id, t.c.account_id, t.c.filled_at, t.c.symbol, t.c.side, *value, t.c.commission,
        t.c.slippage_cost, t.c.client_order_id, t.c.id,
    )
    rows = _rows(conn, _time_range(_common(stmt, t, f), t.c.filled_at, f), f, [t.c.filled_at, t.c.id])
    value = [q * p for q, p in zip(rows.column("quantity"), rows.column("price"), strict=True)]
    return rows.inserted(7, "value", value).drop(["id"])


def orders(conn: sa.Connection, f: Filters, status: str | None = None) -> Rows:
    """Orders; `status` 'open' means every status that is not final."""
    t = ORDERS
    stmt = sa.select(
        t.c.run_id, t.c.account_id, t.c.submitted_at, t.c.client_order_id, t.c.broker_order_id, t.c.symbol,
        t.c.side, t.c.quantity, t.c.notional, t.c.reference_price, t.c.status,
        t.c.filled_quantity, t.c.average_price, t.c.updated_at, t.c.reason, t.c.status_message,
        t.c.id,
    )
    stmt = _time_range(_common(stmt, t, f), t.c.submitted_at, f)
    if status == "open":
        stmt = stmt.where(t.c.status.in_(OPEN_STATUSES))
    elif status is not None:
        stmt = stmt.where(t.c.status == OrderStatus(status).value)
    return _rows(conn, stmt, f, [t.c.submitted_at, t.c.id]).drop(["id"])


def positions(conn: sa.Connection, f: Filters, *, history: bool = False) -> Rows:
    """The last snapshot on or before `until` (what is held), or every snapshot in range.

    A snapshot lists every holding of its run (and account) on that day; weight is its
    market value over that day's equity of the same account.
    """
    t, e = POSITIONS, EQUITY
    same_book = (e.c.run_id == t.c.run_id) & e.c.account_id.is_not_distinct_from(t.c.account_id)
    stmt = (
        sa.select(
            t.c.run_id, t.c.account_id, t.c.day, t.c.symbol, t.c.quantity, t.c.price,
            t.c.market_value, e.c.equity, t.c.id,
        )
        .select_from(t.outerjoin(e, same_book & (e.c.day == t.c.day)))
    )
    stmt = _day_range(_common(stmt, t, f), t.c.day, f)
    if not history:
        last = sa.select(t.c.run_id, t.c.account_id, sa.func.max(t.c.day).label("day")).group_by(
            t.c.run_id, t.c.account_id
        )
        last = _day_range(_common(last, t, replace(f, symbol=None)), t.c.day, Filters(until=f.until))
        last = last.subquery()
        stmt = stmt.join(
            last,
            (last.c.run_id == t.c.run_id)
            & last.c.account_id.is_not_distinct_from(t.c.account_id)
            & (last.c.day == t.c.day),
        )
    if history:
        rows = _rows(conn, stmt, f, [t.c.day, t.c.id])
    else:
        # Snapshots list sold-out symbols at 0 so a flat book shows as flat; drop those
        # before the limit (one snapshot is small), or --limit 1 could show a sold row only.
        rows = _held_or_flat(_rows(conn, stmt, replace(f, limit=None), [t.c.day, t.c.id]))
        rows = rows.tail(f.limit) if f.limit else rows
    weight = [
        float(mv / eq) if eq else None
        for mv, eq in zip(rows.column("market_value"), rows.column("equity"), strict=True)
    ]
    return rows.inserted(len(rows.columns), "weight", weight).drop(["equity", "id"])


def _held_or_flat(rows: Rows) -> Rows:
    """The held rows of each snapshot; one that holds nothing (a flat book) keeps its zero
    rows: dropped too, a book sold out on its last day read as "no rows match", and the
    dashboard as having no snapshot at all."""
    book = [rows.columns.index(c) for c in ("run_id", "account_id", "day")]
    q = rows.columns.index("quantity")
    holding = {tuple(r[i] for i in book) for r in rows.rows if r[q] != 0}
    kept = [r for r in rows.rows if r[q] != 0 or tuple(r[i] for i in book) not in holding]
    return Rows(rows.columns, kept)


def regimes(conn: sa.Connection, f: Filters) -> Rows:
    t = REGIMES
    stmt = sa.select(*(c for c in t.c if c.name != "id"), t.c.id)
    stmt = _day_range(_common(stmt, t, f), t.c.day, f)
    return _rows(conn, stmt, f, [t.c.day, t.c.id]).drop(["id"])


def equity(conn: sa.Connection, f: Filters) -> Rows:
    """Daily equity. The drawdown is shown below zero (-0.1468: 14.68% under the peak),
    as `bot report`, the dashboard and every metric show it; the table stores its depth."""
    t = EQUITY
    stmt = sa.select(
        t.c.run_id, t.c.account_id, t.c.day, t.c.equity, t.c.cash, t.c.positions_value,
        (-t.c.drawdown).label("drawdown"), t.c.regime,
    )
    stmt = _day_range(_common(stmt, t, f), t.c.day, f)
    return _rows(conn, stmt, f, [t.c.run_id, t.c.day, t.c.account_id])


def risk_events(conn: sa.Connection, f: Filters) -> Rows:
    t = RISK_EVENTS
    stmt = sa.select(t.c.run_id, t.c.day, t.c.rule, t.c.symbol, t.c.action, t.c.inputs, t.c.id)
    stmt = _day_range(_common(stmt, t, f), t.c.day, f)
    return _rows(conn, stmt, f, [t.c.day, t.c.id]).drop(["id"])


def incidents(conn: sa.Connection, f: Filters) -> Rows:
    """What went wrong: failed jobs, stale data, rejected rows, interrupted runs. The
    context column holds the details (for rejected rows, the rows themselves)."""
    t = INCIDENTS
    stmt = sa.select(t.c.run_id, t.c.at, t.c.kind, t.c.message, t.c.context, t.c.id)
    stmt = _time_range(_common(stmt, t, f), t.c.at, f)
    return _rows(conn, stmt, f, [t.c.at, t.c.id]).drop(["id"])


def latest_targets(conn: sa.Connection, run_id: int) -> Rows:
    """The final weights of the run's most recent rebalance decision."""
    t = TARGETS
    last = sa.select(sa.func.max(t.c.day)).where(t.c.run_id == run_id).scalar_subquery()
    stmt = (
        sa.select(t.c.day, t.c.rebalance_id, t.c.symbol, t.c.baseline, t.c.overlay, t.c.final,
                  t.c.reasons, t.c.id)
        .where(t.c.run_id == run_id, t.c.day == last)
        .order_by(t.c.id)
    )
    rows = _fetch(conn, stmt)
    # A day with two decisions (e.g. a stop, then a rebalance): keep the last one.
    if not rows.empty:
        last_decision = rows.column("rebalance_id")[-1]
        rows = rows.where("rebalance_id", lambda r: r == last_decision)
        rows = _after_stops(conn, run_id, rows)
    return rows.drop(["id"])


def _after_stops(conn: sa.Connection, run_id: int, rows: Rows) -> Rows:
    """`rows` (one decision's targets) with each fund whose stop was hit after that
    decision's day at 0, as the engine holds it until the next rebalance: the stop's
    sale writes no targets row, and the dashboard showed the fund at its old weight."""
    day = rows.column("day")[0]
    r = RISK_EVENTS
    stopped = dict(conn.execute(
        sa.select(r.c.symbol, sa.func.min(r.c.day)).where(
            r.c.run_id == run_id, r.c.rule == "stop", r.c.day > day, r.c.symbol.is_not(None)
        ).group_by(r.c.symbol)
    ).all())
    if not stopped:
        return rows
    final, reasons, symbol = (rows.columns.index(c) for c in ("final", "reasons", "symbol"))
    updated = []
    for row in rows.rows:
        hit = stopped.get(row[symbol])
        if hit is not None:
            row = list(row)
            row[final] = type(row[final])(0)
            row[reasons] = [*(row[reasons] or []), f"stop hit on {hit}: out until the next rebalance"]
            row = tuple(row)
        updated.append(row)
    return Rows(rows.columns, updated, rows.total)
