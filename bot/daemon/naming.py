"""The stable name of a strategy instance: its state key and client_order_id prefix."""

from __future__ import annotations

import re


def instance_of(strategy: str) -> str:
    """The instance name of the strategy named `strategy` (config `strategy.name`); the
    runs table stores the name, so readers map a run to its instance with this."""
    return re.sub(r"[^A-Za-z0-9_]", "_", strategy)[:40]
