"""`bot stress`: factor shocks through leverage and a beta/duration model, and replays of
real episodes through the backtest engine starting from the portfolio."""

import json

import numpy as np
import pandas as pd
import pytest

from bot.backtest import run_backtest, scratch_tradelog
from bot.cli import main
from bot.config import parse_settings
from bot.data.backfill import backfill, daily_reset_returns
from bot.data.base import RISK_FREE, MacroSeries, MarketData, PriceHistory
from bot.stress import (
    EPISODES,
    SCENARIOS,
    Portfolio,
    calibrate,
    factor_moves,
    replay,
    shock,
    stress_report,
)
from tests.conftest import CONFIG, REPO

SCENARIO = {s.key: s for s in SCENARIOS}
EPISODE = {e.key: e for e in EPISODES}
STRATEGIC = {"TQQQ": 0.20, "UPRO": 0.20, "UDOW": 0.10, "TMF": 0.25, "UGL": 0.10, "DIG": 0.15}


def exact_market(settings):
    """Returns built so every sensitivity has a known answer: QQQ = 1.2 x SPY, DIA = 0.9 x
    SPY, GLD = 0.1 SPY + 0.3 TLT, DIG = 2 x (1.1 SPY - 0.2 TLT) (its index not in the data)."""
    rng = np.random.default_rng(5)
    n = 250  # 2019 only
    spy, tlt = rng.normal(0, 0.01, n), rng.normal(0, 0.008, n)
    tlt = tlt - 0.25 * spy  # Treasuries rally when stocks fall
    index = {"SPY": spy, "TLT": tlt, "QQQ": 1.2 * spy, "DIA": 0.9 * spy, "GLD": 0.1 * spy + 0.3 * tlt}
    funds = {"TQQQ": 3 * index["QQQ"], "UPRO": 3 * spy, "UDOW": 3 * index["DIA"], "TMF": 3 * tlt,
             "UGL": 2 * index["GLD"], "DIG": 2 * (1.1 * spy - 0.2 * tlt)}
    symbols = (*settings.symbols, "SPY", "TLT", "QQQ", "DIA", "GLD")
    returns = np.column_stack([{**index, **funds}[s] for s in symbols])
    close = 100 * np.vstack([np.ones(len(symbols)), np.cumprod(1 + returns, axis=0)])
    dates = np.busday_offset("2019-01-02", np.arange(n + 1), roll="forward").astype("datetime64[D]")
    return MarketData(PriceHistory(dates, symbols, close, np.full_like(close, np.nan)), {}, "exact")


def test_sensitivities_follow_the_documented_paths(settings):
    from bot.stress import returns_frame

    sens, comove, _ = calibrate(settings, returns_frame(exact_market(settings)))
    by = {s.symbol: s for s in sens}
    assert (by["UPRO"].path, by["UPRO"].b_market) == ("market", 1.0)
    assert by["TQQQ"].path == "index beta" and by["TQQQ"].b_market == pytest.approx(1.2, abs=1e-9)
    assert by["UDOW"].b_market == pytest.approx(0.9, abs=1e-9)
    # TMF: TLT's duration (its own in config), through the rate factor: b_R = 1.
    assert (by["TMF"].path, by["TMF"].b_market, by["TMF"].b_rate) == ("duration", 0.0, 1.0)
    assert by["UGL"].path == "co-move"
    assert (by["UGL"].b_market, by["UGL"].b_rate) == (pytest.approx(0.1, abs=1e-9), pytest.approx(0.3, abs=1e-9))
    # DIG's index has no fund in the data: regressed through DIG / 2.
    assert by["DIG"].index == "DIG/2"
    assert (by["DIG"].b_market, by["DIG"].b_rate) == (pytest.approx(1.1, abs=1e-9), pytest.approx(-0.2, abs=1e-9))
    assert comove["rates_on_market"] < 0  # built with Treasuries rallying in sell-offs


