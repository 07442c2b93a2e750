"""End to end on the real data in ../shared/data: the engine, the simulated broker and
the trade log, checked against independent computations."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from bot.backtest import run_backtest, scratch_tradelog
from bot.config import parse_settings


def variant(settings, **sections):
    """The settings with some fields of some sections replaced (validated again)."""
    raw = settings.model_dump(mode="json")
    for section, fields in sections.items():
        raw[section].update(fields)
    return parse_settings(raw, "test")


def strategic_no_cost(settings):
    return variant(
        settings,
        strategy={"weighting": "strategic", "overlay_enabled": False},
        risk={"rules": []},
        rebalance={"drift": None, "min_trade_notional": 0.0},
        backtest={"fill": "same_close", "slippage_bps": 0.0, "start": "2010-03-01",
                  "end": "2024-12-31"},
    )


def test_strategic_close_fills_match_an_independent_numpy_loop(settings, real_market):
    cfg = strategic_no_cost(settings)
    result = run_backtest(cfg, real_market, scratch_tradelog("t"))

    prices = real_market.prices.select(cfg.symbols).between(
        np.datetime64("2010-03-01"), np.datetime64("2024-12-31")
    ).close
    weights = np.array([cfg.universe[s].weight for s in cfg.symbols])
    shares = np.zeros(len(weights))
    cash = cfg.backtest.initial_cash
    expected = np.empty(len(prices))
    for t, row in enumerate(prices):
        value = cash + shares @ row
        if t % cfg.rebalance.every_days == 0:
            shares = weights * value / row
            cash = value - shares @ row
        expected[t] = cash + shares @ row

    np.testing.assert_allclose(result.equity, expected, rtol=1e-9, atol=0)
    assert len(result.fills) > 900 * 5


@pytest.mark.parametrize("weighting", ["inverse_vol", "erc", "strategic"])
def test_ledger_matches_fills_and_cash_stays_positive(settings, real_market, weighting):
    cfg = variant(settings, strategy={"weighting": weighting},
                  backtest={"commission_bps": 2.0, "start": "2015-01-02", "end": "2020-12-31"})
    result = run_backtest(cfg, real_market, scratch_tradelog("t"))
    assert np.all(result.cash >= 0)

    # Rebuild cash and holdings from the fills alone and value them at each close.
    index = {s: i for i, s in enumerate(cfg.symbols)}
    fills = result.fills_frame()
    fills["day"] = fills["filled_at"].dt.tz_convert("America/New_York").dt.normalize().dt.tz_localize(None)
    sign = np.where(fills["side"] == "buy", 1.0, -1.0)
    fills["cash_delta"] = -sign * fills["quantity"] * fills["price"] - fills["commission"]
    cash = cfg.backtest.initial_cash
    shares = np.zeros(len(cfg.symbols))
    by_day = dict(tuple(fills.groupby("day")))
    for k, day in enumerate(pd.DatetimeIndex(result.dates)):
        if day in by_day:
            for row in by_day[day].itertuples():
                shares[index[row.symbol]] += (1 if row.side == "buy" else -1) * row.quantity
                cash += row.cash_delta
        equity = cash + np.nansum(shares * result.closes[k])
        assert result.equity[k] == pytest.approx(equity, rel=1e-9), f"ledger differs on {day.date()}"


def test_no_look_ahead_truncated_history_gives_the_same_decisions(settings, real_market):
    cut = np.datetime64("2018-06-29")
    truncated = type(real_market)(
        real_market.prices.between(None, cut),
        {k: type(v)(v.name, v.dates[v.dates <= cut], v.values[v.dates <= cut])
         for k, v in real_market.macro.items()},
        real_market.source,
    )
    cfg = variant(settings, backtest={"start": "2016-01-04", "end": None})
    full = run_backtest(cfg, real_market, scratch_tradelog("full"))
    part = run_backtest(cfg, truncated, scratch_tradelog("part"))
    n = len(part.equity)
    np.testing.assert_array_equal(full.equity[:n], part.equity)
    assert full.regimes[:n] == part.regimes


def test_target_weights_respect_the_cap_in_the_trade_log(settings, real_market):
    cfg = variant(settings, backtest={"start": "2019-01-02", "end": "2022-12-30"})
    log = scratch_tradelog("cap")
    run_backtest(cfg, real_market, log)
    log.flush()
    targets = log.load_targets(log.run_id)
    assert len(targets) > 0
    assert targets["final"].astype(float).max() <= 0.30 + 1e-9
    events = log.load_risk_events(log.run_id)
    assert {"stop", "correlation"} <= set(events["rule"])


def test_regime_inputs_are_published_before_the_decision(settings, real_market):
    cfg = variant(settings, backtest={"start": "2020-01-02", "end": "2020-12-31"})
    log = scratch_tradelog("regimes")
    run_backtest(cfg, real_market, log)
    log.flush()
    regimes = log.load_regimes(log.run_id)
    assert len(regimes) >= 50
    day = pd.to_datetime(regimes["day"])
    for col in ("vix_date", "spread_date"):
        assert (pd.to_datetime(regimes[col]) < day).all()
    # The uncertainty index of a day is published the next day (publication_lag_days).
    published = pd.to_datetime(regimes["uncertainty_date"]) + pd.Timedelta(days=1)
    assert (published < day).all()
    assert (published == day - pd.Timedelta(days=1)).any()  # Saturday's value on Mondays
    # March 2020: VIX above 25 and policy uncertainty above 150 -> TRANSITION.
    march = regimes[pd.to_datetime(regimes["day"]).dt.month == 3]
    assert "TRANSITION" in set(march["regime"])


def test_next_open_fills_at_the_open_or_the_close_for_close_only_series(settings, real_market):
    cfg = variant(settings, strategy={"weighting": "strategic"},
                  backtest={"fill": "next_open", "slippage_bps": 0.0, "start": "2021-01-04",
                            "end": "2021-03-31"})
    result = run_backtest(cfg, real_market, scratch_tradelog("open"))
    fills = result.fills_frame()
    prices = real_market.prices
    dates = pd.DatetimeIndex(prices.dates)
    for row in fills.itertuples():
        day = row.filled_at.tz_convert("America/New_York").normalize().tz_localize(None)
        t = dates.get_loc(day)
        i = prices.index_of(row.symbol)
        expected = prices.open[t, i] if np.isfinite(prices.open[t, i]) else prices.close[t, i]
        assert row.price == pytest.approx(expected, rel=1e-12)
    assert {"TQQQ", "TMF"} <= set(fills["symbol"])  # one with opens, one close-only


def test_position_snapshots_match_the_broker_on_fill_days(settings, real_market):
    cfg = variant(settings, backtest={"start": "2021-01-04", "end": "2021-06-30"})
    log = scratch_tradelog("positions")
    result = run_backtest(cfg, real_market, log)
    log.flush()
    snaps = log.load_positions(log.run_id)
    assert len(snaps) > 0
    days = pd.DatetimeIndex(result.dates)
    for row in snaps.sample(50, random_state=1).itertuples():
        k = days.get_loc(pd.Timestamp(row.day))
        i = cfg.symbols.index(row.symbol)
        assert row.quantity == pytest.approx(result.holdings[k, i], rel=1e-9)


def test_missing_benchmark_files_only_skip_the_references(settings, shared_data, tmp_path):
    from bot.data.history import load_history

    (tmp_path / "prices").mkdir()
    (tmp_path / "macro").mkdir()
    for sym in settings.symbols:
        (tmp_path / "prices" / f"{sym}.csv").symlink_to(shared_data / "prices" / f"{sym}.csv")
    market = load_history(settings, tmp_path, ["SPY", "IEF"])
    assert market.prices.symbols == settings.symbols
    assert market.macro == {}


def test_session_seconds_are_new_york_open_and_close_across_dst():
    """09:30 and 16:00 New York in UTC: 14:30/21:00 in winter, 13:30/20:00 in summer."""
    from bot.backtest import session_seconds, utc

    days = np.array(["2024-03-08", "2024-03-11", "2024-11-01", "2024-11-04"], dtype="datetime64[D]")
    opens, closes = session_seconds(days)
    assert [utc(s).strftime("%m-%d %H:%M") for s in opens] == [
        "03-08 14:30", "03-11 13:30", "11-01 13:30", "11-04 14:30"
    ]
    assert [utc(s).strftime("%H:%M") for s in closes] == ["21:00", "20:00", "20:00", "21:00"]
    assert all(utc(s).tzinfo is dt.UTC for s in opens)


@pytest.mark.parametrize("fill", ["next_open", "next_close", "same_close"])
def test_no_fill_model_fills_at_a_forward_filled_close(settings, fill):
    """A day a loader forward-filled carries the last close, which is no trade. The
    next_open model already let such orders expire; the close models filled them at the
    carried close (36 shares of AAA at 90.0 on a day it did not trade)."""
    from bot.data.base import MarketData, PriceHistory

    raw = _two_assets_half_each(settings)
    raw["rebalance"].update(drift=None, min_trade_notional=0.0)
    raw["backtest"].update(fill=fill, start=None, end=None, slippage_bps=0.0)
    config = parse_settings(raw, "filled days")
    days = 12
    close = np.full((days, 2), 100.0)
    close[:, 1] = np.linspace(100, 111, days)
    close[3:6, 0] = 90.0
    filled = np.zeros((days, 2), dtype=bool)
    filled[4:6, 0] = True  # AAA did not trade on days 4 and 5
    dates = pd.bdate_range("2020-01-02", periods=days).values.astype("datetime64[D]")
    market = MarketData(PriceHistory(dates, ("AAA", "BBB"), close, close.copy(), filled), {},
                        "handmade", False)
    log = scratch_tradelog("filled")
    result = run_backtest(config, market, log)
    fills = result.fills_frame()
    fill_days = pd.DatetimeIndex(fills["filled_at"].dt.tz_convert("America/New_York").dt.date)
    on_filled = fills[(fills["symbol"] == "AAA") & fill_days.isin(pd.DatetimeIndex(dates[4:6]))]
    assert on_filled.empty
    log.flush()
    orders = log.load_orders(log.run_id)
    expired = orders[(orders["symbol"] == "AAA") & (orders["status"] == "expired")]
    assert len(expired) >= 1 and set(expired["status_message"]) == {"no price on the fill day"}
    log.close()


def _two_assets_half_each(settings) -> dict:
    """`settings` as raw config for AAA and BBB at 50% each: strategic weights, no
    overlay and no risk rule, so only the simulator's conventions move the equity."""
    raw = settings.model_dump(mode="json")
    raw["universe"] = {"AAA": {"leverage": 1, "weight": 0.5, "role": "equity"},
                       "BBB": {"leverage": 1, "weight": 0.5, "role": "equity"}}
    raw["overlay"] = {}
    raw["strategy"].update(weighting="strategic", overlay_enabled=False)
    raw["risk"].update(rules=[], position_cap=0.6)
    return raw


