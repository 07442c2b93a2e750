"""leverbot: a trading daemon whose backtest and live paths share one engine."""

__version__ = "0.1.0"
