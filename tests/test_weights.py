import numpy as np
import pytest
from scipy.stats import norm

from bot.strategy.weights import (
    apply_overlay,
    erc_weights,
    inverse_vol_weights,
    realized_vol,
    risk_contributions,
    var_tail_factor,
)


def test_inverse_vol_divides_by_volatility_and_leverage():
    # Column volatilities: std([+a, -a, +a, -a], ddof=1) = a * sqrt(4/3).
    base = np.array([1.0, -1.0, 1.0, -1.0])[:, None]
    rets = base * np.array([0.01, 0.02, 0.04])
    result = inverse_vol_weights(rets, leverage=np.array([1.0, 1.0, 2.0]))
    raw = np.array([1 / 0.01, 1 / 0.02, 1 / (0.04 * 2)])
    np.testing.assert_allclose(result.weights, raw / raw.sum(), rtol=1e-12)
    np.testing.assert_allclose(result.vol, np.array([0.01, 0.02, 0.04]) * np.sqrt(4 / 3), rtol=1e-12)


def test_var_factor_cuts_only_fat_left_tails():
    rng = np.random.default_rng(3)
    normal = rng.normal(0, 0.01, 2000)
    fat = normal.copy()
    fat[:120] = -0.05  # 6% of days are crashes: the 5% quantile sits at -5%
    rets = np.column_stack([normal, fat])
    factor = var_tail_factor(rets, 0.95, floor=0.5)
    assert factor[0] == pytest.approx(1.0, abs=0.08)
    z = norm.ppf(0.95)
    expected = max(0.5, min(1.0, z * fat.std(ddof=1) / (0.05 + fat.mean())))  # around the mean
    assert factor[1] == pytest.approx(expected, rel=1e-9)
    assert factor[1] < 0.8


def test_var_factor_reads_the_tails_shape_not_the_windows_drift():
    """The same returns shifted by a daily drift (a fund falling, or rising, over the
    window) keep their factor: the historical VaR was taken from the raw quantile, so a
    falling fund lost weight for its fall, a 60-day momentum tilt, not a fat tail."""
    rng = np.random.default_rng(8)
    rets = rng.standard_t(4, size=(60, 6)) * 0.02
    base = var_tail_factor(rets, 0.95, floor=0.5)
    for drift in (-0.003, 0.003):
        np.testing.assert_allclose(var_tail_factor(rets + drift, 0.95, floor=0.5), base, rtol=1e-12)
    gaussian = rng.normal(-0.003, 0.03, size=(60, 400))  # falling funds, no fat tail
    assert var_tail_factor(gaussian, 0.95, floor=0.5).mean() > 0.95


def test_zero_volatility_is_rejected():
    rets = np.zeros((20, 2))
    with pytest.raises(ValueError, match="positive finite"):
        inverse_vol_weights(rets, np.ones(2))


@pytest.mark.parametrize("seed", range(20))
def test_erc_equalizes_risk_contributions(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 9))
    mix = rng.normal(size=(n, n))
    vols = rng.uniform(0.005, 0.06, n)
    rets = rng.normal(size=(120, n)) @ mix * vols
    cov = np.cov(rets, rowvar=False)
    w = erc_weights(cov)
    assert w.sum() == pytest.approx(1.0)
    assert np.all(w > 0)
    np.testing.assert_allclose(risk_contributions(w, cov), 1.0 / n, atol=1e-6)


def test_erc_of_uncorrelated_assets_is_inverse_vol():
    vols = np.array([0.01, 0.02, 0.05])
    w = erc_weights(np.diag(vols**2))
    np.testing.assert_allclose(w, (1 / vols) / (1 / vols).sum(), rtol=1e-9)


@pytest.mark.parametrize("rho", [-0.99, -0.9999, -0.999999])
def test_erc_of_nearly_opposite_assets_converges(rho):
    """With two funds moving almost exactly against each other the solution is large
    (y in the hundreds) and y_i (Sy)_i can be computed only to rounding: the solver found
    it and then raised 'did not converge', failing the decision. Two assets' ERC weights
    are their inverse volatilities, whatever their correlation."""
    vols = np.array([0.02, 0.03])
    cov = np.outer(vols, vols) * np.array([[1.0, rho], [rho, 1.0]])
    w = erc_weights(cov)
    np.testing.assert_allclose(w, [0.6, 0.4], rtol=1e-9)
    np.testing.assert_allclose(risk_contributions(w, cov), 0.5, rtol=1e-6)


