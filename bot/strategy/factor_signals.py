"""The four signals of the robo-advisor factor model, from closes up to the decision day.

Each function reads a (days, assets) array of adjusted closes whose last row is the
decision day t, so nothing after t can enter by construction. Raw values are in each
signal's own units (returns, distances, z-scores, flags); `cross_sectional_z` puts them on
one scale so the profile's signal weights mean what they say. A raw value is NaN when an
asset lacks the history the signal needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bot.config import FactorSettings, SignalWeights

_TINY = 1e-12


def cross_sectional_z(raw: np.ndarray) -> np.ndarray:
    """z-scores across assets on one date: (x - mean) / std with the population std.

    Only finite values enter the mean and std; an asset without a value gets 0 (the
    cross-sectional mean: no information either way). With fewer than two values, or no
    dispersion (every asset equal, e.g. a calendar flag shared by an all-equity universe),
    every z is 0: the signal says nothing about which ETF to prefer that day. With n assets
    |z| <= sqrt(n - 1), so one extreme raw value cannot swamp the composite.
    """
    z = np.zeros(len(raw))
    ok = np.isfinite(raw)
    if ok.sum() < 2:
        return z
    values = raw[ok]
    sd = float(values.std())
    if sd <= _TINY * max(1.0, float(np.abs(values).max())):
        return z
    z[ok] = (values - values.mean()) / sd
    return z


def relative_strength(closes: np.ndarray, window: int) -> np.ndarray:
    """Return over the last `window` trading days: P_t / P_{t-window} - 1."""
    if closes.shape[0] <= window:
        return np.full(closes.shape[1], np.nan)
    return closes[-1] / closes[-1 - window] - 1.0


def moving_average_gap(closes: np.ndarray, window: int) -> np.ndarray:
    """P_t / mean(P over the last `window` days including t) - 1; NaN if any is missing."""
    if closes.shape[0] < window:
        return np.full(closes.shape[1], np.nan)
    return closes[-1] / closes[-window:].mean(axis=0) - 1.0


def trend(closes: np.ndarray, fast: int, slow: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Price against the fast and slow moving averages: the mean of the two gaps, plus
    the gaps themselves for the trade log. Positive above both, negative below both."""
    gap_fast = moving_average_gap(closes, fast)
    gap_slow = moving_average_gap(closes, slow)
    return 0.5 * (gap_fast + gap_slow), gap_fast, gap_slow


def return_zscore(closes: np.ndarray, window: int, lookback: int) -> np.ndarray:
    """How far the last `window`-day log return sits from its average, in standard errors:
    z = (R_window - window * mu) / (sigma * sqrt(window)), mu and sigma the mean and std
    (ddof=1) of the last `lookback` daily log returns. The mean-reversion signal is -z.
    NaN without `lookback` returns; 0 when the asset did not move at all (no deviation)."""
    if closes.shape[0] <= lookback or window > lookback:
        return np.full(closes.shape[1], np.nan)
    logs = np.log(closes[-1 - lookback :])
    daily = np.diff(logs, axis=0)
    mu = daily.mean(axis=0)
    sigma = daily.std(axis=0, ddof=1)
    recent = logs[-1] - logs[-1 - window]
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (recent - window * mu) / (sigma * np.sqrt(window))
    return np.where(sigma > _TINY, z, np.where(np.isfinite(sigma), 0.0, np.nan))


def turn_of_month_flags(sessions: np.ndarray, before: int, after: int) -> np.ndarray:
    """True for the last `before` and the first `after` trading days of each month.

    `sessions` (datetime64[D], ascending) must cover whole months: the first session
    of the array is taken as a month's first, the last as a month's last."""
    months = sessions.astype("datetime64[M]")
    n = len(sessions)
    idx = np.arange(n)
    starts = np.r_[True, months[1:] != months[:-1]]
    ends = np.r_[months[1:] != months[:-1], True]
    first = np.maximum.accumulate(np.where(starts, idx, 0))
    last = np.minimum.accumulate(np.where(ends, idx, n - 1)[::-1])[::-1]
    return (idx - first < after) | (last - idx < before)


def halloween_flags(month: int, is_equity: np.ndarray) -> np.ndarray:
    """The November-April equity bias: +1 for equity ETFs in November to April, -1 in May
    to October; 0 for bonds (the effect is documented for stock markets)."""
    sign = 1.0 if month in (11, 12, 1, 2, 3, 4) else -1.0
    return np.where(is_equity, sign, 0.0)


def month_end_rows(dates: np.ndarray) -> np.ndarray:
    """Row indices of the last trading day of each month, except the final row (its month
    may not be over yet)."""
    months = dates.astype("datetime64[M]")
    return np.flatnonzero(months[1:] != months[:-1])


