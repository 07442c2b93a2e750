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


def test_a_missing_series_does_not_stop_the_rules_its_absence_cannot_change():
    macro = macro_on([("2024-03-01", (40.0, -0.8, 100.0))])
    del macro[UNCERTAINTY]
    decision = decide_regime(np.datetime64("2024-03-04"), macro, Regime.GROWTH, TH)
    # VIX 40 and the curve inverted 80 bp: the uncertainty rule holds, and it comes first,
    # so the missing uncertainty index does not matter.
    assert decision.regime is Regime.UNCERTAINTY
    assert decision.decided == ("uncertainty",) and decision.kept == ()
    assert decision.stale == ("USEPUINDXD",)
    assert "USEPUINDXD: no data" in decision.warning
    assert "decided from the fresh inputs" in decision.warning


def test_stale_series_keeps_the_previous_regime():
    macro = macro_on([("2024-01-02", (40.0, -0.8, 100.0))])
    decision = decide_regime(np.datetime64("2024-03-04"), macro, Regime.TRANSITION, TH)
    assert decision.regime is Regime.TRANSITION
    assert "stale" in decision.warning
    assert decision.decided == () and decision.kept == ("uncertainty", "transition")
    assert decision.stale == ("VIX", "T10Y2Y", "USEPUINDXD")


