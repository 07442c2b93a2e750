"""The allocation LP: every constraint, the band, the corner solutions, reproducible draws."""

import datetime as dt

import numpy as np
import pytest

from bot.strategy.factor_optimizer import (
    allocate,
    allocate_static,
    capped_mix,
    draw_total,
    solve_weights,
)

CAP = 0.5


def greedy(scores, eligible, invested, cap):
    """The LP's optimum worked out by hand: fill the best-scored ETFs to the cap in turn."""
    w = np.zeros(len(scores))
    left = invested
    for i in sorted(np.flatnonzero(eligible), key=lambda i: -scores[i]):
        w[i] = min(cap, left)
        left -= w[i]
    return w


def test_four_etfs_land_on_the_corners():
    scores = np.array([0.2, 1.1, -0.4, 0.7])
    everyone = np.ones(4, bool)
    np.testing.assert_allclose(allocate(scores, everyone, 0.90, CAP).weights, [0, 0.5, 0, 0.4])
    full = allocate(scores, everyone, 1.07, CAP)
    np.testing.assert_allclose(full.weights, [0, 0.5, 0, 0.5])
    assert full.invested == 1.0 and full.unused == pytest.approx(0.07)  # no leverage


def test_every_constraint_holds_on_random_problems():
    rng = np.random.default_rng(11)
    for _ in range(300):
        n = int(rng.integers(2, 9))
        scores = rng.normal(size=n)
        eligible = rng.random(n) < 0.8
        low, high = sorted(rng.uniform(0.8, 1.2, 2))
        drawn = float(rng.uniform(low, high))
        alloc = allocate(scores, eligible, drawn, CAP)
        w = alloc.weights
        assert low <= alloc.drawn <= high
        assert np.all(w >= 0) and np.all(w <= CAP + 1e-12)  # no shorting, 50% cap
        assert np.all(w[~eligible] == 0)
        assert alloc.invested == pytest.approx(min(drawn, 1.0, CAP * eligible.sum()))
        assert w.sum() == pytest.approx(alloc.invested, abs=1e-9) and w.sum() <= 1 + 1e-12
        inside = (w > 1e-9) & (w < CAP - 1e-9)
        assert inside.sum() <= 1  # a vertex: at most one weight between its bounds
        np.testing.assert_allclose(w, greedy(scores, eligible, alloc.invested, CAP), atol=1e-9)


def test_a_single_rankable_etf_holds_the_cap_and_the_rest_is_cash():
    alloc = allocate(np.array([0.3, 9.0, 1.0]), np.array([True, False, False]), 0.95, CAP)
    np.testing.assert_allclose(alloc.weights, [0.5, 0, 0])
    assert alloc.invested == 0.5 and alloc.unused == pytest.approx(0.45)


def test_nothing_to_invest_gives_all_cash():
    np.testing.assert_array_equal(solve_weights(np.ones(3), np.zeros(3, bool), 1.0, CAP), 0.0)


def test_the_same_seed_and_day_draw_the_same_total():
    day = dt.date(2024, 5, 3)
    first = draw_total(7, day, 0.90, 1.10)
    assert draw_total(7, day, 0.90, 1.10) == first  # a replay or a restart that day
    assert draw_total(8, day, 0.90, 1.10) != first
    assert draw_total(7, day + dt.timedelta(days=7), 0.90, 1.10) != first
    scores = np.array([0.1, 0.5, -0.2, 0.3])
    a = allocate(scores, np.ones(4, bool), first, CAP)
    b = allocate(scores, np.ones(4, bool), draw_total(7, day, 0.90, 1.10), CAP)
    np.testing.assert_array_equal(a.weights, b.weights)


@pytest.mark.parametrize("low, high", [(0.95, 1.05), (0.90, 1.10), (0.85, 1.15)])
def test_draws_cover_the_band_uniformly(low, high):
    start = dt.date(2010, 1, 1)
    draws = np.array([draw_total(7, start + dt.timedelta(days=k), low, high) for k in range(4000)])
    assert draws.min() >= low and draws.max() <= high
    # Uniform: each quarter of the band holds about a quarter of the draws.
    counts, _ = np.histogram(draws, bins=4, range=(low, high))
    assert np.all(np.abs(counts / len(draws) - 0.25) < 0.03)