def own_month_average(
    closes: np.ndarray, dates: np.ndarray, month: int, year: int, min_years: int,
    max_years: int = 50,
) -> tuple[np.ndarray, np.ndarray]:
    """Each asset's mean return in calendar `month` over the `max_years` years before
    `year` (month end to month end, complete months only), and how many years entered;
    NaN with fewer than `min_years`. The bound keeps a backtest and a live run with a
    shorter history on the same definition."""
    rows = month_end_rows(dates)
    n_assets = closes.shape[1]
    if len(rows) < 2:
        return np.full(n_assets, np.nan), np.zeros(n_assets, dtype=int)
    ends = dates[rows].astype("datetime64[M]")
    rets = closes[rows[1:]] / closes[rows[:-1]] - 1.0
    labels = ends[1:]
    month_of_year = labels.astype(int) % 12 + 1
    year_of = labels.astype(int) // 12 + 1970
    pick = (month_of_year == month) & (year_of < year) & (year_of >= year - max_years)
    chosen = rets[pick]
    finite = np.isfinite(chosen)
    count = finite.sum(axis=0)
    total = np.where(finite, chosen, 0.0).sum(axis=0)
    mean = total / np.maximum(count, 1)
    return np.where(count >= min_years, mean, np.nan), count


SIGNALS = ("relative_strength", "trend", "mean_reversion", "seasonality")
CORE = SIGNALS[:3]  # an ETF without these cannot be ranked and is left out of the LP


@dataclass(frozen=True)
class SignalSet:
    """Raw and standardized values of every signal for one decision, with the inputs
    that explain them (per-asset arrays in universe order)."""

    raw: dict[str, np.ndarray]
    z: dict[str, np.ndarray]
    detail: dict[str, np.ndarray]

    def complete(self) -> np.ndarray:
        """Assets with every core signal (seasonality's parts may be missing: they count 0)."""
        return np.logical_and.reduce([np.isfinite(self.raw[name]) for name in CORE])


@dataclass(frozen=True)
class HoldingWindow:
    """The calendar facts of the period a decision will be held (known in advance)."""

    year: int
    month: int  # calendar month of the first holding session
    turn_of_month: bool  # a turn-of-month session falls inside the window


def seasonality(
    closes: np.ndarray, dates: np.ndarray, is_equity: np.ndarray, holding: HoldingWindow,
    cfg: FactorSettings, ranked: np.ndarray,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Mean of three parts, each standardized across the `ranked` assets: the ETF's own
    average return in the holding month in earlier years, the November-April equity bias,
    and the turn-of-month effect (+1 for equities when the holding window contains a
    turn-of-month session). A part with no dispersion (e.g. the calendar flags in an
    all-equity universe) contributes 0."""
    own, years = own_month_average(
        closes, dates, holding.month, holding.year, cfg.se_min_years, cfg.se_years
    )
    halloween = halloween_flags(holding.month, is_equity)
    tom = np.where(is_equity, 1.0 if holding.turn_of_month else 0.0, 0.0)
    parts = [cross_sectional_z(np.where(ranked, x, np.nan)) for x in (own, halloween, tom)]
    detail = {"own_month": own, "own_month_years": years, "halloween": halloween, "tom": tom}
    return np.mean(parts, axis=0), detail


def compute_signals(
    closes: np.ndarray, dates: np.ndarray, is_equity: np.ndarray, holding: HoldingWindow,
    cfg: FactorSettings,
) -> SignalSet:
    """Every signal from closes whose last row is the decision day."""
    rs = relative_strength(closes, cfg.rs_window)
    tf, gap_fast, gap_slow = trend(closes, cfg.tf_fast, cfg.tf_slow)
    ret_z = return_zscore(closes, cfg.mr_window, cfg.mr_lookback)
    # Assets that cannot be ranked on the core signals do not shape the others' z-scores.
    ok = np.isfinite(rs) & np.isfinite(tf) & np.isfinite(ret_z)
    se, se_detail = seasonality(closes, dates, is_equity, holding, cfg, ok)
    raw = {"relative_strength": rs, "trend": tf, "mean_reversion": -ret_z, "seasonality": se}
    z = {name: cross_sectional_z(np.where(ok, values, np.nan)) for name, values in raw.items()}
    detail = {"gap_fast": gap_fast, "gap_slow": gap_slow, "return_z": ret_z, **se_detail}
    return SignalSet(raw, z, detail)


def composite(signals: SignalSet, weights: SignalWeights) -> np.ndarray:
    """Score = w_RS * RS + w_TF * TF + w_MR * MR + w_SE * SE on the standardized signals."""
    return np.sum([getattr(weights, name) * signals.z[name] for name in SIGNALS], axis=0)
