"""The paper-trading daemon end to end against fake Alpaca and FRED servers on 127.0.0.1:
the real alpaca-py clients, the real jobs and reconciliation, a simulated clock."""

from __future__ import annotations

import datetime as dt
import os
import signal
import sqlite3
import subprocess
import sys
import time
from decimal import Decimal

import numpy as np
import pytest

from bot.broker.alpaca import AlpacaBroker
from bot.broker.sequenced import CASH_BUFFER, QUEUED, QUEUED_MESSAGES
from bot.clock import SimulatedClock
from bot.config import load_settings
from bot.daemon.live import build_live
from bot.daemon.once import DRY_RUN, decide_once
from bot.daemon.sessions import exchange_sessions
from bot.data.fred import FRED_IDS
from bot.data.synthetic import synthetic_market
from bot.errors import BotError
from bot.net import RetryPolicy
from bot.store.tradelog import TradeLog
from tests import unit_sandbox
from tests.conftest import CONFIG, REPO
from tests.fakes.alpaca_server import KEY_ID, SECRET, DailyBar, FakeAlpaca, FakeSession
from tests.fakes.fred_server import API_KEY as FRED_KEY
from tests.fakes.fred_server import FakeFred

UTC = dt.UTC
SETTINGS = load_settings(CONFIG)
MARKET = synthetic_market([*SETTINGS.symbols, "SPY"], "2022-06-01", "2024-12-31", seed=3)
TUESDAY = dt.date(2024, 11, 26)
OPEN_JOB = dt.datetime(2024, 11, 26, 14, 35, tzinfo=UTC)  # 09:35 New York


def fake_sessions(start: dt.date, end: dt.date) -> list[FakeSession]:
    out = []
    for s in exchange_sessions(start, end):
        local = s.close.astimezone(dt.timezone(dt.timedelta(hours=-5)))
        early = s.close.hour in (18, 17) and local.hour == 13
        out.append(FakeSession(s.day, close="13:00" if early else "16:00"))
    return out


