"""Alpaca's Rebalancing API as the alternative to our own orders: profile portfolios,
account subscriptions and the runs Alpaca makes, against the fake Broker API through the
real BrokerClient."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from bot.accounts import AccountRegistry, AccountSpec
from bot.broker.base import BrokerError
from bot.broker.rebalancing import Rebalancer, portfolio_name, to_percentages
from bot.errors import BotError
from bot.store import TradeLog
from bot.types import TargetRow
from tests.fakes.alpaca_broker_server import FakeBrokerAPI, Fault
from tests.test_broker_api import OPEN_WED, connect
from tests.test_store import start

CONSERVATIVE = {"AGG": 0.6, "BND": 0.4}

PORTFOLIOS = "/v1/rebalancing/portfolios"
BALANCED = {"SPY": 0.3, "IWM": 0.2, "BND": 0.3, "VNQ": 0.2}


@pytest.fixture
def fake():
    server = FakeBrokerAPI(now=OPEN_WED)
    server.prices = {"SPY": 500.0, "IWM": 200.0, "BND": 70.0, "VNQ": 90.0, "AGG": 100.0}
    server.start()
    yield server
    server.stop()


@pytest.fixture
def log(tmp_path):
    tradelog = TradeLog.open(f"sqlite:///{tmp_path / 'platform.sqlite'}")
    yield tradelog
    tradelog.close()


@pytest.fixture
def rebalancer(fake, log, sleeps):
    return Rebalancer(connect(fake, sleeps).client, log.engine)


def factor_config(profile: str) -> dict:
    """What runs.config holds of a single-profile robo run (the parts push reads)."""
    return {"strategy": {"name": f"robo_{profile}", "kind": "factor"}, "factor": {"profile": profile}}


def broker_env(monkeypatch, fake) -> None:
    monkeypatch.setenv("APCA_BROKER_API_KEY", fake.key)
    monkeypatch.setenv("APCA_BROKER_API_SECRET", fake.secret)
    monkeypatch.setenv("APCA_BROKER_API_URL", fake.url)


def platform_batch(log: TradeLog) -> int:
    """A platform batch's run as `decide_batch` records it: every profile's targets under
    one run and day, the last-decided profile (conservative) last."""
    from bot.platform.store import DECISIONS, PLATFORM_STRATEGY, StoredDecision, decision_rows

    run_id = start(log, mode="paper", strategy=PLATFORM_STRATEGY, synthetic=False)
    day = dt.date(2024, 11, 22)
    decisions = [StoredDecision(run_id, p, day, f"platform-robo_{p}-20241122-rb", w, None)
                 for p, w in (("balanced", BALANCED), ("conservative", CONSERVATIVE))]
    for d in decisions:
        log.targets(day, d.rebalance_id, [TargetRow(s, w, w, w, None, ("score",)) for s, w in d.weights.items()],
                    "weekly")
    log.flush()
    with log.engine.begin() as conn:
        conn.execute(sa.insert(DECISIONS), decision_rows(run_id, decisions, {"balanced": "h1",
                                                                             "conservative": "h2"}, OPEN_WED))
    return run_id


def pushed(fake) -> dict[str, dict[str, float]]:
    """portfolio name -> symbol (or cash) -> percent, at the fake."""
    return {p["name"]: {w.get("symbol") or w["type"]: w["percent"] for w in p["weights"]}
            for p in fake.portfolios.values()}


def test_targets_become_percentages_that_add_up_to_100():
    assert to_percentages({"SPY": 1 / 3, "AGG": 0.5, "TINY": 0.00004}) == {
        "AGG": Decimal("50.00"), "SPY": Decimal("33.33"), "CASH": Decimal("16.67")}
    assert to_percentages(BALANCED) == {s: Decimal(w * 100).quantize(Decimal("0.01"))
                                        for s, w in sorted(BALANCED.items())}
    with pytest.raises(ValueError, match="target weight of SPY is 1.2"):
        to_percentages({"SPY": 1.2})
    with pytest.raises(ValueError, match="add up to 120.00%"):
        to_percentages({"SPY": 0.6, "AGG": 0.6})
    with pytest.raises(ValueError, match="CASH is not an asset: the cash weight is what the asset weights leave"):
        to_percentages({"CASH": 0.5, "AGG": 0.3})  # would overwrite the computed 70% cash line


def test_a_profiles_portfolio_is_created_once_and_updated_only_on_change(fake, rebalancer, log):
    day = dt.date(2024, 11, 26)
    first = rebalancer.push_targets("balanced", BALANCED, day, OPEN_WED)
    assert first.action == "created"
    (portfolio,) = fake.portfolios.values()
    assert portfolio["name"] == portfolio_name("balanced") and portfolio["id"] == first.portfolio_id
    assert {w["symbol"]: w["percent"] for w in portfolio["weights"]} == {
        "BND": 30.0, "IWM": 20.0, "SPY": 30.0, "VNQ": 20.0}

    assert rebalancer.push_targets("balanced", BALANCED, day, OPEN_WED).action == "unchanged"
    assert fake.calls("PATCH", PORTFOLIOS + "/{portfolio_id}") == []

    moved = {**BALANCED, "SPY": 0.25}  # 5% to cash
    assert rebalancer.push_targets("balanced", moved, day + dt.timedelta(days=7), OPEN_WED).action == "updated"
    weights = {w.get("symbol") or w["type"]: w["percent"] for w in portfolio["weights"]}
    assert weights["SPY"] == 25.0 and weights["cash"] == 5.0 and len(fake.portfolios) == 1
    with log.engine.connect() as conn:
        row = conn.execute(sa.text("SELECT portfolio_id, decided_on, weights FROM rebalancing_portfolios")).one()
    assert row.portfolio_id == first.portfolio_id and str(row.decided_on) == "2024-12-03"


def test_a_portfolio_created_but_not_recorded_is_adopted_not_duplicated(fake, rebalancer):
    fake.inject("POST", PORTFOLIOS, Fault.error(500, process=True))
    with pytest.raises(BrokerError, match="create portfolio leverbot-balanced: HTTP 500"):
        rebalancer.push_targets("balanced", BALANCED, None, OPEN_WED)
    again = rebalancer.push_targets("balanced", BALANCED, None, OPEN_WED)
    assert again.action == "adopted" and len(fake.portfolios) == 1
    assert rebalancer.push_targets("balanced", BALANCED, None, OPEN_WED).action == "unchanged"


def test_a_push_compares_with_the_portfolio_alpaca_holds_not_with_its_record(fake, rebalancer, log):
    """The trade log's row was taken as the portfolio: one edited on Alpaca's dashboard
    (SPY 100%) was reported "unchanged" and its clients traded to weights the engine never
    decided; one deleted there failed every push with a 404 for ever."""
    first = rebalancer.push_targets("balanced", BALANCED, None, OPEN_WED)
    (portfolio,) = fake.portfolios.values()
    portfolio["weights"] = [{"type": "asset", "symbol": "SPY", "percent": 100.0}]
    assert rebalancer.push_targets("balanced", BALANCED, None, OPEN_WED).action == "updated"
    assert {w["symbol"]: w["percent"] for w in portfolio["weights"]} == {
        "BND": 30.0, "IWM": 20.0, "SPY": 30.0, "VNQ": 20.0}

    fake.portfolios.clear()  # deleted at Alpaca
    again = rebalancer.push_targets("balanced", BALANCED, None, OPEN_WED)
    assert again.action == "created" and again.portfolio_id != first.portfolio_id
    assert rebalancer.portfolios() == {"balanced": again.portfolio_id}
    assert rebalancer.push_targets("balanced", BALANCED, None, OPEN_WED).action == "unchanged"


def test_active_accounts_follow_their_profiles_portfolio(fake, rebalancer, log):
    registry = AccountRegistry(log.engine)
    ids = [fake.open_account() for _ in range(3)]
    a, b, c = (registry.add(AccountSpec(x, p), OPEN_WED)
               for x, p in zip(ids, ("balanced", "balanced", "conservative"), strict=True))
    balanced = rebalancer.push_targets("balanced", BALANCED, None, OPEN_WED).portfolio_id

    sync = rebalancer.sync_subscriptions(OPEN_WED)
    assert (sync.subscribed, sync.unsubscribed, sync.unchanged) == (2, 0, 0)
    assert sync.without_portfolio == ["conservative"]
    at_alpaca = {s["account_id"]: s["portfolio_id"] for s in fake.subscriptions.values()}
    assert at_alpaca == {a.broker_account_id: balanced, b.broker_account_id: balanced}
    assert registry.get(a.id).subscription_id in fake.subscriptions

    assert rebalancer.sync_subscriptions(OPEN_WED).unchanged == 2  # nothing to do twice
    registry.close(a.id, OPEN_WED)
    conservative = rebalancer.push_targets("conservative", {"AGG": 1.0}, None, OPEN_WED).portfolio_id
    registry.upsert([AccountSpec(b.broker_account_id, "conservative")], OPEN_WED)
    sync = rebalancer.sync_subscriptions(OPEN_WED)
    assert (sync.subscribed, sync.unsubscribed, sync.unchanged) == (2, 2, 0)
    at_alpaca = {s["account_id"]: s["portfolio_id"] for s in fake.subscriptions.values()}
    assert at_alpaca == {b.broker_account_id: conservative, c.broker_account_id: conservative}
    assert registry.get(a.id).subscription_id is None


def test_alpacas_runs_are_recorded_once_and_kept_current(fake, rebalancer, log):
    registry = AccountRegistry(log.engine)
    mine = registry.add(AccountSpec(fake.open_account(cash=10_000), "balanced"), OPEN_WED)
    stranger = fake.open_account(cash=5_000)  # at Alpaca, not in our registry
    portfolio = rebalancer.push_targets("balanced", BALANCED, None, OPEN_WED).portfolio_id
    rebalancer.sync_subscriptions(OPEN_WED)
    fake.subscriptions["manual"] = {"id": "manual", "account_id": stranger,
                                    "portfolio_id": portfolio, "created_at": "", "last_rebalanced_at": None}
    fake.set_now(dt.datetime(2024, 11, 28, 15, 0, tzinfo=dt.UTC))  # Thanksgiving: orders wait
    runs = fake.run_rebalancing()
    assert {r["status"] for r in runs} == {"IN_PROGRESS"}

    recorded = rebalancer.record_runs(OPEN_WED)
    assert (recorded.new, recorded.updated, recorded.unchanged) == (2, 0, 0)
    assert rebalancer.record_runs(OPEN_WED).unchanged == 2

    fake.set_now(dt.datetime(2024, 11, 29, 15, 0, tzinfo=dt.UTC))
    fake.fill_open()
    for run in runs:  # Alpaca finishes the runs once the orders fill
        run.update(status="COMPLETED_SUCCESS", completed_at=run["created_at"], orders=[
            fake.ledger(run["account_id"]).find(o["id"]).data for o in run["orders"]])
    recorded = rebalancer.record_runs(OPEN_WED)
    assert (recorded.new, recorded.updated) == (0, 2)
    with log.engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT account_id, broker_account_id, status, orders FROM rebalancing_runs ORDER BY id"
        )).all()
    assert [(r.account_id, r.broker_account_id, r.status) for r in rows] == [
        (mine.id, mine.broker_account_id, "COMPLETED_SUCCESS"),
        (None, stranger, "COMPLETED_SUCCESS"),
    ]
    placed = json.loads(rows[0].orders)["placed"]
    assert sorted(o["symbol"] for o in placed) == ["BND", "IWM", "SPY", "VNQ"]
    assert {o["status"] for o in placed} == {"filled"}
    held = fake.ledger(mine.broker_account_id).positions
    assert (held["SPY"].qty, held["IWM"].qty) == (6, 10)  # 30% and 20% of $10,000


def test_bot_rebalancing_pushes_a_runs_targets(fake, log, monkeypatch, capsys):
    from bot.cli import main

    monkeypatch.setenv("APCA_BROKER_API_KEY", fake.key)
    monkeypatch.setenv("APCA_BROKER_API_SECRET", fake.secret)
    monkeypatch.setenv("APCA_BROKER_API_URL", fake.url)
    rows = [TargetRow(s, w, w, w, None, ("factor score",)) for s, w in BALANCED.items()]
    made_up = start(log, mode="replay", config=factor_config("balanced"), synthetic=True)
    log.targets(dt.date(2024, 11, 22), "robo-20241122-rb", rows, "weekly")
    run_id = start(log, mode="paper", config=factor_config("balanced"), synthetic=False)
    log.targets(dt.date(2024, 11, 22), "robo-20241122-rb", rows, "weekly")
    log.flush()
    db = ("--database", str(log.engine.url))
    capsys.readouterr()
    # a synthetic run's weights were decided on made-up prices: never pushed to clients
    assert main(["rebalancing", "push", "--profile", "balanced", "--run", str(made_up), *db]) == 2
    assert f"--run {made_up} traded a SYNTHETIC market" in capsys.readouterr().err
    assert fake.portfolios == {}
    assert main(["rebalancing", "push", "--profile", "balanced", "--run", str(run_id), *db]) == 0
    out = capsys.readouterr().out
    (portfolio,) = fake.portfolios.values()
    assert (f"balanced: portfolio {portfolio['id']} created with the targets of run {run_id} "
            "decided on 2024-11-22") in out
    assert {w["symbol"]: w["percent"] for w in portfolio["weights"]}["SPY"] == 30.0
    database = Path(str(log.engine.url.database))
    stored = b"".join(f.read_bytes() for f in database.parent.glob(database.name + "*"))
    assert portfolio["id"].encode() in stored  # the portfolio row is in what was read
    assert fake.secret.encode() not in stored and fake.key.encode() not in stored

    assert main(["rebalancing", "push", "--profile", "balanced", "--weights", "SPY=0.5,BND=x", *db]) == 2
    assert "--weights: expected SYMBOL=WEIGHT with a weight in 0..1, got 'BND=x'" in capsys.readouterr().err
    assert main(["rebalancing", "push", "--profile", "balanced", "--weights", "SPY=0.3,spy=0.5", *db]) == 2
    assert "--weights: SPY is given twice" in capsys.readouterr().err
    monkeypatch.delenv("APCA_BROKER_API_SECRET")
    assert main(["rebalancing", "subscribe", *db]) == 2
    assert "APCA_BROKER_API_SECRET is not set" in capsys.readouterr().err


def test_push_of_a_platform_run_takes_each_profiles_own_decision(fake, log, monkeypatch, capsys):
    """A batch records every profile's targets under one run and day: each profile gets
    its own decision, not the last-decided profile's."""
    from bot.cli import main

    broker_env(monkeypatch, fake)
    run_id = platform_batch(log)
    db = ("--database", str(log.engine.url))
    for profile in ("balanced", "conservative"):
        assert main(["rebalancing", "push", "--profile", profile, "--run", str(run_id), *db]) == 0
    assert pushed(fake) == {
        "leverbot-balanced": {"BND": 30.0, "IWM": 20.0, "SPY": 30.0, "VNQ": 20.0},
        "leverbot-conservative": {"AGG": 60.0, "BND": 40.0},
    }
    with log.engine.connect() as conn:
        days = conn.execute(sa.text("SELECT DISTINCT decided_on FROM rebalancing_portfolios")).scalars().all()
    assert [str(d) for d in days] == ["2024-11-22"]

    capsys.readouterr()
    assert main(["rebalancing", "push", "--profile", "aggressive", "--run", str(run_id), *db]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: --run {run_id}: the platform batch has no decision for profile aggressive "
        "(it decided: balanced, conservative)")
    assert len(fake.portfolios) == 2


