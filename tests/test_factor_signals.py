"""The factor model's signals on small hand-made series, each checked against numbers
worked out by hand."""

import math

import numpy as np
import pandas as pd
import pytest

from bot.calendar import sessions
from bot.config import FactorSettings, SignalWeights
from bot.strategy.factor_signals import (
    HoldingWindow,
    composite,
    compute_signals,
    cross_sectional_z,
    halloween_flags,
    own_month_average,
    relative_strength,
    return_zscore,
    trend,
    turn_of_month_flags,
)


def test_cross_sectional_z_scores_use_the_population_std():
    z = cross_sectional_z(np.array([1.0, 2.0, 3.0, 4.0]))
    sd = math.sqrt(1.25)  # population std of 1..4
    np.testing.assert_allclose(z, [-1.5 / sd, -0.5 / sd, 0.5 / sd, 1.5 / sd])
    assert z.mean() == pytest.approx(0.0) and z.std() == pytest.approx(1.0)


def test_zero_dispersion_and_missing_values_give_zero():
    np.testing.assert_array_equal(cross_sectional_z(np.array([0.3, 0.3, 0.3, 0.3])), 0.0)
    np.testing.assert_allclose(cross_sectional_z(np.array([1.0, np.nan, 3.0])), [-1.0, 0.0, 1.0])
    np.testing.assert_array_equal(cross_sectional_z(np.array([np.nan, 2.0, np.nan])), 0.0)


def test_one_outlier_cannot_exceed_sqrt_n_minus_1():
    z = cross_sectional_z(np.array([0.0, 0.0, 0.0, 1e6]))
    assert z.max() == pytest.approx(math.sqrt(3))


def test_relative_strength_is_the_return_over_the_window():
    closes = np.array([[100.0, 50.0], [101.0, 50.0], [102.0, 49.0], [110.0, 48.0]])
    np.testing.assert_allclose(relative_strength(closes, 3), [0.10, -0.04])
    assert np.isnan(relative_strength(closes, 4)).all()  # needs window + 1 closes


def test_trend_is_the_mean_gap_to_the_fast_and_slow_averages():
    up = np.array([[1.0], [2.0], [3.0], [4.0], [5.0]])
    tf, fast, slow = trend(up, 2, 4)
    assert fast[0] == pytest.approx(5 / 4.5 - 1) and slow[0] == pytest.approx(5 / 3.5 - 1)
    assert tf[0] == pytest.approx(0.5 * (5 / 4.5 - 1 + 5 / 3.5 - 1))
    down, _, _ = trend(up[::-1], 2, 4)
    assert down[0] < 0
    assert np.isnan(trend(up, 2, 6)[0]).all()


def test_return_zscore_of_a_late_jump():
    daily = np.array([0.01] * 8 + [0.03, 0.05])  # 10 log returns, the last two high
    closes = np.exp(np.r_[0.0, np.cumsum(daily)])[:, None] * 100
    mu, sigma = daily.mean(), daily.std(ddof=1)
    expected = (0.08 - 2 * mu) / (sigma * math.sqrt(2))
    assert return_zscore(closes, 2, 10)[0] == pytest.approx(expected)
    assert expected > 1  # the mean-reversion signal, -z, is negative: overbought
    flat = np.full((12, 1), 50.0)
    assert return_zscore(flat, 2, 10)[0] == 0.0  # no movement, no deviation
    assert np.isnan(return_zscore(closes, 2, 11)).all()


def test_turn_of_month_uses_trading_days_and_holidays():
    days = sessions("2024-01-01", "2024-03-31")
    flagged = days[turn_of_month_flags(days, before=1, after=3)]
    expected = ["2024-01-02", "2024-01-03", "2024-01-04",  # Jan 1 is a holiday
                "2024-01-31", "2024-02-01", "2024-02-02", "2024-02-05",
                "2024-02-29", "2024-03-01", "2024-03-04", "2024-03-05",
                "2024-03-28"]  # Good Friday, Mar 29, is a holiday
    assert [str(d) for d in flagged] == expected