def test_a_covariance_erc_cannot_solve_falls_back_to_strategic_weights(monkeypatch):
    from bot.config import load_settings, parse_settings
    from bot.strategy import leverage
    from tests.conftest import CONFIG

    raw = load_settings(CONFIG).model_dump(mode="json")
    raw["strategy"]["weighting"] = "erc"
    model = leverage.LeverageModel(parse_settings(raw, "erc"))
    n = len(model.symbols)
    rets = np.random.default_rng(5).normal(0.0, 0.01, (model.returns_window, n))

    def diverges(cov):
        raise ArithmeticError("erc solver did not converge; is the covariance singular?")

    monkeypatch.setattr(leverage, "erc_weights", diverges)
    weights, how = model.baseline(rets, np.ones(n, dtype=bool))
    assert np.allclose(weights, model.strategic / model.strategic.sum())
    assert how == "erc: erc solver did not converge; is the covariance singular?, strategic weights used"


def test_overlay_multiplies_then_renormalizes():
    w = apply_overlay(np.array([0.5, 0.3, 0.2]), np.array([1.2, 1.0, 0.5]))
    raw = np.array([0.6, 0.3, 0.1])
    np.testing.assert_allclose(w, raw / raw.sum())


def test_realized_vol_uses_sample_std():
    assert realized_vol(np.array([[0.01], [0.03]]))[0] == pytest.approx(np.std([0.01, 0.03], ddof=1))


def test_lower_quantile_matches_numpy():
    from bot.strategy.weights import lower_quantile

    rets = np.random.default_rng(5).normal(size=(60, 6))
    for q in (0.01, 0.05, 0.5, 0.99):
        np.testing.assert_allclose(lower_quantile(rets, q), np.quantile(rets, q, axis=0))


def test_window_stats_match_the_direct_formulas_and_are_computed_once():
    from bot.strategy.window_stats import WindowStats

    rets = np.random.default_rng(3).normal(0, 0.02, size=(80, 5))
    stats = WindowStats(rets)
    np.testing.assert_allclose(stats.vol(20), np.std(rets[-20:], axis=0, ddof=1), rtol=1e-13)
    np.testing.assert_allclose(stats.correlation(60), np.corrcoef(rets[-60:], rowvar=False), atol=1e-13)
    assert stats.vol(20) is stats.vol(20)  # cached
    assert stats.correlation(60) is not stats.correlation(60)  # callers may modify theirs
    np.testing.assert_array_equal(stats.vol(60), realized_vol(rets[-60:]))


def test_series_vol_is_window_stats_vol_of_one_column_to_the_bit():
    from bot.strategy.window_stats import series_vol

    rng = np.random.default_rng(11)
    for n in (2, 19, 20, 60, 252):
        for _ in range(50):
            port = rng.normal(0, 0.02, (300, 6))[-n:] @ rng.dirichlet(np.ones(6))
            assert series_vol(port) == realized_vol(port[:, None])[0]


def test_var_factor_matches_numpys_masked_clip():
    from bot.strategy.weights import _z, lower_quantile

    rng = np.random.default_rng(12)
    for _ in range(200):
        rets = rng.standard_t(3, size=(60, 6)) * 0.01
        rets[:, rng.integers(6)] = np.abs(rets[:, 0])  # a column with no left tail: factor 1
        confidence, floor = float(rng.uniform(0.9, 0.99)), float(rng.uniform(0.2, 0.8))
        gauss = _z(confidence) * realized_vol(rets)
        hist = -lower_quantile(rets - rets.mean(axis=0), 1.0 - confidence)
        expected = np.ones(6)
        ok = hist > 0
        expected[ok] = np.clip(gauss[ok] / hist[ok], floor, 1.0)
        np.testing.assert_array_equal(var_tail_factor(rets, confidence, floor), expected)


@pytest.mark.parametrize("weighting", ["inverse_vol", "erc"])
def test_an_asset_that_did_not_move_falls_back_to_strategic_weights(weighting):
    """Before: a fund whose price stood still over the window (volatility 0, e.g. a
    T-bill fund on a quiet month) stopped the whole backtest with a ValueError
    (inverse_vol) or a singular-matrix LinAlgError (erc)."""
    from bot.config import load_settings, parse_settings
    from bot.strategy.leverage import LeverageModel
    from tests.conftest import CONFIG

    raw = load_settings(CONFIG).model_dump(mode="json")
    raw["strategy"]["weighting"] = weighting
    model = LeverageModel(parse_settings(raw, "flat asset"))
    n = len(model.symbols)
    rets = np.random.default_rng(3).normal(0.0, 0.01, (model.returns_window, n))
    rets[-60:, 3] = 0.0  # the fourth fund stood still for the last 60 days
    weights, how = model.baseline(rets, np.ones(n, dtype=bool))
    assert np.allclose(weights, model.strategic / model.strategic.sum())
    assert how.startswith(f"{weighting}: {model.symbols[3]} did not move over")
    assert how.endswith("(volatility 0), strategic weights used")
    rets[-1, 3] = 0.001  # it moved once: the model's own weights again
    weights, how = model.baseline(rets, np.ones(n, dtype=bool))
    assert "strategic" not in how and np.isclose(weights.sum(), 1.0)


