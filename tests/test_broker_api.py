"""The Broker API adapter (many client accounts) against the fake Broker API on 127.0.0.1,
through the real alpaca-py BrokerClient: the single-account daemon's order, restart and
reconcile rules hold per account."""

from __future__ import annotations

import base64
import datetime as dt
import logging

import numpy as np
import pytest

from bot.accounts import AccountRegistry, AccountSpec, account_order_prefix
from bot.broker.base import BrokerError
from bot.broker.broker_api import BrokerPlatform
from bot.broker.sequenced import SellsFirst
from bot.config import RebalanceSettings
from bot.daemon.reconcile import reconcile
from bot.net import RetryPolicy
from bot.planner import plan_orders
from bot.secrets import (
    Credentials,
    LiveModeError,
    SecretsError,
    load_broker_credentials,
    load_broker_endpoint,
)
from bot.store import TradeLog
from bot.types import OrderStatus
from tests.fakes.alpaca_broker_server import BROKER_KEY, BROKER_SECRET, FakeBrokerAPI, Fault
from tests.test_store import start

UTC = dt.UTC
OPEN_WED = dt.datetime(2024, 11, 27, 15, 0, tzinfo=UTC)  # Wednesday 10:00 New York
SYMBOLS = ("SPY", "AGG")
PRICES = np.array([500.0, 100.0])
ORDERS_ROUTE = "/v1/trading/accounts/{account_id}/orders"


@pytest.fixture
def fake():
    server = FakeBrokerAPI(now=OPEN_WED)
    server.prices = {"SPY": 500.0, "AGG": 100.0}
    server.start()
    yield server
    server.stop()


def policy(sleeps, attempts: int = 3) -> RetryPolicy:
    return RetryPolicy(attempts=attempts, timeout=5.0, base_delay=0.1, max_delay=1.0,
                       sleep=sleeps.append, rng=lambda: 0.5)


def connect(fake, sleeps, **kwargs) -> BrokerPlatform:
    return BrokerPlatform.connect(
        Credentials(BROKER_KEY, BROKER_SECRET), base_url=fake.url, policy=policy(sleeps), **kwargs
    )


def plan(account_id: str, targets=(0.5, 0.4), equity=10_000.0, shares=(0.0, 0.0)):
    """The planner's orders for one account on 2024-11-26's decision."""
    prefix = account_order_prefix("robo", account_id)
    return plan_orders(
        f"{prefix}-20241126-rb", SYMBOLS, np.array(targets), np.array(shares), PRICES,
        equity, RebalanceSettings(fractional=True), "weekly",
    )


# --- one account through the per-account endpoints ---------------------------------------


def test_each_account_trades_through_its_own_endpoints(fake, sleeps):
    a, b = fake.open_account(cash=10_000), fake.open_account(cash=5_000)
    fake.ledger(b).hold("SPY", 2, 450.0)
    platform = connect(fake, sleeps)
    broker_a, broker_b = platform.account_broker(a), platform.account_broker(b)

    broker_b.refresh()
    assert broker_b.cash() == 5_000 and broker_b.holdings(SYMBOLS).tolist() == [2.0, 0.0]
    assert broker_b.account().account_number == "SB0000000002" and broker_b.paper

    orders = [broker_a.submit(r, OPEN_WED) for r in plan(a)]
    assert [o.status for o in orders] == [OrderStatus.NEW, OrderStatus.NEW]
    assert len(fake.ledger(a).orders) == 2 and fake.ledger(b).orders == []
    assert broker_b.open_orders() == [] and len(broker_a.open_orders()) == 2

    fake.fill_open()
    fills = [f for _o, f in broker_a.poll(OPEN_WED) if f is not None]
    assert sorted((f.symbol, f.quantity, f.price) for f in fills) == [
        ("AGG", 40.0, 100.0), ("SPY", 10.0, 500.0)]
    broker_a.refresh()
    assert broker_a.holdings(SYMBOLS).tolist() == [10.0, 40.0] and broker_a.cash() == 1_000


