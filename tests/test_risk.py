import datetime as dt

import numpy as np
import pytest

from bot.config import RiskSettings
from bot.risk import (
    DrawdownState,
    GuardInputs,
    cap_weights,
    correlated_clusters,
    correlation_rule,
    guard,
    stop_levels,
    update_drawdown,
    volatility_rule,
)
from bot.types import Regime

DAY = dt.date(2024, 3, 4)
CFG = RiskSettings()


def inputs(returns, is_bond, prices=None, regime=Regime.TRANSITION, defensive=False,
           tradable=None):
    n = returns.shape[1]
    return GuardInputs(
        DAY, tuple("ABCDEFGH"[:n]), np.array(is_bond), returns,
        np.full(n, 100.0) if prices is None else prices, regime, defensive,
        np.ones(n, dtype=bool) if tradable is None else np.array(tradable),
    )


def test_cap_redistributes_pro_rata_until_it_holds():
    # 0.6 -> 0.3 frees 0.3: B takes 0.1 (its room), C and D 0.075 each, then the last
    # 0.05 goes to C and D equally: [0.3, 0.3, 0.2, 0.2].
    w = cap_weights(np.array([0.6, 0.2, 0.1, 0.1]), 0.3)
    np.testing.assert_allclose(w, [0.3, 0.3, 0.2, 0.2])


def test_cap_leaves_cash_when_everyone_is_at_the_cap():
    w = cap_weights(np.array([0.5, 0.3, 0.2]), 0.3)
    np.testing.assert_allclose(w, [0.3, 0.3, 0.3])


def test_the_cap_does_not_hand_back_what_the_regime_overlay_cut():
    """UNCERTAINTY cuts the equities (x0.6) and raises gold (x1.3) over the cap: the cap
    gave gold's excess to every asset pro rata, equities included, undoing a third of the
    overlay's cut. Only the assets the overlay did not cut take it; the rest is cash."""
    from bot.config import load_settings
    from bot.strategy.leverage import LeverageModel
    from bot.strategy.weights import apply_overlay
    from tests.conftest import CONFIG

    model = LeverageModel(load_settings(CONFIG))
    assert model.symbols == ("TQQQ", "UPRO", "UDOW", "TMF", "UGL", "DIG")
    baseline = np.array([0.10, 0.13, 0.14, 0.14, 0.30, 0.19])
    overlaid = apply_overlay(baseline, model.overlay[Regime.UNCERTAINTY])
    assert overlaid[4] > 0.3
    rets = np.random.default_rng(1).normal(0.0, 0.01, (30, 6))
    cfg = RiskSettings(rules=[])  # the cap alone
    guarded = guard(overlaid, inputs(rets, model.is_bond, regime=Regime.UNCERTAINTY)._replace(
        symbols=model.symbols, cap_receivers=model.not_cut[Regime.UNCERTAINTY]), cfg).weights
    np.testing.assert_array_equal(guarded[:3], overlaid[:3])  # the equities keep their cut
    assert guarded[4] == pytest.approx(0.3) and guarded.max() <= 0.3 + 1e-12
    assert guarded[[3, 5]].sum() > overlaid[[3, 5]].sum()  # bonds and oil took the excess
    assert guarded.sum() == pytest.approx(overlaid.sum())
    # Without the overlay's mask every asset below the cap shares it, as before.
    plain = guard(overlaid, inputs(rets, model.is_bond), cfg).weights
    assert plain[:3].sum() > overlaid[:3].sum()
    # Only cut assets below the cap: the excess stays in cash.
    only_cut = guard(np.array([0.5, 0.1, 0.1, 0.3]), inputs(alternating(30, 0.01, 4), [False] * 4)._replace(
        cap_receivers=np.array([True, False, False, True])), cfg).weights
    np.testing.assert_allclose(only_cut, [0.3, 0.1, 0.1, 0.3])


