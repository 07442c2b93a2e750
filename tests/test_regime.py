import datetime as dt

import numpy as np
import pytest

from bot.calendar import week_number, week_numbers
from bot.config import RegimeSettings
from bot.data.base import SPREAD, UNCERTAINTY, VIX, MacroSeries
from bot.strategy.regime import classify, decide_regime
from bot.types import Regime

TH = RegimeSettings()


def series(name, pairs):
    dates = np.array([d for d, _ in pairs], dtype="datetime64[D]")
    return MacroSeries(name, dates, np.array([v for _, v in pairs], dtype=float))


@pytest.mark.parametrize(
    ("vix", "spread", "epu", "expected"),
    [
        (36.0, -0.51, 100.0, Regime.UNCERTAINTY),
        (36.0, -0.50, 200.0, Regime.TRANSITION),  # -0.50 is not inverted by MORE than 50 bp
        (35.0, -1.00, 100.0, Regime.GROWTH),  # VIX must exceed 35
        (25.5, 0.20, 150.5, Regime.TRANSITION),
        (25.0, 0.20, 300.0, Regime.GROWTH),  # VIX must exceed 25
        (30.0, 0.20, 150.0, Regime.GROWTH),  # EPU must exceed 150
        (12.0, 1.00, 90.0, Regime.GROWTH),
    ],
)
def test_classify_follows_the_research_rule(vix, spread, epu, expected):
    assert classify(vix, spread, epu, TH) is expected


def macro_on(day_values):
    return {
        VIX: series(VIX, [(d, v[0]) for d, v in day_values]),
        SPREAD: series(SPREAD, [(d, v[1]) for d, v in day_values]),
        UNCERTAINTY: series(UNCERTAINTY, [(d, v[2]) for d, v in day_values]),
    }


def test_decision_uses_only_values_published_before_the_day():
    macro = macro_on([("2024-03-01", (40.0, -0.8, 100.0)), ("2024-03-04", (12.0, 0.5, 90.0))])
    decision = decide_regime(np.datetime64("2024-03-04"), macro, None, TH)
    # The 2024-03-04 values are the decision day's own and must not be used.
    assert decision.regime is Regime.UNCERTAINTY
    assert decision.vix == 40.0 and decision.vix_date == dt.date(2024, 3, 1)
    assert decision.warning is None


def test_missing_series_keeps_the_previous_regime_with_a_warning():
    macro = macro_on([("2024-03-01", (40.0, -0.8, 100.0))])
    del macro[UNCERTAINTY]
    decision = decide_regime(np.datetime64("2024-03-04"), macro, Regime.GROWTH, TH)
    assert decision.regime is Regime.GROWTH
    assert "USEPUINDXD: no data" in decision.warning


def test_stale_series_keeps_the_previous_regime():
    macro = macro_on([("2024-01-02", (40.0, -0.8, 100.0))])
    decision = decide_regime(np.datetime64("2024-03-04"), macro, Regime.TRANSITION, TH)
    assert decision.regime is Regime.TRANSITION
    assert "stale" in decision.warning


def test_no_previous_regime_falls_back_to_the_configured_initial_one():
    decision = decide_regime(np.datetime64("2024-03-04"), {}, None, TH)
    assert decision.regime is TH.initial


def test_first_trading_day_of_week_handles_holiday_mondays():
    dates = np.array(
        ["2024-01-12", "2024-01-16", "2024-01-17", "2024-01-22", "2024-01-29"],
        dtype="datetime64[D]",
    )
    # 2024-01-15 was a holiday: Tuesday 16th opens the week (the engine decides the
    # regime on the first step whose week differs from the last decision's).
    weeks = week_numbers(dates).tolist()
    starts = [True] + [b != a for a, b in zip(weeks[:-1], weeks[1:], strict=True)]
    assert starts == [True, True, False, True, True]
    assert weeks == [week_number(d) for d in dates.astype(object)]
