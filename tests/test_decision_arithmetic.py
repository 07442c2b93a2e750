"""The decision's helpers against the plain numpy expressions they replaced: the same
values bit for bit (the helpers trade numpy calls for plain floats where a call costs more
than the arithmetic on a handful of assets)."""

from __future__ import annotations

import numpy as np
import pytest

from bot.planner import max_abs_difference
from bot.risk import _note_changes, cap_weights, correlated_clusters, correlation_rule
from bot.strategy.weights import _z, lower_quantile, var_tail_factor
from bot.strategy.window_stats import WindowStats

RNG = np.random.default_rng(20240601)


def weights(n: int) -> np.ndarray:
    w = RNG.random(n) * RNG.choice([0.2, 0.5, 1.0])
    w[RNG.random(n) < 0.2] = 0.0
    return w


@pytest.mark.parametrize("n", [1, 2, 6, 9])
def test_max_abs_difference_is_numpy_max_abs(n):
    for _ in range(500):
        a, b = weights(n), weights(n)
        assert max_abs_difference(a, b) == float(np.max(np.abs(a - b)))
    a, b = weights(n), weights(n)
    a[0] = np.nan
    assert np.isnan(max_abs_difference(a, b)) and np.isnan(np.max(np.abs(a - b)))


def test_note_changes_matches_the_array_version():
    for _ in range(300):
        before = weights(6)
        after = before.copy()
        touched = RNG.random(6) < 0.5
        after[touched] *= RNG.random(int(touched.sum()))
        after[0] += 1e-11  # below the threshold: not a change
        expected: list[list[str]] = [[] for _ in range(6)]
        for i in np.flatnonzero(np.abs(after - before) > 1e-10):
            expected[i].append(f"why: {before[i]:.4f} -> {after[i]:.4f}")
        got: list[list[str]] = [[] for _ in range(6)]
        _note_changes(before, after, got, "why")
        assert got == expected


def test_cap_weights_leaves_weights_under_the_cap_untouched_and_caps_the_rest():
    under = np.array([0.2, 0.3, 0.3 + 1e-13, 0.1, np.nan, 0.0])
    assert cap_weights(under, 0.3) is under
    over = np.array([0.5, 0.2, 0.1, 0.1, 0.05, 0.05])
    capped = cap_weights(over, 0.3)
    assert capped is not over and capped.max() <= 0.3 + 1e-12


def test_var_tail_factor_clips_as_np_clip():
    for _ in range(200):
        rets = RNG.standard_t(3, size=(60, 6)) * 0.02
        rets[:, 5] = np.abs(rets[:, 5])  # no left tail: factor 1
        vol = WindowStats(rets).vol(60)
        gauss = _z(0.95) * vol
        hist = -lower_quantile(rets - rets.mean(axis=0), 1.0 - 0.95)
        expected = np.ones(6)
        ok = hist > 0
        expected[ok] = np.clip(gauss[ok] / hist[ok], 0.5, 1.0)
        assert np.array_equal(var_tail_factor(rets, 0.95, 0.5, vol), expected)


def test_window_correlation_matches_the_outer_product_form_and_a_constant_column_correlates_with_nothing():
    for _ in range(200):
        rets = RNG.normal(0, 0.02, size=(80, 6))
        r = rets[-60:]
        c = r - r.mean(axis=0)
        cross = c.T @ c
        scale = np.sqrt(np.diag(cross))
        assert np.array_equal(WindowStats(rets).correlation(60), cross / np.outer(scale, scale))
    rets[-60:, 2] = 0.01  # constant: it correlates with nothing, the others are untouched
    flat = WindowStats(rets).correlation(60)
    assert flat[2, 2] == 1.0 and not np.delete(flat[2], 2).any() and not np.delete(flat[:, 2], 2).any()
    others = [0, 1, 3, 4, 5]
    r = rets[-60:][:, others]
    c = r - r.mean(axis=0)
    scale = np.sqrt(np.diag(c.T @ c))
    np.testing.assert_allclose(flat[np.ix_(others, others)], (c.T @ c) / np.outer(scale, scale), rtol=1e-12)
    rets[-1, 2] = 0.02
    assert WindowStats(rets).correlation(60)[2].any()


def test_correlated_clusters_are_the_connected_groups():
    corr = np.eye(6)
    for i, j in [(0, 3), (3, 5), (1, 4)]:
        corr[i, j] = corr[j, i] = 0.9
    np.fill_diagonal(corr, 0.0)
    assert correlated_clusters(corr, 0.8) == [[0, 3, 5], [1, 4]]


def test_correlation_rule_leaves_its_input_correlation_source_unchanged():
    """The rule zeroes the diagonal of its own copy, never the cached statistics."""
    from bot.config import RiskSettings
    from bot.risk import GuardInputs
    from bot.types import Regime

    rets = RNG.normal(0, 0.02, size=(80, 3))
    rets[:, 1] = rets[:, 0] * 1.01
    stats = WindowStats(rets)
    inp = GuardInputs(
        None, ("A", "B", "C"), np.zeros(3, bool), rets, np.ones(3), Regime.GROWTH, False,
        np.ones(3, bool), stats,
    )
    cfg = RiskSettings(correlation_window=60, correlation_max=0.8, cluster_cap=0.45)
    out, event = correlation_rule(np.array([0.3, 0.3, 0.3]), inp, cfg)
    assert event is not None and out[0] + out[1] == pytest.approx(0.45)
    assert np.allclose(np.diag(stats.correlation(60)), 1.0)
