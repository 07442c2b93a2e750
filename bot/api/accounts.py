"""One client account as the trade log has it: the registry row, the latest equity, the
latest position snapshot and the last rebalance with its orders. Reads only.

Money and quantities are exact decimals in the trade log and leave as strings, as in
`bot trades --format json`, so no float rounding creeps into a client's statement.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from bot.accounts.registry import AccountRegistry
from bot.api.profiles import NotFound
from bot.store.models import METADATA
from bot.store.queries import OPEN_STATUSES

_UUID = re.compile(r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}")
_T = METADATA.tables
ORDERS, EQUITY, POSITIONS = _T["orders"], _T["equity"], _T["positions"]


def _text(value: Decimal | None) -> str | None:
    return None if value is None else format(value.normalize(), "f")


def account_view(
    engine: sa.Engine, ref: str, may_read: Callable[[int], bool] = lambda _id: True
) -> dict[str, Any]:
    """The account named by its registry id or broker account id; NotFound otherwise,
    also for an account the caller's key may not read (`may_read` of its registry id),
    so a scoped key cannot tell which other accounts exist."""
    account = None
    if re.fullmatch(r"[0-9]{1,18}", ref) or _UUID.fullmatch(ref):  # else no id of ours
        account = AccountRegistry(engine).find(ref)
    if account is None or not may_read(account.id):
        raise NotFound(f"no account {ref!r} in the registry (expected its id or broker account id)")
    with engine.connect() as conn:
        equity = _latest_equity(conn, account.id)
        positions = _latest_positions(conn, account.id, equity)
        rebalance = _last_rebalance(conn, account.id)
        open_orders = conn.execute(
            sa.select(sa.func.count()).select_from(ORDERS)
            .where(ORDERS.c.account_id == account.id, ORDERS.c.status.in_(OPEN_STATUSES))
        ).scalar_one()
    return {
        "id": account.id,
        "broker_account_id": account.broker_account_id,
        "profile": account.profile,
        "status": account.status,
        "suitability": account.suitability,
        "created_at": account.created_at.isoformat(),
        "closed_at": None if account.closed_at is None else account.closed_at.isoformat(),
        "equity": equity,
        "positions": positions,
        "last_rebalance": rebalance,
        "open_orders": int(open_orders),
    }


def _latest_equity(conn: sa.Connection, account_id: int) -> dict[str, Any] | None:
    e = EQUITY
    row = conn.execute(
        sa.select(e).where(e.c.account_id == account_id)
        .order_by(e.c.day.desc(), e.c.run_id.desc()).limit(1)
    ).first()
    if row is None:
        return None
    return {
        "day": row.day.isoformat(), "run_id": row.run_id, "equity": _text(row.equity),
        "cash": _text(row.cash), "positions_value": _text(row.positions_value),
        "drawdown": row.drawdown,
    }


def _latest_positions(
    conn: sa.Connection, account_id: int, equity: dict[str, Any] | None
) -> dict[str, Any] | None:
    """The newest snapshot (its run and day); each symbol's last row in it, sold-out
    symbols left out. Weights are of that day's equity when it is recorded."""
    p = POSITIONS
    last = conn.execute(
        sa.select(p.c.run_id, p.c.day).where(p.c.account_id == account_id)
        .order_by(p.c.day.desc(), p.c.run_id.desc(), p.c.id.desc()).limit(1)
    ).first()
    if last is None:
        return None
    rows = conn.execute(
        sa.select(p).where(p.c.account_id == account_id, p.c.run_id == last.run_id, p.c.day == last.day)
        .order_by(p.c.id)
    ).all()
    latest = {r.symbol: r for r in rows}  # a later snapshot of the day replaces an earlier one
    day_equity = conn.execute(
        sa.select(EQUITY.c.equity).where(
            EQUITY.c.account_id == account_id, EQUITY.c.run_id == last.run_id, EQUITY.c.day == last.day
        )
    ).scalar_one_or_none()
    holdings = [
        {
            "symbol": r.symbol, "quantity": _text(r.quantity), "price": _text(r.price),
            "market_value": _text(r.market_value),
            "weight": float(r.market_value / day_equity) if day_equity else None,
        }
        for r in latest.values() if r.quantity != 0
    ]
    return {"day": last.day.isoformat(), "run_id": last.run_id, "holdings": holdings}


def _last_rebalance(conn: sa.Connection, account_id: int) -> dict[str, Any] | None:
    """The account's newest rebalance (its orders share a rebalance id) and its orders."""
    o = ORDERS
    newest = conn.execute(
        sa.select(o.c.rebalance_id, o.c.run_id).where(o.c.account_id == account_id)
        .order_by(o.c.submitted_at.desc(), o.c.id.desc()).limit(1)
    ).first()
    if newest is None:
        return None
    rows = conn.execute(
        sa.select(o).where(o.c.account_id == account_id, o.c.rebalance_id == newest.rebalance_id)
        .order_by(o.c.id)
    ).all()
    return {
        "rebalance_id": newest.rebalance_id,
        "run_id": newest.run_id,
        "submitted_at": min(r.submitted_at for r in rows).isoformat(),
        "orders": [
            {
                "client_order_id": r.client_order_id, "symbol": r.symbol, "side": r.side,
                "quantity": _text(r.quantity), "notional": _text(r.notional),
                "reference_price": _text(r.reference_price), "status": r.status,
                "filled_quantity": _text(r.filled_quantity), "average_price": _text(r.average_price),
                "reason": r.reason, "submitted_at": r.submitted_at.isoformat(),
            }
            for r in rows
        ],
    }