def test_client_order_ids_are_deterministic_per_account_and_decision(fake, sleeps):
    a, b = fake.open_account(), fake.open_account()
    ids_a, ids_b = [r.client_order_id for r in plan(a)], [r.client_order_id for r in plan(b)]
    assert ids_a == [r.client_order_id for r in plan(a)]  # same account, same decision
    assert not set(ids_a) & set(ids_b)  # never shared between accounts
    assert ids_a[0] == f"robo-{a}-20241126-rb-SPY-buy" and len(ids_a[0]) <= 128

    # A decision re-sent after a restart finds its orders instead of doubling them.
    for _ in range(2):
        broker = connect(fake, sleeps).account_broker(a)
        sent = [broker.submit(r, OPEN_WED) for r in plan(a)]
        assert all(o.broker_order_id for o in sent)
    assert len(fake.ledger(a).orders) == 2


def test_a_submit_that_failed_after_reaching_the_venue_is_adopted_not_resent(fake, sleeps):
    a = fake.open_account()
    fake.inject("POST", ORDERS_ROUTE, Fault.error(500, process=True))
    broker = connect(fake, sleeps).account_broker(a)
    order = broker.submit(plan(a)[0], OPEN_WED)
    assert order.status is OrderStatus.NEW and order.broker_order_id
    assert len(fake.ledger(a).orders) == 1
    assert len(fake.calls("POST", ORDERS_ROUTE)) == 1  # looked up, not re-sent


def test_a_429_on_submit_is_retried_after_the_lookup_proves_it_absent(fake, sleeps):
    a = fake.open_account()
    fake.inject("POST", ORDERS_ROUTE, Fault.error(429, retry_after=0.5))
    order = connect(fake, sleeps).account_broker(a).submit(plan(a)[0], OPEN_WED)
    assert order.broker_order_id and len(fake.ledger(a).orders) == 1
    assert len(fake.calls("POST", ORDERS_ROUTE)) == 2 and sleeps == [0.5]


def test_reads_retry_5xx_and_the_gateways_rate_limit(fake, sleeps):
    a = fake.open_account(cash=1234)
    fake.inject("GET", "/v1/trading/accounts/{account_id}/account",
                Fault.error(503), Fault.error(429, retry_after=0.2))
    assert connect(fake, sleeps).account_broker(a).account().cash == 1234
    assert len(sleeps) == 2

    fake.rate_limit(per_second=1, burst=1)
    sleeps.clear()
    broker = connect(fake, sleeps, ).account_broker(a)
    broker.account()  # the one token
    with pytest.raises(BrokerError, match="HTTP 429"):
        broker.account()  # recorded sleeps do not wait for the bucket to refill
    assert len(sleeps) == 2


def test_an_unknown_account_and_bad_keys_are_named(fake, sleeps):
    with pytest.raises(BrokerError, match="account: HTTP 404"):
        connect(fake, sleeps).account_broker("8f2c1e5a-0b7d-4c3e-9a61-2d5f0e8b7c44").account()
    wrong = BrokerPlatform.connect(Credentials(BROKER_KEY, "not-the-secret-0000"),
                                   base_url=fake.url, policy=policy(sleeps))
    a = fake.open_account()
    with pytest.raises(BrokerError, match="HTTP 401.*check the API keys") as failed:
        wrong.account_broker(a).account()
    assert "not-the-secret" not in str(failed.value)


