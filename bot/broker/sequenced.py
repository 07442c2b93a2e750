"""Sells first, buys after the sells have filled: at Alpaca an open buy reserves buying
power, so buys sent beside unfilled sells can be rejected for want of cash. Wraps any
LiveBroker; queued buys are recorded as orders in status `new` with no broker id, so a
restart finds and re-queues them.

Buys are only sent while the market is open (`market_open`): one sent after the close
waits at the venue for the next open and fills at that day's prices, which can be well
above the ones it was cut to the cash on (a cash account then ends overdrawn). Outside
the session they stay queued and go out at the first poll of the next session, each cut
to the cash left at the prices of that moment (`prices`), never below the decision's."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import structlog

from bot.broker.base import (
    MIN_ORDER_VALUE,
    AccountInfo,
    LiveBroker,
    MarketClock,
    SendRefused,
    TradingSession,
)
from bot.errors import ExecutionStopped
from bot.types import Fill, Order, OrderRequest, OrderStatus, Side

log = structlog.get_logger(__name__)

QUEUED = "queued until the sells of the rebalance have filled"
QUEUED_CLOSED = "queued until the market opens (and any sells of the rebalance have filled)"
#: status messages of a buy held in the queue (a restart re-queues these)
QUEUED_MESSAGES = (QUEUED, QUEUED_CLOSED)
#: the start of the note on a buy cut to the cash ("cut to 2.5 of 3 shares to fit the cash")
CUT = "cut to"
#: buys are sized to leave this share of the spendable cash unused (prices move after the close)
CASH_BUFFER = 0.005
#: the most any of Alpaca's documents says a market buy is valued above its price when
#: buying power is checked (older docs 2.5-4%, a support article 2-5%; the current docs
#: say the ask): a buy refused for buying power is sent once more, cut to leave this
REFUSED_BUY_MARGIN = 0.05
#: how the venue words a buy refused for want of buying power (Alpaca's 403 40310000)
SHORT_OF_BUYING_POWER = "insufficient buying power"

#: TradeLog.incident's signature: (at, kind, message, context)
IncidentSink = Callable[[dt.datetime, str, str, dict[str, Any] | None], None]
#: whether buys may be sent at `now` (the market is open); default: always
MarketOpen = Callable[[dt.datetime], bool]
#: latest prices of some symbols, aligned with them (NaN where unknown), or None
LatestPrices = Callable[[tuple[str, ...]], np.ndarray | None]


def buys_refused_after_the_close(
    in_session: MarketOpen, clock: Callable[[], dt.datetime]
) -> Callable[[OrderRequest], str | None]:
    """A venue's send gate (AlpacaBroker.send_gate) that stops a buy's submit, retries
    included, once the session has closed: the release checks the market before each buy,
    but one buy retrying through 429s for minutes could still reach the venue after the
    close, be queued there and fill at the next open's prices. Sells pass."""
    def gate(request: OrderRequest) -> str | None:
        if request.side is Side.BUY and not in_session(clock()):
            return "the session has closed (a buy sent now would fill at the next open's prices)"
        return None

    return gate