def weekly(first: str, weeks: int, values) -> list[tuple[str, float]]:
    """One value a day for `weeks` weeks from `first`, values[w] in week w."""
    start = np.datetime64(first)
    return [(str(start + np.timedelta64(d, "D")), values[d // 7]) for d in range(weeks * 7)]


def test_an_ended_spread_series_no_longer_freezes_the_regime():
    """The regression: T10Y2Y stopped, and one stale series kept the previous regime for 12
    weeks. VIX and the uncertainty index alone decide GROWTH against TRANSITION."""
    weeks = 12
    vix = [30.0 if w % 2 else 15.0 for w in range(weeks)]  # TRANSITION weeks, GROWTH weeks
    macro = {
        VIX: series(VIX, weekly("2024-01-01", weeks, vix)),
        UNCERTAINTY: series(UNCERTAINTY, weekly("2024-01-01", weeks, [200.0] * weeks)),
        SPREAD: series(SPREAD, [("2023-12-15", 0.4)]),  # the last value it ever published
    }
    previous, outcomes, seen = Regime.GROWTH, None, []
    for w in range(1, weeks):
        monday = np.datetime64("2024-01-01") + np.timedelta64(7 * w, "D")
        decision = decide_regime(monday, macro, previous, TH, outcomes)
        previous, outcomes = decision.regime, decision.outcomes
        seen.append(decision.regime)
        assert decision.stale == ("T10Y2Y",)
        # VIX at most 30 rules out the uncertainty rule whatever the spread: both decided.
        assert decision.decided == ("uncertainty", "transition") and decision.kept == ()
    expected = [Regime.GROWTH if w % 2 else Regime.TRANSITION for w in range(1, weeks)]
    assert seen == expected  # last week's VIX decides each week


def test_only_an_undecidable_rule_keeps_its_previous_outcome():
    # VIX 40 with no fresh spread: the uncertainty rule cannot be decided.
    macro = macro_on([("2024-03-01", (40.0, 0.0, 200.0))])
    macro[SPREAD] = series(SPREAD, [("2023-11-01", -1.0)])
    was_uncertain = decide_regime(np.datetime64("2024-03-04"), macro, Regime.UNCERTAINTY, TH)
    assert was_uncertain.regime is Regime.UNCERTAINTY
    assert was_uncertain.kept == ("uncertainty",) and was_uncertain.decided == ("transition",)
    assert "kept uncertainty=yes from the previous decision" in was_uncertain.warning
    # Previously not uncertain: the kept "no", then the transition rule decides (EPU 200).
    was_growth = decide_regime(np.datetime64("2024-03-04"), macro, Regime.GROWTH, TH)
    assert was_growth.regime is Regime.TRANSITION
    assert was_growth.outcomes == {"uncertainty": False, "transition": True}


def test_a_kept_rule_takes_its_own_last_outcome_not_a_guess_from_the_regime():
    # VIX 30, curve not inverted: uncertainty decided "no"; the uncertainty index is
    # stale, so the transition rule keeps its last outcome.
    macro = macro_on([("2024-03-01", (30.0, 0.5, 200.0))])
    macro[UNCERTAINTY] = series(UNCERTAINTY, [("2023-12-01", 400.0)])
    day = np.datetime64("2024-03-04")
    held = {"uncertainty": True, "transition": True}
    assert decide_regime(day, macro, Regime.UNCERTAINTY, TH, held).regime is Regime.TRANSITION
    not_held = {"uncertainty": True, "transition": False}
    assert decide_regime(day, macro, Regime.UNCERTAINTY, TH, not_held).regime is Regime.GROWTH
    # Without recorded outcomes (a state saved by an older version), UNCERTAINTY implies the
    # transition rule held: one step down, never straight to GROWTH on an unknown.
    assert decide_regime(day, macro, Regime.UNCERTAINTY, TH).regime is Regime.TRANSITION


def test_the_uncertainty_index_is_used_the_day_after_its_publication():
    """An observation is not published on its own date: Sunday's index value comes out on
    Monday, so a Monday decision can only use Saturday's."""
    macro = {
        VIX: series(VIX, [("2024-03-01", 30.0)]),
        SPREAD: series(SPREAD, [("2024-03-01", 0.5)]),
        UNCERTAINTY: series(UNCERTAINTY, [("2024-03-02", 100.0), ("2024-03-03", 300.0)]),
    }
    monday = np.datetime64("2024-03-04")
    decision = decide_regime(monday, macro, None, TH)
    assert decision.uncertainty == 100.0 and decision.uncertainty_date == dt.date(2024, 3, 2)
    assert decision.regime is Regime.GROWTH
    same_day = TH.model_copy(update={"publication_lag_days": {"USEPUINDXD": 0}})
    decision = decide_regime(monday, macro, None, same_day)
    assert decision.uncertainty_date == dt.date(2024, 3, 3) and decision.regime is Regime.TRANSITION


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


def test_the_engine_records_decided_and_kept_rules_and_carries_outcomes(settings):
    """Through the engine and the trade log, as backtest, replay and live run it: after the
    spread series ends, every week is still decided, and the record says how."""
    from bot.backtest import run_backtest, scratch_tradelog
    from bot.data.base import MarketData
    from bot.data.synthetic import synthetic_market
    from bot.engine_state import EngineState

    market = synthetic_market(settings.symbols, "2023-06-01", "2024-06-28", seed=3)
    weeks = 52
    vix = [30.0 if w % 2 else 15.0 for w in range(weeks)]
    macro = {
        VIX: series(VIX, weekly("2023-07-03", weeks, vix)),
        UNCERTAINTY: series(UNCERTAINTY, weekly("2023-07-03", weeks, [200.0] * weeks)),
        SPREAD: series(SPREAD, [("2023-07-03", 0.3), ("2023-12-15", 0.2)]),  # ends mid-December
    }
    market = MarketData(market.prices, macro, market.source, synthetic=True)
    cfg = settings.model_copy(update={"backtest": settings.backtest.model_copy(
        update={"start": "2024-01-02", "end": "2024-06-28"})})
    log = scratch_tradelog("regimes")
    run_backtest(cfg, market, log)
    log.flush()
    records = log.load_regimes(log.run_id)
    assert len(records) >= 25
    assert set(records["stale_inputs"]) == {"T10Y2Y"}
    assert records["kept_rules"].isna().all()
    assert set(records["decided_rules"]) == {
        "uncertainty=no, transition=yes", "uncertainty=no, transition=no"
    }
    # Monday's regime follows the previous week's VIX: TRANSITION after a week at 30.
    for row in records.itertuples():
        last_week_vix = macro[VIX].last_before(np.datetime64(row.day, "D").item())[0]
        assert row.regime == ("TRANSITION" if last_week_vix == 30.0 else "GROWTH"), row.day

    state = EngineState(regime=Regime.TRANSITION, regime_outcomes={"uncertainty": False, "transition": True})
    again = EngineState.from_dict(state.to_dict(settings.symbols), settings.symbols)
    assert again.regime_outcomes == {"uncertainty": False, "transition": True}


def test_the_daemons_weekly_job_reads_the_series_with_the_same_lags(settings):
    """Live, the regime is decided ahead by the weekly job (Engine.decide_regime_for): it
    goes through the same rule, so Sunday's uncertainty value is not used on Monday."""
    from bot.backtest import scratch_tradelog
    from bot.broker.simulated import SimulatedBroker
    from bot.data.base import MarketData
    from bot.data.synthetic import synthetic_market
    from bot.engine import Engine

    prices = synthetic_market(settings.symbols, "2024-01-02", "2024-03-29", seed=3).prices
    macro = {
        VIX: series(VIX, [("2024-03-01", 30.0)]),
        SPREAD: series(SPREAD, [("2024-03-01", 0.5)]),
        UNCERTAINTY: series(UNCERTAINTY, [("2024-03-02", 100.0), ("2024-03-03", 300.0)]),
    }
    engine = Engine(settings, MarketData(prices, macro), SimulatedBroker(settings.symbols, 1e5),
                    scratch_tradelog("live"), "x")
    assert engine.decide_regime_for(dt.date(2024, 3, 4)) is Regime.GROWTH
    assert engine.state.regime_outcomes == {"uncertainty": False, "transition": False}


def test_the_uncertainty_index_is_read_as_its_mean_over_a_week():
    """The daily index swings with the weekday (Sundays higher than Saturdays): one day's
    value made a holiday week's rule depend on reading Sunday instead of Saturday. The
    mean of the 7 calendar days up to the last value published is read instead."""
    week = [("2024-01-08", 120.0), ("2024-01-09", 130.0), ("2024-01-10", 110.0),
            ("2024-01-11", 140.0), ("2024-01-12", 120.0), ("2024-01-13", 100.0),
            ("2024-01-14", 330.0)]  # a Sunday spike
    epu = series(UNCERTAINTY, week)
    macro = {VIX: series(VIX, [("2024-01-12", 28.0)]), SPREAD: series(SPREAD, [("2024-01-12", 0.2)]),
             UNCERTAINTY: epu}
    # Tuesday after Martin Luther King day: Sunday's value is the last one published.
    tuesday = np.datetime64("2024-01-16")
    decision = decide_regime(tuesday, macro, Regime.GROWTH, TH)
    assert decision.uncertainty == pytest.approx(sum(v for _, v in week) / 7)  # 150.0
    assert decision.uncertainty_date == dt.date(2024, 1, 14)
    assert decision.regime is Regime.GROWTH  # 150 does not exceed 150
    one_day = decide_regime(tuesday, macro, Regime.GROWTH, RegimeSettings(uncertainty_mean_days=1))
    assert one_day.uncertainty == 330.0 and one_day.regime is Regime.TRANSITION
    # A shorter history than the window: the mean of what there is.
    assert epu.mean_before(dt.date(2024, 1, 10), 7) == (125.0, dt.date(2024, 1, 9))
    assert epu.mean_before(dt.date(2024, 1, 8), 7) is None