def test_requests_carry_basic_auth_and_keys_never_reach_the_log(fake, sleeps, caplog, capsys):
    from bot.logs import configure_logging

    configure_logging("DEBUG", "json")
    a = fake.open_account()
    caplog.set_level(logging.DEBUG)
    fake.inject("POST", ORDERS_ROUTE, Fault.error(500, process=True))
    fake.inject("GET", "/v1/trading/accounts/{account_id}/account", Fault.error(503))
    platform = connect(fake, sleeps)
    broker = platform.account_broker(a)
    broker.submit(plan(a)[0], OPEN_WED)
    broker.account()
    sent = fake.calls("POST", ORDERS_ROUTE)[0].headers["Authorization"]
    assert sent == "Basic " + base64.b64encode(f"{BROKER_KEY}:{BROKER_SECRET}".encode()).decode()
    logged = caplog.text + "".join(capsys.readouterr())
    assert "order_adopted_after_error" in logged and "http_retry" in logged  # it did log
    for secret in (BROKER_SECRET, BROKER_KEY, sent.split()[1]):
        assert secret not in logged and secret not in repr(broker) and secret not in repr(platform)


# --- one call for every account's positions ---------------------------------------------


def test_positions_of_every_account_come_from_one_call(fake, sleeps):
    accounts = [fake.open_account(cash=1_000) for _ in range(5)]
    for i, account in enumerate(accounts[:3]):
        fake.ledger(account).hold("SPY", i + 1, 400.0)
    platform = connect(fake, sleeps)
    snapshot = platform.prefetch_positions()
    assert snapshot.as_of == OPEN_WED
    assert snapshot.quantities() == {a: {"SPY": float(i + 1)} for i, a in enumerate(accounts[:3])}

    brokers = [platform.account_broker(a, snapshot) for a in accounts]
    for broker in brokers:
        broker.refresh()
    assert [b.holdings(SYMBOLS)[0] for b in brokers] == [1.0, 2.0, 3.0, 0.0, 0.0]
    assert len(fake.calls("GET", "/v1/accounts/positions")) == 1
    assert fake.calls("GET", "/v1/trading/accounts/{account_id}/positions") == []

    brokers[0].refresh()  # later refreshes read the account's own, current positions
    assert len(fake.calls("GET", "/v1/trading/accounts/{account_id}/positions")) == 1


def test_an_account_read_without_the_batch_snapshot_reads_its_own_positions(fake, sleeps):
    """A worker that took a batch's prefetch handed it, by default, to every later view of
    an account: a close or poll after another worker process traded the account valued
    it on the positions of the last close (cash after the buy, no shares: a tenth of its
    equity). Only a batch's first plan is given the snapshot now."""
    a = fake.open_account(cash=1_000)
    platform = connect(fake, sleeps)
    snapshot = platform.prefetch_positions()
    fake.ledger(a).hold("SPY", 18, 400.0)  # bought meanwhile by another worker process
    broker = platform.account_broker(a)
    broker.refresh()
    assert broker.holdings(SYMBOLS)[0] == 18.0
    planned = platform.account_broker(a, snapshot)  # the batch's first plan: as of the close
    planned.refresh()
    assert planned.holdings(SYMBOLS)[0] == 0.0


def test_a_last_read_is_reused_once_and_never_after_an_order(fake, sleeps):
    a = fake.open_account(cash=10_000)
    platform = connect(fake, sleeps)
    view = platform.account_client(a)
    broker = platform.broker_for(view)
    broker.refresh()
    view.reuse_last_read()
    broker.refresh()  # answered from the last read
    assert len(fake.calls("GET", "/v1/trading/accounts/{account_id}/account")) == 1
    broker.refresh()  # once only
    assert len(fake.calls("GET", "/v1/trading/accounts/{account_id}/account")) == 2
    view.reuse_last_read()
    broker.submit(plan(a)[0], OPEN_WED)  # the account changed: read it again
    broker.refresh()
    assert len(fake.calls("GET", "/v1/trading/accounts/{account_id}/account")) == 3
    assert broker.cash() < 10_000


def test_every_attempt_takes_a_token_from_the_throttle(fake, sleeps):
    a = fake.open_account()
    tokens: list[int] = []
    fake.inject("GET", "/v1/trading/accounts/{account_id}/account", Fault.error(503))
    broker = connect(fake, sleeps, throttle=lambda: tokens.append(1)).account_broker(a)
    broker.account()
    assert len(tokens) == 2  # the failed attempt and its retry


