"""Trade log: the database every run (backtest, replay, paper, live) writes its record to."""

from bot.store.tradelog import TradeLog

__all__ = ["TradeLog"]
