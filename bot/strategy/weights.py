"""Weighting schemes: inverse volatility (leverage- and VaR-adjusted), ERC, strategic.

All functions take a window of daily simple returns shaped (days, assets) and return
weights that sum to 1. They are pure and work on numpy arrays because the backtest calls
them on every rebalance and the live bot calls the very same code once a day.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist

import numpy as np


def realized_vol(returns: np.ndarray) -> np.ndarray:
    """Daily standard deviation (ddof=1) per column (written out: ndarray.std's generic
    path costs twice as much on the small windows the engine uses every rebalance)."""
    centered = returns - returns.mean(axis=0)
    return np.sqrt(np.einsum("ij,ij->j", centered, centered) / (returns.shape[0] - 1))


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


def var_tail_factor(returns: np.ndarray, confidence: float, floor: float) -> np.ndarray:
    """How much fatter than Gaussian each asset's left tail is, as a weight multiplier.

    factor_i = clip(VaR_gauss_i / VaR_hist_i, floor, 1), where VaR_gauss = z_q * sigma_i
    and VaR_hist = -quantile_{1-q}(r_i), both over the same window. An asset whose
    historical one-day VaR exceeds the Gaussian one (crash risk that volatility alone
    understates) loses weight; thin tails are not rewarded, so the adjustment only ever
    makes the portfolio more defensive.
    """
    gauss = _z(confidence) * realized_vol(returns)
    hist = -lower_quantile(returns, 1.0 - confidence)
    factor = np.ones(returns.shape[1])
    ok = hist > 0
    factor[ok] = np.clip(gauss[ok] / hist[ok], floor, 1.0)
    return factor


@dataclass(frozen=True)
class InverseVolResult:
    weights: np.ndarray
    vol: np.ndarray
    var_factor: np.ndarray


def inverse_vol_weights(
    vol_returns: np.ndarray,
    leverage: np.ndarray,
    var_returns: np.ndarray | None = None,
    var_confidence: float = 0.95,
    var_floor: float = 0.5,
) -> InverseVolResult:
    """w_i proportional to (1/sigma_i) * (1/beta_i) * var_factor_i, normalized.

    sigma_i is the realized volatility over `vol_returns` (the research's 20 days); beta_i
    the ETF's leverage; the VaR factor comes from `var_returns` when given (see
    var_tail_factor). An asset with zero volatility cannot be weighted: ValueError.
    """
    vol = realized_vol(vol_returns)
    if np.any(~np.isfinite(vol)) or np.any(vol <= 0):
        raise ValueError(f"inverse_vol needs positive finite volatilities, got {vol.tolist()}")
    raw = 1.0 / (vol * leverage)
    if var_returns is not None:
        factor = var_tail_factor(var_returns, var_confidence, var_floor)
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
    for _ in range(max_iter):
        sy = s @ y
        grad = sy - b / y
        if np.max(np.abs(grad * y)) < tol:
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
