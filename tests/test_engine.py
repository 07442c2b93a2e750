"""The engine's memory: a state saved after any day and restored into a new engine (as
the daemon does after a restart) continues exactly as if nothing had happened."""

import datetime as dt
import json

import numpy as np
import pytest

from bot.backtest import run_backtest, scratch_tradelog, session_seconds, span_indices, utc
from bot.broker.simulated import CostModel, SimulatedBroker, next_open_prices
from bot.engine import Engine
from bot.engine_state import EngineState
from bot.planner import rebalance_due
from tests.test_backtest import variant


def drive(settings, market, restart_every=None):
    """The backtest loop by hand; with `restart_every`, a brand-new Engine is built from
    the JSON of the previous one's state every that many days."""
    bt = settings.backtest
    broker = SimulatedBroker(settings.symbols, bt.initial_cash,
                             CostModel(slippage_bps=bt.slippage_bps), True)
    log = scratch_tradelog("drive")
    engine = Engine(settings, market, broker, log, "x")
    lo, hi = span_indices(engine.dates, bt.start, bt.end)
    opens, closes = session_seconds(engine.dates[lo:hi])
    prices = market.prices.select(settings.symbols)
    fill = next_open_prices(prices)
    equity, submitted = [], []
    for k, t in enumerate(range(lo, hi)):
        for order, f in broker.execute(fill[t], utc(opens[k])):
            engine.on_execution(order, f, utc(opens[k]))
        if restart_every and k % restart_every == restart_every - 1:
            saved = json.loads(json.dumps(engine.state.to_dict(settings.symbols)))
            engine = Engine(settings, market, broker, log, "x",
                            state=EngineState.from_dict(saved, settings.symbols))
        outcome = engine.step(t, utc(closes[k]))
        submitted += [(o.request.client_order_id, o.request.quantity) for o in outcome.orders]
        equity.append(engine.record_close(t).equity)
    return np.array(equity), submitted


def test_restoring_state_every_few_days_changes_nothing(settings, real_market):
    cfg = variant(settings, backtest={"start": "2018-01-02", "end": "2020-12-31"})
    straight, orders_a = drive(cfg, real_market)
    restarted, orders_b = drive(cfg, real_market, restart_every=3)
    np.testing.assert_array_equal(straight, restarted)
    assert orders_a == orders_b and len(orders_a) > 500


def test_drive_matches_run_backtest(settings, real_market):
    cfg = variant(settings, backtest={"start": "2019-01-02", "end": "2019-12-31"})
    by_hand, _ = drive(cfg, real_market)
    result = run_backtest(cfg, real_market, scratch_tradelog("bt"))
    np.testing.assert_array_equal(by_hand, result.equity)


def test_state_round_trips_through_json(settings):
    state = EngineState.from_dict(
        {
            "regime": "UNCERTAINTY",
            "last_rebalance_day": "2024-03-04",
            "targets": {"TQQQ": 0.1, "UPRO": 0.2, "UDOW": 0.1, "TMF": 0.3, "UGL": 0.1, "DIG": 0.2},
            "stops": {"TQQQ": 50.5, "UPRO": None},
            "stopped": ["DIG"],
            "drawdown": {"peak": 123456.789, "defensive": True, "entered_day": "2024-02-01"},
            "pending": None,
        },
        settings.symbols,
    )
    assert state.drawdown.entered_day == dt.date(2024, 2, 1)
    assert np.isnan(state.stops[1]) and state.stops[0] == 50.5
    again = EngineState.from_dict(json.loads(json.dumps(state.to_dict(settings.symbols))),
                                  settings.symbols)
    assert again.to_dict(settings.symbols) == state.to_dict(settings.symbols)


def test_weekly_schedule_trades_on_the_last_day_of_each_week(settings, real_market):
    cfg = variant(
        settings,
        strategy={"weighting": "strategic", "overlay_enabled": False},
        risk={"rules": []},
        rebalance={"schedule": "weekly", "drift": None},
        backtest={"start": "2024-03-01", "end": "2024-04-30", "fill": "same_close"},
    )
    log = scratch_tradelog("weekly")
    run_backtest(cfg, real_market, log)
    log.flush()
    days = sorted(set(log.load_targets(log.run_id)["day"].dt.date))
    # Fridays, except Good Friday 2024-03-29 (market closed): Thursday the 28th instead.
    assert days == [dt.date(2024, 3, d) for d in (1, 8, 15, 22, 28)] + [
        dt.date(2024, 4, d) for d in (5, 12, 19, 26)
    ]