def linprog_weights(scores, eligible, invested, cap):
    """The program solved by a general LP solver (HiGHS): the oracle of the direct fill."""
    from scipy.optimize import linprog

    n = len(scores)
    upper = np.where(eligible, cap, 0.0)
    result = linprog(
        -np.where(eligible, np.nan_to_num(scores), 0.0),
        A_eq=np.ones((1, n)),
        b_eq=[invested],
        bounds=list(zip(np.zeros(n), upper, strict=True)),
        method="highs",
    )
    assert result.status == 0, result.message
    return np.clip(result.x, 0.0, upper)


@pytest.mark.parametrize("seed", range(4))
def test_the_direct_fill_is_the_linear_programs_optimum(seed):
    """On random problems (ties, NaN scores, tiny and full totals, caps that just hold the
    total) the fill reaches the LP's objective, and where the optimum is unique (no two
    eligible scores tie) it is the LP's point."""
    rng = np.random.default_rng(seed)
    for _ in range(500):
        n = int(rng.integers(1, 12))
        scores = rng.normal(size=n)
        if rng.random() < 0.3:  # ties
            scores = np.round(scores, 0)
        if rng.random() < 0.2:
            scores[rng.random(n) < 0.3] = np.nan
        eligible = rng.random(n) < 0.8
        cap = float(rng.choice([0.2, 0.25, 0.5, 1.0, rng.uniform(0.1, 1.0)]))
        room = cap * int(eligible.sum())
        invested = min(float(rng.choice([rng.uniform(0, 1.2), 1.0, room, 1e-11])), 1.0, room)
        w = solve_weights(scores, eligible, invested, cap)
        if invested <= 0 or not eligible.any():
            assert np.all(w == 0)
            continue
        oracle = linprog_weights(scores, eligible, invested, cap)
        objective = np.where(eligible, np.nan_to_num(scores), 0.0)
        assert np.all(w >= 0) and np.all(w <= cap) and np.all(w[~eligible] == 0)
        assert w.sum() == pytest.approx(invested, abs=1e-9)
        assert objective @ w == pytest.approx(objective @ oracle, abs=1e-9)
        ranked = np.sort(objective[eligible])
        if ranked.size < 2 or np.min(np.diff(ranked)) > 1e-6:  # no tie, nor one within HiGHS's tolerance
            np.testing.assert_allclose(w, oracle, atol=1e-9)


def test_more_than_the_caps_hold_is_an_error():
    with pytest.raises(RuntimeError, match="infeasible"):
        solve_weights(np.ones(2), np.ones(2, bool), 1.5, CAP)


def test_the_static_mix_keeps_the_cap_and_spreads_the_excess_in_proportion():
    """Rescaled over AGG and SHY alone the conservative mix was AGG 58%: above the LP's
    50% cap, so the risk guard's cap clipped it."""
    mix = np.array([0.35, 0.25, 0.20, 0.20])  # AGG, SHY, VYM, BIL
    two = allocate_static(mix, np.array([True, True, False, False]), 0.97, CAP)
    np.testing.assert_allclose(two.weights, [0.5, 0.47, 0, 0])
    assert two.invested == pytest.approx(0.97)
    three = allocate_static(np.array([0.7, 0.2, 0.1]), np.ones(3, bool), 1.0, CAP)
    np.testing.assert_allclose(three.weights, [0.5, 0.5 * 2 / 3, 0.5 / 3])
    one = allocate_static(mix, np.array([False, True, False, False]), 1.02, CAP)
    np.testing.assert_allclose(one.weights, [0, 0.5, 0, 0])  # the caps hold 50%: rest cash
    assert one.invested == 0.5 and one.unused == pytest.approx(0.52)
    whole = allocate_static(mix, np.ones(4, bool), 0.96, CAP)
    np.testing.assert_allclose(whole.weights, mix * 0.96)  # under the cap: the mix itself


def test_a_capped_mix_never_passes_the_cap_on_random_problems():
    rng = np.random.default_rng(3)
    for _ in range(300):
        n = int(rng.integers(1, 7))
        mix = rng.dirichlet(np.ones(n))
        cap = float(rng.uniform(0.2, 1.0))
        invested = float(rng.uniform(0.0, min(1.0, cap * n)))
        w = capped_mix(mix, invested, cap)
        assert w.sum() == pytest.approx(invested) and w.max() <= cap + 1e-12
        below = w < cap - 1e-9  # the ETFs under the cap keep the mix's proportions
        if below.sum() > 1:
            np.testing.assert_allclose(w[below] / w[below].sum(), mix[below] / mix[below].sum())
