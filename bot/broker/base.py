"""What the engine and the daemon need from a broker, whichever venue is behind it."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from bot.errors import BotError
from bot.types import Fill, Order, OrderRequest

#: Alpaca's smallest fractional order value, in dollars: the live bot never sends a buy
#: cut below it, and the simulated venue does not fill one.
MIN_ORDER_VALUE = 1.0


class BrokerError(BotError):
    """The venue could not be reached or answered nonsense; never carries secrets."""


class SendRefused(BrokerError):
    """The adapter did not send an order, for a reason of ours (a buy once the session
    has closed): nothing of it is at the venue, and it may be sent later."""


@dataclass(frozen=True)
class AccountInfo:
    account_number: str
    equity: float
    cash: float
    buying_power: float
    status: str
    paper: bool
    # why the venue refuses this account's orders now (a block flag, a status other than
    # ACTIVE: an account being updated, closed); None when it may trade
    cannot_trade: str | None = None


@dataclass(frozen=True)
class MarketClock:
    timestamp: dt.datetime
    is_open: bool
    next_open: dt.datetime
    next_close: dt.datetime


@dataclass(frozen=True)
class TradingSession:
    """One trading day with its regular open and close (UTC), early closes included."""

    day: dt.date
    open: dt.datetime
    close: dt.datetime


class Broker(Protocol):
    """A venue that holds cash and positions and accepts market orders (what the engine
    uses; the simulated broker and the Alpaca adapter both provide it)."""

    def cash(self) -> float:
        """Cash available for buying (what open buy orders reserve is not)."""
        ...

    def cash_balance(self) -> float:
        """Cash held, whatever open orders reserve: with the positions, what the account
        is worth. Valuing it with cash() would lose the money reserved by working buys."""
        ...

    def holdings(self, symbols: tuple[str, ...]) -> np.ndarray:
        """Quantity held per symbol, in the given order (0 where none)."""
        ...

    def open_order_count(self) -> int:
        """Orders sent and not yet in a final state."""
        ...

    def submit(self, request: OrderRequest, now: dt.datetime) -> Order:
        """Send a market order; returns it as the venue acknowledged it. A rejection is a
        returned order with status REJECTED and the venue's code and message, not an
        exception; an exception means the venue could not be reached and the order
        provably does not exist there. An order in doubt (sent, no answer, not found yet)
        comes back as NEW with an "unconfirmed" message and is followed until resolved."""
        ...


class LiveBroker(Broker, Protocol):
    """What the daemon needs beyond the engine's view: snapshots, order tracking,
    reconciliation and the venue's clock and calendar."""

    def refresh(self) -> None:
        """Re-read account and positions so cash() and holdings() are current."""
        ...

    def account(self) -> AccountInfo: ...

    def trading_refusal(self) -> str | None:
        """Why the venue refuses orders for the account as the last refresh saw it
        (AccountInfo.cannot_trade); None when it may trade."""
        ...

    def open_orders(self) -> list[Order]:
        """Every order at the venue that is not in a final state."""
        ...

    def find_order(self, client_order_id: str) -> Order | None:
        """The venue's view of one order by our id; None if it does not exist there."""
        ...

    def followed_orders(self) -> list[Order]:
        """The orders poll() follows that are not final, under our client_order_ids (one
        replaced at the venue included, in its replacement's state): what this process
        knows to be working, whoever sent it and whatever the venue lists it as."""
        ...

    def closed_orders(self, after: dt.datetime) -> list[Order]:
        """Orders that reached a final state since `after` (restart: what filled while
        the daemon was down)."""
        ...

    def track(self, order: Order, fills: tuple[float, float | None] | None = None) -> None:
        """Follow an order (e.g. one adopted after a restart) in poll(). `fills`: the
        quantity and average price of the fills already recorded for it (default: its
        filled_quantity), so only the rest is reported."""
        ...

    def poll(self, now: dt.datetime) -> list[tuple[Order, Fill | None]]:
        """Status changes of tracked orders since the last poll, with a Fill for each
        newly filled quantity (partial fills give several); final orders stop being
        tracked after they are reported. Includes what take_reports() had not taken."""
        ...

    def take_reports(self) -> list[tuple[Order, Fill | None]]:
        """Updates already known without asking the venue, e.g. fills a submit's answer
        showed: the job that submitted records them before it ends."""
        ...

    def cancel(self, client_order_id: str) -> None: ...

    def clock(self) -> MarketClock: ...

    def calendar(self, start: dt.date, end: dt.date) -> list[TradingSession]: ...