def test_execution_lag_sends_orders_days_after_the_decision(settings, real_market):
    cfg = variant(
        settings,
        strategy={"weighting": "strategic", "overlay_enabled": False},
        risk={"rules": []},
        rebalance={"schedule": "weekly", "drift": None, "execution_lag_days": 5},
        backtest={"start": "2024-03-01", "end": "2024-04-30", "fill": "same_close"},
    )
    log = scratch_tradelog("lag")
    run_backtest(cfg, real_market, log)
    log.flush()
    orders = log.load_orders(log.run_id)
    sent = sorted(set(orders["submitted_at"].dt.tz_convert("America/New_York").dt.date))
    # Decided 2024-03-01 -> sent five sessions later, 2024-03-08; and so on.
    assert sent[:3] == [dt.date(2024, 3, 8), dt.date(2024, 3, 15), dt.date(2024, 3, 22)]
    assert "decided 2024-03-01" in orders.sort_values("submitted_at")["reason"].iloc[0]


def test_drift_is_not_measured_on_the_day_a_lagged_decision_is_sent(settings, real_market):
    """Before: the day a lagged decision's orders went out, drift compared the holdings
    (not yet filled) with the targets just sent: 46 redundant drift rebalances in
    2018-2020, the first on 2018-01-04 against a book still all cash ("drift 25.21%")."""
    cfg = variant(settings, rebalance={"execution_lag_days": 2},
                  backtest={"start": "2018-01-02", "end": "2020-12-31"})
    log = scratch_tradelog("lagdrift")
    run_backtest(cfg, real_market, log)
    log.flush()
    decisions = log.load_targets(log.run_id).drop_duplicates("day")
    orders = log.load_orders(log.run_id)
    sent = set(orders["submitted_at"].dt.tz_convert("America/New_York").dt.normalize()
               .dt.tz_localize(None))
    drift = decisions[decisions["trigger"].str.startswith("drift")]
    assert len(drift) <= 3  # a real drift is rare: 1 with the lag, 0 without
    assert not drift["day"].isin(sent).any()
    log.close()


@pytest.mark.parametrize(("week_end", "due"), [(True, True), (False, False)])
def test_weekly_rule(settings, week_end, due):
    cfg = variant(settings, rebalance={"schedule": "weekly"}).rebalance
    check = rebalance_due(3, lambda: np.zeros(2), np.zeros(2), 0, cfg.model_copy(update={"drift": None}),
                          week_ends_today=week_end)
    assert check.due is due


@pytest.mark.parametrize("lag", [2, 5])
def test_a_lag_longer_than_the_period_still_executes_every_decision_it_takes(
    settings, real_market, lag
):
    """Every 4 days with a 5-day lag: a newer decision used to replace the waiting one
    (and the initial allocation was re-decided daily), so nothing ever traded. Decisions
    now queue, each sent exactly `lag` sessions after it was taken."""
    cfg = variant(
        settings,
        rebalance={"every_days": 4, "drift": 0.05, "execution_lag_days": lag},
        backtest={"start": "2015-01-02", "end": "2015-12-31"},
    )
    log = scratch_tradelog("lag")
    result = run_backtest(cfg, real_market, log)
    log.flush()
    orders = log.load_orders(log.run_id)
    assert len(result.fills) > 100
    sessions = list(real_market.prices.dates.astype("datetime64[D]").astype(object))
    sent = orders["submitted_at"].dt.tz_convert("America/New_York").dt.date
    decided = orders["reason"].str.extract(r"decided (\d{4}-\d{2}-\d{2})")[0]
    rebalances = orders["rebalance_id"].str.endswith("-rb")
    gaps = {
        sessions.index(s) - sessions.index(dt.date.fromisoformat(d))
        for s, d in zip(sent[rebalances], decided[rebalances], strict=True)
    }
    assert gaps == {lag}
    assert "superseded" not in set(log.load_risk_events(log.run_id)["rule"])