# --- restart and reconcile, per account ---------------------------------------------------


def test_restart_reconciles_each_account_on_its_own(fake, sleeps, tmp_path):
    """Account A's order filled while the platform was down; account B sent an order the
    log never recorded. Each account's reconcile records what happened to its own orders
    only, tagged with its account, and the fills once."""
    a, b = fake.open_account(cash=10_000), fake.open_account(cash=10_000)
    log = TradeLog.open(f"sqlite:///{tmp_path / 'platform.sqlite'}")
    registry = AccountRegistry(log.engine)
    acc = {x: registry.add(AccountSpec(x, "balanced"), OPEN_WED) for x in (a, b)}
    start(log, mode="paper", started_at=OPEN_WED)
    platform = connect(fake, sleeps)
    with log.recording_for(acc[a].id):
        for order in (platform.account_broker(a).submit(r, OPEN_WED) for r in plan(a)):
            log.order(order)
        log.positions(dt.date(2024, 11, 26), {"SPY": (0.0, 500.0), "AGG": (0.0, 100.0)})
    with log.recording_for(acc[b].id):  # B's last snapshot already shows what it will hold
        log.positions(dt.date(2024, 11, 26), {"SPY": (0.0, 500.0), "AGG": (40.0, 100.0)})
    log.flush()
    unrecorded = platform.account_broker(b).submit(plan(b)[1], OPEN_WED)  # crash before the log
    fake.fill_open()  # while down: A's orders and B's fill

    log.close()
    log = TradeLog.open(f"sqlite:///{tmp_path / 'platform.sqlite'}")
    start(log, mode="paper", started_at=OPEN_WED + dt.timedelta(hours=1))
    platform = connect(fake, sleeps)
    found = {}
    for x in (a, b):
        broker = SellsFirst(platform.account_broker(x))
        with log.recording_for(acc[x].id):
            found[x] = reconcile(log, broker, account_order_prefix("robo", x), SYMBOLS,
                                 OPEN_WED + dt.timedelta(hours=1), "paper")
            for order, fill in broker.poll(OPEN_WED + dt.timedelta(hours=1)):
                log.execution(order, fill, OPEN_WED + dt.timedelta(hours=1))
    log.flush()

    assert found[a] == [
        f"order {r.client_order_id}: log says new, broker says filled" for r in plan(a)
    ] + ["position SPY: last snapshot 0, broker holds 10", "position AGG: last snapshot 0, broker holds 40"]
    assert found[b] == [  # and nothing of A's snapshot
        f"order {unrecorded.request.client_order_id} filled at the broker was missing from the log: adopted",
    ]
    orders = log.load_orders()
    assert dict(zip(orders["client_order_id"], orders["account_id"], strict=True)) == {
        **{r.client_order_id: acc[a].id for r in plan(a)},
        unrecorded.request.client_order_id: acc[b].id,
    }
    assert set(orders["status"]) == {"filled"}
    with log.engine.connect() as conn:
        import sqlalchemy as sa

        fills = conn.execute(sa.text("SELECT client_order_id, account_id FROM fills")).all()
    assert sorted(fills) == sorted(
        [(r.client_order_id, acc[a].id) for r in plan(a)]
        + [(unrecorded.request.client_order_id, acc[b].id)]
    )
    log.close()


def test_sells_go_first_per_account(fake, sleeps):
    a = fake.open_account(cash=0)
    fake.ledger(a).hold("SPY", 10, 500.0)
    broker = SellsFirst(connect(fake, sleeps).account_broker(a))
    orders = plan(a, targets=(0.5, 0.5), equity=5_000.0, shares=(10.0, 0.0))
    sent = [broker.submit(r, OPEN_WED) for r in orders]
    assert [o.status_message for o in sent][1].startswith("queued")
    assert [o.data["side"] for o in fake.ledger(a).orders] == ["sell"]
    fake.fill_open()
    broker.poll(OPEN_WED)
    assert [o.data["side"] for o in fake.ledger(a).orders] == ["sell", "buy"]


