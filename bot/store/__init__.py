"""Trade log: the database every run (backtest, replay, paper, live) writes its record to.

Names are imported on first use, so light modules here (locate, the command
registrations) do not pull pandas and SQLAlchemy into `bot --help`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.store.schema import SchemaOutdated
    from bot.store.tradelog import TradeLog

__all__ = ["SchemaOutdated", "TradeLog"]


def __getattr__(name: str) -> Any:
    if name == "TradeLog":
        from bot.store.tradelog import TradeLog

        return TradeLog
    if name == "SchemaOutdated":
        from bot.store.schema import SchemaOutdated

        return SchemaOutdated
    raise AttributeError(f"module 'bot.store' has no attribute {name!r}")