def alternating(n_days, size, n_assets):
    signs = np.where(np.arange(n_days) % 2 == 0, 1.0, -1.0)
    return np.repeat((signs * size)[:, None], n_assets, axis=1)


def test_high_volatility_cuts_risk_assets_and_raises_bonds():
    rets = np.vstack([alternating(232, 0.01, 4), alternating(20, 0.05, 4)])
    w = np.array([0.3, 0.3, 0.2, 0.2])
    out, event = volatility_rule(w, inputs(rets, [False, False, True, False]), CFG)
    # Risk x0.75 frees 0.2; the bond C can take 0.1 (to the 30% cap); 0.1 goes to cash.
    np.testing.assert_allclose(out, [0.225, 0.225, 0.3, 0.15])
    assert event.rule == "volatility" and event.inputs["ratio"] > 1.5


def test_low_volatility_raises_risk_funded_by_bonds_within_caps():
    rets = np.vstack([alternating(232, 0.01, 4), alternating(20, 0.002, 4)])
    w = np.array([0.3, 0.3, 0.2, 0.2])
    out, event = volatility_rule(w, inputs(rets, [False, False, True, False]), CFG)
    # A, B already at the cap; D 0.2 -> 0.25; the 0.05 comes out of the bond C.
    np.testing.assert_allclose(out, [0.3, 0.3, 0.15, 0.25])
    assert event.inputs["ratio"] < 0.7
    assert out.sum() == pytest.approx(1.0)


NO_CAP = RiskSettings(position_cap=1.0)


def test_low_volatility_sells_the_whole_bond_sleeve_when_it_must_by_default():
    # The research's rule: risk assets x1.25 (0.3 -> 0.375 each: 0.225 wanted), funded
    # from cash (none), then bonds (0.1): all of them go, and the increase is scaled to
    # the 0.1 they paid for.
    rets = np.vstack([alternating(232, 0.01, 4), alternating(20, 0.002, 4)])
    w = np.array([0.1, 0.3, 0.3, 0.3])
    out, _ = volatility_rule(w, inputs(rets, [True, False, False, False]), NO_CAP)
    np.testing.assert_allclose(out, [0.0, 0.3 + 0.1 / 3, 0.3 + 0.1 / 3, 0.3 + 0.1 / 3])


@pytest.mark.parametrize("floor", [0.25, 0.5, 1.0])
def test_low_volatility_keeps_the_bond_floor(floor):
    rets = np.vstack([alternating(232, 0.01, 4), alternating(20, 0.002, 4)])
    w = np.array([0.1, 0.3, 0.3, 0.3])
    cfg = NO_CAP.model_copy(update={"low_vol_bond_floor": floor})
    out, event = volatility_rule(w, inputs(rets, [True, False, False, False]), cfg)
    assert event is not None
    assert out[0] == pytest.approx(0.1 * floor)  # what the floor keeps, no more
    # the risk assets' increase is what the sold bonds paid for (no cash), pro rata
    np.testing.assert_allclose(out[1:], 0.3 + 0.1 * (1 - floor) / 3)
    assert out.sum() == pytest.approx(1.0)


def test_low_volatility_takes_from_bonds_only_what_it_needs_above_the_floor():
    rets = np.vstack([alternating(232, 0.01, 4), alternating(20, 0.002, 4)])
    w = np.array([0.4, 0.2, 0.2, 0.2])  # 0.15 wanted, 0.4 x (1 - 0.25) = 0.3 sellable
    cfg = NO_CAP.model_copy(update={"low_vol_bond_floor": 0.25})
    out, _ = volatility_rule(w, inputs(rets, [True, False, False, False]), cfg)
    np.testing.assert_allclose(out, [0.25, 0.25, 0.25, 0.25])


