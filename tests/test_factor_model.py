"""The factor model behind the engine: decisions explained, reproducible, weekly, free of
look-ahead; the robo configs as the whitepaper states them; `bot backtest` on them."""

import datetime as dt
import json

import numpy as np
import pytest

from bot.backtest import run_backtest, scratch_tradelog
from bot.calendar import sessions, week_ends
from bot.cli import main
from bot.config import load_settings, parse_settings
from bot.data.base import MarketData, PriceHistory
from bot.engine import build_model
from bot.errors import ConfigError
from bot.strategy.base import DecisionContext
from bot.strategy.factor import FactorModel, holding_window
from bot.strategy.factor_optimizer import draw_total
from bot.types import Regime
from tests.conftest import REPO

SYMBOLS = ("AAA", "BBB", "CCC", "DDD")


def robo_settings(**rebalance):
    return parse_settings({
        "strategy": {"name": "robo_test", "kind": "factor", "overlay_enabled": False},
        "universe": {"AAA": {"weight": 0.4, "role": "equity"}, "BBB": {"weight": 0.2},
                     "CCC": {"weight": 0.2}, "DDD": {"weight": 0.2, "role": "bond"}},
        "factor": {"profile": "test", "se_min_years": 1},
        "risk": {"position_cap": 0.5, "rules": []},
        "rebalance": {"schedule": "weekly", "drift": 0.0, "min_trade_notional": 0.0, **rebalance},
        "backtest": {"start": "2020-01-02", "end": "2021-06-30", "slippage_bps": 0.0},
        "data": {"source": "csv"},
    })


@pytest.fixture(scope="module")
def market():
    """Four close-only random walks with different drifts on NYSE days, 2018-2021."""
    dates = sessions("2018-01-02", "2021-12-31")
    rng = np.random.default_rng(5)
    drift = np.array([0.0006, 0.0003, 0.0, 0.0001])
    vol = np.array([0.012, 0.015, 0.010, 0.003])
    close = 100 * np.exp(np.cumsum(drift + vol * rng.standard_normal((len(dates), 4)), axis=0))
    prices = PriceHistory(dates, SYMBOLS, close, np.full_like(close, np.nan))
    return MarketData(prices, {}, "hand-made")


def targets(settings, market):
    log = scratch_tradelog("t")
    result = run_backtest(settings, market, log)
    log.flush()
    frame = log.load_targets(1)
    log.discard()
    return frame, result


def test_bad_factor_fields_are_named():
    with pytest.raises(ConfigError) as err:
        parse_settings({
            "strategy": {"kind": "factor"}, "universe": {"SPY": {"weight": 1.0}},
            "risk": {"position_cap": 1.0},
            "factor": {"weights": {"relative_strength": 0.5, "trend": 0.5, "mean_reversion": 0.2,
                                   "seasonality": 0.0},
                       "seed": -1},
        }, "robo.toml")
    text = str(err.value)
    assert "factor.weights: signal weights must sum to 1, got 1.200000" in text
    assert "factor.seed" in text
    with pytest.raises(ConfigError) as err:
        parse_settings({"universe": {"SPY": {"weight": 1.0}}, "risk": {"position_cap": 1.0},
                        "factor": {"total_min": 1.2, "total_max": 0.9}}, "robo.toml")
    assert "factor: total_min 1.2 must not exceed total_max 0.9" in str(err.value)


def test_a_position_cap_below_the_optimisers_cap_is_refused():
    """The guard cut the LP's 50% positions to 30% and spread the excess over the two
    lowest-scored funds: weights no LP chose. A config without [risk] inherits the
    leverage model's 30% cap the same way."""
    universe = {s: {"weight": 0.25} for s in ("AAA", "BBB", "CCC", "DDD")}
    for risk in ({"position_cap": 0.3, "rules": []}, None):
        raw = {"strategy": {"kind": "factor"}, "universe": universe}
        if risk is not None:
            raw["risk"] = risk
        with pytest.raises(ConfigError, match=r"risk.position_cap: 0.3 is below factor.max_weight "
                                              r"0.5: .* set risk.position_cap equal"):
            parse_settings(raw, "robo.toml")
    parse_settings({"strategy": {"kind": "factor"}, "universe": universe,
                    "risk": {"position_cap": 0.3, "rules": []}, "factor": {"max_weight": 0.3}},
                   "robo.toml")


