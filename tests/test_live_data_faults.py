"""Faults in the data the daemon decides on: macro series published after the last job,
a symbol whose bars stopped, a day a symbol did not trade. Each must be seen (fresh
download, incident, expired order), never papered over with an old value."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from structlog.testing import capture_logs

from bot.broker.simulated import SimulatedBroker, next_open_prices
from bot.daemon import live_feed
from bot.daemon.feeds import index_of_day
from bot.data.base import MarketData, PriceHistory
from bot.data.fred import FRED_IDS
from bot.data.plausibility import DEFAULT_RULES
from bot.errors import DataError
from bot.net import RetryPolicy
from bot.store.tradelog import TradeLog
from bot.types import OrderRequest, OrderStatus, Side
from tests import test_daemon_live as daemon_tests
from tests.fakes.fred_server import FakeFred
from tests.test_daemon_live import bought_before, daemon

UTC = dt.UTC
THURSDAY, FRIDAY = dt.date(2024, 11, 21), dt.date(2024, 11, 22)
FRIDAY_CLOSE_JOB = dt.datetime(2024, 11, 22, 21, 20, tzinfo=UTC)  # 16:20 New York
MONDAY_REGIME_JOB = dt.datetime(2024, 11, 25, 12, 30, tzinfo=UTC)  # 2 h before the open
FRED_CSV = "/graph/fredgraph.csv"


venue = daemon_tests.venue  # the daemon tests' fake Alpaca and FRED, environment set


def days(n: int) -> np.ndarray:
    """`n` consecutive days from 2024-01-02."""
    return np.datetime64("2024-01-02") + np.arange(n)


def fred_through(venue, last: dt.date) -> None:
    """FRED as it stood when `last` was its newest published day."""
    for fid in FRED_IDS.values():
        venue.fred.series[fid] = [(d, v) for d, v in venue.fred.series[fid] if d <= last]


def friday_close_then_monday(tmp_path, venue):
    """Friday's close job has run (and stored FRED's series); the clock is at Monday's
    regime job."""
    fred_through(venue, THURSDAY)
    jobs, log, clock = daemon(tmp_path, venue, when=FRIDAY_CLOSE_JOB)
    assert jobs.run("close", jobs.close_job)
    venue.set_now(MONDAY_REGIME_JOB)
    clock.set(MONDAY_REGIME_JOB)
    return jobs, log


# --- B: macro series are downloaded for every decision -----------------------------------


def test_monday_regime_reads_what_fred_published_after_fridays_close(tmp_path, venue):
    jobs, log = friday_close_then_monday(tmp_path, venue)
    published = {"VIXCLS": 80.0, "T10Y2Y": -1.0, "USEPUINDXD": 300.0, "DTB3": 4.5}
    for fid, value in published.items():
        venue.fred.series[fid].append((FRIDAY, value))
    before = len(venue.fred.calls("GET", FRED_CSV))
    assert jobs.run("regime", jobs.regime_job)
    assert len(venue.fred.calls("GET", FRED_CSV)) - before == len(FRED_IDS)
    decided = log.load_regimes(log.run_id).iloc[-1]
    assert decided["vix"] == 80.0 and decided["vix_date"].date() == FRIDAY
    assert decided["regime"] == "UNCERTAINTY"
    log.close()


def test_a_stored_series_is_downloaded_from_a_year_before_its_newest_day(tmp_path, venue):
    """The first job downloads each whole series; later jobs ask FRED (cosd) from
    REFETCH_DAYS before the newest stored day, store what is new or revised in that
    span, keep the older part, and decide on the stored series from that day on."""
    before = len(venue.fred.calls("GET", FRED_CSV))
    jobs, log = friday_close_then_monday(tmp_path, venue)
    first = venue.fred.calls("GET", FRED_CSV)[before:]
    assert len(first) == len(FRED_IDS) and all("cosd" not in c.query for c in first)
    vix = venue.fred.series["VIXCLS"]
    oldest = vix[0][0]
    revised_day = THURSDAY - dt.timedelta(days=30)
    i = next(k for k, (d, v) in enumerate(vix) if d >= revised_day and v is not None)
    revised_day = vix[i][0]
    vix[i] = (revised_day, 99.5)  # FRED revised an observation a month back
    vix.append((FRIDAY, 21.0))
    seen = len(venue.fred.calls("GET", FRED_CSV))
    assert jobs.run("regime", jobs.regime_job)
    later = venue.fred.calls("GET", FRED_CSV)[seen:]
    expected = (THURSDAY - dt.timedelta(days=live_feed.REFETCH_DAYS)).isoformat()
    assert len(later) == len(FRED_IDS) and {c.query.get("cosd") for c in later} == {expected}
    days, values = log.load_macro("VIX")
    stored = dict(zip(days, values, strict=True))
    assert days[0] == oldest and days[-1] == FRIDAY  # the older part is kept
    assert stored[revised_day] == 99.5 and stored[FRIDAY] == 21.0
    assert log.load_regimes(log.run_id).iloc[-1]["vix"] == 21.0
    seen = jobs.ctx.feed.macro()["VIX"]  # what a decision gets: from the first day asked
    assert seen.dates[0] >= np.datetime64(expected) and seen.dates[-1] == np.datetime64(FRIDAY)
    assert len(seen.dates) < len(days)
    log.close()


def test_a_jobs_fred_downloads_share_one_connection(tmp_path, sleeps):
    """The feed asks FRED's four series over one session, job after job a new one."""
    fred = FakeFred()
    fred.keep_alive = True
    day = dt.date(2024, 11, 29)
    values = {"VIXCLS": 14.1, "T10Y2Y": 0.05, "USEPUINDXD": 99.6, "DTB3": 4.42}
    fred.series = {fid: [(day, value)] for fid, value in values.items()}
    log = TradeLog.open(f"sqlite:///{tmp_path}/feed.sqlite")
    data = SimpleNamespace(rules=DEFAULT_RULES)
    clock = SimpleNamespace(now=lambda: dt.datetime(2024, 12, 2, 14, 35, tzinfo=UTC))
    policy = RetryPolicy(attempts=2, sleep=sleeps.append)
    with fred:
        feed = live_feed.AlpacaFeed(data, log, ("SPY",), fred.url, clock, 550, fred_policy=policy)
        for _ in range(2):
            assert sorted(feed.macro()) == sorted(FRED_IDS)
    calls = fred.calls("GET", FRED_CSV)
    assert len(calls) == 8
    assert len({c.peer for c in calls[:4]}) == 1 and len({c.peer for c in calls[4:]}) == 1
    assert calls[0].peer != calls[4].peer
    log.close()