def test_low_volatility_funded_from_cash_leaves_the_bonds_alone_at_any_floor():
    rets = np.vstack([alternating(232, 0.01, 4), alternating(20, 0.002, 4)])
    w = np.array([0.2, 0.2, 0.2, 0.2])  # 20% cash pays for the whole increase
    for floor in (0.0, 0.5):
        out, _ = volatility_rule(w, inputs(rets, [True, False, False, False]),
                                 RiskSettings(low_vol_bond_floor=floor))
        np.testing.assert_allclose(out, [0.2, 0.25, 0.25, 0.25])


def test_volatility_rule_needs_its_history():
    rets = alternating(100, 0.01, 2)
    w = np.array([0.5, 0.5])
    out, event = volatility_rule(w, inputs(rets, [False, True]), CFG)
    assert event is None and out is w


def test_correlated_cluster_is_cut_to_the_cluster_cap():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 0.01, 60)
    rets = np.column_stack([a, a * 2.0, rng.normal(0, 0.01, 60)])
    cfg = RiskSettings(position_cap=0.5)
    out, event = correlation_rule(np.array([0.3, 0.3, 0.4]), inputs(rets, [False] * 3), cfg)
    # A+B = 0.6 -> 0.45 (0.225 each); C takes 0.1 up to its 50% cap; 0.05 to cash.
    np.testing.assert_allclose(out, [0.225, 0.225, 0.5])
    assert event.inputs["clusters"] == [["A", "B"]]
    assert event.inputs["max_correlation"] == pytest.approx(1.0)


def test_cutting_one_cluster_never_lifts_another_back_over_its_cap():
    """Two independent pairs at 0.50 each, cluster cap 0.45: the second pair's excess
    used to flow into the first (already cut) pair, leaving it at 0.55."""
    rng = np.random.default_rng(0)
    f1, f2 = rng.normal(0, 0.01, 60), rng.normal(0, 0.01, 60)
    noise = lambda: rng.normal(0, 0.001, 60)  # noqa: E731
    rets = np.column_stack([f1 + noise(), f1 + noise(), f2 + noise(), f2 + noise()])
    out, event = correlation_rule(np.full(4, 0.25), inputs(rets, [False] * 4), CFG)
    np.testing.assert_allclose(out, [0.225] * 4)  # 0.45 per cluster, 10% to cash
    assert event.inputs["clusters"] == [["A", "B"], ["C", "D"]]


def test_freed_weight_never_goes_to_an_asset_not_listed_yet():
    """The cap's excess went to unlisted assets (equal shares among zero weights); the
    planner cannot buy them, so their targets showed as drift and forced a daily rebalance."""
    listed = np.array([True, True, True, False])
    w = cap_weights(np.array([0.6, 0.4, 0.0, 0.0]), 0.3, listed)
    np.testing.assert_allclose(w, [0.3, 0.3, 0.3, 0.0])
    rets = alternating(300, 0.01, 4)
    rets[-20:] *= 3.0  # recent volatility far above its history: risk cut, bonds receive
    out, event = volatility_rule(
        np.array([0.3, 0.3, 0.2, 0.0]),
        inputs(rets, [False, False, True, True], tradable=listed),
        CFG,
    )
    assert event is not None and out[3] == 0.0 and out[2] > 0.2


def test_clusters_are_connected_components():
    corr = np.array([[0, 0.9, 0.1, 0], [0.9, 0, 0.85, 0], [0.1, 0.85, 0, 0], [0, 0, 0, 0]])
    assert correlated_clusters(corr, 0.8) == [[0, 1, 2]]


def test_stop_formula():
    stops = stop_levels(np.array([100.0]), np.array([0.02]), Regime.GROWTH, CFG)
    assert stops[0] == pytest.approx(100.0 * (1 - 3.0 * 0.02 * 1.2))