def test_factor_shocks_go_through_leverage_beta_and_duration(settings):
    from bot.stress import returns_frame

    market = exact_market(settings)
    sens, comove, _ = calibrate(settings, returns_frame(market))
    closes = pd.DataFrame(market.prices.close, index=pd.DatetimeIndex(market.prices.dates),
                          columns=list(market.prices.symbols))
    portfolio = Portfolio(STRATEGIC, "2020-01-01", "test")
    duration = settings.stress.durations["TLT"]

    m, r = factor_moves(SCENARIO["rate_shock"], settings, comove, closes)
    assert (m, r) == (0.0, pytest.approx(-duration * 0.02))
    total, rows = shock(portfolio, sens, m, r)
    tmf = next(row for row in rows if row["symbol"] == "TMF")
    assert tmf["fund_move"] == pytest.approx(-3 * duration * 0.02)  # TMF: 3 x TLT's duration
    ugl = 2 * 0.3 * r
    dig = 2 * (-0.2) * r
    assert total == pytest.approx(0.25 * tmf["fund_move"] + 0.10 * ugl + 0.15 * dig)

    m, r = factor_moves(SCENARIO["market_crash"], settings, comove, closes)
    assert m == -0.30 and r == pytest.approx(comove["rates_on_market"] * -0.30)  # co-move
    total, rows = shock(portfolio, sens, m, r)
    moves = {row["symbol"]: row["fund_move"] for row in rows}
    assert moves["TQQQ"] == -1.0  # 3 x 1.2 x -30% = -108%: a fund cannot lose more than all
    assert moves["UPRO"] == pytest.approx(-0.90)
    assert moves["UDOW"] == pytest.approx(3 * 0.9 * -0.30)
    assert moves["TMF"] == pytest.approx(3 * r) and moves["TMF"] > 0  # flight to quality
    assert total == pytest.approx(sum(STRATEGIC[s] * v for s, v in moves.items()))

    assert factor_moves(SCENARIO["liquidity_crisis"], settings, comove, closes) is None  # not in 2019-20


def test_the_liquidity_window_and_tracking_error_come_from_the_data(settings, real_market):
    from bot.stress import factor_section

    market = _with_underlyings(real_market, settings)
    portfolio = Portfolio(STRATEGIC, "2024-12-31", "test")
    rows, _, _, _ = factor_section(portfolio, settings, market)
    liquidity = next(r for r in rows if r["key"] == "liquidity_crisis")
    spy = market.prices.close[:, market.prices.index_of("SPY")]
    dates = list(market.prices.dates.astype("datetime64[D]").astype(str))
    expected = spy[dates.index("2020-03-18")] / spy[dates.index("2020-03-06")] - 1
    assert liquidity["market_move"] == pytest.approx(expected)  # about -19%
    assert 0.0 < liquidity["tracking_error"] < 0.5
    assert {r["key"]: r["research"] for r in rows} == {
        "market_crash": "-18.2%", "rate_shock": "-15.4%", "tariff_escalation": "+8.3%",
        "liquidity_crisis": "2.8% TE",
    }