def test_a_missed_week_start_is_decided_on_the_next_step(settings, real_market):
    """The daemon down on Monday: Tuesday's step decides the week's regime instead of
    keeping last week's (and its stop factor) until the next Monday."""
    cfg = variant(settings, backtest={"start": "2020-02-24", "end": "2020-03-06"})
    broker = SimulatedBroker(cfg.symbols, 100_000.0)
    engine = Engine(cfg, real_market, broker, scratch_tradelog("week"), "x")
    days = engine.dates.astype("datetime64[D]").astype(object).tolist()
    monday, tuesday = days.index(dt.date(2020, 2, 24)), days.index(dt.date(2020, 3, 3))
    engine.step(monday, dt.datetime(2020, 2, 24, 21, tzinfo=dt.UTC))
    assert engine.state.regime_day == dt.date(2020, 2, 24)
    engine.step(tuesday, dt.datetime(2020, 3, 3, 21, tzinfo=dt.UTC))  # Monday 2 March skipped
    assert engine.state.regime_day == dt.date(2020, 3, 3)
    engine.step(tuesday + 1, dt.datetime(2020, 3, 4, 21, tzinfo=dt.UTC))
    assert engine.state.regime_day == dt.date(2020, 3, 3)  # once a week, not every day


def test_a_defensive_switch_waiting_for_open_orders_is_not_forgotten(settings, real_market):
    """Live, orders can still be open when the drawdown rule switches to defence; the
    owed rebalance goes out on the first step without open orders, not at the next period."""
    cfg = variant(settings, rebalance={"every_days": 40, "drift": None},
                  backtest={"start": "2020-01-02", "end": "2020-12-31"})
    broker = SimulatedBroker(cfg.symbols, 100_000.0)
    engine = Engine(cfg, real_market, broker, scratch_tradelog("owed"), "x")
    days = engine.dates.astype("datetime64[D]").astype(object).tolist()
    t = days.index(dt.date(2020, 1, 2))
    engine.step(t, dt.datetime(2020, 1, 2, 21, tzinfo=dt.UTC))  # initial orders stay open
    engine.state.drawdown = engine.state.drawdown._replace(peak=1e9)  # deep drawdown now
    outcome = engine.step(t + 1, dt.datetime(2020, 1, 3, 21, tzinfo=dt.UTC))
    assert outcome.rebalance is None and engine.state.owed_rebalance == "entered defensive mode"
    saved = json.loads(json.dumps(engine.state.to_dict(cfg.symbols)))
    assert EngineState.from_dict(saved, cfg.symbols).owed_rebalance == "entered defensive mode"
    broker.cancel_pending("test: the open orders end")
    outcome = engine.step(t + 2, dt.datetime(2020, 1, 6, 21, tzinfo=dt.UTC))
    assert outcome.rebalance == "entered defensive mode" and outcome.orders
    assert engine.state.owed_rebalance is None


def test_a_flat_book_shows_as_flat_and_drawdown_is_from_the_true_peak(settings, real_market):
    """Selling everything used to write no snapshot (readers kept showing the old
    holdings), and the equity record's drawdown used the guard's re-based peak."""
    from bot.risk import DrawdownState
    from bot.store import queries

    cfg = variant(settings, backtest={"start": "2020-01-02", "end": "2020-12-31"})
    broker = SimulatedBroker(cfg.symbols, 100_000.0)
    log = scratch_tradelog("flat")
    engine = Engine(cfg, real_market, broker, log, "x")
    t = engine.dates.astype("datetime64[D]").astype(object).tolist().index(dt.date(2020, 3, 2))
    broker.shares[0] = 100.0
    broker._cash -= 100.0 * engine.close[t, 0]
    engine.record_close(t, snapshot=True)
    broker.shares[0], broker._cash = 0.0, 80_000.0  # sold out, 20% below the peak
    engine.state.drawdown = DrawdownState(80_000.0)  # the guard re-based its peak
    point = engine.record_close(t + 1, snapshot=True)
    assert point.drawdown == pytest.approx(0.2)
    log.flush()
    with log.engine.connect() as conn:
        held = queries.positions(conn, queries.Filters(run=log.run_id)).frame()
        history = queries.positions(conn, queries.Filters(run=log.run_id), history=True).frame()
    # the flat snapshot itself, all zeros (not the old holdings, and not "no snapshot")
    assert set(held["symbol"]) == set(cfg.symbols) and (held["quantity"] == 0).all()
    last = history[history["day"] == history["day"].max()]
    assert set(last["symbol"]) == set(cfg.symbols) and (last["quantity"] == 0).all()