@pytest.mark.parametrize("fields, message", [
    ({"mr_window": 70}, "factor: mr_window 70 must be shorter than mr_lookback 63"),
    ({"mr_window": 63}, "factor: mr_window 63 must be shorter than mr_lookback 63"),
    ({"mr_window": 20, "mr_lookback": 15}, "mr_window 20 must be shorter than mr_lookback 15"),
    ({"tf_fast": 200}, "tf_fast 200 must be shorter than tf_slow 200"),
    ({"se_min_years": 11}, "se_min_years 11 must not exceed se_years 10"),
])
def test_a_window_not_shorter_than_its_lookback_is_refused(fields, message):
    """mr_window > mr_lookback made the MR z NaN for every ETF (every decision the static
    mix, blamed on "insufficient history"); equal, the z is 0 for every ETF."""
    raw = robo_settings().model_dump(mode="json")
    raw["factor"].update(fields)
    with pytest.raises(ConfigError, match=message):
        parse_settings(raw, "robo.toml")


def test_build_model_picks_the_factor_model():
    assert isinstance(build_model(robo_settings()), FactorModel)


@pytest.mark.parametrize("lag", [0, 5])
def test_decisions_do_not_change_when_later_data_is_removed(market, lag):
    settings = robo_settings(execution_lag_days=lag)
    cutoff = np.datetime64("2020-10-30")
    cut = MarketData(market.prices.between(None, cutoff), {}, "hand-made, cut")
    full, full_run = targets(settings, market)
    part, part_run = targets(settings, cut)
    full = full[full["day"] <= str(cutoff)].reset_index(drop=True)
    assert len(full) == len(part) > 4 * 40
    assert full[["day", "symbol", "final"]].equals(part[["day", "symbol", "final"]])
    assert list(full["reasons"]) == list(part["reasons"])
    n = len(part_run.equity)
    np.testing.assert_array_equal(full_run.equity[:n], part_run.equity)


def test_weekly_decisions_obey_the_lp_and_explain_each_weight(market):
    settings = robo_settings()
    frame, result = targets(settings, market)
    days = frame["day"].drop_duplicates()
    ends = market.prices.dates[week_ends(market.prices.dates)]
    assert set(days.values.astype("datetime64[D]")) <= set(ends)  # only on week ends
    for day, rows in frame.groupby("day"):
        w = rows["final"].to_numpy()
        drawn = draw_total(settings.factor.seed, day.date(), 0.90, 1.10)
        assert w.sum() == pytest.approx(min(drawn, 1.0)) and w.max() <= 0.5 + 1e-12
        scores = [float(r[5].split()[1].rstrip(",")) for r in rows["reasons"]]
        assert w[int(np.argmax(scores))] == pytest.approx(0.5)
        for reasons in rows["reasons"]:
            assert [r.split()[0] for r in reasons[1:6]] == ["RS", "TF", "MR", "SE", "score"]
            assert reasons[6].startswith("LP:") and reasons[7].startswith("total drawn")
    # Orders go out at the decision and fill at the next session (close-only: its close).
    first_fill = result.fills[0].filled_at.date()
    assert first_fill == dt.date(2020, 1, 6) and days.iloc[0].date() == dt.date(2020, 1, 3)


def test_the_same_config_replays_identically(market):
    a, run_a = targets(robo_settings(), market)
    b, run_b = targets(robo_settings(), market)
    assert a.equals(b)
    np.testing.assert_array_equal(run_a.equity, run_b.equity)