def test_the_liquidity_window_compounds_each_days_move_as_a_daily_reset_fund_does(settings, real_market):
    """Over the 8 sessions of 6-18 March 2020 UPRO fell 55.1%: 3 x SPY each day, compounded
    (-55.2%). Three times SPY's move over the window (-19.3%) said -58.0%, and UDOW -53.2%
    where the daily path of its beta model gives -51.2% (the fund fell 62.5%: DIA fell more
    than 0.92 x SPY; the model's betas, not the path)."""
    from bot.stress import factor_section

    market = _with_underlyings(real_market, settings)
    rows, sensitivities, _, _ = factor_section(Portfolio(STRATEGIC, "2024-12-31", "test"), settings, market)
    liquidity = next(r for r in rows if r["key"] == "liquidity_crisis")
    closes = pd.DataFrame(market.prices.close, index=pd.DatetimeIndex(market.prices.dates),
                          columns=list(market.prices.symbols))
    window = closes.loc["2020-03-06":"2020-03-18"]
    daily = window.pct_change().iloc[1:]
    assert len(daily) == 8
    moves = {a["symbol"]: a for a in liquidity["assets"]}
    beta = {s.symbol: s for s in sensitivities}
    expected = {
        "UPRO": np.prod(1 + 3 * daily["SPY"]) - 1,
        "TMF": np.prod(1 + 3 * daily["TLT"]) - 1,
        "UDOW": np.prod(1 + 3 * beta["UDOW"].b_market * daily["SPY"]) - 1,
        "UGL": np.prod(1 + 2 * (beta["UGL"].b_market * daily["SPY"] + beta["UGL"].b_rate * daily["TLT"])) - 1,
    }
    for symbol, move in expected.items():
        assert moves[symbol]["fund_move"] == pytest.approx(move, rel=1e-12), symbol
    assert moves["UPRO"]["index_move"] == pytest.approx(window["SPY"].iloc[-1] / window["SPY"].iloc[0] - 1)
    actual = window.iloc[-1] / window.iloc[0] - 1
    assert moves["UPRO"]["fund_move"] == pytest.approx(actual["UPRO"], abs=0.002)  # -55.1%
    assert moves["TMF"]["fund_move"] == pytest.approx(actual["TMF"], abs=0.002)  # -38.7%
    assert liquidity["portfolio_move"] == pytest.approx(
        sum(STRATEGIC[s] * a["fund_move"] for s, a in moves.items()))


def _with_underlyings(real_market, settings):
    from bot.data.csv_source import load_csv_directory
    from tests.conftest import SHARED_DATA

    return load_csv_directory(SHARED_DATA, [*settings.symbols, "SPY", "TLT", "QQQ", "DIA", "GLD"])


@pytest.mark.parametrize("schedule", ["every_n_days", "weekly"])
def test_a_held_replay_is_the_portfolio_bought_at_the_first_close(settings, real_market, schedule):
    """Through the engine, held: no trade, so the return is the weighted price change.
    Whatever the config's schedule: a weekly one (every robo config) used to trade the
    hold back to the static weights each week."""
    rebalance = settings.rebalance.model_copy(update={"schedule": schedule, "execution_lag_days": 2})
    settings = settings.model_copy(update={"rebalance": rebalance})
    market = _with_underlyings(real_market, settings)
    portfolio = Portfolio({"TQQQ": 0.3, "TMF": 0.4, "UGL": 0.1}, "2020-02-18", "test")  # 20% cash
    row = replay(EPISODE["covid"], portfolio, settings, market, [])
    closes = market.prices.select(settings.symbols).between(
        np.datetime64("2020-02-19"), np.datetime64("2020-03-23")).close
    moved = closes[-1] / closes[0] - 1
    expected = sum(w * moved[settings.symbols.index(s)] for s, w in portfolio.weights.items())
    assert row["first_day"] == "2020-02-19" and row["last_day"] == "2020-03-23"
    assert row["hold"]["return"] == pytest.approx(expected, rel=1e-12)
    assert row["strategy"]["return"] != row["hold"]["return"]  # the strategy trades from it
    assert row["market_return"] == pytest.approx(-0.3372, abs=1e-4)


def test_an_episode_before_a_fund_listed_rebuilds_it_and_says_so(settings, real_market):
    from bot.stress import rebuilt_market

    market = _with_underlyings(real_market, settings)
    rebuilt, done = rebuilt_market(settings, market)
    listed = {b.symbol: b.listed for b in done}
    assert listed == {"TQQQ": "2010-02-11", "UPRO": "2009-06-25", "UDOW": "2010-02-11",
                      "TMF": "2009-04-16", "UGL": "2008-12-03"}  # DIG existed: left as it is
    row = replay(EPISODE["gfc"], Portfolio(STRATEGIC, "2008-08-29", "test"), settings, rebuilt, done)
    assert row["covered"] and row["first_day"] == "2008-09-02" and row["last_day"] == "2009-03-31"
    assert "TQQQ listed 2010-02-11: before that rebuilt as 3x QQQ daily" in row["note"]
    assert "UGL listed 2008-12-03" in row["note"]
    assert -1 < row["hold"]["return"] < 0 and row["hold"]["max_drawdown"] < -0.2