def test_before_any_asset_is_listed_the_targets_are_all_cash(settings, real_market):
    """A replay starting before the universe's first listing stored NaN weights and every
    open job failed on targets.baseline NOT NULL."""
    cfg = variant(settings, backtest={"start": "2006-12-01", "end": "2007-03-30"})  # DIG: 2007-02
    log = scratch_tradelog("early")
    result = run_backtest(cfg, real_market, log)
    log.flush()
    targets = log.load_targets(log.run_id)
    assert not targets.empty and targets["final"].notna().all()
    first = targets[targets["day"] == targets["day"].min()]
    assert (first["final"] == 0).all() and "no asset has a price yet" in str(first["reasons"].iloc[0])
    assert np.isfinite(result.equity).all()


def test_a_stop_order_that_found_no_price_arms_the_stop_again(settings, monkeypatch):
    """AAA has no price on the day its stop order should fill: the order expires. It was
    kept out as sold (its risk event said so) while the whole position stayed held below
    its stop until the next rebalance; now its stop is armed again, the next close below
    it sells it, and the log says what happened."""
    import pandas as pd

    drop_day = 42
    result, log, dates = _three_asset_run(settings, drop_day, hole=(drop_day + 1, 0))
    events = log.load_risk_events(log.run_id)
    aaa = events[(events["symbol"] == "AAA") & (events["day"] >= dates[drop_day])]
    assert aaa["action"].tolist()[:3] == [
        "stop hit: position sold, in cash until the next rebalance",
        "stop order expired: " + aaa["action"].tolist()[1].split(": ", 1)[1],
        "stop hit: position sold, in cash until the next rebalance",
    ]
    assert "not sold; the stop stays armed" in aaa["action"].iloc[1]
    # Expired at the open of the day without a price; that day's close has none either,
    # so the next close, still below the stop, sends the stop again.
    assert aaa["day"].tolist()[:3] == [pd.Timestamp(d) for d in dates[[drop_day, drop_day + 1, drop_day + 2]]]
    held = result.holdings[:, 0]
    assert held[drop_day + 2] > 0 and held[drop_day + 3] == 0.0  # sold at the open after it
    orders = log.load_orders(log.run_id)
    stop_orders = orders[orders["client_order_id"].str.contains("-stop-AAA-")
                         & (orders["submitted_at"] >= pd.Timestamp(dates[drop_day], tz="UTC"))]
    assert stop_orders["status"].tolist() == ["expired", "filled"]
    log.close()


def _three_asset_run(settings, drop_day: int, days: int = 60, hole: tuple[int, int] | None = None):
    """AAA (half the book) falls 15% at the close of `drop_day`, far below its stop; only
    the stops rule runs, strategic weights, a rebalance every 4 trading days."""
    import pandas as pd

    from bot.config import parse_settings
    from bot.data.base import MarketData, PriceHistory

    raw = settings.model_dump(mode="json")
    raw["universe"] = {"AAA": {"leverage": 1, "weight": 0.5, "role": "equity"},
                       "BBB": {"leverage": 1, "weight": 0.3, "role": "equity"},
                       "CCC": {"leverage": 1, "weight": 0.2, "role": "bond"}}
    raw["overlay"] = {}
    raw["strategy"].update(weighting="strategic", overlay_enabled=False)
    raw["risk"].update(rules=["stops"], position_cap=0.5)
    raw["rebalance"].update(drift=None, min_trade_notional=0.0, every_days=4)
    raw["backtest"].update(fill="next_open", start=None, end=None, slippage_bps=0.0)
    config = parse_settings(raw, "stops test")
    close = 100 * np.exp(np.cumsum(np.random.default_rng(5).normal(0, 0.01, (days, 3)), axis=0))
    close[drop_day:, 0] *= 0.85
    if hole is not None:  # a day without a price (a holiday in one series)
        close[hole] = np.nan
    dates = pd.bdate_range("2020-01-02", periods=days).values.astype("datetime64[D]")
    market = MarketData(PriceHistory(dates, ("AAA", "BBB", "CCC"), close, close.copy(), None), {},
                        "handmade", False)
    log = scratch_tradelog("stops")
    result = run_backtest(config, market, log)
    log.flush()
    return result, log, pd.DatetimeIndex(dates)


