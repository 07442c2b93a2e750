"""The simulated venue: market orders filled at a given price with commission and slippage.

A first-class adapter, not a test double: backtests and replay trade through it exactly as
the live bot trades through Alpaca. Orders are day orders; an order that cannot fill on its
fill day (no price) expires. Cash never goes negative: a buy larger than the cash left is
cut to what the cash pays for (the rest expires, status `expired` with a fill) or
rejected.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import numpy as np

from bot.broker.base import MIN_ORDER_VALUE
from bot.data.base import PriceHistory
from bot.types import Fill, Order, OrderRequest, OrderStatus, Side, new_record

# Module constants, read for every order: an enum member looked up on its class costs
# about 0.1 us a time (12 times a dict lookup), a few of them per order a measurable part
# of a backtest.
_BUY, _SELL = Side.BUY, Side.SELL
_ACCEPTED, _FILLED, _EXPIRED, _REJECTED = (
    OrderStatus.ACCEPTED, OrderStatus.FILLED, OrderStatus.EXPIRED, OrderStatus.REJECTED
)


@dataclass(frozen=True)
class CostModel:
    commission_per_share: float = 0.0
    commission_bps: float = 0.0
    slippage_bps: float = 0.0

    def commission(self, quantity: float, price: float) -> float:
        return self.commission_per_share * quantity + self.commission_bps * 1e-4 * quantity * price

    def trade_cost(self, quantity: float, price: float) -> float:
        """What trading `quantity` at reference `price` costs: the commission and the
        slippage against the price, as a fill here pays them (its commission on the
        slipped price, a difference of slippage times commission, left out)."""
        return self.commission(quantity, price) + self.slippage_bps * 1e-4 * quantity * price


def next_open_prices(prices: PriceHistory) -> np.ndarray:
    """Fill prices of the `next_open` model: each day's open, or its close where the
    series has no open (close-only data). NaN on days a loader forward-filled: the
    symbol did not trade, so an order there expires rather than fill at a stale close.
    Backtest and replay both fill at these."""
    fill = np.where(np.isnan(prices.open), prices.close, prices.open)
    if prices.filled is None:
        return fill
    return np.where(prices.filled, np.nan, fill)


def close_prices(prices: PriceHistory) -> np.ndarray:
    """Fill prices of the close models (`next_close`, `same_close`): each day's close,
    NaN on days a loader forward-filled (a carried close is no trade), as next_open."""
    if prices.filled is None:
        return prices.close
    return np.where(prices.filled, np.nan, prices.close)


class SimulatedBroker:
    """Holds cash and shares as arrays aligned with the strategy's symbols."""

    def __init__(
        self,
        symbols: tuple[str, ...],
        cash: float,
        costs: CostModel = CostModel(),
        fractional: bool = True,
    ) -> None:
        self.symbols = symbols
        self._index = {s: i for i, s in enumerate(symbols)}
        self._cash = float(cash)
        self.shares = np.zeros(len(symbols))
        self.costs = costs
        # the cost model's rates as plain floats: read for every fill
        self._slip = costs.slippage_bps * 1e-4
        self._bps = costs.commission_bps * 1e-4
        self._per_share = costs.commission_per_share
        self.fractional = fractional
        self._pending: list[Order] = []
        self._next_id = 1

    def start_with(self, shares: np.ndarray, cash: float) -> None:
        """Open the book holding `shares` and `cash` rather than cash alone (a stress
        replay starts from a given portfolio); only before any order."""
        if self._pending or self._next_id != 1:
            raise RuntimeError("start_with: the book already traded")
        self.shares = np.asarray(shares, dtype=float).copy()
        self._cash = float(cash)

    def cash(self) -> float:
        return self._cash

    def cash_balance(self) -> float:
        return self._cash  # orders reserve nothing here: they fill at the next open

    def holdings(self, symbols: tuple[str, ...]) -> np.ndarray:
        if symbols is self.symbols or symbols == self.symbols:
            return self.shares
        return np.array([self.shares[self._index[s]] if s in self._index else 0.0 for s in symbols])

    def open_order_count(self) -> int:
        return len(self._pending)

    def submit(self, request: OrderRequest, now: dt.datetime) -> Order:
        if request.symbol not in self._index:
            return Order(request, _REJECTED, now, None, status_message="unknown symbol")
        order = Order(request, _ACCEPTED, now, f"sim-{self._next_id}")
        self._next_id += 1
        self._pending.append(order)
        return order

    def execute(self, prices: np.ndarray, now: dt.datetime) -> list[tuple[Order, Fill | None]]:
        """Fill every pending order at `prices` (aligned with symbols), sells first.

        Returns each order in its final state with its fill (None if it did not fill)."""
        if not self._pending:
            return []
        pending, self._pending = self._pending, []
        # sells first, each side in the order sent (no sort key called per order)
        pending = [o for o in pending if o.request.side is _SELL] + [
            o for o in pending if o.request.side is not _SELL
        ]
        quotes = prices.tolist()  # floats: one conversion, not one numpy read per order
        # The holdings as floats too, written back once (a numpy element read and written
        # per order cost more than the fill's arithmetic); written back even if a fill
        # raised, so the shares always match the cash already moved.
        book = self.shares.tolist()
        try:
            return [self._fill_one(order, quotes, book, now) for order in pending]
        finally:
            self.shares[:] = book

    def cancel(self, client_order_id: str, reason: str = "canceled by request") -> Order | None:
        """Cancel one pending order; None if it is not pending."""
        for order in self._pending:
            if order.request.client_order_id == client_order_id:
                self._pending.remove(order)
                order.status = OrderStatus.CANCELED
                order.status_message = reason
                return order
        return None

    def cancel_pending(self, reason: str) -> list[Order]:
        """Cancel every order still waiting for its fill day (end of a simulation)."""
        cancelled, self._pending = self._pending, []
        for order in cancelled:
            order.status = OrderStatus.CANCELED
            order.status_message = reason
        return cancelled

    def _fill_one(
        self, order: Order, prices: list[float], book: list[float], now: dt.datetime
    ) -> tuple[Order, Fill | None]:
        """Fill one order at `prices`, moving the cash and `book` (the shares, as floats)."""
        # unpacked once: each field read by name is a descriptor call
        cid, _, symbol, side, quantity, _, _ = order.request
        i = self._index[symbol]
        ref = prices[i]
        if not math.isfinite(ref) or ref <= 0:
            order.status = _EXPIRED
            order.status_message = "no price on the fill day"
            return order, None
        slip = self._slip
        held = book[i]
        selling = side is _SELL
        if selling:
            price = ref * (1.0 - slip)
            qty = min(quantity, held)
        else:
            price = ref * (1.0 + slip)
            qty = min(quantity, self._affordable(price))
        if not self.fractional:
            qty = math.floor(qty + 1e-9)
        # A buy the cash cuts below the smallest order Alpaca takes is refused, not filled
        # as dust (1e-11 shares once the cash ran out to the cent), as the live bot never
        # sends one (bot.broker.sequenced).
        if qty <= 1e-12 or (
            not selling and qty < quantity and qty * price < MIN_ORDER_VALUE
        ):
            order.status = _REJECTED
            order.status_message = "insufficient position" if selling else "insufficient cash"
            return order, None
        commission = self._per_share * qty + self._bps * qty * price  # CostModel.commission
        notional = qty * price
        if selling:
            held -= qty
            self._cash += notional - commission
        else:
            held += qty
            self._cash -= notional + commission
        book[i] = 0.0 if abs(held) < 1e-12 else held
        short = qty < quantity - 1e-9
        # A day order filled in part is done: the rest expires, as at Alpaca.
        order.status = _EXPIRED if short else _FILLED
        if short:
            order.status_message = (
                f"filled {qty:.6g} of {quantity:.6g}, rest expired: cash or position limit"
            )
        order.filled_quantity = qty
        order.average_price = price
        fill = new_record(Fill, (
            cid, symbol, side, qty, price, commission,
            abs(price - ref) * qty, now,
        ))
        return order, fill

    def _affordable(self, price: float) -> float:
        """Largest quantity whose cost plus commission fits in the cash left. Whole
        shares are checked as the fill debits them: an exact fit is bought, and the
        rounding of a whole quantity never buys one share the cash does not pay for."""
        if self._cash <= 0:
            return 0.0
        unit = price * (1.0 + self._bps) + self._per_share
        if self.fractional:
            return self._cash / unit * (1.0 - 1e-12)
        whole = math.floor(self._cash / unit + 1e-9)
        if whole * price + (self._per_share * whole + self._bps * whole * price) > self._cash:
            whole -= 1
        return float(whole)