def test_an_episode_after_the_data_is_reported_not_covered(settings, real_market):
    row = replay(EPISODE["tariffs_2025"], Portfolio(STRATEGIC, "x", "test"), settings, real_market, [])
    assert row["covered"] is False and row["note"] == "not in the data (1993-01-29 to 2024-12-31)"


def test_backfill_follows_the_daily_reset_rule_and_joins_the_real_prices():
    dates = np.arange(np.datetime64("2024-01-01"), np.datetime64("2024-01-11")).astype("datetime64[D]")
    index = 100 * np.cumprod(1 + np.array([0, 0.01, -0.02, 0.015, 0.005, -0.01, 0.02, 0.0, -0.005, 0.01]))
    fund = np.full(10, np.nan)
    fund[6:] = [50.0, 51.0, 50.5, 52.0]  # listed on day 6
    close = np.column_stack([fund, index])
    market = MarketData(
        PriceHistory(dates, ("FUND", "IDX"), close, np.full_like(close, np.nan)),
        {RISK_FREE: MacroSeries(RISK_FREE, dates[:1], np.array([5.04]))}, "test",
    )
    rebuilt, done = backfill(market, {"FUND": ("IDX", 3.0, 0.0095)})
    out = rebuilt.prices.close[:, 0]
    np.testing.assert_array_equal(out[6:], fund[6:])  # real prices untouched
    rf = np.r_[0.0, np.full(9, 5.04 / 100 / 252)]  # the bill rate known the day before
    expected = daily_reset_returns(index[1:7] / index[:6] - 1, 3.0, rf[1:7], 0.0095)
    np.testing.assert_allclose(out[1:7] / out[:6] - 1, expected, rtol=1e-12)
    assert done[0].listed == "2024-01-07" and done[0].from_day == "2024-01-01"


def test_run_backtest_can_start_from_a_portfolio(settings, real_market):
    raw = settings.model_dump(mode="json")
    raw["backtest"] |= {"start": "2021-03-01", "end": "2021-03-31"}
    cfg = parse_settings(raw, "test")
    weights = np.array([0.1, 0.2, 0.1, 0.3, 0.1, 0.0])
    result = run_backtest(cfg, real_market, scratch_tradelog("from"), initial_weights=weights)
    first = result.closes[0]
    np.testing.assert_allclose(result.holdings[0] * first / result.equity[0], weights, rtol=1e-12)
    assert result.equity[0] == pytest.approx(cfg.backtest.initial_cash)
    days = pd.DatetimeIndex(result.fills_frame()["filled_at"].dt.date)
    assert days.min() > pd.Timestamp("2021-03-04")  # no "initial allocation": the period counts from day 1


