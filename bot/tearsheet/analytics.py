"""The tables behind the tearsheet's charts: pure functions of an equity curve.

Monthly and yearly returns, the worst drawdowns with their dates, rolling Sharpe and
volatility, and which benchmarks would flatten the strategy's line on a shared scale.
No I/O and no plotting, so each number is tested on hand-made curves.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bot.metrics import daily_risk_free

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _clean(equity: pd.Series) -> pd.Series:
    out = equity.astype(float).dropna().sort_index()
    return out[~out.index.duplicated(keep="last")]


def monthly_returns(equity: pd.Series) -> pd.DataFrame:
    """Compounded return of each calendar month (rows: years, columns: Jan..Dec).

    A month's return runs from the last close of the month before (or the first close of
    the curve) to its own last close; months outside the curve are NaN.
    """
    eq = _clean(equity)
    month_end = eq.groupby([eq.index.year, eq.index.month]).last()
    previous = month_end.shift(1)
    previous.iloc[0] = eq.iloc[0]
    returns = month_end / previous - 1.0
    table = returns.unstack(level=1).reindex(columns=range(1, 13))
    table.index.name, table.columns = "year", list(MONTHS)
    return table


def yearly_returns(equity: pd.Series) -> pd.Series:
    """Compounded return of each calendar year, from the previous year's last close."""
    eq = _clean(equity)
    year_end = eq.groupby(eq.index.year).last()
    previous = year_end.shift(1)
    previous.iloc[0] = eq.iloc[0]
    return year_end / previous - 1.0


def drawdown_periods(equity: pd.Series, top: int = 10) -> list[dict]:
    """The `top` deepest drawdowns, deepest first: peak day, trough day, recovery day
    (the first close back at the peak; None while still under water), depth (< 0), and
    the trading days from peak to trough and from trough to recovery."""
    eq = _clean(equity)
    values = eq.to_numpy()
    peaks = np.maximum.accumulate(values)
    under = values < peaks
    periods: list[dict] = []
    i, n = 0, len(values)
    while i < n:
        if not under[i]:
            i += 1
            continue
        start = i - 1  # the peak: the last close before going under (i >= 1 always)
        end = i
        while end < n and under[end]:
            end += 1
        window = values[start:end]
        trough = start + int(np.argmin(window))
        recovered = end if end < n else None
        periods.append({
            "peak": eq.index[start].date().isoformat(),
            "trough": eq.index[trough].date().isoformat(),
            "recovery": eq.index[recovered].date().isoformat() if recovered is not None else None,
            "depth": float(values[trough] / values[start] - 1.0),
            "days_down": trough - start,
            "days_to_recover": (recovered - trough) if recovered is not None else None,
        })
        i = end
    periods.sort(key=lambda p: p["depth"])
    return periods[:top]


def rolling_sharpe(
    equity: pd.Series, window: int, risk_free: pd.Series | None = None, periods_per_year: int = 252
) -> pd.Series:
    """Annualized Sharpe ratio of the last `window` daily excess returns (ddof=1), as
    bot.metrics computes it for the whole run."""
    eq = _clean(equity)
    returns = eq.pct_change().iloc[1:]
    excess = returns - daily_risk_free(risk_free, pd.DatetimeIndex(eq.index), periods_per_year).iloc[1:]
    rolling = excess.rolling(window)
    std = rolling.std(ddof=1)
    moved = returns.rolling(window).std(ddof=1) > 0  # a flat window took no risk: no ratio
    return (rolling.mean() / std.where(std > 0).where(moved) * math.sqrt(periods_per_year)).dropna()


def rolling_volatility(equity: pd.Series, window: int, periods_per_year: int = 252) -> pd.Series:
    """Annualized volatility of the last `window` daily returns (ddof=1)."""
    returns = _clean(equity).pct_change().iloc[1:]
    return (returns.rolling(window).std(ddof=1) * math.sqrt(periods_per_year)).dropna()


def log_span(equity: pd.Series) -> float:
    """ln(max / min) of a positive curve: how many e-folds of a log axis it needs."""
    eq = _clean(equity)
    low, high = float(eq.min()), float(eq.max())
    return math.log(high / low) if low > 0 and high > 0 else math.inf


def off_scale(strategy: pd.Series, others: dict[str, pd.Series], factor: float = 2.0) -> list[str]:
    """Names of the curves that would squash the strategy on a shared log axis: those
    spanning more than `factor` times the strategy's range (at least a doubling), such as
    TQQQ's 168-fold rise next to a 7-fold one. They get their own panel."""
    reference = max(log_span(strategy), math.log(2.0))
    return [name for name, curve in others.items() if log_span(curve) > factor * reference]