@pytest.mark.parametrize("drop_day", [42, 44], ids=["between_rebalances", "on_a_rebalance_day"])
def test_a_stop_hit_sells_and_keeps_the_asset_out_until_the_next_rebalance(settings, drop_day):
    """Before: a stop crossed at the close of a rebalance day (days 0, 4, ... 44 here)
    was never acted on, and the rebalance bought the asset back up to its target (503 ->
    546 shares); in the 2010-2024 backtest 141 of 325 crossings went that way."""
    result, log, dates = _three_asset_run(settings, drop_day)
    events = log.load_risk_events(log.run_id)
    stops = events[(events["rule"] == "stop") & (events["symbol"] == "AAA")
                   & (events["day"] >= dates[40])]  # the random walk's own hits come earlier
    assert stops["day"].dt.date.tolist() == [dates[drop_day].date()]
    aaa = result.holdings[:, 0]
    assert aaa[drop_day] > 0 and aaa[drop_day + 1] == 0.0  # sold at the next open
    next_rebalance = (drop_day // 4 + 1) * 4
    assert (aaa[drop_day + 1 : next_rebalance + 1] == 0.0).all()  # out until then
    assert aaa[next_rebalance + 1] > 0  # bought back by the next rebalance
    orders = log.load_orders(log.run_id)
    sold = orders[(orders["symbol"] == "AAA") & (orders["side"] == "sell")
                  & orders["client_order_id"].str.contains(f"{dates[drop_day]:%Y%m%d}")]
    assert sold["reason"].tolist() == ["stop loss"]  # one sell, for the stop
    targets = log.load_targets(log.run_id)
    that_day = targets[(targets["day"] == dates[drop_day]) & (targets["symbol"] == "AAA")]
    if drop_day % 4 == 0:  # the rebalance of that close keeps it out, and says why
        assert that_day["final"].tolist() == [0.0]
        assert "stop hit at this close: out until the next rebalance" in that_day["reasons"].iloc[0]
    else:
        assert that_day.empty
    log.close()


def test_a_day_without_a_close_values_the_holding_at_its_last_close(settings):
    """Before: a NaN close valued the position at 0 for the day: equity 102,238 ->
    51,205 -> 102,582, and the drawdown rule sold half the book and bought it back."""
    import pandas as pd

    from bot.config import parse_settings
    from bot.data.base import MarketData, PriceHistory

    raw = settings.model_dump(mode="json")
    raw["universe"] = {"AAA": {"leverage": 1, "weight": 0.5, "role": "equity"},
                       "BBB": {"leverage": 1, "weight": 0.5, "role": "bond"}}
    raw["overlay"] = {}
    raw["strategy"].update(weighting="strategic", overlay_enabled=False)
    raw["risk"].update(rules=["drawdown"], position_cap=0.6)
    raw["rebalance"].update(drift=None, min_trade_notional=0.0)
    raw["backtest"].update(fill="next_open", start=None, end=None, slippage_bps=0.0)
    config = parse_settings(raw, "missing close")
    close = 100 * np.exp(np.cumsum(np.random.default_rng(2).normal(0, 0.005, (30, 2)), axis=0))
    close[15, 0] = np.nan
    dates = pd.bdate_range("2020-01-02", periods=30).values.astype("datetime64[D]")
    market = MarketData(PriceHistory(dates, ("AAA", "BBB"), close, close.copy(), None), {},
                        "handmade", False)
    log = scratch_tradelog("nanclose")
    result = run_backtest(config, market, log)
    held = result.holdings[15]
    assert result.equity[15] == pytest.approx(result.cash[15] + held[0] * close[14, 0] + held[1] * close[15, 1])
    assert abs(result.equity[15] / result.equity[14] - 1) < 0.05
    log.flush()
    events = log.load_risk_events(log.run_id)
    assert not (events["rule"] == "drawdown").any()
    log.close()


def test_with_an_execution_lag_a_stop_day_does_not_also_trade_the_stopped_fund(settings, real_market):
    """Before: the lagged decision sent on a stop's close planned from the shares before
    the stop: 18 of 332 stop sells came with an order for the same fund (a buy-back of
    726 TQQQ on 2015-08-20, or a second sell beyond what was held)."""
    orders, stops = _lagged_orders(settings, real_market, 1)
    others = orders[~orders["client_order_id"].str.contains("-stop-")]
    assert len(stops) > 100
    clash = stops.merge(others, on=["day", "symbol"])
    assert clash.empty, clash[["day", "symbol", "side_y", "quantity_y"]].head()


def _lagged_orders(settings, market, lag: int):
    """The orders of a 2010-2024 backtest with `execution_lag_days` = lag, each with the
    day of its client_order_id, and the stop sells among them."""
    cfg = variant(settings, rebalance={"execution_lag_days": lag},
                  backtest={"start": "2010-03-01", "end": "2024-12-31"})
    log = scratch_tradelog(f"lag{lag}")
    run_backtest(cfg, market, log)
    log.flush()
    orders = log.load_orders(log.run_id)
    log.close()
    orders["day"] = orders["client_order_id"].str.extract(r"-(\d{8})-")[0]
    return orders, orders[orders["client_order_id"].str.contains("-stop-")]


@pytest.mark.parametrize("fill", ["next_open", "same_close"])
def test_the_close_reuses_the_steps_valuation_only_when_nothing_filled_after_it(
    settings, real_market, fill
):
    """run_backtest tells record_close when nothing filled since the step (it then reuses
    the step's valuation); valuing the book afresh at every close gives the same equity,
    cash and holdings, also on same-close days when the rebalance fills after the step."""
    cfg = variant(settings, backtest={"start": "2019-01-02", "end": "2019-12-31", "fill": fill})
    result = run_backtest(cfg, real_market, scratch_tradelog("bt"))
    broker = SimulatedBroker(cfg.symbols, cfg.backtest.initial_cash,
                             CostModel(slippage_bps=cfg.backtest.slippage_bps), True)
    engine = Engine(cfg, real_market, broker, scratch_tradelog("hand"), "x")
    lo, hi = span_indices(engine.dates, cfg.backtest.start, cfg.backtest.end)
    opens, closes = session_seconds(engine.dates[lo:hi])
    prices = real_market.prices.select(cfg.symbols)
    at_open, at_close = next_open_prices(prices), prices.close
    equity, cash, held = [], [], []
    for k, t in enumerate(range(lo, hi)):
        if fill == "next_open":
            for order, f in broker.execute(at_open[t], utc(opens[k])):
                engine.on_execution(order, f, utc(opens[k]))
        engine.step(t, utc(closes[k]))
        if fill == "same_close":
            for order, f in broker.execute(at_close[t], utc(closes[k])):
                engine.on_execution(order, f, utc(closes[k]))
        point = engine.record_close(t)  # the book read from the broker every day
        equity.append(point.equity)
        cash.append(point.cash)
        held.append(broker.shares.copy())
    assert len(result.fills) > 100
    np.testing.assert_array_equal(result.equity, equity)
    np.testing.assert_array_equal(result.cash, cash)
    np.testing.assert_array_equal(result.holdings, np.array(held))


def test_with_an_execution_lag_a_stop_day_sends_the_stop_sells_before_the_buys(settings, real_market):
    """Live, a buy sent while no sell is working goes out at once, cut to the cash before
    the sale (bot.broker.sequenced): the stop sells of a close must reach the broker
    before the lagged decision's buys. Before, they came after them on every such day."""
    cfg = variant(settings, rebalance={"execution_lag_days": 1},
                  backtest={"start": "2010-03-01", "end": "2024-12-31"})
    sent: list[tuple[str, str]] = []
    submit = SimulatedBroker.submit

    def recording(self, request, now):
        sent.append((request.client_order_id, request.side.value))
        return submit(self, request, now)

    SimulatedBroker.submit = recording
    try:
        run_backtest(cfg, real_market, scratch_tradelog("lagstop-order"))
    finally:
        SimulatedBroker.submit = submit
    by_day: dict[str, list[tuple[str, str]]] = {}
    for cid, side in sent:
        by_day.setdefault(cid.split("-")[-4], []).append((cid, side))
    mixed = [day for day, orders in by_day.items()
             if any("-stop-" in c for c, _ in orders) and any(s == "buy" for _, s in orders)]
    assert len(mixed) > 10
    for day in mixed:
        kinds = ["stop" if "-stop-" in c else side for c, side in by_day[day]]
        last_stop = max(i for i, k in enumerate(kinds) if k == "stop")
        first_buy = min(i for i, k in enumerate(kinds) if k == "buy")
        assert last_stop < first_buy, (day, by_day[day])


def test_a_negative_account_equity_is_refused_and_nothing_is_sent(settings, real_market):
    """A broker reporting negative equity (cash -5,000, nothing held) made every target
    negative: `bot once --execute` sent six short sales. The decision now stops with an
    error naming the equity, before any order."""
    from bot.broker.base import BrokerError

    broker = SimulatedBroker(settings.symbols, 100_000.0, CostModel(), True)
    broker.start_with(np.zeros(len(settings.symbols)), -5_000.0)
    engine = Engine(settings, real_market, broker, scratch_tradelog("negative"), "neg")
    t = int(np.searchsorted(engine.dates, np.datetime64("2020-06-01")))
    with pytest.raises(BrokerError, match=r"account equity -5,000.00 is not positive .* no order sent"):
        engine.step(t, utc(1_590_000_000))
    assert broker.open_order_count() == 0
    # with holdings whose stops are all hit: refused before the stop sells and the decision
    broker = SimulatedBroker(settings.symbols, 100_000.0, CostModel(), True)
    broker.start_with(np.ones(len(settings.symbols)), -1e7)
    log = scratch_tradelog("negative-stops")
    engine = Engine(settings, real_market, broker, log, "neg")
    engine.state.stops = np.full(len(settings.symbols), 1e9)
    with pytest.raises(BrokerError, match="is not positive"):
        engine.step(t, utc(1_590_000_000))
    assert broker.open_order_count() == 0 and not log._targets and engine.state.last_rebalance_day is None


def test_with_a_lag_of_several_sessions_a_fund_stopped_before_the_execution_is_not_bought_back(
    settings, real_market
):
    """A stop hit between a decision and its execution three sessions later: the
    execution bought the fund back at the weight decided before the stop (101 times
    over 2010-2024), while the log said it was out until the next rebalance."""
    orders, stops = _lagged_orders(settings, real_market, 3)
    buys = orders[(orders["side"] == "buy")].copy()
    buys["decided"] = buys["reason"].str.extract(r"decided (\d{4}-\d{2}-\d{2})")[0].str.replace("-", "")
    assert len(stops) > 50 and buys["decided"].notna().all()
    clash = stops.merge(buys, on="symbol", suffixes=("_stop", "_buy"))
    bought_back = clash[(clash["decided"] < clash["day_stop"]) & (clash["day_buy"] > clash["day_stop"])]
    assert bought_back.empty, bought_back[["symbol", "decided", "day_stop", "day_buy"]].head()


def test_records_built_without_their_constructor_have_every_field(settings, monkeypatch):
    """The order path builds its NamedTuple records with bot.types.new_record
    (tuple.__new__: no Python frame per order), which does not count the fields it gets.
    Every module using it is made to count them here, over seven synthetic years, so a
    field added to a record and missed at one call site fails here, not at a distant
    read."""
    import sys

    from bot.data.synthetic import synthetic_market
    from bot.types import new_record

    built: dict[str, int] = {}

    def counted(cls, fields):
        assert len(fields) == len(cls._fields), f"{cls.__name__}: {len(fields)} fields"
        built[cls.__name__] = built.get(cls.__name__, 0) + 1
        return new_record(cls, fields)

    users = [m for m in list(sys.modules.values())
             if getattr(m, "__name__", "").startswith("bot.") and getattr(m, "new_record", None) is new_record]
    assert users
    for module in users:
        monkeypatch.setattr(module, "new_record", counted)
    cfg = variant(settings, backtest={"start": "2010-01-04", "end": "2014-12-31"})
    market = synthetic_market([*cfg.symbols, "SPY"], "2008-01-02", "2014-12-31")
    run_backtest(cfg, market, scratch_tradelog("records"))
    assert {"OrderRequest", "Fill", "EquityPoint", "StepOutcome", "DrawdownState"} <= set(built)