def test_push_of_a_single_profile_run_refuses_another_profile(fake, log, monkeypatch, capsys):
    from bot.cli import main

    broker_env(monkeypatch, fake)
    balanced = start(log, mode="paper", config=factor_config("balanced"), synthetic=False)
    log.targets(dt.date(2024, 11, 22), "robo-20241122-rb",
                [TargetRow(s, w, w, w, None, ("score",)) for s, w in BALANCED.items()], "weekly")
    log.flush()
    leverage = start(log, mode="paper", synthetic=False)  # not a robo run: no factor profile
    db = ("--database", str(log.engine.url))
    capsys.readouterr()
    assert main(["rebalancing", "push", "--profile", "conservative", "--run", str(balanced), *db]) == 2
    assert (f"--run {balanced}: the run traded profile balanced, not conservative; push it with "
            "--profile balanced") in capsys.readouterr().err
    assert main(["rebalancing", "push", "--profile", "balanced", "--run", str(leverage), *db]) == 2
    assert f"--run {leverage}: the run traded no factor profile" in capsys.readouterr().err
    assert fake.portfolios == {}
    assert main(["rebalancing", "push", "--profile", "config/robo_balanced.toml", "--run", str(balanced), *db]) == 0


def test_an_account_the_broker_refuses_does_not_stop_the_others(fake, rebalancer, log):
    registry = AccountRegistry(log.engine)
    first = registry.add(AccountSpec(fake.open_account(), "balanced"), OPEN_WED)
    gone = registry.add(AccountSpec("00000000-0000-4000-8000-000000000001", "balanced"), OPEN_WED)
    last = registry.add(AccountSpec(fake.open_account(), "balanced"), OPEN_WED)
    rebalancer.push_targets("balanced", BALANCED, None, OPEN_WED)

    sync = rebalancer.sync_subscriptions(OPEN_WED)
    assert (sync.subscribed, sync.unsubscribed, sync.unchanged) == (2, 0, 0)
    (failure,) = sync.failed
    assert failure.startswith(f"account {gone.id}: subscribe {gone.broker_account_id}: HTTP 422")
    assert {s["account_id"] for s in fake.subscriptions.values()} == {
        first.broker_account_id, last.broker_account_id}
    assert registry.get(last.id).subscription_id in fake.subscriptions
    again = rebalancer.sync_subscriptions(OPEN_WED)  # the others stay done; the bad one is retried
    assert (again.unchanged, len(again.failed)) == (2, 1)