def test_observations_fred_withdraws_are_deleted_from_the_store(tmp_path, sleeps):
    """A value FRED took back (it now answers "." for the day, or omits it) stayed in the
    daemon's store for ever, and the regime read it. Within the span a download covers,
    stored days it has no value for are deleted (and logged); older days, which the
    download did not ask for, are kept."""
    fred = FakeFred()
    weekdays = [d.date() for d in pd.bdate_range("2023-06-01", "2024-11-29")]
    level = {"VIXCLS": 15.0, "T10Y2Y": 0.5, "USEPUINDXD": 100.0, "DTB3": 4.0}
    fred.series = {fid: [(d, level[fid] + k % 7 / 10) for k, d in enumerate(weekdays)]
                   for fid in FRED_IDS.values()}
    log = TradeLog.open(f"sqlite:///{tmp_path}/feed.sqlite")
    data = SimpleNamespace(rules=DEFAULT_RULES)
    clock = SimpleNamespace(now=lambda: dt.datetime(2024, 12, 2, 14, 35, tzinfo=UTC))
    policy = RetryPolicy(attempts=2, sleep=sleeps.append)
    old, blanked, omitted, last = (dt.date(2023, 6, 5), dt.date(2024, 10, 1), dt.date(2024, 10, 2),
                                   dt.date(2024, 11, 29))
    with fred:
        feed = live_feed.AlpacaFeed(data, log, ("SPY",), fred.url, clock, 550, fred_policy=policy)
        feed.macro()
        assert {old, blanked, omitted, last} <= set(log.load_macro("VIX")[0])
        vix = fred.series["VIXCLS"]
        fred.series["VIXCLS"] = [(d, None if d in (blanked, last) else v)  # "." now
                                 for d, v in vix if d not in (old, omitted)]
        with capture_logs() as logs:
            seen = feed.macro()["VIX"]
    stored = log.load_macro("VIX")[0]
    assert old in stored  # before the span downloaded (a year before the newest day)
    assert not {blanked, omitted, last} & set(stored)
    assert seen.dates[-1] == np.datetime64("2024-11-28")  # the decision reads no withdrawn day
    (warning,) = [e for e in logs if e["event"].startswith("macro observations withdrawn")]
    assert warning["series"] == "VIX" and warning["days"] == 3
    assert (warning["first"], warning["last"]) == ("2024-10-01", "2024-11-29")
    assert log.load_macro("T10Y2Y")[0] == weekdays  # nothing withdrawn: nothing deleted
    log.close()