def test_november_to_april_bias_applies_to_equities_only():
    equity = np.array([True, False])
    np.testing.assert_array_equal(halloween_flags(11, equity), [1.0, 0.0])
    np.testing.assert_array_equal(halloween_flags(4, equity), [1.0, 0.0])
    np.testing.assert_array_equal(halloween_flags(5, equity), [-1.0, 0.0])


def monthly_levels(levels: dict[str, float], start="2018-12-03", end="2022-03-15"):
    """Daily closes that stay at one level per month: monthly returns are level ratios."""
    days = pd.bdate_range(start, end)
    month = days.strftime("%Y-%m")
    closes = np.array([levels.get(m, np.nan) for m in month])
    return closes, days.values.astype("datetime64[D]")


def test_own_month_average_uses_earlier_complete_years_only():
    levels, level = {}, 100.0
    for m in pd.period_range("2018-12", "2022-03", freq="M"):
        jan = {2019: 1.02, 2020: 1.04, 2021: 1.06, 2022: 1.50}  # Jan 2022: the current year
        level *= jan[m.year] if m.month == 1 else (1.01 if m.month == 3 else 1.0)
        levels[str(m)] = level
    closes, dates = monthly_levels(levels)
    closes = closes[:, None]
    mean, years = own_month_average(closes, dates, month=1, year=2022, min_years=3)
    assert mean[0] == pytest.approx(0.04) and years[0] == 3
    assert np.isnan(own_month_average(closes, dates, 1, 2022, min_years=4)[0][0])
    mean, years = own_month_average(closes, dates, 1, 2022, min_years=1, max_years=2)
    assert mean[0] == pytest.approx(0.05) and years[0] == 2  # 2020 and 2021 only
    # March 2022 is not over on the last row (2022-03-15): three Marches, not four.
    mean, years = own_month_average(closes, dates, month=3, year=2023, min_years=1)
    assert years[0] == 3 and mean[0] == pytest.approx(0.01)


def test_seasonality_in_an_all_equity_universe_is_the_own_month_part():
    cfg = FactorSettings(rs_window=5, tf_fast=3, tf_slow=6, mr_window=2, mr_lookback=10,
                         se_min_years=1)
    levels, level = {}, 100.0
    for m in pd.period_range("2018-12", "2022-03", freq="M"):
        level *= 1.03 if m.month == 1 else 1.0  # +3% every January
        levels[str(m)] = level
    a, dates = monthly_levels(levels)
    rng = np.random.default_rng(1)
    closes = np.column_stack([a, a * 1.0, a * np.exp(np.cumsum(rng.normal(0, 1e-3, len(a))))])
    holding = HoldingWindow(2022, 1, turn_of_month=True)
    eq = compute_signals(closes, dates, np.array([True, True, True]), holding, cfg)
    own_z = cross_sectional_z(eq.detail["own_month"])
    np.testing.assert_allclose(eq.raw["seasonality"], own_z / 3)  # the flags add nothing
    np.testing.assert_allclose(eq.z["seasonality"], own_z)
    mixed = compute_signals(closes, dates, np.array([True, True, False]), holding, cfg)
    assert mixed.z["seasonality"][2] < min(mixed.z["seasonality"][:2])  # the bond in January


def test_composite_is_the_weighted_sum_of_standardized_signals():
    n = 260
    t = np.arange(n)[:, None]
    closes = 100 * np.exp(t * np.array([[0.002, 0.001, 0.0, -0.001]]))
    closes[-3:, 0] *= 1.05  # a late jump: mean reversion against the leader
    dates = np.array(sessions("2023-01-03", "2024-12-31")[-n:])
    cfg = FactorSettings()
    signals = compute_signals(closes, dates, np.ones(4, bool), HoldingWindow(2025, 1, False), cfg)
    w = SignalWeights(relative_strength=0.4, trend=0.35, mean_reversion=0.15, seasonality=0.10)
    expected = (0.4 * signals.z["relative_strength"] + 0.35 * signals.z["trend"]
                + 0.15 * signals.z["mean_reversion"] + 0.10 * signals.z["seasonality"])
    np.testing.assert_allclose(composite(signals, w), expected)
    assert np.argmax(signals.raw["relative_strength"]) == 0
    assert np.argmin(signals.raw["mean_reversion"]) == 0
    assert signals.complete().all()
