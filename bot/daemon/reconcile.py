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
#: how far back a restart looks for orders that closed at the venue while it was down
CLOSED_LOOKBACK = dt.timedelta(days=14)


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
    is also recorded as an incident). `prefix` is the instance name, which starts every
    client_order_id; only orders of this mode's runs are reconciled, and an instance
    whose state belongs to the other mode refuses to start (BotError)."""
    tradelog.load_state(prefix, mode)  # raises BotError naming the instance and both modes
    venue = _venue(broker)
    orders = _orders_of(tradelog, prefix)
    mine = orders[orders["run_id"].isin(_run_ids(tradelog, mode))] if len(orders) else orders
    open_rows = mine[~mine["status"].isin(_FINAL)] if len(mine) else mine
    differences: list[str] = []
    requeue: list[Order] = []

    for _, row in open_rows.iterrows():
        recorded = order_from_row(row)
        found = venue.find_order(recorded.request.client_order_id)
        if found is None and _is_queued_buy(recorded) and isinstance(broker, SellsFirst):
            requeue.append(recorded)
        else:
            differences.extend(_match(tradelog, venue, recorded, found, row["status"]))

    known = set(orders["client_order_id"]) if len(orders) else set()
    differences.extend(_adopt_missing(tradelog, venue, prefix, known, now))

    if requeue and isinstance(broker, SellsFirst):
        broker.restore(requeue)
        log.info("queued buys restored", count=len(requeue))

    differences.extend(_position_differences(tradelog, broker, symbols, mode))
    for text in differences:
        tradelog.incident(now, "reconcile", text, {"prefix": prefix})
    tradelog.flush()
    log.info("reconciled", differences=len(differences))
    return differences


def _venue(broker: LiveBroker | SellsFirst) -> LiveBroker:
    """The broker that talks to the venue (under the sells-first queue, if any)."""
    return broker.inner if isinstance(broker, SellsFirst) else broker


def _orders_of(tradelog: TradeLog, prefix: str) -> pd.DataFrame:
    """Every logged order of this instance, whatever the run's mode."""
    orders = tradelog.load_orders()
    return orders[orders["client_order_id"].str.startswith(f"{prefix}-")] if len(orders) else orders


def _run_ids(tradelog: TradeLog, mode: str) -> set[int]:
    """Ids of the runs in `mode`: a live daemon never acts on a paper run's orders."""
    runs = tradelog.runs()
    return set(runs.loc[runs["mode"] == mode, "id"].astype(int)) if len(runs) else set()


def _is_queued_buy(order: Order) -> bool:
    """A buy the sells-first queue held when the daemon stopped (never sent)."""
    return (
        order.status is OrderStatus.NEW
        and order.broker_order_id is None
        and order.request.side is Side.BUY
        and order.status_message == QUEUED
    )


def _match(
    tradelog: TradeLog, venue: LiveBroker, recorded: Order, found: Order | None, logged: str
) -> list[str]:
    """An order open in the log against the venue's view of it (`found`): tracked, or
    closed if it vanished."""
    cid = recorded.request.client_order_id
    if found is None:
        recorded.status = OrderStatus.CANCELED
        recorded.status_message = "vanished: the broker does not know this order after a restart"
        record_execution(tradelog, recorded, None)
        return [f"order {cid} was {logged} in the log but is unknown to the broker"]
    # Track from what the log knows, so fills made while we were down are reported
    # (and recorded) by the next poll as the difference.
    recorded.broker_order_id = found.broker_order_id
    venue.track(recorded)
    if found.status.value != logged:
        return [f"order {cid}: log says {logged}, broker says {found.status.value}"]
    return []


def _adopt_missing(
    tradelog: TradeLog, venue: LiveBroker, prefix: str, known: set[str], now: dt.datetime
) -> list[str]:
    """Record the venue's orders of this instance that the log lacks (sent just before a
    crash), open ones and those closed while the daemon was down."""
    found = venue.open_orders() + venue.closed_orders(now - CLOSED_LOOKBACK)
    out = []
    for order in found:
        cid = order.request.client_order_id
        if not cid.startswith(f"{prefix}-") or cid in known:
            continue
        known.add(cid)
        _adopt(tradelog, venue, order)
        out.append(f"order {cid} {order.status.value} at the broker was missing from the log: adopted")
    return out


def _adopt(tradelog: TradeLog, venue: LiveBroker, order: Order) -> None:
    """Log `order` as sent with nothing filled and track it from zero, so the next poll
    records every fill it had (with its time and price) as for any other order."""
    if order.filled_quantity <= 0:
        tradelog.order(order)
        venue.track(order)
        return
    blank = Order(
        order.request, OrderStatus.ACCEPTED, order.submitted_at, order.broker_order_id,
        status_message="adopted after a restart; its fills are recorded by the next poll",
    )
    tradelog.order(blank)
    venue.track(blank)


def _position_differences(
    tradelog: TradeLog, broker, symbols: tuple[str, ...], mode: str
) -> list[str]:
    """Last recorded snapshot of this mode's runs (of the account being recorded, when a
    platform reconciles one client account) against the broker's holdings."""
    runs = tradelog.runs()
    runs = runs[runs["mode"] == mode] if len(runs) else runs
    if runs.empty:
        return []
    latest = None
    for run_id in sorted(runs["id"], reverse=True):
        snaps = tradelog.load_positions(int(run_id), account=tradelog.account_id)
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