class SellsFirst:
    def __init__(
        self,
        inner: LiveBroker,
        incident: IncidentSink | None = None,
        *,
        market_open: MarketOpen | None = None,
        prices: LatestPrices | None = None,
        whole_shares: bool = False,
        order_prefix: str | None = None,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        """`whole_shares`: the config trades whole shares (rebalance.fractional false), so
        a buy cut to the cash left is cut to whole shares too. `order_prefix`: the start
        of this bot's client_order_ids; a sell the venue lists holds the buys only if it
        is one of them (a user's own sell in the same account, a GTC limit order say,
        funds none of them and held them for as long as it stayed open). None: every
        listed sell holds them. `clock`: the time now, read again before each queued buy
        is sent (a release may take minutes of retries); None: the poll's time."""
        self.inner = inner
        self._clock = clock
        self._whole_shares = whole_shares
        self._order_prefix = order_prefix
        self._own = None if order_prefix is None else f"{order_prefix}-"
        self._queue: list[Order] = []
        self._sells: list[Order] = []  # sent through here; the inner broker updates them
        self._incident = incident
        self._market_open = market_open or (lambda _now: True)
        self._prices = prices
        self._direct_batch: str | None = None  # rebalance whose buys went out at once
        self._direct_budget = 0.0
        # Rebalance whose first buy found no sell open at the venue: its later buys need
        # not ask again, since any sell sent since went through here (one request per
        # rebalance instead of one per buy, which a platform of many accounts pays for).
        self._venue_clear_for: str | None = None

    def over(self, inner: LiveBroker) -> SellsFirst:
        """The same sequencing (market hours, prices, whole shares, the buys queued so
        far) over another venue, e.g. a dry run's that sends nothing: its orders are the
        ones this one would send. Incidents are not recorded."""
        twin = SellsFirst(inner, market_open=self._market_open, prices=self._prices,
                          whole_shares=self._whole_shares, order_prefix=self._order_prefix,
                          clock=self._clock)
        twin.restore(self._queue)
        return twin

    # ------------------------------------------------------------ the sequencing
    def submit(self, request: OrderRequest, now: dt.datetime) -> Order:
        if request.side is Side.SELL:
            order = self.inner.submit(request, now)
            self._sells.append(order)
            return order
        queued = self._queued(request.client_order_id)
        if queued is not None:  # the same decision again (after a restart): one order
            return queued
        # the clock's time, not the job's: the buys before may have retried for minutes
        closed = not self._market_open(self._clock() if self._clock is not None else now)
        if self._queue or closed or self._sells_open(request.rebalance_id):
            why = QUEUED_CLOSED if closed else QUEUED
            order = Order(request, OrderStatus.NEW, now, None, status_message=why)
            self._queue.append(order)
            return order
        # No sell to wait for (a first allocation, say): the buys still go out cut to the
        # cash, as queued ones are, from one budget per rebalance (on a margin account the
        # cash does not drop while buys are open, so re-reading it would overspend). A plan
        # sized on the last trades sums to the whole cash, and the venue rejects a buy that
        # overshoots it by a cent.
        if request.rebalance_id != self._direct_batch:
            self.inner.refresh()
            self._direct_batch = request.rebalance_id
            self._direct_budget = self.inner.cash() * (1.0 - CASH_BUFFER)
        try:
            order, spent = self._send_queued(Order(request, OrderStatus.NEW, now, None),
                                             self._direct_budget, now)
        except SendRefused as exc:  # the session closed while it retried: queued, as then
            order = Order(request, OrderStatus.NEW, now, None, status_message=QUEUED_CLOSED)
            self._queue.append(order)  # the rebalance's next buys queue behind it
            self._note_incident(now, "release", f"{exc}; queued until the market opens",
                                {"queued": len(self._queue)})
            return order
        self._direct_budget -= spent
        return order

    def restore(self, queued: list[Order]) -> None:
        """Re-queue buys that were waiting when the daemon stopped."""
        known = {o.request.client_order_id for o in self._queue}
        self._queue.extend(o for o in queued if o.request.client_order_id not in known)

    def _queued(self, client_order_id: str) -> Order | None:
        return next((o for o in self._queue if o.request.client_order_id == client_order_id), None)

    def poll(self, now: dt.datetime) -> list[tuple[Order, Fill | None]]:
        """The inner broker's updates, then the queued buys released once no sell is open
        and the market is open. A failed release never drops the updates: their fills
        are already marked reported, so losing them here would lose them for good."""
        updates = self.inner.poll(now)
        released: list[Order] = []
        try:
            if self._queue and self._market_open(now) and not self._sells_open():
                self._release(now, released)
        except ExecutionStopped:
            raise  # another execution owns the account now: it records these updates
        except Exception as exc:  # noqa: BLE001 - the updates above must reach the trade log
            self._release_failed(now, exc)
        # A released buy answered with fills comes back with them (once, not also bare).
        known = self.inner.take_reports()
        with_fills = {order.request.client_order_id for order, _ in known}
        updates.extend((o, None) for o in released if o.request.client_order_id not in with_fills)
        updates.extend(known)
        return updates

    def take_reports(self) -> list[tuple[Order, Fill | None]]:
        return self.inner.take_reports()

    def poll_sent(self, now: dt.datetime) -> list[tuple[Order, Fill | None]]:
        """The inner broker's updates only: the queue is not released (a stopping bot
        records what filled and sends nothing new)."""
        return self.inner.poll(now)

    def _sells_open(self, rebalance_id: str | None = None) -> bool:
        """A sell is working: one we sent is not final (an unconfirmed one included,
        which the venue may not list yet), one the inner broker follows is not (after a
        restart, one the user replaced at the venue: its replacement has a client_order_id
        of the venue's, not ours), or the venue lists one of ours.
        Within one rebalance's submits (`rebalance_id`) the venue is asked once."""
        self._sells = [o for o in self._sells if not o.status.is_final]
        if self._sells:
            return True
        if any(o.request.side is Side.SELL for o in self.inner.followed_orders()):
            return True
        if rebalance_id is not None and rebalance_id == self._venue_clear_for:
            return False
        own = self._own
        listed = any(
            o.request.side is Side.SELL and (own is None or o.request.client_order_id.startswith(own))
            for o in self.inner.open_orders()
        )
        if not listed and rebalance_id is not None:
            self._venue_clear_for = rebalance_id
        return listed

    def _release(self, now: dt.datetime, released: list[Order]) -> None:
        """Send the queued buys into `released`, each cut to the cash left (in queue order,
        as the simulated venue cuts buys to its cash). Each buy leaves the queue as soon as
        it is placed, so a failure part-way never sends one twice."""
        self.inner.refresh()
        # cash(), not buying power: on a margin account that is 2-4x the cash, and the
        # plan was sized on cash() so the bot never buys on margin.
        budget = self.inner.cash() * (1.0 - CASH_BUFFER)
        prices = self._latest_prices()
        while self._queue:
            if self._clock is not None and not self._market_open(self._clock()):
                # The sends before took the session's last minutes (a venue answering 429):
                # the rest would fill at the next open's prices. Queued until then.
                log.warning("release stopped: the market closes", queued=len(self._queue))
                break
            order = self._queue[0]
            # Never below the decision's price: a wrong low print (IEX) would otherwise
            # send the planned quantity and count it nearly free, and the buys after it
            # would spend the same cash again (on margin, at Alpaca).
            reference = order.request.reference_price
            price = max(prices.get(order.request.symbol, reference), reference)
            placed, spent = self._send_queued(order, budget, now, price)
            self._queue.pop(0)
            budget -= spent
            released.append(placed)

    def _latest_prices(self) -> dict[str, float]:
        """Prices of the queued symbols now (the buys may have waited since yesterday's
        close); the ones unknown are left out and the decision's price is used."""
        if self._prices is None:
            return {}
        symbols = tuple(dict.fromkeys(o.request.symbol for o in self._queue))
        latest = self._prices(symbols)
        if latest is None:
            return {}
        return {s: float(p) for s, p in zip(symbols, latest, strict=True)
                if math.isfinite(p) and p > 0}

    def _send_queued(
        self, order: Order, budget: float, now: dt.datetime, price: float | None = None
    ) -> tuple[Order, float]:
        """One queued buy cut to `budget` at `price` (default: the decision's reference
        price): the order as placed and the money it commits."""
        req = order.request
        reference = req.reference_price
        price = price or reference
        # The planned value, not the planned shares: after a reverse split overnight (or
        # a wrong high print) the planned shares would cost many times what the decision
        # meant to buy. Never above the planned shares: a lower price may be a wrong
        # print, and a split the other way then buys less than planned, never more.
        planned_value = req.quantity if price <= reference else req.quantity * reference / price
        quantity = min(planned_value, max(budget, 0.0) / price)
        if self._whole_shares:
            quantity = math.floor(quantity + 1e-9)
        if quantity <= 0 or quantity * price < MIN_ORDER_VALUE:
            # Alpaca refuses a fractional buy worth less than $1: not sent at all.
            order.status = OrderStatus.REJECTED
            order.status_message = "no cash left after the sells"
            return order, 0.0
        planned = req.quantity
        if quantity < planned:
            log.warning("buy cut to cash" if quantity < planned_value else "buy cut to its planned value",
                        order=req.client_order_id, planned=planned, sent=quantity)
            req = req._replace(quantity=quantity)
        placed = self.inner.submit(req, now)
        resent = self._resent_smaller(placed, price, now)
        if resent is not None:
            placed, quantity = resent
        if placed.status_message is None and order.status_message in QUEUED_MESSAGES:
            # replaces the queue's message in the log
            placed.status_message = (
                "sent after the sells filled" if order.status_message == QUEUED
                else "sent once the market opened"
            )
        if placed.status is OrderStatus.REJECTED:  # refused by the venue: nothing committed
            return placed, 0.0
        if quantity < planned:
            # Its message gives both quantities: a queued buy's row, recorded when it was
            # queued, keeps the planned one; a buy sent at once is recorded as sent.
            if resent is not None:
                why = "to fit the buying power the venue reported"
            elif quantity < planned_value:
                why = "to fit the cash"
            else:
                why = f"to its planned value: the price rose from {reference:.6g} to {price:.6g}"
            cut = f"{CUT} {quantity:.6g} of {planned:.6g} shares {why}"
            placed.status_message = "; ".join(filter(None, (placed.status_message, cut)))
        return placed, quantity * price

    def _resent_smaller(
        self, placed: Order, price: float, now: dt.datetime
    ) -> tuple[Order, float] | None:
        """A buy the venue refused for buying power, sent once more cut to the buying
        power it reports now less REFUSED_BUY_MARGIN: the venue may value a market buy
        above the price it was sized on (a collar, the ask after a gap). None if it was
        not refused so, or if a smaller buy would not help (nothing placed)."""
        req = placed.request
        if placed.status is not OrderStatus.REJECTED or SHORT_OF_BUYING_POWER not in (
            placed.status_message or ""
        ):
            return None
        self.inner.refresh()
        quantity = min(req.quantity, max(self.inner.cash(), 0.0) * (1.0 - REFUSED_BUY_MARGIN) / price)
        if self._whole_shares:
            quantity = math.floor(quantity + 1e-9)
        if quantity >= req.quantity or quantity <= 0 or quantity * price < MIN_ORDER_VALUE:
            return None
        log.warning("buy refused for buying power: sent again, smaller",
                    order=req.client_order_id, refused=req.quantity, sent=quantity,
                    venue=placed.status_message)
        self._note_incident(now, "buying_power",
                            f"buy {req.client_order_id} of {req.quantity:.6g} refused "
                            f"({placed.status_message}); sent again for {quantity:.6g}",
                            {"symbol": req.symbol, "refused": req.quantity, "sent": quantity})
        return self.inner.submit(req._replace(quantity=quantity), now), quantity

    def _release_failed(self, now: dt.datetime, exc: Exception) -> None:
        """Log (and record as an incident) a release that failed; the buys still queued
        are tried again by the next poll."""
        message = f"queued buys not released: {type(exc).__name__}: {exc}"
        log.error("release failed", error=str(exc), exc_type=type(exc).__name__,
                  queued=len(self._queue))
        self._note_incident(now, "release", message, {"queued": len(self._queue)})

    def _note_incident(self, now: dt.datetime, kind: str, message: str, context: dict[str, Any]) -> None:
        """Record an incident, if there is a sink; a failure to store it is only logged:
        the orders and updates around it matter more than their note."""
        if self._incident is None:
            return
        try:
            self._incident(now, kind, message, context)
        except Exception as store_exc:  # noqa: BLE001 - never lose the updates for a log row
            log.error("incident not stored", error=str(store_exc))

    # ------------------------------------------------------------ delegation
    def open_order_count(self) -> int:
        return self.inner.open_order_count() + len(self._queue)

    def open_orders(self) -> list[Order]:
        return self.inner.open_orders() + list(self._queue)

    def followed_orders(self) -> list[Order]:
        return self.inner.followed_orders() + list(self._queue)

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

    def cash_balance(self) -> float:
        return self.inner.cash_balance()

    def holdings(self, symbols: tuple[str, ...]) -> np.ndarray:
        return self.inner.holdings(symbols)

    def refresh(self) -> None:
        self.inner.refresh()

    def account(self) -> AccountInfo:
        return self.inner.account()

    def trading_refusal(self) -> str | None:
        return self.inner.trading_refusal()

    def track(self, order: Order, fills: tuple[float, float | None] | None = None) -> None:
        self.inner.track(order, fills)

    def clock(self) -> MarketClock:
        return self.inner.clock()

    def calendar(self, start: dt.date, end: dt.date) -> list[TradingSession]:
        return self.inner.calendar(start, end)
