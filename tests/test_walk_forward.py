"""Walk-forward windows, picks and the stitched curve: test windows follow each other
without gap or overlap, each after its full training window; the pick uses training
scores only; the curve is made of test-window returns only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bot.broker.simulated import CostModel
from bot.errors import BotError
from bot.sweep.walk_forward import Pick, Window, parse_spec, pick, stitch, switch_rate, windows

DAYS = pd.bdate_range("2010-01-04", "2016-12-30").values  # weekdays stand in for sessions


def check_layout(found: list[Window], n: int) -> None:
    """What every walk-forward must satisfy, whatever its lengths."""
    assert found
    for w in found:
        assert 0 <= w.train_lo < w.train_hi == w.test_lo < w.test_hi <= n
    for before, after in zip(found, found[1:], strict=False):
        assert after.test_lo == before.test_hi  # no gap, no overlap
    assert found[-1].test_hi == n


def test_windows_in_trading_days() -> None:
    found = windows(DAYS, parse_spec("500:250"))
    check_layout(found, len(DAYS))
    assert found[0] == Window(0, 500, 500, 750)
    assert all(w.train_hi - w.train_lo == 500 for w in found)
    assert all(w.test_hi - w.test_lo == 250 for w in found[:-1])
    assert found[-1].test_hi - found[-1].test_lo == ((len(DAYS) - 500) % 250 or 250)


def test_windows_in_calendar_years_and_months() -> None:
    index = pd.DatetimeIndex(DAYS)
    found = windows(DAYS, parse_spec("2y:6m"))
    check_layout(found, len(DAYS))
    assert index[found[0].test_lo] == pd.Timestamp("2012-01-04")  # 2010-01-04 + 2 years
    assert index[found[1].test_lo] == pd.Timestamp("2012-07-04")
    for w in found:  # each training window is the two years before its test window
        start = index[w.test_lo] - pd.DateOffset(years=2)
        assert index[w.train_lo] >= start and (w.train_lo == 0 or index[w.train_lo - 1] < start)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("3y", "expected TRAIN:TEST"),
        ("3x:1y", "'3x' is not a length"),
        ("0:5", "'0' is not a length"),
        ("8y:1y", "is too short for one training window"),
    ],
)
def test_bad_specs_and_short_spans_are_refused(spec: str, message: str) -> None:
    with pytest.raises(BotError, match=message):
        windows(DAYS, parse_spec(spec))


def test_the_best_training_score_wins_ties_go_to_the_earlier_combination() -> None:
    ws = [Window(0, 10, 10, 15), Window(5, 15, 15, 20), Window(10, 20, 20, 25)]
    scores = {0: [1.0, None, 0.5], 1: [2.0, None, 0.5], 2: [None, None, 0.1]}
    picks = pick(ws, scores)
    assert [p.position for p in picks] == [1, None, 0]
    assert [p.score for p in picks] == [2.0, None, 0.5]


def test_the_curve_chains_the_picks_test_returns_only() -> None:
    """A wins every training window and loses every test window; B the opposite. The
    stitched curve must show A's test losses and nothing of B."""
    n = 30
    days = pd.bdate_range("2020-01-01", periods=n).values
    up, down = np.full(n, 1.01), np.full(n, 0.99)
    test_days = np.zeros(n, dtype=bool)
    test_days[10:20] = test_days[25:30] = True
    a = 100 * np.cumprod(np.where(test_days, down, up))
    b = 100 * np.cumprod(np.where(test_days, up, down))
    ws = [Window(0, 10, 10, 20), Window(15, 25, 25, 30)]
    picks = [Pick(ws[0], 0, 1.0), Pick(ws[1], 0, 1.0)]
    curve = stitch(days, picks, {0: a, 1: b}, initial=1000.0)
    assert list(curve.index) == [pd.Timestamp(days[9]), *pd.DatetimeIndex(days[10:20]),
                                 *pd.DatetimeIndex(days[25:30])]
    assert curve.iloc[0] == 1000.0
    assert curve.iloc[-1] == pytest.approx(1000.0 * 0.99**15)
    # the same windows with nothing picked stay in cash
    flat = stitch(days, [Pick(ws[0], None, None), Pick(ws[1], None, None)], {}, initial=1000.0)
    assert (flat == 1000.0).all()


def test_a_curve_of_other_days_than_the_windows_is_refused() -> None:
    """Windows index each curve by position: a combination whose run covered another span
    would be read as the windows' days (a test return of another period)."""
    days = np.arange("2020-01-01", "2020-01-31", dtype="datetime64[D]")
    ws = [Window(0, 10, 10, 20)]
    with pytest.raises(ValueError, match="combination 0 has 25 equity days, the windows' span 30"):
        stitch(days, [Pick(ws[0], 0, 1.0)], {0: np.linspace(100, 110, 25)}, initial=1000.0)


def test_a_change_of_pick_costs_its_traded_value_at_the_brokers_rates() -> None:
    """Switches were free: the stitched account took the new pick's positions for nothing.
    From 60% A / 40% cash to 50% B / 50% A at 5 bp slippage and 2 bp commission: 60% of
    the equity traded (10% of A sold, 50% of B bought), 7 bp of it."""
    costs = CostModel(commission_bps=2.0, slippage_bps=5.0)
    rate = switch_rate({"A": 0.6}, {"A": 0.5, "B": 0.5}, {"A": 10.0, "B": 20.0}, costs)
    assert rate == pytest.approx(0.6 * 7 / 1e4, rel=1e-12)
    per_share = CostModel(commission_per_share=0.01)  # 0.5 of the equity in B at 20: 1/40 shares
    assert switch_rate({}, {"B": 0.5}, {"B": 20.0}, per_share) == pytest.approx(0.01 / 40)

    n = 30
    days = pd.bdate_range("2020-01-01", periods=n).values
    a = 100 * np.cumprod(np.where(np.arange(n) < 20, 1.01, 1.0))  # flat after day 20
    b = np.full(n, 50.0)  # flat throughout
    ws = [Window(0, 10, 10, 20), Window(10, 20, 20, 30)]
    free = stitch(days, [Pick(ws[0], 0, 1.0), Pick(ws[1], 1, 1.0)], {0: a, 1: b}, 1000.0)
    charged = stitch(days, [Pick(ws[0], 0, 1.0), Pick(ws[1], 1, 1.0)], {0: a, 1: b}, 1000.0,
                     switch_rates=[0.0, rate])
    switch_day = pd.Timestamp(days[19])
    cost = free[switch_day] * rate  # paid out of the equity at the switch, B flat after it
    assert charged[switch_day] == free[switch_day]  # the close before the trades
    assert charged.iloc[-1] == pytest.approx(free.iloc[-1] - cost, rel=1e-12)
    assert cost > 0