def test_fred_outage_on_monday_falls_back_to_the_stored_series(tmp_path, venue):
    jobs, log = friday_close_then_monday(tmp_path, venue)
    venue.fred.series.clear()  # every download answers 404
    with capture_logs() as logs:
        assert jobs.run("regime", jobs.regime_job)
    assert any("FRED download failed" in e["event"] for e in logs)
    decided = log.load_regimes(log.run_id).iloc[-1]
    assert decided["vix_date"].date() == THURSDAY  # what Friday's job stored
    assert log.load_incidents().empty
    log.close()


# --- C: a symbol whose bars stopped is never traded on ------------------------------------


def test_symbol_with_stale_bars_stops_the_decision(tmp_path, venue):
    venue.daily_bars["TQQQ"] = [b for b in venue.daily_bars["TQQQ"] if b.day <= dt.date(2024, 11, 19)]
    bought_before(venue, "TQQQ", 60_000.0)  # far above target: would be sold on its old close
    jobs, log, _ = daemon(tmp_path, venue)
    assert not jobs.run("open", jobs.open_job)
    assert venue.order_count() == 0
    messages = log.load_incidents()["message"].tolist()
    assert any("no daily bar for 2024-11-25 for TQQQ (latest 2024-11-19)" in m for m in messages)
    log.close()


def history(close: list[list[float]]) -> MarketData:
    values = np.array(close, dtype=float)
    prices = PriceHistory(days(len(values)), ("AAA", "NEW"), values, np.full_like(values, np.nan))
    return MarketData(prices)


def test_a_symbol_not_listed_yet_is_not_stale():
    market = history([[10.0, np.nan], [11.0, np.nan], [12.0, np.nan]])
    assert index_of_day(market, dt.date(2024, 1, 4), "test") == 2


def test_a_listed_symbol_without_the_days_bar_is_stale():
    market = history([[10.0, 5.0], [11.0, 5.5], [12.0, np.nan]])
    assert index_of_day(market, dt.date(2024, 1, 3), "test") == 1
    with pytest.raises(DataError, match=r"no daily bar for 2024-01-04 for NEW \(latest 2024-01-03\)"):
        index_of_day(market, dt.date(2024, 1, 4), "test")


# --- D: no fill on a day the symbol did not trade -----------------------------------------


def test_order_on_a_forward_filled_day_expires():
    close = np.array([[10.0, 20.0], [11.0, 20.0], [12.0, 21.0]])
    opens = np.array([[9.5, 19.5], [10.5, np.nan], [11.5, np.nan]])
    filled = np.array([[False, False], [False, True], [False, False]])
    fill = next_open_prices(PriceHistory(days(3), ("AAA", "BBB"), close, opens, filled))
    broker = SimulatedBroker(("AAA", "BBB"), 10_000.0)
    for symbol in ("AAA", "BBB"):
        broker.submit(OrderRequest(f"x-{symbol}-buy", "x", symbol, Side.BUY, 10, "t", 20.0), dt.datetime(2024, 1, 2))
    results = {o.request.symbol: (o, f) for o, f in broker.execute(fill[1], dt.datetime(2024, 1, 3))}
    order, no_fill = results["BBB"]
    assert order.status is OrderStatus.EXPIRED and no_fill is None
    assert order.status_message == "no price on the fill day"
    assert results["AAA"][1].price == pytest.approx(10.5)
    # A real bar without an open (close-only data) still fills at its close.
    assert fill[2, 1] == 21.0
