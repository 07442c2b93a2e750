"""Plain value types shared by the engine, brokers, the trade log and reports.

They carry no behaviour beyond small conveniences, so every layer can use them
without importing any other layer.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field
from typing import Any, NamedTuple


def is_ticker(text: str) -> bool:
    """An exchange symbol as the config and the trade log write it: ASCII capitals and
    digits, dots allowed (BRK.B)."""
    return text.isascii() and text.replace(".", "").isalnum() and text.upper() == text


class Regime(enum.StrEnum):
    """Market regime decided weekly from VIX, the 10y-2y spread and policy uncertainty."""

    GROWTH = "GROWTH"
    TRANSITION = "TRANSITION"
    UNCERTAINTY = "UNCERTAINTY"


class Side(enum.StrEnum):
    BUY = "buy"
    SELL = "sell"


class OrderStatus(enum.StrEnum):
    """Order life cycle, named as Alpaca names it so live and simulated logs read alike."""

    NEW = "new"
    ACCEPTED = "accepted"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELED = "canceled"
    REJECTED = "rejected"
    EXPIRED = "expired"

    @property
    def is_final(self) -> bool:
        return self in _FINAL_STATUSES


_FINAL_STATUSES = {
    OrderStatus.FILLED,
    OrderStatus.CANCELED,
    OrderStatus.REJECTED,
    OrderStatus.EXPIRED,
}


# A NamedTuple's constructor is a Python function the class generates: a record made for
# every order or every day is built as `new_record(Cls, (field, ...))` (tuple.__new__,
# every field in order), about 1,500 instructions fewer than `Cls(field, ...)`.
new_record = tuple.__new__


class OrderRequest(NamedTuple):
    """An order the planner wants sent; `client_order_id` is deterministic per rebalance.

    NamedTuples for the per-order and per-day records: a backtest makes thousands of
    them, and a tuple is several times cheaper to build than a frozen dataclass."""

    client_order_id: str
    rebalance_id: str
    symbol: str
    side: Side
    quantity: float
    reason: str
    reference_price: float  # price the order was sized on (decision close)


@dataclass(slots=True)
class Order:
    """An order as the broker knows it, with its status history."""

    request: OrderRequest
    status: OrderStatus
    submitted_at: dt.datetime
    broker_order_id: str | None = None
    filled_quantity: float = 0.0
    average_price: float | None = None
    status_message: str | None = None


class Fill(NamedTuple):
    """One execution: quantity always positive, side says the direction."""

    client_order_id: str
    symbol: str
    side: Side
    quantity: float
    price: float
    commission: float
    slippage_cost: float
    filled_at: dt.datetime


@dataclass(frozen=True)
class RegimeDecision:
    """A weekly regime decision with the exact inputs it used (value and observation date),
    the outcome of each rule, and which rules fresh data decided, which were kept from
    the previous decision, and which inputs were missing or stale."""

    day: dt.date
    regime: Regime
    vix: float | None
    vix_date: dt.date | None
    spread: float | None
    spread_date: dt.date | None
    uncertainty: float | None
    uncertainty_date: dt.date | None
    warning: str | None = None
    outcomes: dict[str, bool] = field(default_factory=dict)  # rule -> holds (decided or kept)
    decided: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()
    stale: tuple[str, ...] = ()  # input series missing or stale


@dataclass(frozen=True)
class RiskEvent:
    """A risk-guard rule that fired (or was skipped), with its inputs and what it did."""

    day: dt.date
    rule: str
    action: str
    inputs: dict[str, Any] = field(default_factory=dict)
    symbol: str | None = None


class TargetRow(NamedTuple):
    """One asset's weight through each step of a rebalance decision, with reasons (a
    tuple, like the other per-order records: every rebalance makes one per asset)."""

    symbol: str
    baseline: float
    overlay: float
    final: float
    stop_price: float | None
    reasons: tuple[str, ...]


class EquityPoint(NamedTuple):
    day: dt.date
    equity: float
    cash: float
    positions_value: float
    drawdown: float
    regime: Regime | None