def test_a_decision_without_returns_is_made_once_per_listing_regime_and_defence():
    """Strategic weights and no rule reading a window: the decision depends on nothing
    else, so the fixed-weight backtest's 934 rebalances make one decision, not 934; the
    shared weights are read-only, so no caller can change another rebalance's."""
    import datetime as dt

    from bot.config import load_settings, parse_settings
    from bot.engine import decision_context
    from bot.strategy.leverage import LeverageModel
    from bot.types import Regime
    from tests.conftest import CONFIG

    raw = load_settings(CONFIG).model_dump(mode="json")
    raw["strategy"].update(weighting="strategic")
    raw["risk"]["rules"] = ["drawdown"]
    model = LeverageModel(parse_settings(raw, "strategic"))
    n = len(model.symbols)
    close = 100 + np.cumsum(np.random.default_rng(1).normal(0, 1, (30, n)), axis=0)
    dates = (np.datetime64("2024-01-01") + np.arange(30)).astype("datetime64[D]")

    def decide(t, regime=Regime.GROWTH, defensive=False):
        return model.decide(decision_context(model, model.symbols, dates, close, t, regime,
                                             defensive, dt.date(2024, 1, 1) + dt.timedelta(t)))

    first = decide(10)
    assert decide(20) is first and not first.weights.flags.writeable
    with pytest.raises(ValueError):
        first.weights[0] = 0.5
    assert decide(20, Regime.UNCERTAINTY) is not first
    assert decide(20, defensive=True) is not first
    close[25, 2] = np.nan  # a fund without a price that day: another listing
    unlisted = decide(25)
    assert unlisted is not first and unlisted.weights[2] == 0.0

    raw["strategy"]["weighting"] = "inverse_vol"  # reads returns: decided every time
    windowed = LeverageModel(parse_settings(raw, "inverse vol"))
    ctx = decision_context(windowed, windowed.symbols, dates, close, 20, Regime.GROWTH, False)
    assert windowed.decide(ctx) is not windowed.decide(ctx)


def test_weekly_weights_are_the_weeks_first_close_for_every_rebalance_and_process():
    """strategy.weights_every = "week" (the blueprint's "EVERY week: ... compute realized
    volatility ... set weights"): a Thursday rebalance uses Monday's baseline, the same in
    a fresh process; the guard still runs on Thursday's returns."""
    import pandas as pd

    from bot.config import load_settings, parse_settings
    from bot.engine import decision_context
    from bot.strategy.leverage import LeverageModel
    from bot.types import Regime
    from tests.conftest import CONFIG

    raw = load_settings(CONFIG).model_dump(mode="json")
    raw["strategy"]["weights_every"] = "week"
    weekly_settings = parse_settings(raw, "weekly")
    model = LeverageModel(weekly_settings)
    n, days = len(model.symbols), 320
    close = 100 * np.exp(np.cumsum(np.random.default_rng(4).normal(0, 0.02, (days, n)), axis=0))
    dates = pd.bdate_range("2023-01-02", periods=days).values.astype("datetime64[D]")
    monday = next(t for t in range(300, days) if pd.Timestamp(dates[t]).day_of_week == 0)

    def ctx(t):
        return decision_context(model, model.symbols, dates, close, t, Regime.TRANSITION, False)

    thursday = model.decide(ctx(monday + 3))
    start = ctx(monday)
    expected, _how = model.baseline(start.returns, start.tradable)
    assert [r.baseline for r in thursday.rows] == expected.tolist()
    assert thursday.rows[0].reasons[0].endswith(f", as of {dates[monday]}")
    fresh = LeverageModel(weekly_settings).decide(ctx(monday + 3))  # after a restart
    assert fresh.weights.tolist() == thursday.weights.tolist()
    raw["strategy"]["weights_every"] = "rebalance"
    daily = LeverageModel(parse_settings(raw, "every rebalance")).decide(ctx(monday + 3))
    assert [r.baseline for r in daily.rows] != expected.tolist()
    next_week = model.decide(ctx(monday + 5))
    assert next_week.rows[0].reasons[0].endswith(f", as of {dates[monday + 5]}")
