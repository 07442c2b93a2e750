"""Start-up reconciliation: the trade log is the source of truth for what we intended,
the broker for what happened. Every open order in the log is matched to the broker by
client_order_id; orders the broker has that the log missed are adopted; orders that
vanished are closed; each order's filled quantity is compared with the fills recorded for
it, and what is missing is recorded (an order answered filled whose fill never reached the
log); position differences are recorded. Nothing is sent here: queued buys are restored,
not released."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable

import numpy as np
import structlog

from bot.broker.base import BrokerError, LiveBroker
from bot.broker.sequenced import QUEUED_MESSAGES, SellsFirst
from bot.daemon.naming import instance_of
from bot.store.readers import RecordedOrder
from bot.store.tradelog import TradeLog
from bot.types import Order, OrderStatus, Side

log = structlog.get_logger(__name__)

#: how far back a restart looks for orders that closed at the venue while it was down
CLOSED_LOOKBACK = dt.timedelta(days=14)
#: quantities closer than this are equal (Alpaca quotes 9 decimals)
QTY_TOLERANCE = 1e-9


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
    recorded = tradelog.recorded_orders(prefix)
    mine = [r for r in recorded if r.mode == mode]
    differences: list[str] = []
    requeue: list[Order] = []

    for rec in mine:
        if rec.order.status.is_final:
            continue
        found = venue.find_order(rec.order.request.client_order_id)
        if found is None and is_queued_buy(rec.order) and isinstance(broker, SellsFirst):
            requeue.append(rec.order)
        else:
            differences.extend(_match(tradelog, venue, rec, found, now))

    at_venue = venue.open_orders() + venue.closed_orders(now - CLOSED_LOOKBACK)
    differences.extend(
        _compare_fills(tradelog, venue, [r for r in mine if r.order.status.is_final], at_venue,
                       now)
    )
    known = {r.order.request.client_order_id for r in recorded}
    differences.extend(_adopt_missing(tradelog, venue, prefix, known, at_venue))

    if requeue and isinstance(broker, SellsFirst):
        broker.restore(requeue)
        log.info("queued buys restored", count=len(requeue))

    differences.extend(_catch_up(tradelog, venue, now))
    differences.extend(_position_differences(tradelog, broker, symbols, mode, prefix))
    for text in differences:
        tradelog.incident(now, "reconcile", text, {"prefix": prefix})
    tradelog.flush()
    log.info("reconciled", differences=len(differences))
    return differences


def follow(
    tradelog: TradeLog,
    broker: SellsFirst,
    prefix: str,
    mode: str,
    leave: Callable[[RecordedOrder], bool] | None = None,
) -> int:
    """Pick up following an instance's open orders from the trade log alone, as a
    process that ran its earlier jobs would have them in memory: queued buys back in the
    queue, every other open order tracked from its recorded fills (the next poll reports
    what changed). The platform's stateless workers do this at every job of an account
    that has open orders; a restart after a crash runs `reconcile`, which also asks the
    venue for what the log may have missed. `leave`: open orders another job owns (a
    platform rebalance's plan its task has yet to send), neither followed nor counted.
    Returns how many orders are followed."""
    venue = _venue(broker)
    queued: list[Order] = []
    count = 0
    for rec in tradelog.recorded_orders(prefix):
        if rec.mode != mode or rec.order.status.is_final or (leave is not None and leave(rec)):
            continue
        count += 1
        if is_queued_buy(rec.order):
            queued.append(rec.order)
        else:
            venue.track(rec.order, _fills_of(rec))
    broker.restore(queued)
    return count


def _venue(broker: LiveBroker | SellsFirst) -> LiveBroker:
    """The broker that talks to the venue (under the sells-first queue, if any)."""
    return broker.inner if isinstance(broker, SellsFirst) else broker


def is_queued_buy(order: Order) -> bool:
    """A buy the sells-first queue held when the daemon stopped (never sent)."""
    return (
        order.status is OrderStatus.NEW
        and order.broker_order_id is None
        and order.request.side is Side.BUY
        and order.status_message in QUEUED_MESSAGES
    )


def _fills_of(rec: RecordedOrder) -> tuple[float, float | None]:
    return rec.fills_quantity, rec.fills_average


def _match(
    tradelog: TradeLog, venue: LiveBroker, rec: RecordedOrder, found: Order | None,
    now: dt.datetime,
) -> list[str]:
    """An order open in the log against the venue's view of it (`found`): tracked from
    its recorded fills, or closed if it vanished."""
    recorded = rec.order
    cid = recorded.request.client_order_id
    logged = recorded.status.value
    if found is None:
        recorded.status = OrderStatus.CANCELED
        recorded.status_message = "vanished: the broker does not know this order after a restart"
        tradelog.execution(recorded, None, now)
        return [f"order {cid} was {logged} in the log but is unknown to the broker"]
    if recorded.broker_order_id is None:
        # Sent (a queued buy released, a submit in doubt) but the log never heard back:
        # store the venue's id now, so the log stops calling it queued or unconfirmed.
        recorded.broker_order_id = found.broker_order_id
        recorded.status_message = "sent before a restart; found at the broker by its client_order_id"
        tradelog.execution(recorded, None, now)
    # Tracked from the fills the log holds (not from its filled_quantity), so fills made
    # while we were down, or lost before they were stored, are recorded as the difference.
    recorded.broker_order_id = found.broker_order_id
    venue.track(recorded, _fills_of(rec))
    out = []
    if found.status.value != logged:
        out.append(f"order {cid}: log says {logged}, broker says {found.status.value}")
    if recorded.filled_quantity > rec.fills_quantity + QTY_TOLERANCE:
        out.append(_missing_fill_text(cid, recorded.filled_quantity, rec.fills_quantity))
    return out


def _compare_fills(
    tradelog: TradeLog, venue: LiveBroker, final: list[RecordedOrder], at_venue: list[Order],
    now: dt.datetime,
) -> list[str]:
    """Orders final in the log: the venue's filled quantity against the fills recorded.
    A shortfall is followed from the recorded fills, so the catch-up poll records the
    missing fill with the venue's price and time; the others are only remembered, so a
    re-sent client_order_id adopted later (422) reports none of their fills twice. One
    the log closed but the venue still works is recorded as open and followed again."""
    by_cid = {o.request.client_order_id: o for o in at_venue}
    out = []
    for rec in final:
        cid = rec.order.request.client_order_id
        there = by_cid.get(cid)
        if there is None and rec.order.filled_quantity > rec.fills_quantity + QTY_TOLERANCE:
            there = venue.find_order(cid)  # older than the look-back: ask for this one
        if there is None:
            venue.track(rec.order, _fills_of(rec))  # remembered only: final, nothing to add
            continue
        filled = there.filled_quantity
        # the log's request (reason, reference price) with the venue's state
        current = dataclasses.replace(
            there, request=rec.order.request, status_message=rec.order.status_message
        )
        if not there.status.is_final:
            out.append(
                f"order {cid}: log says {rec.order.status.value}, broker says "
                f"{there.status.value}: followed again"
            )
            current.filled_quantity, current.average_price = _fills_of(rec)
            tradelog.execution(current, None, now)  # open again in the log
            venue.track(current, _fills_of(rec))
        elif filled > rec.fills_quantity + QTY_TOLERANCE:
            out.append(_missing_fill_text(cid, filled, rec.fills_quantity))
            venue.track(current, _fills_of(rec))
        elif rec.fills_quantity > filled + QTY_TOLERANCE:
            out.append(
                f"order {cid}: fills recorded for {rec.fills_quantity:g}, more than the "
                f"{filled:g} the broker filled"
            )
        else:
            venue.track(rec.order, _fills_of(rec))
    return out


def _missing_fill_text(cid: str, filled: float, recorded: float) -> str:
    return (
        f"order {cid}: filled {filled:g} but fills recorded for {recorded:g}; "
        "the missing fill is recorded from the broker's order"
    )


def _adopt_missing(
    tradelog: TradeLog, venue: LiveBroker, prefix: str, known: set[str], at_venue: list[Order]
) -> list[str]:
    """Record the venue's orders of this instance that the log lacks (sent just before a
    crash), open ones and those closed while the daemon was down."""
    out = []
    for order in at_venue:
        cid = order.request.client_order_id
        if not cid.startswith(f"{prefix}-") or cid in known:
            continue
        known.add(cid)
        _adopt(tradelog, venue, order)
        out.append(f"order {cid} {order.status.value} at the broker was missing from the log: adopted")
    return out


def _adopt(tradelog: TradeLog, venue: LiveBroker, order: Order) -> None:
    """Log `order` as sent with nothing filled and track it from zero, so the catch-up
    poll records every fill it had (with its time and price) as for any other order."""
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


def _catch_up(tradelog: TradeLog, venue: LiveBroker, now: dt.datetime) -> list[str]:
    """Record what the venue reports for the orders followed now (fills made while the
    daemon was down, fills the log lacked) before any job runs. Orders still open stay
    followed; if the venue cannot answer, the first poll records it all instead."""
    try:
        updates = venue.poll(now)
    except BrokerError as exc:
        log.warning("order updates not read at start; the next poll reads them", error=str(exc))
        return [f"order updates not read at start ({exc}); the next poll records them"]
    for order, fill in updates:
        tradelog.execution(order, fill, now)
    return []


def _position_differences(
    tradelog: TradeLog, broker, symbols: tuple[str, ...], mode: str, instance: str
) -> list[str]:
    """Last recorded snapshot of this mode's runs against the broker's holdings: of this
    strategy instance's runs (another strategy may record to the same log), or of the
    account being recorded, when a platform reconciles one client account."""
    runs = tradelog.runs()
    if len(runs):
        runs = runs[runs["mode"] == mode]
        if tradelog.account_id is None:
            runs = runs[runs["strategy"].map(instance_of) == instance]
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
            out.append(f"position {symbol}: last snapshot {before:g}, broker holds {quantity:g}"
                       f"{_split_hint(before, float(quantity))}")
    return out


def _split_hint(before: float, now: float) -> str:
    """A likely reason for a holding that changed by a whole ratio while the daemon was
    down: the fund split (leveraged ETFs split and reverse-split often)."""
    if before <= 0 or now <= 0:
        return ""
    ratio = now / before
    for n in range(2, 101):
        if abs(ratio - n) <= 1e-6 * n:
            return f" (a {n}-for-1 split?)"
        if abs(ratio * n - 1) <= 1e-6:
            return f" (a 1-for-{n} reverse split?)"
    return ""