def context(prices, t, lo=0):
    """What the engine hands the model at the close of day t, history from row lo."""
    return DecisionContext(t, prices.dates[t].astype(dt.date), prices.symbols,
                           prices.dates[lo : t + 1], prices.close[lo : t + 1],
                           np.empty((0, len(prices.symbols))), np.isfinite(prices.close[t]),
                           Regime.GROWTH, False)


def test_short_history_falls_back_to_the_static_allocation(market):
    model = FactorModel(robo_settings())
    ctx = context(market.prices, 40)
    decision = model.decide(ctx)
    invested = min(draw_total(7, ctx.day, 0.90, 1.10), 1.0)
    np.testing.assert_allclose(decision.weights, np.array([0.4, 0.2, 0.2, 0.2]) * invested)
    assert decision.rows[0].reasons[0].startswith("insufficient history")
    assert decision.rows[0].reasons[6] == f"static weight {0.4 * invested:.2%}"


def test_the_static_fallback_keeps_the_lp_cap_so_the_guard_changes_nothing(market):
    """Only AAA (40%) and BBB (20%) priced: rescaled, AAA was 67% and the guard's 50% cap
    clipped it to a portfolio the docs did not describe."""
    model = FactorModel(robo_settings())
    ctx = context(market.prices, 40)
    ctx = ctx._replace(tradable=np.array([True, True, False, False]))
    explained = model.explain(ctx)
    invested = min(draw_total(7, ctx.day, 0.90, 1.10), 1.0)
    assert not explained.used_lp
    np.testing.assert_allclose(explained.decision.weights, [0.5, invested - 0.5, 0, 0])
    np.testing.assert_array_equal(explained.decision.weights, explained.allocation.weights)
    assert explained.decision.rows[0].reasons[6] == (
        "static weight 50.00% (at the 50% cap, the excess spread over the others)"
    )


@pytest.mark.parametrize("day, lag, month, tom", [
    (dt.date(2024, 1, 26), 0, 1, True),   # Jan 29 - Feb 2 holds Jan 31, Feb 1, 2
    (dt.date(2024, 1, 26), 5, 2, True),   # Feb 5 - 9: Feb 5 is the third session of February
    (dt.date(2024, 2, 9), 0, 2, False),   # Feb 12 - 16: mid-month
    (dt.date(2024, 3, 22), 0, 3, True),   # Mar 25 - 28 and Apr 1: Good Friday skipped
    (dt.date(2024, 11, 22), 0, 11, True),  # Nov 25-27, 29 (Thanksgiving skipped), Dec 2
    (dt.date(2024, 11, 8), 0, 11, False),  # Nov 11 - 15
])
def test_holding_window_month_and_turn_of_month(day, lag, month, tom):
    window = holding_window(day, lag, 5, before=1, after=3)
    assert (window.month, window.turn_of_month) == (month, tom)


# ----------------------------------------------------------------------- real data


def test_the_history_the_model_asks_for_is_enough_for_an_identical_decision(shared_data):
    """A live feed holding `history_calendar_days` of bars decides exactly as a backtest
    holding SPY's thirty years does."""
    from bot.data.csv_source import load_csv_directory

    settings = load_settings(REPO / "config" / "robo_balanced.toml")
    prices = load_csv_directory(shared_data, list(settings.symbols)).prices
    model = FactorModel(settings)
    for day in ("2019-01-31", "2024-06-28", "2024-11-29"):
        t = int(np.searchsorted(prices.dates, np.datetime64(day)))
        since = prices.dates[t] - np.timedelta64(model.history_calendar_days, "D")
        lo = int(np.searchsorted(prices.dates, since))
        full, short = model.decide(context(prices, t)), model.decide(context(prices, t, lo))
        np.testing.assert_array_equal(full.weights, short.weights)
        assert [r.reasons for r in full.rows] == [r.reasons for r in short.rows]