@pytest.fixture
def venue(monkeypatch):
    """Fake Alpaca (trading + data) and FRED, filled from the synthetic market, with the
    environment pointing the bot at them."""
    alpaca = FakeAlpaca(cash=100_000, now=OPEN_JOB,
                        sessions=fake_sessions(dt.date(2024, 9, 3), dt.date(2024, 12, 31)))
    prices = MARKET.prices
    days = prices.dates.astype("datetime64[D]").astype(object)
    for i, sym in enumerate(prices.symbols):
        alpaca.daily_bars[sym] = [
            DailyBar(d, o, max(o, c), min(o, c), c)  # high and low: the bar's extremes
            for d, o, c in zip(
                days, np.where(np.isfinite(prices.open[:, i]), prices.open[:, i], prices.close[:, i]),
                prices.close[:, i], strict=True,
            )
            if np.isfinite(c)
        ]
    last = int(np.searchsorted(prices.dates, np.datetime64("2024-11-25")))
    alpaca.prices = {s: float(prices.close[last, i]) for i, s in enumerate(prices.symbols)}
    fred = FakeFred()
    for name, series in MARKET.macro.items():
        fred.series[FRED_IDS[name]] = list(
            zip(series.dates.astype("datetime64[D]").astype(object), series.values.tolist(), strict=True)
        )
    alpaca.start()
    fred.start()
    alpaca.fred = fred  # tests reach the FRED fake through the venue
    for key, value in {
        "APCA_API_KEY_ID": KEY_ID, "APCA_API_SECRET_KEY": SECRET, "APCA_API_BASE_URL": alpaca.url,
        "APCA_API_DATA_URL": alpaca.url, "BOT_FRED_URL": fred.url,
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("BOT_LIVE_CONFIRM", raising=False)
    yield alpaca
    alpaca.stop()
    fred.stop()


def open_log(tmp_path):
    log = TradeLog.open(f"sqlite:///{tmp_path / 'paper.sqlite'}")
    run_id = log.start_run(mode="paper", strategy=SETTINGS.strategy.name, config_hash="h",
                           config={}, code_version="t", data_source="alpaca", synthetic=False,
                           started_at=dt.datetime.now(UTC))
    return log, run_id


#: Four tries and no waiting: these tests are about orders and data, not retry budgets
#: (tests/test_net_retries.py); a fault injected four times is a failed request.
FAST = RetryPolicy(attempts=4, sleep=lambda _s: None)


def daemon(tmp_path, venue, when=OPEN_JOB, settings=SETTINGS):
    venue.set_now(when)
    log, run_id = open_log(tmp_path)
    clock = SimulatedClock(when)
    jobs = build_live(settings, log, run_id, live=False, clock=clock, policy=FAST, fred_policy=FAST)
    return jobs, log, clock


def bought_before(venue, symbol, value):
    """Start with `value` dollars of `symbol`, paid from the account's cash."""
    price = venue.prices[symbol]
    venue.hold(symbol, value / price, price)
    venue.cash -= Decimal(repr(value))


def sides(venue):
    return [(o.data["symbol"], o.data["side"], o.data["status"]) for o in venue.orders]


@pytest.mark.parametrize(("patch", "reason"), [
    ({"trading_blocked": True}, "Alpaca reports trading_blocked for the account"),
    ({"trade_suspended_by_user": True, "account_blocked": True},
     "Alpaca reports account_blocked, trade_suspended_by_user for the account"),
    ({"status": "ACCOUNT_UPDATED"}, "the account's status is ACCOUNT_UPDATED, not ACTIVE"),
])
def test_an_account_alpaca_will_not_let_trade_sends_nothing_and_says_why(tmp_path, venue, patch, reason):
    """Nothing read Alpaca's block flags or the account's status: every order of the
    rebalance was sent and refused one by one (403), and nothing said why. The open job
    now sends nothing and fails with the reason, as an incident; the next session tries
    again, and trades once the block is lifted."""
    venue.account_patch = dict(patch)
    jobs, log, clock = daemon(tmp_path, venue)
    assert not jobs.run("open", jobs.open_job)
    assert venue.order_count() == 0
    log.flush()
    incidents = log.load_incidents(log.run_id)
    assert any(reason in m and "no decision taken" in m for m in incidents["message"])
    venue.account_patch = {}  # lifted
    assert jobs.run("open", jobs.open_job) and venue.order_count() > 0
    log.close()


def test_rebalance_sells_first_then_buys_after_the_sells_fill(tmp_path, venue):
    bought_before(venue, "TQQQ", 60_000.0)  # far above its target
    jobs, log, clock = daemon(tmp_path, venue)
    assert jobs.run("open", jobs.open_job)
    # Only the sell went out; the buys wait (recorded as `new`, queued).
    assert [s[:2] for s in sides(venue)] == [("TQQQ", "sell")]
    orders = log.load_orders()
    assert set(orders.loc[orders["side"] == "buy", "status"]) == {"new"}
    assert len(orders) >= 5

    venue.fill_open()
    clock.set(OPEN_JOB + dt.timedelta(minutes=2))
    assert jobs.run("poll", jobs.poll_job)
    assert {s[1] for s in sides(venue)} == {"sell", "buy"}
    venue.fill_open()
    clock.set(OPEN_JOB + dt.timedelta(minutes=4))
    assert jobs.run("poll", jobs.poll_job)

    orders = log.load_orders()
    assert set(orders["status"]) == {"filled"}
    assert len(log.load_fills(orders["run_id"].iloc[0])) == len(venue.orders)
    state = log.load_state("diversified_leverage", "paper")
    assert state["last_rebalance_day"] == "2024-11-25"  # decided on Monday's close

    # Next day: not due (1 trading day since), nothing sent.
    wednesday = dt.datetime(2024, 11, 27, 14, 35, tzinfo=UTC)
    venue.set_now(wednesday)
    clock.set(wednesday)
    before = len(venue.orders)
    assert jobs.run("open", jobs.open_job)
    assert len(venue.orders) == before
    log.close()


def test_killed_mid_rebalance_then_restarted_sends_no_duplicate(tmp_path, venue, monkeypatch):
    bought_before(venue, "TQQQ", 60_000.0)
    bought_before(venue, "UGL", 30_000.0)
    original = AlpacaBroker.submit
    calls = []

    def dies_after_first(self, request, now):
        original(self, request, now)
        calls.append(request.client_order_id)
        raise KeyboardInterrupt("kill -9")  # not an Exception: the job cannot catch it

    monkeypatch.setattr(AlpacaBroker, "submit", dies_after_first)
    jobs, log, _ = daemon(tmp_path, venue)
    with pytest.raises(KeyboardInterrupt):
        jobs.open_job()
    log.discard()  # the process died: nothing it buffered reached the database
    assert venue.order_count() == 1
    monkeypatch.setattr(AlpacaBroker, "submit", original)

    restarted, log2, clock = daemon(tmp_path, venue, OPEN_JOB + dt.timedelta(minutes=3))
    incidents = log2.load_incidents()
    assert any("adopted" in m for m in incidents["message"]), incidents["message"].tolist()
    assert restarted.run("open", restarted.open_job)
    # The order sent before the crash is outstanding, so the rebalance waits: no duplicate.
    assert venue.order_count() == 1
    ids = [o.data["client_order_id"] for o in venue.orders]
    assert len(ids) == len(set(ids)) and ids == calls
    recorded = log2.load_orders()
    assert calls[0] in set(recorded["client_order_id"])
    venue.fill_open()
    clock.set(OPEN_JOB + dt.timedelta(minutes=5))
    assert restarted.run("poll", restarted.poll_job)
    recorded = log2.load_orders()
    assert recorded.set_index("client_order_id").loc[calls[0], "status"] == "filled"
    log2.close()


def test_stale_bars_are_never_traded_on(tmp_path, venue):
    for sym in venue.daily_bars:
        venue.daily_bars[sym] = [b for b in venue.daily_bars[sym] if b.day < dt.date(2024, 11, 25)]
    jobs, log, _ = daemon(tmp_path, venue)
    assert not jobs.run("open", jobs.open_job)
    assert venue.order_count() == 0
    incidents = log.load_incidents()
    assert any("no daily bar for 2024-11-25" in m for m in incidents["message"])
    log.close()


def planned(outcome) -> list[tuple[str, float, str | None]]:
    """What a decision sends or queues: id, quantity, and whether it waits in the queue."""
    return [(o.request.client_order_id, o.request.quantity,
             o.status_message if o.status_message in QUEUED_MESSAGES else None)
            for o in outcome.orders]


def test_once_prints_without_sending_and_execute_sends(tmp_path, venue):
    """The dry run lists the quantities --execute sends: the buys of a first allocation
    cut to one cash budget (less CASH_BUFFER), as SellsFirst sends them."""
    jobs, log, _ = daemon(tmp_path, venue)
    dry = decide_once(jobs, execute=False)
    assert dry.orders and all(o.status.value == "new" for o in dry.orders)
    for o in dry.orders:  # a buy cut to the budget says to how much, as --execute's do
        if o.status_message != DRY_RUN:
            assert o.status_message.startswith(f"{DRY_RUN}; cut to {o.request.quantity:.6g} of ")
            assert o.status_message.endswith(" shares to fit the cash")
    assert venue.order_count() == 0 and len(log.load_orders()) == 0
    spent = sum(o.request.quantity * o.request.reference_price for o in dry.orders)
    assert spent <= 100_000 * (1 - CASH_BUFFER) + 1e-6
    real = decide_once(jobs, execute=True)
    log.flush()
    assert venue.order_count() > 0
    assert planned(real) == planned(dry)
    log.close()


def test_once_dry_run_queues_the_buys_behind_the_sells_as_execute_does(tmp_path, venue):
    bought_before(venue, "TQQQ", 60_000.0)  # far above its target: a sell first
    jobs, log, _ = daemon(tmp_path, venue)
    dry = decide_once(jobs, execute=False)
    assert venue.order_count() == 0
    buys = [o for o in dry.orders if o.request.side.value == "buy"]
    assert buys and {o.status_message for o in buys} == {QUEUED}
    real = decide_once(jobs, execute=True)
    assert [s[:2] for s in sides(venue)] == [("TQQQ", "sell")]  # only the sell went out
    assert planned(real) == planned(dry)
    log.close()


def test_live_mode_needs_the_confirmation(tmp_path, venue, capsys):
    from bot.cli import main

    code = main(["run", "--live", "--database", f"sqlite:///{tmp_path / 'x.sqlite'}"])
    assert code == 2
    assert "BOT_LIVE_CONFIRM=yes" in capsys.readouterr().err


def start_and_stop(argv: list[str], env: dict[str, str], log_path, heartbeat=None) -> str:
    """Start the daemon, wait until it has scheduled its jobs, SIGTERM it; its log. With
    `heartbeat`, checks that the daemon beats while it runs and removes it as it stops."""
    with log_path.open("w") as out:
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                text=True)
        deadline = time.monotonic() + 60
        text = ""
        while time.monotonic() < deadline and '"scheduled"' not in text and proc.poll() is None:
            time.sleep(0.1)
            text = log_path.read_text()
        assert '"scheduled"' in text, text
        if heartbeat is not None:
            assert heartbeat.is_file()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log_path.read_text()[-3000:]
    if heartbeat is not None:
        assert not heartbeat.exists()  # `bot health` fails at once, not minutes later
    return log_path.read_text()


