"""Weighting schemes: inverse volatility (leverage- and VaR-adjusted), ERC, mean-variance,
strategic.

All functions take a window of daily simple returns shaped (days, assets) and return
weights that sum to 1. They are pure and work on numpy arrays because the backtest calls
them on every rebalance and the live bot calls the very same code once a day.
"""

from __future__ import annotations

import math
from functools import lru_cache
from statistics import NormalDist
from typing import NamedTuple

import numpy as np

from bot.strategy.window_stats import WindowStats


def realized_vol(returns: np.ndarray) -> np.ndarray:
    """Daily standard deviation (ddof=1) per column (written out: ndarray.std's generic
    path costs twice as much on the small windows the engine uses every rebalance)."""
    return WindowStats(returns).vol(returns.shape[0])


def lower_quantile(returns: np.ndarray, q: float) -> np.ndarray:
    """Per-column quantile with linear interpolation, as np.quantile's default method,
    from one sort: np.quantile's generality costs ~50 us per call on a small window."""
    ordered = np.sort(returns, axis=0)
    pos = (ordered.shape[0] - 1) * q
    lo = int(pos)
    hi = min(lo + 1, ordered.shape[0] - 1)
    frac = pos - lo
    return ordered[lo] + (ordered[hi] - ordered[lo]) * frac


@lru_cache(maxsize=16)
def _z(confidence: float) -> float:
    """Gaussian quantile (stdlib: importing scipy.stats would add half a second to
    every start of the bot)."""
    return NormalDist().inv_cdf(confidence)


def var_tail_factor(
    returns: np.ndarray, confidence: float, floor: float, vol: np.ndarray | None = None
) -> np.ndarray:
    """How much fatter than Gaussian each asset's left tail is, as a weight multiplier.

    factor_i = clip(VaR_gauss_i / VaR_hist_i, floor, 1), where VaR_gauss = z_q * sigma_i
    and VaR_hist = -quantile_{1-q}(r_i - mean(r_i)), both over the same window. An asset
    whose historical one-day VaR exceeds the Gaussian one (crash risk that volatility
    alone understates) loses weight; thin tails are not rewarded, so the adjustment only
    ever makes the portfolio more defensive. Both are taken around the window's mean, so
    they compare the shape of the tail only: with the raw quantile a fund that fell over
    the window lost weight and one that rose did not (a 60-day momentum tilt, correlated
    0.4 with the window's mean return). `vol`: the window's volatilities, if known.
    """
    gauss = _z(confidence) * (realized_vol(returns) if vol is None else vol)
    hist = -lower_quantile(returns - returns.mean(axis=0), 1.0 - confidence)
    # plain floats, one per asset: numpy's masked clip costs more than the arithmetic
    return np.array([
        min(max(g / h, floor), 1.0) if h > 0 else 1.0
        for g, h in zip(gauss.tolist(), hist.tolist(), strict=True)
    ])


class InverseVolResult(NamedTuple):
    """The weights with the volatilities and VaR factors behind them (a tuple: made at
    every rebalance)."""

    weights: np.ndarray
    vol: np.ndarray
    var_factor: np.ndarray


def inverse_vol_weights(
    vol_returns: np.ndarray,
    leverage: np.ndarray,
    var_returns: np.ndarray | None = None,
    var_confidence: float = 0.95,
    var_floor: float = 0.5,
    stats: WindowStats | None = None,
) -> InverseVolResult:
    """w_i proportional to (1/sigma_i) * (1/beta_i) * var_factor_i, normalized.

    sigma_i is the realized volatility over `vol_returns` (the research's 20 days); beta_i
    the ETF's leverage; the VaR factor comes from `var_returns` when given (see
    var_tail_factor). An asset with zero volatility cannot be weighted: ValueError.
    `stats`, the decision's window statistics, supplies volatilities already computed:
    both return windows must then be trailing windows of its returns.
    """
    vol = realized_vol(vol_returns) if stats is None else stats.vol(vol_returns.shape[0])
    if not all(0.0 < v < math.inf for v in vol.tolist()):  # positive and finite, not NaN
        raise ValueError(f"inverse_vol needs positive finite volatilities, got {vol.tolist()}")
    raw = 1.0 / (vol * leverage)
    if var_returns is not None:
        var_vol = None if stats is None else stats.vol(var_returns.shape[0])
        factor = var_tail_factor(var_returns, var_confidence, var_floor, var_vol)
        raw = raw * factor
    else:
        factor = np.ones_like(raw)
    return InverseVolResult(raw / raw.sum(), vol, factor)


def erc_weights(cov: np.ndarray, tol: float = 1e-12, max_iter: int = 100) -> np.ndarray:
    """Equal-risk-contribution weights (Maillard, Roncalli & Teiletche 2010).

    Solves the strictly convex problem min 0.5 y'Sy - (1/n) sum(log y) by Newton's method
    with a positivity-preserving step (Spinu 2013); at its optimum y_i (Sy)_i = 1/n for
    every i, so w = y / sum(y) has equal risk contributions w_i (Sw)_i. Converges in a
    handful of iterations for any positive definite S.
    """
    n = cov.shape[0]
    scale = np.trace(cov) / n
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError("erc needs a covariance matrix with positive variances")
    s = cov / scale  # conditioning only; the solution's direction is unchanged
    b = np.full(n, 1.0 / n)
    y = 1.0 / np.sqrt(np.diag(s)) / n
    largest = float(np.max(np.abs(s)))
    for _ in range(max_iter):
        sy = s @ y
        grad = sy - b / y
        # y_i (Sy)_i is a sum of terms as large as max|S| max(y)^2, which it cannot be
        # computed closer than to rounding: with nearly opposite assets (y in the
        # hundreds) the solution is found but `tol` alone is never met.
        rounding = 64 * np.finfo(float).eps * n * largest * float(np.max(y)) ** 2
        if np.max(np.abs(grad * y)) < max(tol, rounding):
            break
        hess = s + np.diag(b / (y * y))
        step = np.linalg.solve(hess, grad)
        # Newton decrement damping keeps every y_i positive (barrier method, Nesterov).
        lam = np.sqrt(max(float(grad @ step), 0.0))
        y = y - step / (1.0 + lam) if lam > 0.25 else y - step
        if np.any(y <= 0):
            raise ArithmeticError("erc Newton step left the positive orthant")
    else:
        raise ArithmeticError("erc solver did not converge; is the covariance singular?")
    return y / y.sum()