PROFILES = {
    "conservative": ({"AGG": 0.35, "SHY": 0.25, "VYM": 0.20, "BIL": 0.20},
                     (0.20, 0.40, 0.30, 0.10), (0.95, 1.05), (2, 3)),
    "balanced": ({"SPY": 0.30, "IWM": 0.20, "BND": 0.30, "VNQ": 0.20},
                 (0.30, 0.30, 0.25, 0.15), (0.90, 1.10), (3, 5)),
    "aggressive": ({"QQQ": 0.40, "ARKK": 0.20, "IEMG": 0.20, "XLK": 0.20},
                   (0.40, 0.35, 0.15, 0.10), (0.85, 1.15), (5, 7)),
}


@pytest.mark.parametrize("profile", PROFILES)
def test_robo_configs_state_the_whitepaper(profile):
    static, signal_weights, band, srri = PROFILES[profile]
    s = load_settings(REPO / "config" / f"robo_{profile}.toml")
    assert s.strategy.kind == "factor" and not s.strategy.overlay_enabled
    assert {sym: a.weight for sym, a in s.universe.items()} == static
    w = s.factor.weights
    assert (w.relative_strength, w.trend, w.mean_reversion, w.seasonality) == signal_weights
    assert (s.factor.total_min, s.factor.total_max) == band and s.factor.intended_srri == srri
    assert s.factor.max_weight == s.risk.position_cap == 0.5 and s.risk.rules == ()
    assert s.rebalance.schedule == "weekly" and s.rebalance.drift == 0.0


def test_real_data_decisions_ignore_the_future(shared_data):
    from bot.data.csv_source import load_csv_directory

    settings = load_settings(REPO / "config" / "robo_conservative.toml")
    market = load_csv_directory(shared_data, list(settings.symbols))
    settings = parse_settings({**settings.model_dump(mode="json"),
                               "backtest": {"start": "2018-01-02", "end": "2019-12-31"}})
    cutoff = np.datetime64("2019-06-28")
    cut = MarketData(market.prices.between(None, cutoff), market.macro, "cut")
    full, _ = targets(settings, market)
    part, _ = targets(settings, cut)
    full = full[full["day"] <= str(cutoff)].reset_index(drop=True)
    assert len(part) == 4 * 78  # every week of 2018 and half of 2019
    assert full[["day", "symbol", "final"]].equals(part[["day", "symbol", "final"]])
    assert (part["final"] <= 0.5).all()


def test_bot_backtest_reports_a_robo_profile_against_spy_and_the_static_mix(shared_data, tmp_path):
    code = main([
        "backtest", "--config", str(REPO / "config" / "robo_balanced.toml"),
        "--data-dir", str(shared_data), "--database", f"sqlite:///{tmp_path / 'log.sqlite'}",
        "--out", str(tmp_path / "out"), "--start", "2019-01-02", "--end", "2020-12-31",
        "--no-charts",
    ])
    assert code == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    names = [row["name"] for row in report["summary"]]
    assert names == ["robo_balanced", "SPY buy-and-hold", "Whitepaper static balanced (weekly)"]
    assert report["meta"]["weighting"] == "factor:balanced"
    strategy, spy, static = report["summary"]
    assert strategy["trades"] > 100 and spy["trades"] == 1 and static["trades"] > 100
    # Paper 002 states no cost figure: no claim from the leverage paper beside the costs.
    assert report["implementation_cost"]["claim"] is None
    assert [r["name"] for r in report["implementation_cost"]["rows"]] == names
    # nor in the report rebuilt later from the trade log alone
    assert main(["report", "--database", f"sqlite:///{tmp_path / 'log.sqlite'}", "--run", "1",
                 "--out", str(tmp_path / "again"), "--no-charts"]) == 0
    again = json.loads((tmp_path / "again" / "report.json").read_text())
    assert again["implementation_cost"]["claim"] is None
    assert again["implementation_cost"]["source"].startswith("research 002")
