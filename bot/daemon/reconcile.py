"""Start-up reconciliation: the trade log is the source of truth for what we intended,
the broker for what happened. Every open order in the log is matched to the broker by
client_order_id; orders the broker has that the log missed are adopted; orders that
vanished are closed; position differences are recorded. Nothing is sent here."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import structlog

from bot.broker.base import LiveBroker
from bot.broker.sequenced import QUEUED, SellsFirst
from bot.engine import record_execution
from bot.store.tradelog import TradeLog
from bot.types import Order, OrderRequest, OrderStatus, Side

log = structlog.get_logger(__name__)

_FINAL = {s.value for s in OrderStatus if s.is_final}


def order_from_row(row: pd.Series) -> Order:
    """An Order as the trade log last recorded it."""

    def num(value) -> float | None:
        return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)

    request = OrderRequest(
        row["client_order_id"], row["rebalance_id"], row["symbol"], Side(row["side"]),
        float(row["quantity"]), row["reason"], float(row["reference_price"]),
    )
    broker_id = row.get("broker_order_id")
    return Order(
        request,
        OrderStatus(row["status"]),
        pd.Timestamp(row["submitted_at"]).to_pydatetime(),
        None if broker_id is None or (isinstance(broker_id, float) and math.isnan(broker_id)) else str(broker_id),
        num(row.get("filled_quantity")) or 0.0,
        num(row.get("average_price")),
        row.get("status_message"),
    )


def reconcile(
    tradelog: TradeLog,
    broker: LiveBroker | SellsFirst,
    prefix: str,
    symbols: tuple[str, ...],
    now: dt.datetime,
    mode: str,
) -> list[str]:
    """Bring the log and the broker into agreement; returns the differences found (each
    is also recorded as an incident)."""
    differences: list[str] = []
    orders = tradelog.load_orders()
    ours = orders[orders["client_order_id"].str.startswith(f"{prefix}-")] if len(orders) else orders
    open_rows = ours[~ours["status"].isin(_FINAL)] if len(ours) else ours
    known = set(ours["client_order_id"]) if len(ours) else set()
    requeue: list[Order] = []

    for _, row in open_rows.iterrows():
        recorded = order_from_row(row)
        cid = recorded.request.client_order_id
        venue = broker.inner.find_order(cid) if isinstance(broker, SellsFirst) else broker.find_order(cid)
        if venue is None:
            if recorded.status is OrderStatus.NEW and recorded.broker_order_id is None and isinstance(broker, SellsFirst):
                requeue.append(recorded)
                continue
            recorded.status = OrderStatus.CANCELED
            recorded.status_message = "vanished: the broker does not know this order after a restart"
            record_execution(tradelog, recorded, None)
            differences.append(f"order {cid} was {row['status']} in the log but is unknown to the broker")
            continue
        # Track from what the log knows, so fills made while we were down are reported
        # (and recorded) by the next poll as the difference.
        recorded.broker_order_id = venue.broker_order_id
        broker.track(recorded)
        if venue.status.value != row["status"]:
            differences.append(f"order {cid}: log says {row['status']}, broker says {venue.status.value}")

    for venue in broker.open_orders():
        cid = venue.request.client_order_id
        if cid.startswith(f"{prefix}-") and cid not in known and venue.status_message != QUEUED:
            tradelog.order(venue)
            broker.track(venue)
            differences.append(f"order {cid} open at the broker was missing from the log: adopted")

    if requeue and isinstance(broker, SellsFirst):
        broker.restore(requeue)
        log.info("queued buys restored", count=len(requeue))

    differences.extend(_position_differences(tradelog, broker, symbols, mode))
    for text in differences:
        tradelog.incident(now, "reconcile", text, {"prefix": prefix})
    tradelog.flush()
    log.info("reconciled", differences=len(differences))
    return differences


def _position_differences(
    tradelog: TradeLog, broker, symbols: tuple[str, ...], mode: str
) -> list[str]:
    """Last recorded snapshot of this mode's runs against the broker's holdings."""
    runs = tradelog.runs()
    runs = runs[runs["mode"] == mode] if len(runs) else runs
    if runs.empty:
        return []
    latest = None
    for run_id in sorted(runs["id"], reverse=True):
        snaps = tradelog.load_positions(int(run_id))
        if len(snaps):
            latest = snaps[snaps["day"] == snaps["day"].max()]
            break
    if latest is None:
        return []
    logged = dict(zip(latest["symbol"], latest["quantity"].astype(float), strict=True))
    held = broker.holdings(symbols)
    out = []
    for symbol, quantity in zip(symbols, held, strict=True):
        before = logged.get(symbol, 0.0)
        if not np.isclose(before, quantity, rtol=1e-9, atol=1e-9):
            out.append(f"position {symbol}: last snapshot {before:g}, broker holds {quantity:g}")
    return out