def handmade(settings, fill, fractional):
    """Two assets on 12 made-up days, costs of every kind: AAA has opens but none on
    day 4; BBB's prices end after day 8 (it delisted)."""
    from bot.data.base import MarketData, PriceHistory

    raw = _two_assets_half_each(settings)
    raw["rebalance"].update(drift=None, min_trade_notional=0.0, every_days=3,
                            fractional=fractional)
    raw["backtest"].update(fill=fill, start=None, end=None, slippage_bps=10.0,
                           commission_bps=5.0, commission_per_share=0.01)
    config = parse_settings(raw, "handmade")
    days = 12
    rng = np.random.default_rng(1)
    close = 100 * np.cumprod(1 + rng.normal(0, 0.02, (days, 2)), axis=0)
    opens = close * (1 + rng.normal(0, 0.005, (days, 2)))
    opens[4, 0] = np.nan
    close[9:, 1] = opens[9:, 1] = np.nan
    dates = pd.bdate_range("2020-01-02", periods=days).values.astype("datetime64[D]")
    market = MarketData(PriceHistory(dates, ("AAA", "BBB"), close, opens), {}, "handmade", False)
    return config, market, close, opens


@pytest.mark.parametrize("fractional", [True, False])
@pytest.mark.parametrize("fill", ["next_open", "next_close", "same_close"])
def test_fills_costs_and_equity_match_a_hand_ledger(settings, fill, fractional):
    """Each fill at its model's price (the close where a day has no open) moved by 10 bp
    against the trade, 0.01/share + 5 bp commission once per fill, equity = cash +
    holdings at their last close, and the report's costs the sum over the fills."""
    from bot.metrics import _cost_stats

    config, market, close, opens = handmade(settings, fill, fractional)
    result = run_backtest(config, market, scratch_tradelog("hand"))
    fills = result.fills_frame()
    day = fills["filled_at"].dt.tz_convert("America/New_York").dt.normalize().dt.tz_localize(None)
    cash, shares, last, costs = config.backtest.initial_cash, np.zeros(2), np.zeros(2), 0.0
    for k, today in enumerate(pd.DatetimeIndex(result.dates)):
        for row in fills[day == today].itertuples():
            i = ("AAA", "BBB").index(row.symbol)
            opened = opens[k, i] if np.isfinite(opens[k, i]) else close[k, i]
            ref = opened if fill == "next_open" else close[k, i]
            sign = 1.0 if row.side == "buy" else -1.0
            assert row.price == pytest.approx(ref * (1 + sign * 1e-3), rel=1e-12)
            commission = 0.01 * row.quantity + 5e-4 * row.quantity * row.price
            assert row.commission == pytest.approx(commission, rel=1e-12)
            assert row.slippage_cost == pytest.approx(ref * 1e-3 * row.quantity, rel=1e-9)
            if not fractional:
                assert row.quantity == int(row.quantity)
            shares[i] += sign * row.quantity
            cash -= sign * row.quantity * row.price + commission
            costs += commission + ref * 1e-3 * row.quantity
        last = np.where(np.isfinite(close[k]), close[k], last)
        assert result.cash[k] >= 0.0 and result.cash[k] == pytest.approx(cash, abs=1e-6)
        assert result.equity[k] == pytest.approx(cash + shares @ last, rel=1e-12)
    assert result.holdings[-1, 1] > 0  # BBB is still held: its orders found no price
    assert _cost_stats(fills, result.equity_series(), 1.0)["transaction_costs"] == pytest.approx(costs)


def test_weights_value_a_holding_without_a_close_at_its_last_close(settings):
    """After BBB's prices end, the equity still holds it at its last close; the weights
    showed it at 0, so they and CASH summed to 0.49."""
    config, market, _, _ = handmade(settings, "next_open", True)
    result = run_backtest(config, market, scratch_tradelog("weights"))
    weights = result.weights_frame()
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-12)
    assert weights["BBB"].iloc[-1] > 0.4