def test_drawdown_enters_and_leaves_defensive_mode_with_hysteresis():
    state = DrawdownState()
    events = []
    for equity in [100.0, 110.0, 98.0, 102.0, 105.0]:
        state, event = update_drawdown(state, equity, DAY, 0, CFG)
        events.append(event.action if event else None)
    # 98/110 = -10.9% enters; 102/110 = -7.3% stays; 105/110 = -4.5% leaves.
    assert events == [None, None, "entered defensive mode", None,
                      "left defensive mode: drawdown recovered"]
    assert not state.defensive and state.peak == 110.0


def test_drawdown_time_limit_rebases_the_peak():
    state, _ = update_drawdown(DrawdownState(peak=100.0), 80.0, DAY, 0, CFG)
    assert state.defensive and state.entered_day == DAY
    state, event = update_drawdown(state, 81.0, DAY, CFG.defensive_max_days - 1, CFG)
    assert state.defensive and event is None
    state, event = update_drawdown(state, 81.0, DAY, CFG.defensive_max_days, CFG)
    assert not state.defensive and state.peak == 81.0
    assert "peak re-based" in event.action


def test_guard_in_defensive_mode_moves_half_to_cash_and_sets_stops():
    rets = alternating(30, 0.01, 2)
    result = guard(np.array([0.3, 0.7]), inputs(rets, [False, True], defensive=True),
                   RiskSettings(position_cap=0.7, rules=("drawdown", "stops")))
    np.testing.assert_allclose(result.weights, [0.15, 0.35])
    vol = rets[-20:].std(axis=0, ddof=1)
    np.testing.assert_allclose(result.stops, 100.0 * (1 - 3.0 * vol * 1.0))
    assert [e.rule for e in result.events] == ["drawdown"]
    assert any("defensive mode" in r for r in result.reasons[0])


@pytest.mark.parametrize("seed", range(25))
def test_cap_holds_after_every_rule(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(4, 8))
    w = rng.dirichlet(np.ones(n) * 0.5)
    rets = rng.normal(0, 0.01, (260, n)) * rng.uniform(0.5, 3, n)
    rets[-20:] *= rng.uniform(0.2, 3.0)
    rets[:, 1] = rets[:, 0] * 1.1 + rng.normal(0, 0.001, 260)
    is_bond = rng.random(n) < 0.3
    result = guard(w, inputs(rets, list(is_bond), defensive=bool(rng.random() < 0.3)), CFG)
    assert np.all(result.weights <= CFG.position_cap + 1e-12)
    assert np.all(result.weights >= 0)
    assert result.weights.sum() <= 1.0 + 1e-12


def test_correlation_matrix_matches_numpy():
    from bot.risk import correlation_matrix

    rets = np.random.default_rng(2).normal(size=(60, 5))
    np.testing.assert_allclose(correlation_matrix(rets), np.corrcoef(rets, rowvar=False))
    expected = np.corrcoef(rets, rowvar=False)
    rets[:, 2] = 0.01  # a flat fund correlates with nothing; the others' correlations stand
    flat = correlation_matrix(rets)
    expected[2, :] = expected[:, 2] = 0.0
    expected[2, 2] = 1.0
    np.testing.assert_allclose(flat, expected)


def test_a_flat_fund_does_not_stand_the_correlation_rule_down_for_the_others():
    """One constant column (a bill fund, a halted fund) made the correlation matrix None,
    and the rule skipped every fund without an event: funds moving together above 0.8
    kept 0.3/0.3/0.2 beside it, and were cut to the cluster cap once it got some noise."""
    rng = np.random.default_rng(5)
    common = rng.normal(0, 0.01, size=(80, 1))
    moving = common + rng.normal(0, 0.001, size=(80, 3))
    returns = np.hstack([moving, np.zeros((80, 1))])  # the fourth: flat
    w = np.array([0.3, 0.3, 0.2, 0.1])
    cut, event = correlation_rule(w, inputs(returns, [False, False, False, True]), CFG)
    assert event is not None and sum(cut[:3]) == pytest.approx(CFG.cluster_cap)


