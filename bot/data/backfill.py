"""Leveraged-ETF history from before a fund listed, rebuilt from its index fund.

TQQQ, UDOW, UPRO, TMF and UGL did not exist in September 2008; their index funds (QQQ,
DIA, SPY, TLT, GLD) did. A fund that holds L times its index's daily return, reset every
day, earns (Cheng & Madhavan 2009, the synthetic market's rule)

    r_fund[t] = L * r_index[t] - (L - 1) * rf_daily[t] - expense_ratio / 252,

with rf_daily the 3-month bill rate known the day before (DTB3) de-annualised, financing
the borrowed part. Prices before the first real close are chained backwards from it, so
the rebuilt history joins the real one without a jump. Used only where a history must
reach back further than a fund (stress replays of 2008), and always reported as such.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bot.data.base import RISK_FREE, MarketData, PriceHistory

TRADING_DAYS = 252


def daily_reset_returns(
    index_returns: np.ndarray, leverage: float, rf_daily: np.ndarray, expense_ratio: float
) -> np.ndarray:
    """The daily-reset rule above, element-wise."""
    return leverage * index_returns - (leverage - 1.0) * rf_daily - expense_ratio / TRADING_DAYS


def bill_rate_daily(market: MarketData) -> np.ndarray:
    """Per trading day of `market`, the bill rate published the day before, as a daily
    rate (0 before the first value or without the series)."""
    dates = market.prices.dates
    series = market.macro.get(RISK_FREE)
    if series is None or len(series.dates) == 0:
        return np.zeros(len(dates))
    i = np.searchsorted(series.dates, dates, side="left") - 1
    pct = np.where(i >= 0, series.values[np.clip(i, 0, None)], 0.0)
    return pct / 100.0 / TRADING_DAYS


@dataclass(frozen=True)
class Backfilled:
    """What was rebuilt: the fund, from which index fund, and the first real day."""

    symbol: str
    underlying: str
    leverage: float
    expense_ratio: float
    listed: str  # first real close, YYYY-MM-DD
    from_day: str  # first rebuilt close


def backfill(
    market: MarketData,
    funds: dict[str, tuple[str, float, float]],
) -> tuple[MarketData, list[Backfilled]]:
    """`market` with each fund's closes before its listing rebuilt from its index fund.

    `funds` maps a symbol to (index fund, leverage, expense ratio). A fund without an
    index fund in the data, or listed from the data's first day, is left as it is. Opens
    of rebuilt days stay NaN (fills there use the close)."""
    prices = market.prices
    close, opens = prices.close.copy(), prices.open.copy()
    rf = bill_rate_daily(market)
    done: list[Backfilled] = []
    for symbol, (underlying, leverage, expense) in funds.items():
        if symbol not in prices.symbols or underlying not in prices.symbols:
            continue
        j, u = prices.index_of(symbol), prices.index_of(underlying)
        real = np.flatnonzero(np.isfinite(close[:, j]))
        if real.size == 0 or real[0] == 0:
            continue
        first = int(real[0])
        index = close[: first + 1, u]
        missing = np.flatnonzero(~np.isfinite(index))
        start = int(missing[-1]) + 1 if missing.size else 0  # the index's unbroken run to `first`
        if start >= first:
            continue
        r_index = index[start + 1 : first + 1] / index[start:first] - 1.0
        r_fund = daily_reset_returns(r_index, leverage, rf[start + 1 : first + 1], expense)
        # close[t-1] = close[t] / (1 + r_fund[t]), backwards from the first real close
        growth = np.cumprod((1.0 + r_fund)[::-1])[::-1]
        close[start:first, j] = close[first, j] / growth
        opens[start:first, j] = np.nan
        done.append(Backfilled(
            symbol, underlying, leverage, expense,
            str(prices.dates[first].astype("datetime64[D]")),
            str(prices.dates[start].astype("datetime64[D]")),
        ))
    rebuilt = PriceHistory(prices.dates, prices.symbols, close, opens, prices.filled)
    return MarketData(rebuilt, market.macro, market.source, market.synthetic), done
