"""Sells first, buys after the sells have filled: at Alpaca an open buy reserves buying
power, so buys sent beside unfilled sells can be rejected for want of cash. Wraps any
LiveBroker; queued buys are recorded as orders in status `new` with no broker id, so a
restart finds and re-queues them."""

from __future__ import annotations

import datetime as dt

import numpy as np
import structlog

from bot.broker.base import AccountInfo, LiveBroker, MarketClock, TradingSession
from bot.types import Fill, Order, OrderRequest, OrderStatus, Side

log = structlog.get_logger(__name__)

QUEUED = "queued until the sells of the rebalance have filled"
#: buys are sized to leave this share of buying power unused (prices move after the close)
CASH_BUFFER = 0.005


class SellsFirst:
    def __init__(self, inner: LiveBroker) -> None:
        self.inner = inner
        self._queue: list[Order] = []

    # ------------------------------------------------------------ the sequencing
    def submit(self, request: OrderRequest, now: dt.datetime) -> Order:
        if request.side is Side.BUY and (self._queue or self._sells_open()):
            order = Order(request, OrderStatus.NEW, now, None, status_message=QUEUED)
            self._queue.append(order)
            return order
        return self.inner.submit(request, now)

    def restore(self, queued: list[Order]) -> None:
        """Re-queue buys that were waiting when the daemon stopped."""
        known = {o.request.client_order_id for o in self._queue}
        self._queue.extend(o for o in queued if o.request.client_order_id not in known)

    def poll(self, now: dt.datetime) -> list[tuple[Order, Fill | None]]:
        updates = self.inner.poll(now)
        if self._queue and not self._sells_open():
            updates.extend((order, None) for order in self._release(now))
        return updates

    def _sells_open(self) -> bool:
        return any(o.request.side is Side.SELL for o in self.inner.open_orders())

    def _release(self, now: dt.datetime) -> list[Order]:
        """Send the queued buys, each cut to the buying power left (in queue order, as
        the simulated venue cuts buys to its cash)."""
        self.inner.refresh()
        budget = self.inner.account().buying_power * (1.0 - CASH_BUFFER)
        sent = []
        for order in self._queue:
            req = order.request
            affordable = max(budget, 0.0) / req.reference_price
            quantity = min(req.quantity, affordable)
            if quantity < req.quantity:
                log.warning("buy cut to buying power", order=req.client_order_id,
                            planned=req.quantity, sent=quantity)
                req = req._replace(quantity=quantity)
            if quantity <= 0:
                order.status = OrderStatus.REJECTED
                order.status_message = "no buying power left after the sells"
                sent.append(order)
                continue
            placed = self.inner.submit(req, now)
            budget -= quantity * req.reference_price
            sent.append(placed)
        self._queue.clear()
        return sent

    # ------------------------------------------------------------ delegation
    def open_order_count(self) -> int:
        return self.inner.open_order_count() + len(self._queue)

    def open_orders(self) -> list[Order]:
        return self.inner.open_orders() + list(self._queue)

    def find_order(self, client_order_id: str) -> Order | None:
        for order in self._queue:
            if order.request.client_order_id == client_order_id:
                return order
        return self.inner.find_order(client_order_id)

    def cancel(self, client_order_id: str) -> None:
        before = len(self._queue)
        self._queue = [o for o in self._queue if o.request.client_order_id != client_order_id]
        if len(self._queue) == before:
            self.inner.cancel(client_order_id)

    def cash(self) -> float:
        return self.inner.cash()

    def holdings(self, symbols: tuple[str, ...]) -> np.ndarray:
        return self.inner.holdings(symbols)

    def refresh(self) -> None:
        self.inner.refresh()

    def account(self) -> AccountInfo:
        return self.inner.account()

    def track(self, order: Order) -> None:
        self.inner.track(order)

    def clock(self) -> MarketClock:
        return self.inner.clock()

    def calendar(self, start: dt.date, end: dt.date) -> list[TradingSession]:
        return self.inner.calendar(start, end)