# --- keys and endpoints -------------------------------------------------------------------


def test_broker_keys_come_from_the_environment_masked():
    env = {"APCA_BROKER_API_KEY": "CK1234567890ABCD", "APCA_BROKER_API_SECRET": "s3cr3t-value"}
    creds = load_broker_credentials(env)
    assert creds.key_id == "CK1234567890ABCD" and "s3cr3t" not in repr(creds)
    with pytest.raises(SecretsError, match="APCA_BROKER_API_SECRET is not set"):
        load_broker_credentials({"APCA_BROKER_API_KEY": "x"})


@pytest.mark.parametrize(
    ("env", "live", "expected"),
    [
        ({}, False, ("https://broker-api.sandbox.alpaca.markets", True)),
        ({"BOT_LIVE_CONFIRM": "yes"}, True, ("https://broker-api.alpaca.markets", False)),
        ({"APCA_BROKER_API_URL": "http://127.0.0.1:8123/v1/"}, False, ("http://127.0.0.1:8123", True)),
    ],
)
def test_the_sandbox_is_the_default_and_live_needs_the_opt_in(env, live, expected):
    assert load_broker_endpoint(env, live=live) == expected


@pytest.mark.parametrize(
    ("env", "live", "message"),
    [
        ({}, True, "BOT_LIVE_CONFIRM=yes"),
        ({"APCA_BROKER_API_URL": "https://BROKER-API.alpaca.markets."}, False,
         "is the live endpoint but live trading was not requested"),
        ({"APCA_BROKER_API_URL": "http://broker-api.sandbox.alpaca.markets"}, False, "must use https"),
        ({"APCA_BROKER_API_URL": "https://broker-api.sandbox.alpaca.markets", "BOT_LIVE_CONFIRM": "yes"},
         True, "is the paper endpoint"),
        ({"APCA_BROKER_API_URL": "https://evil.example.com"}, False, "not Alpaca's paper endpoint"),
        ({"APCA_BROKER_API_URL": "https://user:pw@broker-api.alpaca.markets"}, False, "not a plain"),
    ],
)
def test_broker_urls_follow_the_trading_url_rule(env, live, message):
    with pytest.raises(LiveModeError, match=message) as refused:
        load_broker_endpoint(env, live=live)
    assert "APCA_BROKER_API_URL" in str(refused.value) or "BOT_LIVE_CONFIRM" in str(refused.value)
    assert "pw@" not in str(refused.value)


def test_from_env_reaches_the_fake_with_the_environment_keys(fake, monkeypatch):
    monkeypatch.setenv("APCA_BROKER_API_KEY", BROKER_KEY)
    monkeypatch.setenv("APCA_BROKER_API_SECRET", BROKER_SECRET)
    monkeypatch.setenv("APCA_BROKER_API_URL", fake.url)
    a = fake.open_account(cash=42)
    platform = BrokerPlatform.from_env()
    assert platform.sandbox and platform.account_broker(a).account().cash == 42


def test_the_fake_holds_ten_thousand_accounts(fake, sleeps):
    """The scale a platform benchmark needs: 10,000 funded accounts, all their positions
    in one call, and any one of them traded by id."""
    fake.record_requests = False
    accounts = [fake.open_account(cash=1_000) for _ in range(10_000)]
    for account in accounts:
        fake.ledger(account).hold("SPY", 1, 450.0)
    platform = connect(fake, sleeps)
    assert len(platform.prefetch_positions().quantities()) == 10_000
    last = platform.account_broker(accounts[-1])
    last.refresh()
    assert last.holdings(SYMBOLS).tolist() == [1.0, 0.0]
    assert last.submit(plan(accounts[-1], equity=1_500.0, shares=(1.0, 0.0))[0], OPEN_WED).broker_order_id
    assert fake.order_count() == 1


