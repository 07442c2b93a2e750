"""The simulated venue on a simulated clock, for replay: the daemon's jobs trade through
it exactly as through Alpaca, and it fills market orders at the price the backtest's
`next_open` model uses (the day's open, or its close for close-only series)."""

from __future__ import annotations

import datetime as dt

import numpy as np

from bot.broker.base import AccountInfo, MarketClock, TradingSession
from bot.broker.simulated import CostModel, SimulatedBroker, next_open_prices
from bot.clock import Clock
from bot.daemon.sessions import exchange_sessions
from bot.data.base import PriceHistory
from bot.types import Fill, Order


class ReplayBroker:
    """LiveBroker over a SimulatedBroker and a price history."""

    def __init__(
        self, prices: PriceHistory, cash: float, costs: CostModel, fractional: bool, clock: Clock
    ):
        self._clock = clock
        self.venue = SimulatedBroker(prices.symbols, cash, costs, fractional)
        self.symbols = prices.symbols
        self._days = prices.dates.astype("datetime64[D]")
        self._fill_prices = next_open_prices(prices)
        self._orders: dict[str, Order] = {}

    # Broker (what the engine uses)
    def cash(self) -> float:
        return self.venue.cash()

    def cash_balance(self) -> float:
        return self.venue.cash_balance()

    def holdings(self, symbols: tuple[str, ...]) -> np.ndarray:
        return self.venue.holdings(symbols)

    def open_order_count(self) -> int:
        return self.venue.open_order_count()

    def submit(self, request, now: dt.datetime) -> Order:
        order = self.venue.submit(request, now)
        self._orders[request.client_order_id] = order
        return order

    # LiveBroker (what the daemon uses)
    def refresh(self) -> None:
        """Nothing to fetch: the venue is in memory."""

    def account(self) -> AccountInfo:
        return AccountInfo("REPLAY", float("nan"), self.cash(), self.cash(), "ACTIVE", True)

    def trading_refusal(self) -> str | None:
        return None  # the simulated venue refuses no account

    def open_orders(self) -> list[Order]:
        return [o for o in self._orders.values() if not o.status.is_final]

    def find_order(self, client_order_id: str) -> Order | None:
        return self._orders.get(client_order_id)

    def followed_orders(self) -> list[Order]:
        return self.open_orders()  # every order is followed here

    def track(self, order: Order, fills: tuple[float, float | None] | None = None) -> None:
        self._orders[order.request.client_order_id] = order

    def take_reports(self) -> list[tuple[Order, Fill | None]]:
        """Nothing fills at submit here: fills come from poll() on the fill day."""
        return []

    def poll(self, now: dt.datetime) -> list[tuple[Order, Fill | None]]:
        """Fill what is pending at today's fill price (the session of `now`)."""
        if not self.venue.open_order_count():
            return []
        day = np.datetime64(now.astimezone(dt.UTC).date())
        t = int(np.searchsorted(self._days, day))
        if t >= len(self._days) or self._days[t] != day:
            return []  # no session today: orders wait, as at a real venue
        return self.venue.execute(self._fill_prices[t], now)

    def cancel(self, client_order_id: str) -> None:
        self.venue.cancel(client_order_id)

    def close_pending(self, reason: str) -> list[Order]:
        """Cancel every order still waiting for its fill day: the simulated venue ends
        with the replay, so nothing will ever fill them."""
        return self.venue.cancel_pending(reason)

    def clock(self) -> MarketClock:
        """The market clock at the simulated time, from the exchange calendar."""
        now = self._clock.now()
        sessions = exchange_sessions(now.date() - dt.timedelta(days=1), now.date() + dt.timedelta(days=14))
        current = next((s for s in sessions if s.open <= now < s.close), None)
        upcoming = [s for s in sessions if s.open > now]
        return MarketClock(
            now,
            current is not None,
            upcoming[0].open,
            current.close if current else upcoming[0].close,
        )

    def calendar(self, start: dt.date, end: dt.date) -> list[TradingSession]:
        return exchange_sessions(start, end)
