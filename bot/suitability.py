"""MiFID II suitability measures of a backtested equity curve: SRRI and PRIIPs MRM.

SRRI (CESR/10-673, the UCITS KIID indicator): annualized volatility of weekly returns over
the last 5 years, sigma = sqrt(52) * std(r, ddof=1), with r the last 260 simple returns
between the closes of the last trading day of consecutive weeks; class 1-7 with
lower-inclusive bounds 0.5%, 2%, 5%, 10%, 15%, 25%.

PRIIPs market-risk measure (Commission Delegated Regulation (EU) 2017/653, Annex II,
category 2): from the daily log returns r over the last 5 years, with population moments
M1 = mean(r), M2..M4 the central moments, sigma = sqrt(M2), skew mu1 = M3 / sigma^3 and
excess kurtosis mu2 = M4 / sigma^4 - 3, the Cornish-Fisher 97.5% VaR over the recommended
holding period T years (N = 256 T trading days) is

    VaR = sigma sqrt(N) (-1.96 + 0.474 mu1 / sqrt(N) - 0.0687 mu2 / N + 0.146 mu1^2 / N)
          - 0.5 sigma^2 N

and the VaR-equivalent volatility VEV = (sqrt(3.842 - 2 VaR) - 1.96) / sqrt(T); MRM class
1-7 with bounds 0.5%, 5%, 12%, 20%, 30%, 80%. Only the market-risk class is computed:
the summary risk indicator also needs the credit-risk class (SRI = MRM when it is 1).

Pure functions on pandas series; both measures say when they had less than 5 years.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

SRRI_BOUNDS = (0.005, 0.02, 0.05, 0.10, 0.15, 0.25)
MRM_BOUNDS = (0.005, 0.05, 0.12, 0.20, 0.30, 0.80)
WEEKS_PER_YEAR = 52
PRIIPS_DAYS_PER_YEAR = 256
YEARS = 5
PRIIPS_MIN_YEARS = 2  # of daily prices, for category 2 (Annex II point 5)


def risk_class(value: float, bounds: tuple[float, ...]) -> int:
    """1 + the number of bounds at or below `value` (class k covers [b_{k-1}, b_k)). A
    value that is not a number has no class (bisect put NaN in the riskiest one)."""
    if not math.isfinite(value):
        raise ValueError(f"no risk class for a volatility of {value}")
    return 1 + bisect.bisect_right(bounds, value)


def last_years(series: pd.Series, years: int = YEARS) -> pd.Series:
    """The points of `series` within `years` calendar years before its last date."""
    start = series.index[-1] - pd.DateOffset(years=years)
    return series[series.index >= start]


def week_end_values(equity: pd.Series) -> pd.Series:
    """Equity at the last trading day of each week (NYSE calendar); a final partial week
    is dropped, so every weekly return spans a whole week."""
    from bot.calendar import week_ends

    dates = equity.index.to_numpy().astype("datetime64[D]")
    return equity[week_ends(dates)]


@dataclass(frozen=True)
class Srri:
    volatility: float | None
    risk_class: int | None
    weeks: int
    start: str | None
    end: str | None
    short_history: bool  # fewer than 5 years of weekly returns


def srri(equity: pd.Series, years: int = YEARS) -> Srri:
    """CESR/10-673 SRRI of an equity curve from its last 52 x `years` weekly returns."""
    weekly = week_end_values(equity.dropna().sort_index())
    returns = weekly.pct_change().dropna()
    wanted = WEEKS_PER_YEAR * years
    short = len(returns) < wanted
    returns = returns.iloc[-wanted:]
    if len(returns) < 2:
        return Srri(None, None, len(returns), None, None, True)
    vol = float(returns.std(ddof=1)) * math.sqrt(WEEKS_PER_YEAR)
    start = weekly.index[-len(returns) - 1]  # the close the first return starts from
    return Srri(
        vol, risk_class(vol, SRRI_BOUNDS), len(returns),
        start.date().isoformat(), returns.index[-1].date().isoformat(), short,
    )


def rolling_srri_classes(equity: pd.Series, years: int = YEARS) -> list[int]:
    """SRRI class at each year's last day (and the curve's last) with a full `years`-year
    window behind it:
    how stable the class has been, not only where it stands today."""
    equity = equity.dropna().sort_index()
    year_ends = equity.groupby(equity.index.year).tail(1).index
    classes = []
    for end in year_ends:
        part = equity[equity.index <= end]
        result = srri(part, years)
        if not result.short_history and result.risk_class is not None:
            classes.append(result.risk_class)
    return classes


@dataclass(frozen=True)
class Priips:
    vev: float | None
    mrm_class: int | None
    var_return_space: float | None
    sigma: float | None
    skew: float | None
    excess_kurtosis: float | None
    observations: int
    rhp_years: float
    short_history: bool  # fewer than 5 years of daily prices
    # Fewer than the 2 years of daily prices PRIIPs category 2 needs (Annex II point 5):
    # the measure then has to come from a benchmark or proxy, not from this history.
    under_category_2_minimum: bool = False


def cornish_fisher_var(sigma: float, skew: float, excess_kurtosis: float, n: float) -> float:
    """Annex II VaR in return space (log) at 97.5% over n trading days."""
    root = math.sqrt(n)
    return sigma * root * (
        -1.96 + 0.474 * skew / root - 0.0687 * excess_kurtosis / n + 0.146 * skew**2 / n
    ) - 0.5 * sigma**2 * n


def vev(var_return_space: float, rhp_years: float) -> float:
    """VaR-equivalent volatility of a VaR in return space over `rhp_years`."""
    return (math.sqrt(3.842 - 2.0 * var_return_space) - 1.96) / math.sqrt(rhp_years)


def priips_mrm(equity: pd.Series, rhp_years: float, years: int = YEARS) -> Priips:
    """PRIIPs category-2 market-risk class of an equity curve (daily values)."""
    equity = equity.dropna().sort_index()
    window = last_years(equity, years)
    r = np.diff(np.log(window.to_numpy(dtype=float)))
    short = equity.index[0] > equity.index[-1] - pd.DateOffset(years=years)
    too_short = equity.index[0] > equity.index[-1] - pd.DateOffset(years=PRIIPS_MIN_YEARS)
    if len(r) < 3:
        return Priips(None, None, None, None, None, None, len(r), rhp_years, True, True)
    centred = r - r.mean()
    m2, m3, m4 = (float(np.mean(centred**k)) for k in (2, 3, 4))
    sigma = math.sqrt(m2)
    if sigma == 0.0:
        return Priips(0.0, 1, 0.0, 0.0, 0.0, 0.0, len(r), rhp_years, short, too_short)
    skew, kurt = m3 / sigma**3, m4 / sigma**4 - 3.0
    var = cornish_fisher_var(sigma, skew, kurt, PRIIPS_DAYS_PER_YEAR * rhp_years)
    v = vev(var, rhp_years)
    return Priips(v, risk_class(v, MRM_BOUNDS), var, sigma, skew, kurt, len(r), rhp_years,
                  short, too_short)


def suitability(
    name: str,
    equity: pd.Series,
    intended: tuple[int, int],
    rhp_years: float,
    performance: dict[str, Any],
) -> dict[str, Any]:
    """One row of the report: the measures, the intended SRRI range and whether it fits.

    `performance` is bot.metrics.performance of the same curve (full span)."""
    s = srri(equity)
    p = priips_mrm(equity, rhp_years)
    fits = s.risk_class is not None and intended[0] <= s.risk_class <= intended[1]
    last5 = last_years(equity.dropna().sort_index())
    rolling = rolling_srri_classes(equity)
    return {
        "name": name,
        "span": [performance["start"], performance["end"]],
        "expected_volatility": s.volatility,
        "srri": asdict(s),
        "srri_rolling_range": [min(rolling), max(rolling)] if rolling else None,
        "intended_srri": list(intended),
        "fits": bool(fits),
        "mismatch": None if fits else _mismatch(s, intended),
        "priips": asdict(p),
        "max_drawdown": performance["max_drawdown"],
        "max_drawdown_5y": float((last5 / last5.cummax() - 1.0).min()),
        "sharpe": performance["sharpe"],
        "cagr": performance["cagr"],
        "annual_volatility_daily": performance["annual_volatility"],
    }


def _mismatch(s: Srri, intended: tuple[int, int]) -> str:
    if s.risk_class is None:
        return "no SRRI: too few weekly returns"
    side = "above" if s.risk_class > intended[1] else "below"
    return f"SRRI {s.risk_class} is {side} the intended range {intended[0]}-{intended[1]}"