def test_bot_stress_json_with_a_stored_run(tmp_path, capsys, shared_data):
    db = f"sqlite:///{tmp_path / 'log.sqlite'}"
    assert main(["backtest", "--config", str(CONFIG), "--database", db, "--no-charts",
                 "--no-benchmarks", "--data-dir", str(shared_data), "--start", "2023-01-03",
                 "--end", "2024-06-28", "--out", str(tmp_path / "bt")]) == 0
    capsys.readouterr()
    assert main(["stress", "--config", str(CONFIG), "--run", "1", "--database", db,
                 "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    held = report["meta"]["portfolio"]
    assert held["source"] == "run 1's holdings"
    from bot.store.tradelog import TradeLog

    log = TradeLog.open_readonly(db)
    positions, equity = log.load_positions(1), log.load_equity(1)
    log.close()
    last = positions[positions["day"] == positions["day"].max()]
    value = float(equity.loc[pd.Timestamp(last["day"].iloc[0]), "equity"])
    assert held["weights"] == pytest.approx({r.symbol: r.market_value / value for r in last.itertuples()})
    assert [r["key"] for r in report["factor_scenarios"]] == [s.key for s in SCENARIOS]
    assert [r["key"] for r in report["replays"]] == [e.key for e in EPISODES]
    crash = report["factor_scenarios"][0]
    assert crash["research"] == "-18.2%"
    assert crash["portfolio_move"] == pytest.approx(sum(a["contribution"] for a in crash["assets"]))


def test_bot_stress_table_of_the_configs_portfolio(capsys, shared_data, monkeypatch):
    monkeypatch.setenv("BOT_DATA_DIR", str(shared_data))
    assert main(["stress", "--config", str(CONFIG)]) == 0
    out = capsys.readouterr().out
    for needle in ("Portfolio: the end of a backtest of", "Market crash (-30%)", "-18.2%",
                   "TMF 3x", "TLT: -16.5y x dy", "Financial crisis 2008-09..2009-03",
                   "Tariff shock 2025-04", "not in the data", "rebuilt as 3x QQQ daily"):
        assert needle in out, needle


def test_stress_report_refuses_a_portfolio_outside_the_universe(settings, real_market):
    from bot.errors import BotError

    with pytest.raises(BotError, match="not in the config's universe"):
        stress_report(settings, real_market, Portfolio({"XYZ": 0.5}, "x", "test"), {})


def _with_stress(settings, **changes):
    raw = settings.model_dump(mode="json")
    raw["stress"].update(changes)
    return parse_settings(raw, "test")


def test_a_calibration_window_too_short_for_the_factors_is_refused_not_zeroed(settings):
    """With fewer than 60 days of both factor funds every sensitivity would be 0 and each
    shock's loss several times too small: a clear error instead."""
    from bot.errors import BotError
    from bot.stress import returns_frame

    returns = returns_frame(exact_market(settings))  # 2019
    for window in ({"calibration_start": "2030-01-01"},
                   {"calibration_start": "2019-01-02", "calibration_end": "2019-02-15"}):
        with pytest.raises(BotError, match=r"stress.calibration_start..calibration_end .* holds "
                                           r"\d+ days of SPY and TLT returns; .* at least 60"):
            calibrate(_with_stress(settings, **window), returns)
    sens, _, _ = calibrate(_with_stress(settings, calibration_start="2019-01-02",
                                     calibration_end="2019-06-28"), returns)
    assert {s.symbol: s for s in sens}["TQQQ"].b_market == pytest.approx(1.2, abs=1e-9)


def test_a_factor_fund_missing_from_the_data_names_the_field(settings):
    from bot.errors import BotError
    from bot.stress import returns_frame

    returns = returns_frame(exact_market(settings)).drop(columns=["TLT"])
    with pytest.raises(BotError, match=r"stress.rates: the factor fund TLT is not in the data"):
        calibrate(settings, returns)


@pytest.mark.parametrize(("changes", "message"), [
    ({"calibration_start": "2024-01-01", "calibration_end": "2020-01-01"},
     "calibration_start 2024-01-01 must come before calibration_end 2020-01-01"),
    ({"market": "spy"}, "market: expected a ticker in capitals"),
    ({"rates": "tlt"}, "rates: expected a ticker in capitals"),
    ({"durations": {"TLT": 16.5, "tlt": 16.5}}, "durations: expected tickers in capitals"),
])
def test_stress_settings_are_checked_with_the_config(settings, changes, message):
    from bot.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        _with_stress(settings, **changes)


def test_a_robo_profile_is_not_shown_the_leverage_papers_claims_and_the_window_is_the_factors(
    capsys, shared_data, monkeypatch
):
    """Paper 000's stress figures (-18.2%, ...) are for its leveraged-ETF portfolio: they
    were printed beside a robo profile's results. And the header's calibration span was
    the data's (1993-01-29), though every co-move needs TLT, whose returns start in 2002."""
    monkeypatch.setenv("BOT_DATA_DIR", str(shared_data))
    assert main(["stress", "--config", str(REPO / "config" / "robo_balanced.toml"), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert all(row["research"] is None for row in report["factor_scenarios"])
    tlt = pd.read_csv(shared_data / "prices" / "TLT.csv")["date"]
    assert report["meta"]["model"]["calibration"]["start"] == tlt.iloc[1]  # TLT's first return
    assert main(["stress", "--config", str(CONFIG), "--format", "json"]) == 0
    leverage = json.loads(capsys.readouterr().out)
    assert leverage["factor_scenarios"][0]["research"] == "-18.2%"
