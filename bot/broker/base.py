"""What the engine needs from a broker, whichever venue is behind it."""

from __future__ import annotations

import datetime as dt
from typing import Protocol

import numpy as np

from bot.types import Order, OrderRequest


class Broker(Protocol):
    """A venue that holds cash and positions and accepts market orders."""

    def cash(self) -> float:
        """Settled cash available for buying."""
        ...

    def holdings(self, symbols: tuple[str, ...]) -> np.ndarray:
        """Quantity held per symbol, in the given order (0 where none)."""
        ...

    def open_order_count(self) -> int:
        """Orders sent and not yet in a final state."""
        ...

    def submit(self, request: OrderRequest, now: dt.datetime) -> Order:
        """Send a market order; returns it as the venue acknowledged it."""
        ...