def test_daemon_starts_logs_its_account_and_stops_on_sigterm(tmp_path, venue):
    env = {**os.environ, "BOT_LOG_FORMAT": "json", "BOT_HEARTBEAT_FILE": str(tmp_path / "hb")}
    db = f"sqlite:///{tmp_path / 'daemon.sqlite'}"
    argv = [sys.executable, "-m", "bot", "run", "--config", str(CONFIG), "--database", db]
    text = start_and_stop(argv, env, tmp_path / "daemon.log", heartbeat=tmp_path / "hb")
    assert '"mode": "paper"' in text and "PA3FAKE00001" in text and '"equity"' in text
    assert '"stopped"' in text
    assert SECRET not in text and KEY_ID not in text
    health = subprocess.run([sys.executable, "-m", "bot", "health"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60)
    assert health.returncode == 1 and "the daemon is not running" in health.stdout
    log = TradeLog.open(db)
    assert list(log.runs()["status"]) == ["finished"]
    log.close()


@pytest.mark.parametrize("held", ["/v2/assets/{symbol}", "/v2/calendar"])
def test_sigterm_while_the_daemon_connects_ends_its_run_failed_with_the_reason(tmp_path, venue, held):
    """systemd stopping the daemon while it still connects (Alpaca slow or retrying for a
    minute): the default action killed it at once and its run stayed `running` until the
    next start called it abandoned. It now ends failed, saying why, with exit code 143:
    also while it reads Alpaca's calendar to build its timetable, one step later."""
    from tests.fakes import Fault

    waiting = Fault.held(process=False)
    venue.inject("GET", held, waiting)  # the first request at the start, or the calendar's
    env = {**os.environ, "BOT_LOG_FORMAT": "json", "BOT_HEARTBEAT_FILE": str(tmp_path / "hb")}
    db = f"sqlite:///{tmp_path / 'daemon.sqlite'}"
    argv = [sys.executable, "-m", "bot", "run", "--config", str(CONFIG), "--database", db]
    with (tmp_path / "daemon.log").open("w") as out:
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            assert waiting.answered.wait(60), (tmp_path / "daemon.log").read_text()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 143, (tmp_path / "daemon.log").read_text()[-3000:]
        finally:
            waiting.release()
            if proc.poll() is None:
                proc.kill()
    log = TradeLog.open(db)
    assert list(log.runs()["status"]) == ["failed"]
    incidents = log.load_incidents(int(log.runs()["id"].iloc[0]))
    connected = held == "/v2/calendar"  # connected and reconciled: stopped as a started run is
    assert incidents["message"].tolist() == ["stopped by SIGTERM" if connected else "stopped by SIGTERM while starting"]
    log.close()


@pytest.mark.skipif(unit_sandbox.available() is not None,
                    reason=f"no sandbox like the unit's here: {unit_sandbox.available()}")
def test_daemon_starts_and_stops_inside_the_units_sandbox(tmp_path, venue):
    """The daemon as deploy/bot.service runs it: the system read-only but for the trade
    log's folder, the state and cache directories (ProtectSystem=strict, ReadWritePaths),
    no writable-and-executable memory, no home, started in the read-only checkout. It
    connects, reconciles, schedules, beats and stops on SIGTERM with its run finished:
    nothing it does at start needs a folder the unit does not grant."""
    var, state, cache, tmp = (tmp_path / name for name in ("var", "state", "cache", "tmp"))
    for folder in (var, state, cache, tmp):
        folder.mkdir()
    env = {**os.environ, "BOT_LOG_FORMAT": "json", "BOT_HEARTBEAT_FILE": str(state / "heartbeat"),
           "BOT_CACHE_DIR": str(cache), "BOT_DATABASE_URL": f"sqlite:///{var / 'tradelog.sqlite'}",
           "HOME": "/nonexistent", "TMPDIR": str(tmp)}
    argv = [sys.executable, "-m", "bot", "run", "--config", str(CONFIG)]
    text = start_and_stop(unit_sandbox.command(argv, [var, state, cache, tmp]), env,
                          tmp_path / "daemon.log", heartbeat=state / "heartbeat")
    assert "PA3FAKE00001" in text and '"stopped"' in text
    log = TradeLog.open(env["BOT_DATABASE_URL"])
    assert list(log.runs()["status"]) == ["finished"]
    log.close()


def test_a_universe_alpaca_cannot_trade_as_configured_stops_the_start(tmp_path, venue):
    """Alpaca rejects every fractional order of an asset it trades in whole shares only,
    so the position would never be built: the daemon refuses to start, naming the asset
    and the setting, and starts once the config trades whole shares."""
    from bot.config import parse_settings
    from bot.errors import BotError

    venue.not_fractionable = {"TMF"}
    venue.set_now(OPEN_JOB)
    log, run_id = open_log(tmp_path)
    with pytest.raises(BotError, match=r"TMF is not fractionable at Alpaca .*"
                                       r"set rebalance.fractional = false"):
        build_live(SETTINGS, log, run_id, live=False, clock=SimulatedClock(OPEN_JOB),
                   policy=FAST, fred_policy=FAST)
    assert venue.order_count() == 0
    raw = SETTINGS.model_dump(mode="json")
    raw["rebalance"]["fractional"] = False
    whole = parse_settings(raw, "test")
    jobs = build_live(whole, log, run_id, live=False, clock=SimulatedClock(OPEN_JOB),
                      policy=FAST, fred_policy=FAST)
    assert jobs.run("open", jobs.open_job)
    assert [o.data["qty"] for o in venue.orders if float(o.data["qty"]) != int(float(o.data["qty"]))] == []
    venue.not_tradable = {"DIG"}
    with pytest.raises(BotError, match="DIG is not tradable at Alpaca"):
        build_live(whole, log, run_id, live=False, clock=SimulatedClock(OPEN_JOB),
                   policy=FAST, fred_policy=FAST)
    log.close()


def test_the_bars_feed_is_the_configs(tmp_path, venue):
    from bot.config import parse_settings

    raw = SETTINGS.model_dump(mode="json")
    raw["data"]["alpaca_feed"] = "iex"  # not the default: build_live must pass it on
    raw["data"]["alpaca_latest_feed"] = "delayed_sip"
    venue.set_now(OPEN_JOB)
    venue.latest_trades = dict(venue.prices)
    log, run_id = open_log(tmp_path)
    jobs = build_live(parse_settings(raw, "test"), log, run_id, live=False,
                      clock=SimulatedClock(OPEN_JOB), policy=FAST, fred_policy=FAST)
    assert jobs.run("open", jobs.open_job)
    feeds = {r.query.get("feed") for r in venue.calls("GET", "/v2/stocks/bars")}
    assert feeds == {"iex"}
    latest = {r.query.get("feed") for r in venue.calls("GET", "/v2/stocks/trades/latest")}
    assert latest == {"delayed_sip"}
    log.close()


def test_orders_are_sized_on_the_latest_trade_prices(tmp_path, venue):
    venue.latest_trades = {s: p * 1.02 for s, p in venue.prices.items()}
    jobs, log, _ = daemon(tmp_path, venue)
    assert jobs.run("open", jobs.open_job)
    orders = log.load_orders()
    assert len(orders) >= 5
    for row in orders.itertuples():
        assert row.reference_price == pytest.approx(venue.latest_trades[row.symbol])
    # 100k in cash, no positions: the buys spend the targets' share of it at those prices,
    # at most the cash less the 0.5% buffer kept for prices moving after the decision.
    spent = (orders["quantity"] * orders["reference_price"]).sum()
    targets = log.load_targets(int(orders["run_id"].iloc[0]))
    assert spent == pytest.approx(min(100_000 * targets["final"].sum(), 99_500.0), rel=1e-9)
    log.close()


def fetch_on_the_wall_clock(venue):
    """`bot data fetch` asks for bars up to 16 minutes before the wall clock's now, which
    the fake, whose clock stands in 2024, would read as recent SIP data (a free key's
    403): the fetch tests get a paid plan's feed. tests/test_alpaca_data.py checks the
    free key's rule with one clock."""
    venue.sip_allowed = True


def test_data_fetch_writes_a_directory_the_backtest_reads(tmp_path, venue, capsys):
    from bot.cli import main

    fetch_on_the_wall_clock(venue)
    from bot.data.csv_source import load_csv_directory

    venue.daily_bars["IEF"] = venue.daily_bars["TMF"]  # a reference symbol it also fetches
    venue.daily_bars["QQQ"] = venue.daily_bars["TQQQ"]  # an underlying (decay, stress)
    assert main(["data", "fetch", "--start", "2023-01-03", "--data-dir", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert "wrote" in out
    assert (tmp_path / "d" / "prices" / "QQQ.csv").is_file()
    # the other underlyings and the stress rates fund: the fake has no bars for them
    for symbol in ("DIA", "GLD", "TLT"):
        assert f"skipped {symbol} (read only by the decay table and stress tests)" in out
        assert not (tmp_path / "d" / "prices" / f"{symbol}.csv").exists()
    market = load_csv_directory(tmp_path / "d", list(SETTINGS.symbols))
    assert market.prices.dates[0] == np.datetime64("2023-01-03")
    assert set(market.macro) == {"VIX", "T10Y2Y", "USEPUINDXD", "DTB3"}
    i = market.prices.index_of("TQQQ")
    expected = next(b.close for b in venue.daily_bars["TQQQ"] if b.day == dt.date(2024, 6, 3))
    row = int(np.searchsorted(market.prices.dates, np.datetime64("2024-06-03")))
    assert market.prices.close[row, i] == pytest.approx(expected, rel=1e-9)


def test_a_fred_outage_keeps_the_regime_and_still_trades(tmp_path, venue):
    venue.fred.series.clear()  # every download answers 404
    jobs, log, _ = daemon(tmp_path, venue)
    assert jobs.run("open", jobs.open_job)
    assert venue.order_count() > 0  # prices are fine: the strategy trades
    regimes = log.load_regimes(int(log.runs()["id"].iloc[0]))
    assert len(regimes) == 1 and regimes["regime"].iloc[0] == SETTINGS.regime.initial.value
    assert "no data" in regimes["warning"].iloc[0]
    log.close()


def test_with_a_fred_key_the_daemon_reads_fred_through_its_api(tmp_path, venue, monkeypatch):
    """FRED refuses its CSV download to scripts since 2026-05: with FRED_API_KEY the
    daemon's regime job reads every series through the API, and the key is in no log
    line, incident or stored record."""
    fred = venue.fred
    fred.csv_refused = True
    monkeypatch.setenv("FRED_API_KEY", FRED_KEY)
    monkeypatch.setenv("BOT_FRED_API_URL", fred.url)
    jobs, log, _ = daemon(tmp_path, venue)
    assert jobs.run("open", jobs.open_job)
    asked = [c.query["series_id"] for c in fred.calls("GET", "/fred/series/observations")]
    assert sorted(asked) == sorted(FRED_IDS.values())
    assert fred.calls("GET", "/graph/fredgraph.csv") == []
    regimes = log.load_regimes(int(log.runs()["id"].iloc[0]))
    assert len(regimes) == 1 and not regimes["warning"].iloc[0]  # every input known
    log.close()
    with sqlite3.connect(tmp_path / "paper.sqlite") as db:
        dump = "\n".join(db.iterdump())
    assert FRED_KEY not in dump


def test_data_fetch_writes_inside_the_clone_by_default(tmp_path, venue, capsys):
    """A fresh clone has no ../shared: `bot data fetch` fills the clone's own data/ (which
    git ignores), and a backtest of the same config then reads real bars, not synthetic."""
    import shutil

    from bot.cli import main

    fetch_on_the_wall_clock(venue)
    from bot.config import load_settings, resolve_data_dir
    from bot.data.history import load_history

    config = tmp_path / "clone" / "config" / CONFIG.name
    config.parent.mkdir(parents=True)
    shutil.copy(CONFIG, config)
    venue.daily_bars["IEF"] = venue.daily_bars["TMF"]
    assert main(["data", "fetch", "--config", str(config), "--start", "2023-01-03"]) == 0
    assert str(tmp_path / "clone" / "data") in capsys.readouterr().out
    assert (tmp_path / "clone" / "data" / "prices" / "TQQQ.csv").is_file()
    settings = load_settings(config)
    market = load_history(settings, resolve_data_dir(settings, config))
    assert not market.synthetic and market.prices.dates[0] == np.datetime64("2023-01-03")


def test_every_live_job_commits_its_records_before_it_returns(tmp_path, venue):
    """The durability promise: a paper or live job's orders and state are in the database
    (seen through a second connection) when the job returns, not at a later batch."""
    from bot.daemon.commits import EVERY_JOB

    bought_before(venue, "TQQQ", 60_000.0)
    jobs, log, clock = daemon(tmp_path, venue)
    assert jobs.ctx.commits is EVERY_JOB
    reader = TradeLog.open_readonly(f"sqlite:///{tmp_path / 'paper.sqlite'}")
    assert jobs.run("open", jobs.open_job)
    sent = reader.load_orders()
    assert len(sent) >= 5 and set(sent["client_order_id"]) == set(log.load_orders()["client_order_id"])
    assert reader.load_state("diversified_leverage", "paper")["last_rebalance_day"] == "2024-11-25"
    venue.fill_open()
    clock.set(OPEN_JOB + dt.timedelta(minutes=2))
    assert jobs.run("poll", jobs.poll_job)
    assert len(reader.load_fills(int(sent["run_id"].iloc[0]))) == 1  # the sell's fill
    reader.close()
    log.close()


def test_a_second_trading_bot_is_refused_and_a_dead_ones_run_is_closed(tmp_path, venue, capsys,
                                                                       monkeypatch):
    """`bot once --execute` while another process trades the strategy is refused before it
    records a run; a dry run may still look. Once the lock is free, the start marks the
    run a killed bot left 'running' failed, with an `abandoned` incident."""
    from bot.cli import main
    from bot.daemon.instance import InstanceLock
    from bot.daemon.live import instance_name

    venue.set_now(OPEN_JOB)
    monkeypatch.setattr("bot.daemon.live.WallClock", lambda: SimulatedClock(OPEN_JOB))
    db = f"sqlite:///{tmp_path / 'paper.sqlite'}"
    log, dead_run = open_log(tmp_path)  # a bot that died without finishing its run
    held = InstanceLock.acquire(log, "paper", instance_name(SETTINGS), wait=0)
    args = ["once", "--config", str(CONFIG), "--database", db]
    code = main([*args, "--execute"])
    assert code == 2
    assert "another bot is already trading 'diversified_leverage' (paper)" in capsys.readouterr().err
    assert list(log.runs()["status"]) == ["running"]  # nothing recorded by the refused one
    assert main(args) == 0  # a dry run sends nothing: allowed, and it closes nothing
    assert list(log.runs()["status"]) == ["running", "finished"]

    held.release()
    assert main([*args, "--execute"]) == 0
    runs = log.runs()
    assert list(runs["status"]) == ["failed", "finished", "finished"]
    incidents = log.load_incidents()
    assert list(incidents["kind"]) == ["abandoned"] and list(incidents["run_id"]) == [dead_run]
    log.close()


def closed_port_url() -> str:
    """http://127.0.0.1:<port> with nothing listening: the port was bound, then let go."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_a_job_that_cannot_reach_alpaca_records_which_url_and_how_often_it_tried(
    tmp_path, venue, capsys
):
    """Alpaca goes away while the daemon runs: the job's failure (its log line and its
    incident) names the API, its scheme://host:port, the tries and the cause."""
    jobs, log, _clock = daemon(tmp_path, venue)
    venue.stop()  # the port is free again: connections are refused
    assert not jobs.run("open", jobs.open_job)
    message = log.load_incidents()["message"].iloc[-1]
    assert message == (f"BrokerError: account: could not reach Alpaca trading API at "
                       f"{venue.url} after 4 tries: connection refused")
    logged = capsys.readouterr()
    assert f"could not reach Alpaca trading API at {venue.url}" in logged.out + logged.err
    assert SECRET not in message and KEY_ID not in message
    log.close()


def test_a_start_that_cannot_reach_alpaca_names_the_url_not_the_keys(
    tmp_path, venue, capsys, monkeypatch
):
    """`bot once` (as `bot run`) connects first: an unreachable trading API ends the
    command with one line naming it, and the run it recorded is marked failed."""
    from bot.cli import main

    url = closed_port_url()
    monkeypatch.setenv("APCA_API_BASE_URL", url)
    monkeypatch.setitem(build_live.__kwdefaults__, "policy", FAST)
    db = f"sqlite:///{tmp_path / 'paper.sqlite'}"
    code = main(["once", "--config", str(CONFIG), "--database", db])
    err = capsys.readouterr().err
    assert code == 2
    assert (f"error: asset TQQQ: could not reach Alpaca trading API at {url} after 4 tries: "
            "connection refused") in err, err
    assert SECRET not in err and KEY_ID not in err and "Traceback" not in err
    log = TradeLog.open(db)
    assert list(log.runs()["status"]) == ["failed"]
    # Why, in the trade log too (before: only the stderr line said it).
    (incident,) = log.load_incidents().itertuples()
    assert incident.kind == "start_failed" and f"could not reach Alpaca trading API at {url}" in incident.message
    assert SECRET not in incident.message
    log.close()


def test_once_before_the_open_says_its_buys_are_queued_not_sent(tmp_path, venue, capsys,
                                                                monkeypatch):
    """Before: `bot once --execute` at 08:00 New York printed "decision ... (SENT)" with
    every buy `new`, though none had reached Alpaca (they wait for the daemon's first poll
    in the session), and the dry run showed the same table with nothing to tell them apart."""
    from bot.cli import main

    before_open = dt.datetime(2024, 11, 26, 13, 0, tzinfo=UTC)  # 08:00 New York
    venue.set_now(before_open)
    monkeypatch.setattr("bot.daemon.live.WallClock", lambda: SimulatedClock(before_open))
    monkeypatch.setenv("COLUMNS", "200")
    args = ["once", "--config", str(CONFIG), "--database", f"sqlite:///{tmp_path / 'p.sqlite'}"]
    for extra, title in (([], "(dry run: not sent; 5 would be queued)"),
                         (["--execute"], "(SENT 0, QUEUED 5)")):
        assert main([*args, *extra]) == 0
        out = capsys.readouterr().out
        assert f"decision on 2024-11-25 {title}" in out, out
        rows = [line for line in out.splitlines() if "-rb-" in line]
        assert len(rows) == 5 and all("│ queued │" in row for row in rows), out
        assert "queued until the market opens" in out and "bot run" in out
    assert venue.order_count() == 0  # nothing reached Alpaca


def test_once_in_the_session_sends_and_says_so(tmp_path, venue, capsys, monkeypatch):
    from bot.cli import main

    venue.set_now(OPEN_JOB)
    monkeypatch.setattr("bot.daemon.live.WallClock", lambda: SimulatedClock(OPEN_JOB))
    monkeypatch.setenv("COLUMNS", "200")
    args = ["once", "--config", str(CONFIG), "--database", f"sqlite:///{tmp_path / 'p.sqlite'}"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "(dry run: not sent)" in out and "│ not sent │" in out and "queued" not in out
    assert main([*args, "--execute"]) == 0
    out = capsys.readouterr().out
    assert "(SENT)" in out and "queued" not in out and venue.order_count() == 5


def test_data_fetch_names_a_symbol_alpaca_does_not_know_and_writes_nothing(tmp_path, venue, capsys):
    """Before: `error: alpaca:TMF [symbol]: no bars in the answer`, with no word of why or
    where the symbol came from."""
    from bot.cli import main

    fetch_on_the_wall_clock(venue)

    del venue.daily_bars["TMF"]
    assert main(["data", "fetch", "--config", str(CONFIG), "--start", "2023-01-03",
                 "--data-dir", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert ("error: alpaca:TMF [symbol]: no bars in the answer: Alpaca has no sip bars of it "
            f"since 2023-01-03 (a symbol it does not know? it is in the universe of {CONFIG})") in err
    assert not (tmp_path / "d").exists()


def test_data_fetch_from_a_day_not_yet_closed_says_so(tmp_path, venue, capsys):
    """Before: a --start after the last closed session got Alpaca's empty answer, reported
    as `alpaca:TQQQ [symbol]: no bars in the answer`, as if TQQQ were unknown."""
    from bot.cli import main

    start = dt.date.today() + dt.timedelta(days=30)
    assert main(["data", "fetch", "--start", str(start), "--data-dir", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert f"error: --start {start} is after the last closed session, " in err
    assert "no daily bar to download yet" in err and "TQQQ" not in err
    assert not venue.requests and not (tmp_path / "d").exists()


def test_data_fetch_from_a_later_start_does_not_drop_older_days_without_replace(tmp_path, venue, capsys):
    """Before: `bot data fetch --start <later>` on a folder fetched from earlier rewrote
    every file with the shorter history, dropping the older days without a word."""
    from bot.cli import main

    fetch_on_the_wall_clock(venue)

    venue.daily_bars["IEF"] = venue.daily_bars["TMF"]  # a reference symbol it also fetches
    data = str(tmp_path / "d")
    assert main(["data", "fetch", "--start", "2023-01-03", "--data-dir", data]) == 0
    before = (tmp_path / "d" / "prices" / "TQQQ.csv").read_text()
    capsys.readouterr()
    assert main(["data", "fetch", "--start", "2024-01-02", "--data-dir", data]) == 2
    err = capsys.readouterr().err
    assert "starts 2023-01-03, before --start 2024-01-02" in err
    assert "fetch with --start 2023-01-03, or pass --replace" in err
    assert (tmp_path / "d" / "prices" / "TQQQ.csv").read_text() == before
    assert main(["data", "fetch", "--start", "2023-01-03", "--data-dir", data]) == 0  # refresh
    assert main(["data", "fetch", "--start", "2024-01-02", "--data-dir", data, "--replace"]) == 0
    first = (tmp_path / "d" / "prices" / "TQQQ.csv").read_text().splitlines()[1]
    assert first.startswith("2024-01-02,")


def test_data_fetch_keeps_older_files_when_the_source_starts_later(tmp_path, venue, capsys):
    """Alpaca's bars begin in 2016: `bot data fetch --start 2010-01-04` on a folder whose
    files start in 2010 got bars from 2016 and rewrote every file with them, dropping six
    years although the requested start was early enough. Now the files' first days are
    compared with what came back."""
    from bot.cli import main

    fetch_on_the_wall_clock(venue)

    venue.daily_bars["IEF"] = venue.daily_bars["TMF"]
    data = tmp_path / "d"
    assert main(["data", "fetch", "--start", "2023-01-03", "--data-dir", str(data)]) == 0
    path = data / "prices" / "TQQQ.csv"
    lines = path.read_text().splitlines()
    older = lines[:1] + ["2022-12-30,10.0,,,10.0,10.0,"] + lines[1:]  # a day the source lacks
    path.write_text("\n".join(older) + "\n")
    for symbol, bars in venue.daily_bars.items():  # the source's history starts later
        venue.daily_bars[symbol] = [b for b in bars if b.day >= dt.date(2023, 1, 3)]
    capsys.readouterr()
    assert main(["data", "fetch", "--start", "2022-12-01", "--data-dir", str(data)]) == 2
    err = capsys.readouterr().err
    assert f"{path} starts 2022-12-30, but the download of it starts 2023-01-03" in err
    assert "pass --replace to drop those days" in err
    assert path.read_text().splitlines() == older  # nothing rewritten
    assert main(["data", "fetch", "--start", "2022-12-01", "--data-dir", str(data), "--replace"]) == 0
    assert path.read_text().splitlines()[1].startswith("2023-01-03,")


def test_data_fetch_judges_only_the_files_it_rewrites(tmp_path, venue, capsys):
    """Before: a file the fetch never writes (a fund not in the config, a series it does
    not fetch) starting before --start made it refuse, naming that file."""
    from bot.cli import main

    fetch_on_the_wall_clock(venue)
    venue.daily_bars["IEF"] = venue.daily_bars["TMF"]
    data = tmp_path / "d"
    (data / "prices").mkdir(parents=True)
    (data / "macro").mkdir()
    other = "date,close\n2010-01-04,50.0\n"
    (data / "prices" / "AGG.csv").write_text(other)
    (data / "macro" / "CPI.csv").write_text("date,value\n2010-01-04,217.5\n")
    assert main(["data", "fetch", "--start", "2023-01-03", "--data-dir", str(data)]) == 0, (
        capsys.readouterr().err)
    assert (data / "prices" / "AGG.csv").read_text() == other  # untouched


def _fetched_once(tmp_path, venue):
    """A first `bot data fetch` into a new folder; its arguments and its VIX file."""
    from bot.cli import main

    fetch_on_the_wall_clock(venue)
    venue.daily_bars["IEF"] = venue.daily_bars["TMF"]
    data = tmp_path / "d"
    args = ["data", "fetch", "--start", "2023-01-03", "--data-dir", str(data)]
    assert main(args) == 0
    return args, data / "macro" / "VIX.csv"


def test_data_fetch_keeps_a_file_the_download_ends_before(tmp_path, venue, capsys):
    """Before: a download ending earlier than a file (a series FRED stopped publishing,
    a fund the feed no longer serves) rewrote it shorter without a word."""
    from bot.cli import main

    args, vix = _fetched_once(tmp_path, venue)
    before = vix.read_text()
    last = before.splitlines()[-1].split(",")[0]
    fred = venue.fred
    fred.series["VIXCLS"] = [(d, v) for d, v in fred.series["VIXCLS"] if d <= dt.date(2024, 11, 29)]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{vix} ends {last}, but the download of it ends 2024-11-29" in err, err
    assert "pass --replace to drop those days" in err
    assert vix.read_text() == before
    assert main([*args, "--replace"]) == 0
    assert vix.read_text().splitlines()[-1].startswith("2024-11-29,")


def test_data_fetch_drops_a_value_fred_withdrew(tmp_path, venue, capsys):
    """The live store deletes a last observation FRED withdrew (its answer covers the
    day, with "." for a value), but `bot data fetch` refused the same answer as a
    download ending earlier than the file until --replace. It now drops the day too,
    saying so; a series whose answer stops earlier is still refused (the test above)."""
    from bot.cli import main

    args, vix = _fetched_once(tmp_path, venue)
    before = vix.read_text().splitlines()
    *kept, (last, _value) = venue.fred.series["VIXCLS"]
    assert before[-1].startswith(f"{last},")
    venue.fred.series["VIXCLS"] = [*kept, (last, None)]  # withdrawn: "." on its day
    capsys.readouterr()
    assert main(args) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert f"VIX: FRED withdrew its value of {last} (its answer covers through {last}" in out
    assert f"dropped from {vix}" in out
    assert vix.read_text().splitlines() == before[:-1]


def test_data_fetch_writes_its_files_as_one_set(tmp_path, venue, capsys, monkeypatch):
    """The universe, then each supporting fund, were written one call after another: a
    failure at QQQ's file left the universe's files new and the rest old. Now nothing
    changes unless every file was written, and a stop among the renames leaves a marker
    that the backtest's loader refuses."""
    import tempfile

    from bot.cli import main
    from bot.data.csv_source import load_csv_directory
    from bot.data.file_set import INCOMPLETE_MARKER

    fetch_on_the_wall_clock(venue)
    venue.daily_bars["IEF"] = venue.daily_bars["TMF"]
    venue.daily_bars["QQQ"] = venue.daily_bars["TQQQ"]
    data = tmp_path / "d"
    args = ["data", "fetch", "--start", "2023-01-03", "--data-dir", str(data)]
    assert main(args) == 0
    before = {p.name: p.read_text() for p in (data / "prices").glob("*.csv")}
    for symbol in ("TQQQ", "QQQ"):  # a split since: every adjusted close is halved
        venue.daily_bars[symbol] = [DailyBar(b.day, b.open / 2, b.high / 2, b.low / 2, b.close / 2)
                                    for b in venue.daily_bars[symbol]]
    real_mkstemp = tempfile.mkstemp

    def disk_full_at_qqq(*a, prefix="", **kw):
        if prefix.startswith(".QQQ.csv"):
            raise OSError(28, "No space left on device", kw.get("dir"))
        return real_mkstemp(*a, prefix=prefix, **kw)

    monkeypatch.setattr(tempfile, "mkstemp", disk_full_at_qqq)
    assert main(args) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert {p.name: p.read_text() for p in (data / "prices").glob("*.csv")} == before
    assert not list(data.rglob(".*.tmp")) and not (data / INCOMPLETE_MARKER).exists()
    monkeypatch.setattr(tempfile, "mkstemp", real_mkstemp)

    real_replace, renames = os.replace, []

    def killed_at_the_second_rename(src, dst):
        if os.path.basename(dst) != INCOMPLETE_MARKER:  # the marker's own write is not counted
            renames.append(dst)
        if len(renames) == 2 and os.path.basename(dst) != INCOMPLETE_MARKER:
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", killed_at_the_second_rename)
    assert main(args) == 130  # Ctrl-C
    monkeypatch.setattr(os, "replace", real_replace)
    with pytest.raises(BotError, match="interrupted `bot data fetch` left this folder half updated"):
        load_csv_directory(data, list(SETTINGS.symbols))
    capsys.readouterr()
    assert main(args) == 0  # run again: whole
    assert not (data / INCOMPLETE_MARKER).exists()
    load_csv_directory(data, list(SETTINGS.symbols))


def test_once_after_the_close_waits_for_the_final_daily_bar(tmp_path, venue):
    """Market data is asked for up to 16 minutes before now: until then today's bar
    misses the last minutes and the closing auction, so `bot once` decides on the
    previous close, as before the close."""
    from bot.daemon.once import decision_day

    jobs, log, _ = daemon(tmp_path, venue)
    close = dt.datetime(2024, 11, 26, 21, 0, tzinfo=UTC)  # Tuesday 16:00 New York
    assert [str(decision_day(jobs, close + dt.timedelta(minutes=m))) for m in (-1, 1, 15, 16, 180)] == [
        "2024-11-25", "2024-11-25", "2024-11-25", "2024-11-26", "2024-11-26",
    ]
    log.close()