def test_bot_rebalancing_subscribe_lists_failures_and_exits_1(fake, log, monkeypatch, capsys):
    from bot.cli import main

    broker_env(monkeypatch, fake)
    registry = AccountRegistry(log.engine)
    registry.add(AccountSpec("00000000-0000-4000-8000-000000000001", "balanced"), OPEN_WED)
    registry.add(AccountSpec(fake.open_account(), "balanced"), OPEN_WED)
    db = ("--database", str(log.engine.url))
    assert main(["rebalancing", "push", "--profile", "balanced", "--weights", "SPY=0.6,BND=0.4", *db]) == 0
    capsys.readouterr()
    assert main(["rebalancing", "subscribe", *db]) == 1
    out, err = capsys.readouterr()
    assert "subscriptions: 1 subscribed, 0 unsubscribed, 0 unchanged, 1 failed" in out
    assert "failed: account 1: subscribe 00000000-0000-4000-8000-000000000001: HTTP 422" in err


def test_cash_is_not_a_weights_symbol(fake, log, monkeypatch, capsys):
    from bot.cli import main
    from bot.rebalancing_cli import parse_weights

    with pytest.raises(BotError, match="CASH is not a symbol; the cash weight is what the other weights leave"):
        parse_weights("cash=0.5,AGG=0.3")
    broker_env(monkeypatch, fake)
    capsys.readouterr()
    assert main(["rebalancing", "push", "--profile", "balanced", "--weights", "CASH=0.5,AGG=0.3",
                 "--database", str(log.engine.url)]) == 2
    assert "--weights: 'CASH=0.5': CASH is not a symbol" in capsys.readouterr().err
    assert fake.portfolios == {}