# --- the plain-float rules against numpy's arithmetic ----------------------------------------
# The cap, the redistribution and the cluster cut work on Python floats (numpy's calls cost
# more than the arithmetic on six weights). These references are the numpy code they
# replaced; with fewer than eight assets the two agree to the bit, so no decision moves.


def _numpy_redistribute(w, amount, receivers, cap, eps=1e-12):
    w = w.copy()
    for _ in range(len(w)):
        if amount <= eps:
            break
        room = np.where(receivers, np.maximum(cap - w, 0.0), 0.0)
        open_ = room > eps
        if not open_.any():
            break
        basis = np.where(open_, w, 0.0)
        total = basis.sum()
        if total <= eps:
            basis = open_.astype(float)
            total = basis.sum()
        given = np.minimum(amount * basis / total, room)
        w += given
        amount -= float(given.sum())
    return w


def _numpy_cap(w, cap, tradable, eps=1e-12):
    over = w > cap + eps
    if not over.any():
        return w
    w = w.copy()
    excess = float((w[over] - cap).sum())
    w[over] = cap
    return _numpy_redistribute(w, excess, ~over & tradable, cap)


@pytest.mark.parametrize("seed", range(5))
def test_redistribution_and_cap_are_numpys_to_the_bit(seed):
    from bot.risk import _redistribute

    rng = np.random.default_rng(seed)
    for _ in range(400):
        n = int(rng.integers(1, 8))
        w = rng.dirichlet(np.ones(n) * rng.uniform(0.2, 2.0)) * rng.uniform(0.3, 1.0)
        if rng.random() < 0.2:
            w[rng.random(n) < 0.5] = 0.0  # zero weights: the equal-shares branch
        receivers = rng.random(n) < 0.6
        cap = float(rng.choice([0.2, 0.3, 0.5, 1.0]))
        amount = float(rng.uniform(0.0, 0.5))
        np.testing.assert_array_equal(
            _redistribute(w, amount, receivers, cap), _numpy_redistribute(w, amount, receivers, cap)
        )
        tradable = rng.random(n) < 0.8
        np.testing.assert_array_equal(cap_weights(w, cap, tradable), _numpy_cap(w, cap, tradable))


def test_cap_returns_its_input_when_nothing_is_over_and_a_new_array_otherwise():
    w = np.array([0.3, 0.2, 0.1])
    assert cap_weights(w, 0.3) is w
    capped = cap_weights(np.array([0.6, 0.2, 0.1]), 0.3)
    assert isinstance(capped, np.ndarray) and capped.dtype == float
    np.testing.assert_allclose(capped, [0.3, 0.3, 0.3])  # of the 0.3 over, 0.2 fits: the rest is cash


@pytest.mark.parametrize("seed", range(10))
def test_cluster_cut_matches_numpys_arithmetic(seed):
    rng = np.random.default_rng(100 + seed)
    n = 6
    rets = rng.normal(0, 0.01, (80, n))
    rets[:, 1] = rets[:, 0] * 1.2 + rng.normal(0, 0.001, 80)  # a cluster of three
    rets[:, 2] = rets[:, 0] * 0.9 + rng.normal(0, 0.001, 80)
    w = rng.dirichlet(np.ones(n)) * 0.5
    w[:3] = [0.3, 0.3, 0.25]
    tradable = np.array([True, True, True, True, bool(rng.random() < 0.7), True])
    out, event = correlation_rule(w, inputs(rets, [False] * n, tradable=list(tradable)), CFG)
    assert event is not None and event.inputs["clusters"] == [["A", "B", "C"]]
    expected = w.copy()
    total = float(expected[:3].sum())
    expected[:3] *= CFG.cluster_cap / total
    receivers = tradable.copy()
    receivers[:3] = False
    expected = _numpy_redistribute(expected, total - CFG.cluster_cap, receivers, CFG.position_cap)
    np.testing.assert_array_equal(out, expected)
