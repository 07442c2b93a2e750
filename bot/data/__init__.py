"""Market data: the in-memory types and the sources that produce them."""

from bot.data.base import MACRO_SERIES, MacroSeries, MarketData, PriceHistory
from bot.data.csv_source import load_csv_directory
from bot.data.synthetic import synthetic_market

__all__ = [
    "MACRO_SERIES",
    "MacroSeries",
    "MarketData",
    "PriceHistory",
    "load_csv_directory",
    "synthetic_market",
]