def mean_variance_weights(
    cov: np.ndarray, mu: np.ndarray, lam: float, cap: float = 1.0
) -> np.ndarray:
    """The research's mean-variance portfolio, long only and capped:

        w = argmin  w'S w - lam * mu'w   subject to  sum(w) = 1,  0 <= w_i <= cap.

    S and mu are the daily covariance and mean returns (annualising both would change
    nothing: the argmin is the same). lam = 0 gives the minimum-variance portfolio; a
    larger lam tilts towards the higher means until the cap binds.

    A convex quadratic program: scipy's SLSQP finds which bounds bind, then the KKT
    system on the free weights is solved exactly (the closed form of the equality-
    constrained problem) and the multipliers' signs are checked, so the answer is exact
    rather than within the solver's tolerance. S and mu are scaled by the mean variance
    first, so the tolerances mean the same for any data.
    """
    from scipy.optimize import minimize  # here: scipy.optimize costs 0.2 s at every start

    n = cov.shape[0]
    if cap * n < 1.0 - 1e-12:
        raise ValueError(f"mean_variance: a cap of {cap} on {n} assets cannot hold 100%")
    scale = np.trace(cov) / n
    if not np.isfinite(scale) or scale <= 0 or not np.isfinite(mu).all():
        raise ValueError("mean_variance needs finite means and positive variances")
    s, m = cov / scale, lam * mu / scale

    def objective(w: np.ndarray) -> tuple[float, np.ndarray]:
        sw = s @ w
        return float(w @ sw - m @ w), 2.0 * sw - m

    result = minimize(
        objective,
        np.full(n, 1.0 / n),
        jac=True,
        method="SLSQP",
        bounds=[(0.0, cap)] * n,
        constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones(n)}],
        options={"ftol": 1e-12, "maxiter": 500},
    )
    exact = _kkt_solution(s, m, result.x, cap)
    if exact is not None:
        return exact
    # SLSQP stops with "positive directional derivative" when it cannot improve further
    # at its precision; its point is then the optimum as far as floats can tell.
    x = result.x
    feasible = abs(x.sum() - 1.0) < 1e-8 and np.all(x > -1e-8) and np.all(x < cap + 1e-8)
    if not (result.success or (result.status == 8 and feasible)):
        raise ArithmeticError(f"mean_variance: the solver did not converge ({result.message})")
    w = np.clip(result.x, 0.0, cap)
    return w / w.sum()


def _kkt_solution(
    s: np.ndarray, m: np.ndarray, guess: np.ndarray, cap: float, tol: float = 1e-7
) -> np.ndarray | None:
    """The exact optimum for the bounds `guess` has binding, or None if that active set
    is not optimal (a free weight outside its bounds or a multiplier of the wrong sign).

    With C the weights at the cap and F the free ones, stationarity and the budget give
        2 S_FF w_F + nu 1 = m_F - 2 S_FC w_C,    1'w_F = 1 - cap |C|;
    then g = 2 S w - m must satisfy g_i + nu >= 0 at zero and <= 0 at the cap."""
    at_zero, at_cap = guess < tol, guess > cap - tol
    free = ~(at_zero | at_cap)
    w = np.where(at_cap, cap, 0.0)
    k = int(free.sum())
    if k == 0:
        return w if abs(w.sum() - 1.0) < 1e-12 else None
    kkt = np.zeros((k + 1, k + 1))
    kkt[:k, :k] = 2.0 * s[np.ix_(free, free)]
    kkt[:k, k] = kkt[k, :k] = 1.0
    rhs = np.append(m[free] - 2.0 * s[np.ix_(free, at_cap)] @ w[at_cap], 1.0 - w.sum())
    try:
        solution = np.linalg.solve(kkt, rhs)
    except np.linalg.LinAlgError:
        return None
    w[free], nu = solution[:k], solution[k]
    if np.any(w[free] < -1e-12) or np.any(w[free] > cap + 1e-12):
        return None
    reduced = 2.0 * s @ w - m + nu
    if np.any(reduced[at_zero] < -1e-9) or np.any(reduced[at_cap] > 1e-9):
        return None
    return np.clip(w, 0.0, cap)


def risk_contributions(weights: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Each asset's share of portfolio variance: w_i (S w)_i / w'Sw."""
    sw = cov @ weights
    return weights * sw / float(weights @ sw)


def apply_overlay(weights: np.ndarray, multipliers: np.ndarray) -> np.ndarray:
    """Regime overlay: multiply, then renormalize to the same total."""
    total = weights.sum()
    scaled = weights * multipliers
    s = scaled.sum()
    if s <= 0:
        return weights.copy()
    return scaled * (total / s)