def test_random_gateway_errors_are_absorbed_by_the_retries(fake, sleeps):
    a = fake.open_account(cash=7)
    fake.fail_randomly(0.3, 502, seed=3)
    broker = connect(fake, sleeps).account_broker(a)
    assert all(broker.account().cash == 7 for _ in range(20))
    received = fake.calls("GET", "/v1/trading/accounts/{account_id}/account")
    assert len(received) - 20 == len(sleeps) > 0  # each 502 cost one retry, none leaked out
    fake.fail_randomly(1.0, 502)
    with pytest.raises(BrokerError, match="account: HTTP 502"):
        broker.account()


def test_the_engine_decides_and_sends_for_each_account_through_the_platform(fake, sleeps, tmp_path, settings):
    """The one decision path, unchanged, per client account: the same engine step on the
    same market sends each account its own orders (sized on its own cash, ids under its
    own prefix) and records them under its account."""
    from bot.data.synthetic import synthetic_market
    from bot.engine import Engine

    market = synthetic_market(settings.symbols, "2022-01-03", "2024-11-26")
    t = len(market.prices.dates) - 1
    closes = market.prices.select(settings.symbols).close[t]
    fake.prices = dict(zip(settings.symbols, closes.tolist(), strict=True))
    cash = {fake.open_account(cash=100_000): 100_000, fake.open_account(cash=50_000): 50_000}
    log = TradeLog.open(f"sqlite:///{tmp_path / 'platform.sqlite'}")
    registry = AccountRegistry(log.engine)
    start(log, mode="paper", started_at=OPEN_WED)
    platform = connect(fake, sleeps)
    sent = {}
    for broker_id in cash:
        account = registry.add(AccountSpec(broker_id, "config/diversified_leverage.toml"), OPEN_WED)
        with log.recording_for(account.id):
            broker = SellsFirst(platform.account_broker(broker_id))
            engine = Engine(settings, market, broker, log, account_order_prefix("robo", broker_id))
            outcome = engine.step(t, OPEN_WED, closes)
            sent[broker_id] = {o.request.symbol: o.request.quantity for o in outcome.orders}
            log.flush()
    a, b = cash
    assert sent[a] and set(sent[a]) == set(sent[b])  # one decision for both
    assert all(sent[b][s] == pytest.approx(sent[a][s] / 2, abs=1.0) for s in sent[a])
    for broker_id in cash:
        assert all(o.data["client_order_id"].startswith(f"robo-{broker_id}-20241126-")
                   for o in fake.ledger(broker_id).orders)
    orders = log.load_orders()
    accounts = {x.broker_account_id: x.id for x in registry.list()}
    assert {(cid.split("-20241126")[0].removeprefix("robo-"), acc)
            for cid, acc in zip(orders["client_order_id"], orders["account_id"], strict=True)} == {
        (a, accounts[a]), (b, accounts[b])}
    log.close()


def test_the_fake_runs_in_its_own_process_for_benchmarks(tmp_path, sleeps):
    import signal
    import subprocess
    import sys

    from tests.conftest import REPO

    ids = tmp_path / "ids.txt"
    venue = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.alpaca_broker_server", "--accounts", "3",
         "--cash", "2500", "--ids", str(ids)],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )
    try:
        url = venue.stdout.readline().strip()
        accounts = ids.read_text().split()
        platform = BrokerPlatform.connect(
            Credentials(BROKER_KEY, BROKER_SECRET), base_url=url, policy=policy(sleeps)
        )
        assert len(accounts) == 3 and platform.account_broker(accounts[2]).account().cash == 2500
    finally:
        venue.send_signal(signal.SIGTERM)
        assert venue.wait(timeout=10) == 0
