"""strategy.weighting = "mean_variance": w = argmin w'Sw - lambda mu'w, long only, capped,
checked against answers worked out by hand and against an exhaustive search."""

import itertools

import numpy as np
import pytest

from bot.config import parse_settings
from bot.errors import ConfigError
from bot.strategy.weights import mean_variance_weights


def cov_of(vols, corr):
    vols = np.asarray(vols, dtype=float)
    return np.asarray(corr, dtype=float) * np.outer(vols, vols)


def test_two_assets_match_the_closed_form():
    # f(w1) = a w1^2 + b (1-w1)^2 + 2c w1 (1-w1) - lam (mu1 w1 + mu2 (1-w1)); f'(w1) = 0 gives
    # w1 = (b - c + lam (mu1 - mu2) / 2) / (a + b - 2c).
    s1, s2, rho = 0.02, 0.01, 0.3
    a, b, c = s1**2, s2**2, rho * s1 * s2
    mu = np.array([0.0010, 0.0004])
    lam = 0.05
    w1 = (b - c + lam * (mu[0] - mu[1]) / 2) / (a + b - 2 * c)
    assert 0 < w1 < 1  # interior: no bound binds
    w = mean_variance_weights(cov_of([s1, s2], [[1, rho], [rho, 1]]), mu, lam)
    np.testing.assert_allclose(w, [w1, 1 - w1], rtol=0, atol=1e-12)


def test_lambda_zero_is_the_minimum_variance_portfolio():
    cov = cov_of([0.02, 0.015, 0.018], [[1, 0.3, 0.2], [0.3, 1, -0.1], [0.2, -0.1, 1]])
    inv = np.linalg.solve(cov, np.ones(3))
    expected = inv / inv.sum()  # Sigma^-1 1 / 1' Sigma^-1 1
    assert expected.min() > 0
    w = mean_variance_weights(cov, np.array([0.05, -0.02, 0.01]), lam=0.0)
    np.testing.assert_allclose(w, expected, rtol=0, atol=1e-12)


def test_a_binding_cap_holds_and_the_rest_is_optimal_among_the_others():
    # Uncorrelated; asset 0 has by far the best mean, so it wants more than the cap. At the
    # cap the other two (zero means) split the remaining 50% by inverse variance.
    vols = np.array([0.02, 0.01, 0.02])
    mu = np.array([0.01, 0.0, 0.0])
    w = mean_variance_weights(np.diag(vols**2), mu, lam=1.0, cap=0.5)
    inv_var = 1 / vols[1:] ** 2
    np.testing.assert_allclose(w, [0.5, *(0.5 * inv_var / inv_var.sum())], rtol=0, atol=1e-12)
    # Without the cap the same problem puts more than half in asset 0.
    assert mean_variance_weights(np.diag(vols**2), mu, lam=1.0)[0] > 0.5


def test_long_only_zeroes_an_asset_the_unconstrained_answer_would_short():
    vols = np.array([0.01, 0.01, 0.01])
    mu = np.array([0.0, 0.0, -0.01])
    w = mean_variance_weights(np.diag(vols**2), mu, lam=1.0)
    np.testing.assert_allclose(w, [0.5, 0.5, 0.0], rtol=0, atol=1e-12)


def brute_force(cov, mu, lam, cap):
    """Independent answer: every assignment of each weight to 0, the cap or free; the
    equality-constrained optimum on the free ones; the best feasible objective wins."""
    n = len(mu)
    best, best_w = np.inf, None
    for states in itertools.product((0, 1, 2), repeat=n):  # 0: zero, 1: cap, 2: free
        states = np.array(states)
        w = np.where(states == 1, cap, 0.0)
        free = states == 2
        k = int(free.sum())
        if k:
            kkt = np.zeros((k + 1, k + 1))
            kkt[:k, :k] = 2 * cov[np.ix_(free, free)]
            kkt[:k, k] = kkt[k, :k] = 1
            rhs = np.append(lam * mu[free] - 2 * cov[np.ix_(free, ~free)] @ w[~free], 1 - w.sum())
            w[free] = np.linalg.solve(kkt, rhs)[:k]
        if abs(w.sum() - 1) > 1e-9 or w.min() < -1e-12 or w.max() > cap + 1e-12:
            continue
        value = w @ cov @ w - lam * mu @ w
        if value < best - 1e-15:
            best, best_w = value, w
    return best_w


@pytest.mark.parametrize("seed", range(8))
def test_random_problems_agree_with_an_exhaustive_search(seed):
    rng = np.random.default_rng(seed)
    returns = rng.normal(0.0005, 0.01, (120, 5)) * rng.uniform(0.5, 3.0, 5)
    cov = np.cov(returns, rowvar=False)
    mu = returns.mean(axis=0)
    lam, cap = rng.choice([0.0, 0.1, 1.0, 10.0]), rng.choice([0.3, 0.5, 1.0])
    w = mean_variance_weights(cov, mu, lam, cap)
    np.testing.assert_allclose(w, brute_force(cov, mu, lam, cap), rtol=0, atol=1e-9)
    assert w.sum() == pytest.approx(1.0, abs=1e-12) and w.min() >= 0 and w.max() <= cap


def test_a_cap_that_cannot_hold_everything_is_refused():
    with pytest.raises(ValueError, match="cannot hold 100%"):
        mean_variance_weights(np.eye(3), np.zeros(3), 1.0, cap=0.3)


def test_config_takes_lambda_and_windows_and_refuses_a_negative_lambda(settings):
    raw = settings.model_dump(mode="json")
    raw["strategy"] |= {"weighting": "mean_variance", "mv_lambda": 2.5, "mv_mean_window": 126}
    parsed = parse_settings(raw, "test")
    assert (parsed.strategy.mv_lambda, parsed.strategy.mv_mean_window) == (2.5, 126)
    raw["strategy"]["mv_lambda"] = -1
    with pytest.raises(ConfigError, match="strategy.mv_lambda"):
        parse_settings(raw, "test")


def test_the_engine_runs_mean_variance_under_the_same_cap_and_guard(settings):
    from bot.backtest import run_backtest, scratch_tradelog
    from bot.data.synthetic import synthetic_market

    raw = settings.model_dump(mode="json")
    raw["strategy"] |= {"weighting": "mean_variance", "mv_lambda": 5.0}
    raw["backtest"] |= {"start": "2021-06-01", "end": "2021-12-31"}
    cfg = parse_settings(raw, "test")
    market = synthetic_market(cfg.symbols, "2020-01-02", "2021-12-31", seed=11)
    log = scratch_tradelog("mv")
    run_backtest(cfg, market, log)
    log.flush()
    targets = log.load_targets(log.run_id)
    solved = targets[targets["reasons"].astype(str).str.contains("mean-variance, lambda 5")]
    assert solved["day"].nunique() >= 20  # every rebalance once the 252-day window is full
    assert solved["baseline"].astype(float).max() <= 0.30 + 1e-12  # the cap inside the solver
    assert targets["final"].astype(float).max() <= 0.30 + 1e-9  # and after overlay and guard
    sums = solved.groupby("day")["baseline"].sum()
    np.testing.assert_allclose(sums.to_numpy(), 1.0, atol=1e-12)
