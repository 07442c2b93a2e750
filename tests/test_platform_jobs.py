"""The platform's weekly decision and per-account jobs, run in this process against the
fake Broker API (through the real alpaca-py BrokerClient), Redis and a SQLite trade log;
tests/test_platform_batch.py runs them on Celery workers. What is proved here: each
profile is decided once and recorded once; every account trades through the daemon's
own engine, planner and sells-first broker; a task stopped at any point resumes without
sending an order twice; a finished task does nothing when delivered again."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections import Counter

import pytest
import redis
import sqlalchemy as sa

from bot.accounts import AccountSpec
from bot.broker.base import BrokerError
from bot.broker.sequenced import QUEUED, SellsFirst
from bot.errors import BotError
from bot.platform import account_jobs, store
from bot.platform.context import WorkerContext
from bot.platform.decision import decide_batch
from bot.platform.lease import Lease, LeasedBudget, LockLost, held
from bot.platform.settings import PlatformSettings
from bot.platform.tasks import is_transient
from bot.platform.throttle import AccountLocks, TokenBucket
from bot.store.tradelog import ClaimTaken
from bot.types import OrderStatus
from tests.conftest import REPO
from tests.fakes.alpaca_broker_server import BROKER_KEY, BROKER_SECRET, FakeBrokerAPI
from tests.platform_rig import DECISION_DAY, VENUE_NOW, require_services, write_market
from tests.test_store import backend_url

LEASE = dt.timedelta(minutes=5)
ORDERS = "/v1/trading/accounts/{account_id}/orders"


@pytest.fixture(scope="session")
def market(tmp_path_factory):
    directory = tmp_path_factory.mktemp("market")
    return directory, write_market(directory)


@pytest.fixture
def venue(market):
    fake = FakeBrokerAPI(now=VENUE_NOW)
    fake.prices = dict(market[1])
    fake.fill_on_submit = 1.0
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def ctx(venue, market, tmp_path, monkeypatch):
    require_services(rabbitmq=False)
    monkeypatch.setenv("APCA_BROKER_API_KEY", BROKER_KEY)
    monkeypatch.setenv("APCA_BROKER_API_SECRET", BROKER_SECRET)
    monkeypatch.setenv("APCA_BROKER_API_URL", venue.url)
    settings = PlatformSettings(queue_name=f"leverbot-test-{uuid.uuid4().hex[:10]}",
                                data=str(market[0]), requests_per_minute=600_000, burst=1000,
                                http_retry_delay=0.01)
    context = WorkerContext(settings, f"sqlite:///{tmp_path / 'platform.sqlite'}")
    yield context
    keys = list(context.redis.scan_iter(f"{settings.queue_name}:*"))
    if keys:
        context.redis.delete(*keys)
    context.engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path):
    yield from backend_url(request, tmp_path)


@pytest.fixture
def ctx_on(ctx, database):
    """The worker context on either trade-log backend."""
    context = WorkerContext(ctx.settings, database)
    yield context
    context.engine.dispose()


def add_accounts(ctx, venue, profiles, cash=100_000.0):
    accounts = []
    for profile in profiles:
        broker_id = venue.open_account(cash=cash)
        accounts.append(ctx.registry.add(AccountSpec(broker_id, profile), VENUE_NOW))
    return accounts


def run_task(ctx, row_id, delivery="d-1", redelivered=False):
    claim = store.claim(ctx.engine, row_id, delivery, redelivered, ctx.clock.now(), LEASE, 10)
    assert claim.verdict == "go", claim
    return account_jobs.rebalance(ctx, claim.row, ctx.registry.get(claim.row.account_id))


def rows(ctx, sql):
    with ctx.engine.connect() as conn:
        return conn.execute(sa.text(sql)).all()


# --- the weekly decision ------------------------------------------------------------------


def test_each_profile_is_decided_once_for_all_its_accounts(ctx, venue):
    add_accounts(ctx, venue, ["conservative", "balanced", "aggressive"] * 4)
    batch = decide_batch(ctx, DECISION_DAY)
    assert batch.created and batch.accounts == 12 and set(batch.decisions) == {
        "conservative", "balanced", "aggressive"}
    # 3 decisions, each recorded once with its reasons (4 assets each), not once per client.
    targets = rows(ctx, "SELECT rebalance_id, count(*) FROM targets GROUP BY rebalance_id")
    assert sorted(targets) == [(f"platform-robo_{p}-20241122-rb", 4)
                               for p in ("aggressive", "balanced", "conservative")]
    reasons = rows(ctx, "SELECT reasons FROM targets LIMIT 1")[0][0]
    assert "score" in reasons and "LP" in reasons

    again = decide_batch(ctx, DECISION_DAY)  # the decision task delivered twice
    assert not again.created and again.run_id == batch.run_id
    assert rows(ctx, "SELECT count(*) FROM targets")[0][0] == 12
    assert rows(ctx, "SELECT count(*) FROM platform_tasks")[0][0] == 12


def test_a_profile_that_cannot_be_decided_fails_alone(ctx, venue, tmp_path):
    """A custom profile's config moved away after its account was registered: the other
    profiles' accounts get their tasks; its account is dead-lettered with the error, an
    incident names the profile, and the batch's summary lists it."""
    custom = tmp_path / "custom_profile.toml"
    custom.write_text((REPO / "config" / "robo_balanced.toml").read_text())
    healthy = add_accounts(ctx, venue, ["balanced", "aggressive"])
    (broken,) = add_accounts(ctx, venue, [str(custom)])
    custom.unlink()
    batch = decide_batch(ctx, DECISION_DAY)
    assert batch.created and set(batch.decisions) == {"balanced", "aggressive"}
    assert batch.accounts == 3 and batch.dead == 1 and list(batch.failed) == [str(custom)]
    assert "file not found" in batch.failed[str(custom)]
    dead = store.dead_letters(ctx.engine, batch.run_id)
    assert [d["account_id"] for d in dead] == [broken.id]
    assert dead[0]["error"].startswith(f"profile {custom} was not decided for 2024-11-22: ConfigError")
    (incident,) = rows(ctx, "SELECT kind, message FROM incidents")
    assert incident[0] == store.PROFILE_FAILED and str(custom) in incident[1]
    for row in store.tasks_of(ctx.engine, batch.run_id, "rebalance", ("pending",)):
        assert run_task(ctx, row.id, f"d-{row.id}")["sent"] > 0
    summary = store.finish_if_complete(ctx.engine, batch.run_id, ctx.clock.now())
    assert (summary.accounts, summary.done, summary.dead) == (3, len(healthy), 1)
    assert summary.as_dict()["failed_profiles"] == batch.failed
    again = decide_batch(ctx, DECISION_DAY)  # delivered again: the same batch, same failure
    assert (again.run_id, again.failed, again.dead) == (batch.run_id, batch.failed, 1)


def test_a_profile_whose_fund_alpaca_cannot_trade_as_configured_fails_alone(ctx, venue):
    """Every account's fractional order of a whole-share fund would be rejected at Alpaca
    (and any order of an inactive one): the profile is not decided, its accounts are
    dead-lettered naming the fund and the setting, and the other profiles trade."""
    venue.not_fractionable = {"BND"}  # balanced's bond fund
    (balanced,) = add_accounts(ctx, venue, ["balanced"])
    add_accounts(ctx, venue, ["aggressive"])
    batch = decide_batch(ctx, DECISION_DAY)
    assert set(batch.decisions) == {"aggressive"} and list(batch.failed) == ["balanced"]
    assert "BND is not fractionable at Alpaca" in batch.failed["balanced"]
    assert "set rebalance.fractional = false" in batch.failed["balanced"]
    (dead,) = store.dead_letters(ctx.engine, batch.run_id)
    assert dead["account_id"] == balanced.id and "BND is not fractionable" in dead["error"]
    assert venue.order_count() == 0


def test_a_profile_failing_half_way_through_its_decision_records_nothing(ctx, venue, monkeypatch):
    from bot.engine import Engine

    add_accounts(ctx, venue, ["balanced", "aggressive"])
    real = Engine.decide_targets

    def fails_after_recording(self, t, reason):
        decision = real(self, t, reason)  # its targets are in the buffer now
        if "aggressive" in reason:
            raise BotError("the LP found no solution")
        return decision

    monkeypatch.setattr(Engine, "decide_targets", fails_after_recording)
    batch = decide_batch(ctx, DECISION_DAY)
    assert list(batch.failed) == ["aggressive"] and set(batch.decisions) == {"balanced"}
    assert {r for (r,) in rows(ctx, "SELECT DISTINCT rebalance_id FROM targets")} == {
        "platform-robo_balanced-20241122-rb"}
    assert [i for (i,) in rows(ctx, "SELECT instance FROM strategy_state")] == ["platform-robo_balanced"]


@pytest.mark.parametrize("published", [False, True], ids=["unrecorded", "waiting"])
def test_two_decisions_of_one_day_at_once_make_one_batch(ctx_on, venue, monkeypatch, published, capsys):
    """Both look for the day's batch before either commits (the scheduler's decision and
    one published by hand): the first commit is the batch, the second delivery returns
    it, and its own run is closed as superseded. Whether or not the publish recorded the
    decision as waiting: the first claim takes that row over, the second finds it taken."""
    import threading

    from bot.platform import decision

    ctx = ctx_on
    add_accounts(ctx, venue, ["balanced", "aggressive"])
    if published:
        assert store.record_published(ctx.engine, DECISION_DAY, ctx.mode, VENUE_NOW)
    real, barrier, seen = decision.batch_of_day, threading.Barrier(2, timeout=60), threading.local()

    def both_look_first(*args):
        found = real(*args)
        if not getattr(seen, "looked", False):
            seen.looked = True
            barrier.wait()
        return found

    monkeypatch.setattr(decision, "batch_of_day", both_look_first)
    batches = []
    threads = [threading.Thread(target=lambda: batches.append(decide_batch(ctx, DECISION_DAY)))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(batches) == 2 and batches[0].run_id == batches[1].run_id
    assert sorted(b.created for b in batches) == [False, True]
    winner = batches[0].run_id
    assert rows(ctx, "SELECT DISTINCT run_id FROM platform_decisions") == [(winner,)]
    assert rows(ctx, "SELECT run_id, count(*) FROM platform_tasks GROUP BY run_id") == [(winner, 2)]
    assert rows(ctx, "SELECT run_id, day FROM platform_batches")[0][0] == winner
    assert rows(ctx, "SELECT count(*) FROM platform_batches")[0][0] == 1
    assert store.waiting_decisions(ctx.engine) == []
    (loser,) = rows(ctx, f"SELECT id, status FROM runs WHERE id <> {winner}")
    assert loser[1] == "failed"
    shown = store.summarize(ctx.engine, loser[0])  # `bot platform status` says why
    assert shown.superseded_by == winner and shown.shown_status == f"superseded by run {winner}"
    assert store.summarize(ctx.engine, winner).shown_status == "running"
    assert store.latest_batch(ctx.engine, ctx.mode) == winner
    # The status command's summary line is the batch's, not the newer superseded run's
    # (before: "batch <loser>: 0 of 0 accounts done").
    from bot.cli import main

    url = ctx.engine.url.render_as_string(hide_password=False)
    assert main(["platform", "status", "--database", url]) == 0
    out = capsys.readouterr().out
    assert f"batch {winner}: 0 of 2 accounts done" in out and f"superseded by run {winner}" in out
    assert rows(ctx, "SELECT count(*) FROM targets")[0][0] == 8  # the loser's were dropped


def test_a_decide_that_died_before_its_batch_is_closed_as_superseded(ctx, venue, monkeypatch, capsys):
    """A decide whose worker died (or whose database connection dropped) after starting
    its run and before committing the batch left the run 'running' with no task. The
    poll round used to close it as a batch 'finished' with 0 accounts, even a decide
    still at work; now only batches are closed, and a dead decide is closed as
    superseded by the day's batch once it is older than the grace."""
    from bot.platform import decision

    add_accounts(ctx, venue, ["balanced"])
    real, real_end = decision._decide_profile, decision._end_run

    def connection_lost(*args, **kwargs):
        raise sa.exc.OperationalError("SELECT 1", {}, Exception("server closed the connection"))

    monkeypatch.setattr(decision, "_decide_profile", connection_lost)
    with pytest.raises(sa.exc.OperationalError):  # transient: the task is retried
        decide_batch(ctx, DECISION_DAY)
    ((closed, status, summary),) = rows(ctx, "SELECT id, status, summary FROM runs")
    assert status == "failed" and "server closed the connection" in summary  # its own end
    # The database gone for good (or the worker killed): the run cannot be closed.
    monkeypatch.setattr(decision, "_end_run", connection_lost)
    with pytest.raises(sa.exc.OperationalError):
        decide_batch(ctx, DECISION_DAY)
    ((orphan, status),) = rows(ctx, f"SELECT id, status FROM runs WHERE id <> {closed}")
    assert status == "running"
    assert store.running_batches(ctx.engine, ctx.mode) == []  # not a batch: never 'finished'
    monkeypatch.setattr(decision, "_decide_profile", real)
    monkeypatch.setattr(decision, "_end_run", real_end)
    batch = decide_batch(ctx, DECISION_DAY)  # the decision delivered again
    assert batch.created and batch.run_id != orphan
    assert store.running_batches(ctx.engine, ctx.mode) == [batch.run_id]
    now = ctx.clock.now()
    assert store.close_interrupted_decides(ctx.engine, ctx.mode, now) == []  # within the grace
    later = now + store.DECIDE_GRACE + dt.timedelta(seconds=1)
    assert store.close_interrupted_decides(ctx.engine, ctx.mode, later) == [orphan]
    assert store.close_interrupted_decides(ctx.engine, ctx.mode, later) == []  # once
    shown = store.summarize(ctx.engine, orphan)
    assert shown.status == "failed" and shown.shown_status == f"superseded by run {batch.run_id}"
    ((kind, message),) = rows(ctx, f"SELECT kind, message FROM incidents WHERE run_id = {orphan}")
    assert kind == store.INTERRUPTED_DECIDE and f"run {batch.run_id} is the day's batch" in message
    assert store.summarize(ctx.engine, batch.run_id).status == "running"
    from bot.cli import main

    assert main(["platform", "status", "--database", str(ctx.engine.url)]) == 0
    assert f"batch {batch.run_id}: 0 of 1 accounts done" in capsys.readouterr().out
    assert main(["platform", "status", "--database", str(ctx.engine.url), "--run", "99"]) == 2
    assert "run 99 is not in this trade log" in capsys.readouterr().err
    assert main(["platform", "status", "--database", str(ctx.engine.url), "--limit", "0",
                 "--format", "json"]) == 0  # 0: all, as every other listing
    listed = json.loads(capsys.readouterr().out)
    assert sorted(r["run"] for r in listed) == sorted([orphan, closed, batch.run_id])


def test_a_decide_whose_commit_went_through_before_its_connection_dropped_stays_the_batch(
    ctx, venue, monkeypatch
):
    """The connection drops while COMMIT succeeds at the server: the decide sees an error,
    but its run is the day's batch and must stay 'running' (it would never be summarized
    if closed as failed); the retry finds it and publishes its tasks."""
    from bot.store.tradelog import TradeLog

    add_accounts(ctx, venue, ["balanced"])
    real = TradeLog.flush

    def committed_then_lost(self, *args, **kwargs):
        real(self, *args, **kwargs)
        if kwargs.get("claim") is not None:
            raise sa.exc.OperationalError("COMMIT", {}, Exception("connection lost"))

    monkeypatch.setattr(TradeLog, "flush", committed_then_lost)
    with pytest.raises(sa.exc.OperationalError):
        decide_batch(ctx, DECISION_DAY)
    monkeypatch.setattr(TradeLog, "flush", real)
    ((run_id, status),) = rows(ctx, "SELECT id, status FROM runs")
    assert status == "running" and store.batch_of_day(ctx.engine, DECISION_DAY, ctx.mode) == run_id
    again = decide_batch(ctx, DECISION_DAY)
    assert not again.created and again.run_id == run_id and again.accounts == 1


def test_accounts_trade_their_profiles_decision_on_their_own_cash(ctx, venue):
    small, large = add_accounts(ctx, venue, ["balanced", "balanced"])
    venue.ledger(small.broker_account_id).cash = venue.ledger(small.broker_account_id).cash / 4
    batch = decide_batch(ctx, DECISION_DAY)
    weights = batch.decisions["balanced"].weights
    for row in store.tasks_of(ctx.engine, batch.run_id, "rebalance"):
        outcome = run_task(ctx, row.id, f"d-{row.id}")
        assert outcome["rebalance"] == "initial allocation" and outcome["sent"] == outcome["planned"]
    for account, cash in ((small, 25_000.0), (large, 100_000.0)):
        held = {s: float(p.qty) * venue.prices[s] for s, p in venue.ledger(account.broker_account_id).positions.items()}
        for symbol, weight in weights.items():
            assert float(held.get(symbol, 0)) == pytest.approx(weight * cash, rel=0.006, abs=60)
    orders = rows(ctx, "SELECT account_id, client_order_id, status, status_message FROM orders")
    assert {o[2] for o in orders} == {"filled"} and {o[3] for o in orders} == {account_jobs.SENT}
    assert all(cid.startswith("platform-") and str(acc) for acc, cid, _s, _m in orders)
    assert {acc for acc, *_ in orders} == {small.id, large.id}
    fills = rows(ctx, "SELECT account_id, count(*) FROM fills GROUP BY account_id")
    assert sorted(fills) == sorted(Counter(o[0] for o in orders).items())
    # Nothing recorded per account that the profile's decision already holds.
    assert rows(ctx, "SELECT count(*) FROM targets")[0][0] == 4
    # The broker requests an account costs (the budget's unit): its trade account, its
    # open orders once (a sell to wait for?), one POST per order; every account's
    # positions came from one call, and the send phase sized its buys on the cash its
    # plan was made on instead of asking again.
    per_account = Counter((r.method, r.route) for r in venue.requests
                          if r.path.startswith(f"/v1/trading/accounts/{small.broker_account_id}/"))
    assert per_account == {("GET", "/v1/trading/accounts/{account_id}/account"): 1,
                           ("GET", ORDERS): 1, ("POST", ORDERS): 2}
    assert len(venue.calls("GET", "/v1/accounts/positions")) == 1


# --- exactly once -------------------------------------------------------------------------


class Killed(BaseException):
    """A worker killed mid-task (not an Exception: nothing may catch it on the way out)."""


def _killed_after_the_first_order(ctx, venue, monkeypatch):
    """A balanced account holding IWM (which balanced sells) whose rebalance task's
    worker dies after the plan's first order went out: (ledger, task row, the client
    order ids sent)."""
    (account,) = add_accounts(ctx, venue, ["balanced"], cash=20_000.0)
    ledger = venue.ledger(account.broker_account_id)
    ledger.hold("IWM", 300, venue.prices["IWM"])  # balanced decides IWM 0: all of it is sold
    batch = decide_batch(ctx, DECISION_DAY)
    (row,) = store.tasks_of(ctx.engine, batch.run_id, "rebalance")
    real_submit, calls = SellsFirst.submit, []

    def dies_after_first(self, request, now):
        if calls:
            raise Killed("SIGKILL")
        calls.append(request.client_order_id)
        return real_submit(self, request, now)

    with monkeypatch.context() as patched, pytest.raises(Killed):
        patched.setattr(SellsFirst, "submit", dies_after_first)
        run_task(ctx, row.id, "d-1")
    return ledger, row, calls


def test_a_task_killed_while_sending_resumes_and_sends_each_order_once(ctx, venue, monkeypatch):
    """The account holds what the decision sells, so its plan has sells and buys. The
    worker dies after the first order went out; the task delivered again adopts that one,
    sends the rest once, and records every order once."""
    ledger, row, calls = _killed_after_the_first_order(ctx, venue, monkeypatch)
    planned = rows(ctx, "SELECT client_order_id, side, status_message FROM orders ORDER BY id")
    assert len(planned) >= 3 and {m for *_, m in planned} == {account_jobs.PLANNED}
    assert [o.data["client_order_id"] for o in ledger.orders] == calls  # the sell went out

    # RabbitMQ delivers the task again: the same id, flagged redelivered.
    outcome = run_task(ctx, row.id, "d-1", redelivered=True)
    assert outcome == {"resumed": "send", "sent": len(planned) - 1, "adopted": 1,
                       "statuses": {"filled": len(planned) - 1}}
    at_venue = [o.data["client_order_id"] for o in ledger.orders]
    assert sorted(at_venue) == sorted(cid for cid, *_ in planned)  # each planned order once
    posts = [r.body["client_order_id"] for r in venue.calls("POST", ORDERS)]
    assert len(posts) == len(set(posts)) == len(planned)  # never re-sent, not even to meet a 422
    recorded = rows(ctx, "SELECT status, status_message FROM orders")
    assert Counter(recorded) == Counter({("filled", account_jobs.SENT): len(planned) - 1,
                                         ("filled", account_jobs.SENT_BEFORE): 1})
    fills = rows(ctx, "SELECT client_order_id, count(*) FROM fills GROUP BY client_order_id")
    assert len(fills) == len(planned) and all(n == 1 for _cid, n in fills)
    assert ledger.cash >= 0 and not ledger.positions.get("IWM")
    assert store.get_task(ctx.engine, row.id).status == "done"


def test_a_task_killed_while_sending_then_superseded_adopts_what_went_out(ctx, venue, monkeypatch):
    """The worker died after the plan's first order went out, and the task came back
    only after a newer decision was published: it does not trade, but the order that went
    out is adopted and its fill recorded (it was closed as 'not sent' while Alpaca filled
    it, and the account's trade log missed a sale)."""
    ledger, row, calls = _killed_after_the_first_order(ctx, venue, monkeypatch)
    planned = rows(ctx, "SELECT count(*) FROM orders")[0][0]
    assert store.record_published(ctx.engine, DECISION_DAY + dt.timedelta(days=7), ctx.mode, VENUE_NOW)
    outcome = run_task(ctx, row.id, "d-1", redelivered=True)
    assert outcome["adopted"] == 1 and outcome["not_sent"] == planned - 1
    assert "superseded" in outcome["skipped"]
    assert [o.data["client_order_id"] for o in ledger.orders] == calls  # nothing more sent
    recorded = dict(rows(ctx, "SELECT client_order_id, status FROM orders"))
    assert recorded.pop(calls[0]) == "filled"
    assert set(recorded.values()) == {"canceled"}
    assert rows(ctx, f"SELECT count(*) FROM fills WHERE client_order_id = '{calls[0]}'")[0][0] == 1


def test_a_task_killed_before_its_plan_was_recorded_starts_again(ctx, venue, monkeypatch):
    (account,) = add_accounts(ctx, venue, ["aggressive"])
    batch = decide_batch(ctx, DECISION_DAY)
    (row,) = store.tasks_of(ctx.engine, batch.run_id, "rebalance")

    def killed(*_args, **_kwargs):
        raise Killed("SIGKILL before the plan's commit")

    with monkeypatch.context() as patched, pytest.raises(Killed):
        patched.setattr(account_jobs, "set_phase", killed)
        run_task(ctx, row.id)
    assert rows(ctx, "SELECT count(*) FROM orders")[0][0] == 0 and not venue.order_count()
    outcome = run_task(ctx, row.id, redelivered=True)
    assert outcome["sent"] == outcome["planned"] == venue.order_count() > 0


def test_a_task_delivered_after_it_finished_does_nothing(ctx, venue):
    add_accounts(ctx, venue, ["conservative"])
    batch = decide_batch(ctx, DECISION_DAY)
    (row,) = store.tasks_of(ctx.engine, batch.run_id, "rebalance")
    run_task(ctx, row.id, "d-1")
    requests = len(venue.requests)
    for redelivered in (False, True):
        claim = store.claim(ctx.engine, row.id, "d-1", redelivered, ctx.clock.now(), LEASE, 10)
        assert claim.verdict == "done"
    assert len(venue.requests) == requests


def test_a_copy_of_a_running_task_waits_a_redelivery_takes_over(ctx, venue):
    add_accounts(ctx, venue, ["balanced"])
    batch = decide_batch(ctx, DECISION_DAY)
    (row,) = store.tasks_of(ctx.engine, batch.run_id, "rebalance")
    now = ctx.clock.now()
    assert store.claim(ctx.engine, row.id, "d-1", False, now, LEASE, 3).verdict == "go"
    assert store.claim(ctx.engine, row.id, "d-1", False, now, LEASE, 3).verdict == "busy"
    assert store.claim(ctx.engine, row.id, "d-2", True, now, LEASE, 3).verdict == "busy"
    taken = store.claim(ctx.engine, row.id, "d-1", True, now, LEASE, 3)
    assert taken.verdict == "go" and taken.row.attempts == 2
    later = now + LEASE + dt.timedelta(seconds=1)  # its worker stopped answering
    assert store.claim(ctx.engine, row.id, "d-3", False, later, LEASE, 3).verdict == "go"
    assert store.claim(ctx.engine, row.id, "d-3", True, later, LEASE, 3).verdict == "exhausted"


def test_the_account_lock_is_taken_back_only_by_a_redelivery_of_its_task(ctx):
    locks = AccountLocks(ctx.redis, ctx.namespace, lease=30)
    first = locks.acquire(7, "task-a")
    assert first and first.startswith("task-a#")
    assert not locks.acquire(7, "task-b") and not locks.acquire(7, "task-b", redelivered=True)
    assert not locks.acquire(7, "task-a")  # a copy of the task while it runs
    second = locks.acquire(7, "task-a", redelivered=True)  # its worker died, or its connection
    assert second and second != first
    locks.release(7, first)  # the first execution ends after all: it frees nothing
    locks.release(7, "task-b#x")  # not the holder: nothing happens
    assert not locks.acquire(7, "task-b")
    locks.release(7, second)
    assert locks.acquire(7, "task-b")


def test_a_lock_release_redis_cannot_take_leaves_the_tasks_outcome_alone():
    """Released in the task's `finally`: Redis down then raised over the task's own
    outcome (a retry already scheduled), which Celery retried a second time. The lock
    lapses after its lease instead."""
    import redis

    gone = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    AccountLocks(gone, "x", lease=30).release(7, "task-a#1")  # no exception


def test_an_execution_taken_over_by_a_redelivery_writes_nothing_more(ctx, venue):
    """RabbitMQ redelivers a message whose connection dropped while its first execution
    goes on (Celery does not stop it): both run. The later one takes the row over; the
    earlier one's plan, done or dead-letter is refused by the fence (before: its plan's
    orders broke the unique client_order_id in the later one's commit, which dead-lettered
    an account that traded, and a done row could be turned dead)."""
    add_accounts(ctx, venue, ["balanced"])
    batch = decide_batch(ctx, DECISION_DAY)
    (row,) = store.tasks_of(ctx.engine, batch.run_id, "rebalance")
    now = ctx.clock.now()
    first = store.claim(ctx.engine, row.id, "d-1", False, now, LEASE, 10)
    second = store.claim(ctx.engine, row.id, "d-1", True, now, LEASE, 10)  # the redelivery
    assert (first.verdict, second.verdict) == ("go", "go")
    account = ctx.registry.get(row.account_id)
    with pytest.raises(ClaimTaken):  # the first execution's plan is not recorded
        account_jobs.rebalance(ctx, first.row, account)
    assert rows(ctx, "SELECT count(*) FROM orders")[0][0] == 0 and not venue.order_count()
    outcome = account_jobs.rebalance(ctx, second.row, account)
    assert outcome["sent"] == outcome["planned"] == venue.order_count() > 0
    assert store.get_task(ctx.engine, row.id).status == "done"
    # The first execution's failure path writes nothing over the finished row either.
    assert store.mark_dead(ctx.engine, first.row, now, "HTTP 503") is False
    assert store.mark_retrying(ctx.engine, first.row, "HTTP 503") is None
    assert store.get_task(ctx.engine, row.id).status == "done"


# --- after the rebalance ------------------------------------------------------------------


# --- the lease: kept while a task works, lapsing when it stops --------------------------


class Ticker:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _claimed_with_lock(ctx, venue, profile="balanced"):
    """A rebalance task claimed by delivery d-1, its account's lock held: (row, locks, token)."""
    add_accounts(ctx, venue, [profile])
    batch = decide_batch(ctx, DECISION_DAY)
    (row,) = store.tasks_of(ctx.engine, batch.run_id, "rebalance")
    claim = store.claim(ctx.engine, row.id, "d-1", False, ctx.clock.now(), LEASE, 10)
    assert claim.verdict == "go"
    locks = AccountLocks(ctx.redis, ctx.namespace, lease=LEASE.total_seconds())
    token = locks.acquire(row.account_id, "d-1")
    assert token
    return claim.row, locks, token


def test_a_working_task_keeps_its_lock_and_claim_a_silent_one_loses_them(ctx, venue):
    """Before: both lapsed one lease after the claim, however alive the task, so a slow
    task (many workers on a small request budget) saw a copy of itself or its account's
    poll run beside it. Now each request renews them once a third of the lease passed."""
    row, locks, token = _claimed_with_lock(ctx, venue)
    start, ticker = row.claimed_at, Ticker()
    wall = {"now": start}
    lease = Lease(locks, row.account_id, token, engine=ctx.engine, row=row,
                  now=lambda: wall["now"], monotonic=ticker)
    assert lease.every == LEASE.total_seconds() / 3
    key = locks.key(row.account_id)

    ticker.t, wall["now"] = 99.0, start + dt.timedelta(seconds=99)
    ctx.redis.pexpire(key, 5_000)
    lease.keep()  # every request: the lock checked and extended; the claim not due yet
    assert store.get_task(ctx.engine, row.id).claimed_at == start
    assert ctx.redis.pttl(key) > LEASE.total_seconds() * 1000 - 5_000

    ticker.t, wall["now"] = 101.0, start + dt.timedelta(seconds=101)
    lease.keep()
    assert store.get_task(ctx.engine, row.id).claimed_at == wall["now"]
    assert ctx.redis.pttl(key) > LEASE.total_seconds() * 1000 - 5_000
    # One lease after the first claim, a copy finds the claim alive, and the lock held.
    past_first = start + LEASE + dt.timedelta(seconds=1)
    assert store.claim(ctx.engine, row.id, "d-2", False, past_first, LEASE, 10).verdict == "busy"
    assert not locks.acquire(row.account_id, "poll-1")

    # Silent for a lease after its last renewal (hung, or its worker gone): taken over.
    ctx.redis.delete(key)  # the lock lapsed (and the copy's own lock came and went)
    silent = wall["now"] + LEASE + dt.timedelta(seconds=1)
    assert store.claim(ctx.engine, row.id, "d-2", False, silent, LEASE, 10).verdict == "go"
    ticker.t = 500.0  # the silent one wakes: its next request raises, as does every later one
    for _ in range(2):
        with pytest.raises(ClaimTaken, match=f"task {row.id} was taken over"):
            lease.keep()
    assert ctx.redis.get(key) is None  # it did not take the lapsed lock back either


def test_a_lease_that_lapsed_or_went_to_a_redelivery_stops_at_the_next_request(ctx, venue):
    """A lapsed lock was taken back by the renewal, so a task that stalled past its lease
    went on with what it knew while another task had had the account meanwhile (a poll
    recorded a fill twice). And a redelivery taking the task over was noticed only when
    the claim was next due, up to a third of a lease later."""
    row, locks, token = _claimed_with_lock(ctx, venue)
    key = locks.key(row.account_id)
    lease = Lease(locks, row.account_id, token, engine=ctx.engine, row=row, now=ctx.clock.now)
    lease.keep()
    ctx.redis.delete(key)  # it lapsed; a poll took it, worked and let it go
    with pytest.raises(LockLost, match="lapsed"):
        lease.keep()
    assert ctx.redis.get(key) is None and not is_transient(ClaimTaken("x"))
    assert is_transient(lease.lost)

    redelivered = locks.acquire(row.account_id, "d-1", redelivered=True)  # RabbitMQ again
    first = Lease(locks, row.account_id, token, engine=ctx.engine, row=row, now=ctx.clock.now)
    with pytest.raises(ClaimTaken, match="later delivery"):  # at once, not when the claim is due
        first.keep()
    assert ctx.redis.get(key).decode() == redelivered  # the redelivery's lock is left alone


def test_a_release_of_queued_buys_never_swallows_a_lost_lease():
    """SellsFirst's poll records a failed release as an incident and goes on to return
    its updates for the trade log; a lost lease went the same way, so a poll that no
    longer held the account recorded fills the new holder recorded too."""
    from types import SimpleNamespace

    class Inner:
        def poll(self, now):
            return []

        def take_reports(self):
            return []

    broker = SellsFirst(Inner(), clock=lambda: SimpleNamespace(is_open=True))
    broker._queue.append(object())
    broker._market_open = lambda now: True
    broker._sells_open = lambda *a: False

    def lost(now, released):
        raise LockLost("account 7's lock was taken by another task")

    broker._release = lost
    with pytest.raises(LockLost):
        broker.poll(VENUE_NOW)


def test_the_platforms_requests_wait_no_longer_than_the_lease_allows(ctx, monkeypatch):
    """A Retry-After of up to 120 s, or a request retrying for its 300 s budget, outlasted
    a lease with nothing renewing it: each is bounded by the lease now, and the data
    client's requests keep the lease of the task making them."""
    from bot.platform.lease import keep_current, request_limits

    assert request_limits(300) == {"max_retry_after": 75.0, "budget": 100.0}
    assert request_limits(3600) == {"max_retry_after": 120.0, "budget": 300.0}
    policy = ctx.broker_platform().client._session.get_adapter("https://").policy
    assert (policy.max_retry_after, policy.budget) == (75.0, 100.0)
    assert isinstance(policy.throttle, LeasedBudget)
    captured = {}
    import bot.data.alpaca as alpaca_data

    monkeypatch.setattr(alpaca_data.AlpacaMarketData, "connect",
                        classmethod(lambda cls, *a, **kw: captured.update(kw) or None))
    monkeypatch.setenv("APCA_API_KEY_ID", "PKTEST")
    monkeypatch.setenv("APCA_API_SECRET_KEY", "x" * 20)
    monkeypatch.setenv("FRED_API_KEY", "f" * 32)
    ctx._alpaca_feed(ctx.profile("balanced").settings)  # a feed over no client: only its policy matters
    assert captured["policy"].throttle is keep_current
    assert (captured["policy"].max_retry_after, captured["policy"].budget) == (75.0, 100.0)


def test_a_task_whose_lock_was_taken_stops_before_its_next_order_and_its_retry_sends_the_rest(
        ctx, venue, monkeypatch):
    """The account's lock is taken by another task after the plan's first order went out
    (the lease ran out unrenewed): the next order's request raises before it is sent, as
    a transient error, and the retry adopts what went out and sends the rest once."""
    (account,) = add_accounts(ctx, venue, ["balanced"], cash=20_000.0)
    venue.ledger(account.broker_account_id).hold("IWM", 300, venue.prices["IWM"])  # sold first
    batch = decide_batch(ctx, DECISION_DAY)
    (row,) = store.tasks_of(ctx.engine, batch.run_id, "rebalance")
    claim = store.claim(ctx.engine, row.id, "d-1", False, ctx.clock.now(), LEASE, 10)
    locks = AccountLocks(ctx.redis, ctx.namespace, lease=LEASE.total_seconds())
    token = locks.acquire(row.account_id, "d-1")
    lease = Lease(locks, row.account_id, token, engine=ctx.engine, row=claim.row, now=ctx.clock.now)
    lease.every = 0.0  # renewed before every request
    real_submit, sent = SellsFirst.submit, []

    def then_the_lock_is_taken(self, request, now):
        order = real_submit(self, request, now)
        sent.append(request.client_order_id)
        ctx.redis.set(locks.key(row.account_id), "poll-9#other")
        return order

    with monkeypatch.context() as patched, held(lease), pytest.raises(LockLost) as stopped:
        patched.setattr(SellsFirst, "submit", then_the_lock_is_taken)
        account_jobs.rebalance(ctx, claim.row, account)
    assert is_transient(stopped.value)
    planned = rows(ctx, "SELECT client_order_id FROM orders")
    assert len(sent) == venue.order_count() == 1 < len(planned)  # nothing sent after the loss

    assert store.mark_retrying(ctx.engine, claim.row, str(stopped.value)) == 1
    ctx.redis.delete(locks.key(row.account_id))  # the other task is done
    outcome = run_task(ctx, row.id, "d-2")
    assert (outcome["adopted"], outcome["sent"]) == (1, len(planned) - 1)
    posts = [r.body["client_order_id"] for r in venue.calls("POST", ORDERS)]
    assert sorted(posts) == sorted(cid for (cid,) in planned)  # each order once


def test_a_long_wait_for_the_request_budget_keeps_the_lease(ctx, venue):
    """A task waiting 250 s for its token (many workers on a small budget) waits in
    slices of a third of the lease, renewing between them."""
    row, locks, token = _claimed_with_lock(ctx, venue)
    ticker, renewals = Ticker(), []
    lease = Lease(locks, row.account_id, token, engine=ctx.engine, row=row,
                  now=lambda: row.claimed_at + dt.timedelta(seconds=ticker.t), monotonic=ticker)
    real_renew = locks.renew
    locks.renew = lambda account_id, held_token: renewals.append(ticker.t) or real_renew(account_id, held_token)

    class Queue:
        def reserve(self) -> float:
            return 250.0

    slept = []

    def sleep(seconds):
        slept.append(seconds)
        ticker.t += seconds

    with held(lease):
        LeasedBudget(Queue(), sleep=sleep)()
    assert slept == [100.0, 100.0, 50.0]
    assert renewals == [0.0, 100.0, 200.0, 250.0]  # the lock: checked and extended each time
    # the claim: at 100 and 200, not at 0 (just claimed) nor at 250 (not due)
    assert store.get_task(ctx.engine, row.id).claimed_at == row.claimed_at + dt.timedelta(seconds=200)
    LeasedBudget(Queue(), sleep=slept.append)()  # outside a task: the bucket's own wait
    assert slept[-1] == 250.0


def _rebalanced_into_a_sell_and_queued_buys(ctx, venue):
    """A balanced account holding IWM far above its target, little cash, no fill on
    submit: its rebalance sends the sell and queues the buys. (account, ledger, batch,
    the task's outcome)."""
    venue.fill_on_submit = 0.0
    (account,) = add_accounts(ctx, venue, ["balanced"], cash=1_000.0)
    ledger = venue.ledger(account.broker_account_id)
    ledger.fill_on_submit = 0.0
    ledger.hold("IWM", 300, venue.prices["IWM"])
    batch = decide_batch(ctx, DECISION_DAY)
    (row,) = store.tasks_of(ctx.engine, batch.run_id, "rebalance")
    return account, ledger, batch, run_task(ctx, row.id)


def test_buys_wait_for_the_sells_and_the_poll_round_sends_them_once(ctx, venue):
    account, ledger, batch, outcome = _rebalanced_into_a_sell_and_queued_buys(ctx, venue)
    assert outcome["statuses"] == {"new": outcome["sent"]}  # the sell is out, the buys queued
    assert [o.data["side"] for o in ledger.orders] == ["sell"]
    assert {m for (m,) in rows(ctx, "SELECT status_message FROM orders WHERE side='buy'")} == {QUEUED}
    assert store.open_order_accounts(ctx.engine) == [account.id]

    assert account_jobs.poll(ctx, batch.run_id, account) == 0  # the sell has not filled
    assert len(ledger.orders) == 1
    venue.fill_open()
    assert account_jobs.poll(ctx, batch.run_id, account) >= 2  # filled; the buys released
    assert sorted(o.data["side"] for o in ledger.orders) == ["buy", "buy", "sell"]
    venue.fill_open()
    account_jobs.poll(ctx, batch.run_id, account)
    account_jobs.poll(ctx, batch.run_id, account)  # nothing more to do, nothing resent
    assert len(ledger.orders) == 3
    assert store.open_order_accounts(ctx.engine) == []
    assert rows(ctx, "SELECT count(*) FROM fills")[0][0] == 3


def test_an_account_closed_while_its_buys_wait_for_the_sells_gets_no_buys(ctx, venue):
    """Its sells were out and its buys queued when the client left: the poll round still
    restored the queue and sent the buys into the closed account once the sells filled.
    Now the sells are followed to their fills and the buys are closed as not sent."""
    account, ledger, batch, _ = _rebalanced_into_a_sell_and_queued_buys(ctx, venue)
    assert [o.data["side"] for o in ledger.orders] == ["sell"]
    closed = ctx.registry.close(account.id, ctx.clock.now())
    venue.fill_open()
    account_jobs.poll(ctx, batch.run_id, closed)
    assert [o.data["side"] for o in ledger.orders] == ["sell"]  # no buy went out
    assert {(s, m) for (s, m) in rows(ctx, "SELECT status, status_message FROM orders WHERE side='buy'")} == {
        ("canceled", "not sent: the account was closed before it went out")}
    assert rows(ctx, "SELECT status FROM orders WHERE side='sell'") == [("filled",)]
    assert store.open_order_accounts(ctx.engine) == []


def test_funds_held_outside_the_accounts_profile_are_sold_into_the_profiles(ctx, venue):
    """A client moved from aggressive to balanced keeps QQQ, which the balanced profile
    does not hold. Its next rebalance sells QQQ first and plans the balanced funds on the
    cash and QQQ's value together (before: QQQ was reported and kept for ever)."""
    (account,) = add_accounts(ctx, venue, ["balanced"], cash=50_000.0)
    ledger = venue.ledger(account.broker_account_id)
    qqq_value = 120 * venue.prices["QQQ"]
    ledger.hold("QQQ", 120, venue.prices["QQQ"])
    batch = decide_batch(ctx, DECISION_DAY)
    (row,) = store.tasks_of(ctx.engine, batch.run_id, "rebalance")
    outcome = run_task(ctx, row.id)
    assert outcome["outside_profile"] == ["QQQ"]
    assert outcome["equity"] == pytest.approx(50_000.0 + qqq_value, rel=1e-6)
    orders = rows(ctx, "SELECT symbol, side, quantity, status, reason FROM orders ORDER BY id")
    (sold,) = [o for o in orders if o[0] == "QQQ"]
    assert (sold[1], float(sold[2]), sold[3]) == ("sell", 120.0, "filled")
    assert "not in profile balanced" in sold[4]
    assert "QQQ" not in ledger.positions
    posted = [r.body["symbol"] for r in venue.calls("POST", ORDERS)]
    assert posted[0] == "QQQ"  # sent first: the buys wait for its proceeds
    weights = batch.decisions["balanced"].weights
    for symbol, weight in weights.items():  # bought with the proceeds too
        held = float(ledger.positions[symbol].qty) * venue.prices[symbol] if symbol in ledger.positions else 0.0
        assert held == pytest.approx(weight * (50_000.0 + qqq_value), rel=0.01, abs=60)
    [(kind, message)] = rows(ctx, "SELECT kind, message FROM incidents")
    assert kind == "positions_outside_profile" and "their sale goes out first" in message


def test_funds_outside_the_profile_are_only_reported_when_selling_is_off(ctx, venue, monkeypatch):
    from dataclasses import replace

    monkeypatch.setattr(ctx, "settings", replace(ctx.settings, sell_outside_profile=False))
    (account,) = add_accounts(ctx, venue, ["balanced"])
    venue.ledger(account.broker_account_id).hold("QQQ", 12, venue.prices["QQQ"])
    batch = decide_batch(ctx, DECISION_DAY)
    (row,) = store.tasks_of(ctx.engine, batch.run_id, "rebalance")
    outcome = run_task(ctx, row.id)
    assert outcome["outside_profile"] == ["QQQ"]
    assert "QQQ" not in {s for (s,) in rows(ctx, "SELECT symbol FROM orders")}
    [(kind, message)] = rows(ctx, "SELECT kind, message FROM incidents")
    assert kind == "positions_outside_profile"
    assert f"account {account.broker_account_id} holds 12 QQQ outside profile balanced" in message
    assert "neither trades nor values them" in message


def test_the_close_records_each_accounts_equity_once(ctx, venue):
    accounts = add_accounts(ctx, venue, ["conservative", "aggressive"])
    batch = decide_batch(ctx, DECISION_DAY)
    for row in store.tasks_of(ctx.engine, batch.run_id, "rebalance"):
        run_task(ctx, row.id, f"d-{row.id}")
    today = VENUE_NOW.date()  # the rebalance's session
    close_rows = store.close_tasks(ctx.engine, batch.run_id, today)
    assert store.close_tasks(ctx.engine, batch.run_id, today) == close_rows  # made once
    for row in close_rows:
        claim = store.claim(ctx.engine, row.id, f"c-{row.id}", False, ctx.clock.now(), LEASE, 3)
        account_jobs.close(ctx, claim.row, ctx.registry.get(row.account_id))
    equity = rows(ctx, "SELECT account_id, equity FROM equity ORDER BY account_id")
    assert [a for a, _ in equity] == [a.id for a in accounts]
    assert all(float(e) == pytest.approx(100_000, rel=0.02) for _a, e in equity)
    assert store.close_tasks(ctx.engine, batch.run_id, today) == []


def test_a_close_run_after_the_next_session_opened_records_nothing(ctx, venue):
    """Workers down overnight: Friday's close task ran on Wednesday (after that morning's
    rebalance) and valued Wednesday's holdings at Friday's closes, an equity point and
    engine state that never were. It is skipped now, with an incident."""
    (account,) = add_accounts(ctx, venue, ["balanced"])
    batch = decide_batch(ctx, DECISION_DAY)
    (row,) = store.close_tasks(ctx.engine, batch.run_id, DECISION_DAY)  # Friday's, Wednesday
    claim = store.claim(ctx.engine, row.id, "c-1", False, ctx.clock.now(), LEASE, 3)
    outcome = account_jobs.close(ctx, claim.row, account)
    assert "the session of 2024-11-25 opened before this task ran" in outcome["skipped"]
    assert rows(ctx, "SELECT count(*) FROM equity")[0][0] == 0
    assert rows(ctx, "SELECT count(*) FROM positions")[0][0] == 0
    assert rows(ctx, "SELECT kind FROM incidents") == [("close_skipped",)]
    assert rows(ctx, f"SELECT status FROM platform_tasks WHERE id={row.id}") == [("done",)]


def test_summary_counts_done_retried_and_dead_and_closes_the_batch(ctx, venue):
    add_accounts(ctx, venue, ["balanced"] * 3)
    batch = decide_batch(ctx, DECISION_DAY)
    first, second, third = store.tasks_of(ctx.engine, batch.run_id, "rebalance")
    run_task(ctx, first.id, "a")
    store.mark_retrying(ctx.engine, second.id, "HTTP 503")
    run_task(ctx, second.id, "b")
    assert store.finish_if_complete(ctx.engine, batch.run_id, ctx.clock.now()) is None
    store.mark_dead(ctx.engine, third.id, ctx.clock.now(), "HTTP 503 (after 5 retries)")
    summary = store.finish_if_complete(ctx.engine, batch.run_id, ctx.clock.now())
    assert (summary.accounts, summary.done, summary.retried, summary.dead, summary.waiting) == (3, 2, 1, 1, 0)
    assert rows(ctx, f"SELECT status FROM runs WHERE id={batch.run_id}") == [("failed",)]
    assert store.finish_if_complete(ctx.engine, batch.run_id, ctx.clock.now()) is None  # once


# --- pieces -------------------------------------------------------------------------------


def test_broker_errors_worth_a_retry_are_told_from_the_rest():
    assert is_transient(BrokerError("account: HTTP 429 42910000: rate limit exceeded"))
    assert is_transient(BrokerError("order x not placed after 4 attempts (last: HTTP 503 down)"))
    assert is_transient(BrokerError("positions: timed out (ReadTimeout)"))
    assert is_transient(BrokerError("account: could not reach Alpaca Broker API at "
                                    "https://broker-api.alpaca.markets after 8 tries: "
                                    "connection refused"))
    assert is_transient(BrokerError("positions: no answer from Alpaca Broker API at "
                                    "https://broker-api.alpaca.markets: read timed out (10 s)"))
    assert is_transient(redis.ConnectionError("gone"))
    assert not is_transient(BrokerError("account: HTTP 404 40410000: account not found"))
    assert not is_transient(BrokerError("account: HTTP 401 -: no (check the API keys)"))
    assert not is_transient(BotError("no daily bar for 2024-11-22"))


def test_the_token_bucket_spaces_requests_at_its_rate(ctx):
    slept = []
    bucket = TokenBucket(ctx.redis, f"{ctx.namespace}:bucket-test", per_second=20, burst=3,
                         sleep=slept.append)
    waits = [bucket.reserve() for _ in range(10)]
    assert waits[:3] == [0, 0, 0]  # the burst
    assert waits[3:] == pytest.approx([0.05 * k for k in range(1, 8)], abs=0.01)
    bucket()
    assert slept and slept[0] == pytest.approx(0.4, abs=0.01)


def test_an_account_reprofiled_after_the_decision_trades_a_profile_the_batch_decided(ctx, venue):
    """The task read the account's current profile: one moved to a profile the batch did
    not decide raised "batch N has no decision for profile ...", which dead-lettered it
    and failed the batch. It is skipped now, saying why; one moved to a profile the batch
    decided trades that decision (of the same close)."""
    staying, leaving = add_accounts(ctx, venue, ["balanced", "aggressive"])
    batch = decide_batch(ctx, DECISION_DAY)
    assert set(batch.decisions) == {"balanced", "aggressive"}
    ctx.registry.upsert([AccountSpec(staying.broker_account_id, "conservative"),
                         AccountSpec(leaving.broker_account_id, "balanced")], VENUE_NOW)
    tasks = {r.account_id: r.id for r in store.tasks_of(ctx.engine, batch.run_id, "rebalance")}

    skipped = run_task(ctx, tasks[staying.id])
    assert "profile changed to conservative" in skipped["skipped"]
    assert "the next batch trades the new profile" in skipped["skipped"]
    assert not venue.ledger(staying.broker_account_id).orders

    traded = run_task(ctx, tasks[leaving.id], "d-2")
    assert traded["sent"] > 0
    bought = {o.data["symbol"] for o in venue.ledger(leaving.broker_account_id).orders}
    balanced = set(ctx.profile("balanced").settings.symbols)
    assert bought <= balanced and bought - set(ctx.profile("aggressive").settings.symbols)
    assert {r[0] for r in rows(ctx, "SELECT status FROM platform_tasks")} == {"done"}


def test_a_task_whose_worker_cannot_reach_the_trade_log_is_retried_not_dropped(monkeypatch):
    """A worker makes its context (the trade log's engine) at its first task: with the
    database unreachable then, the task raised a BotError, which no retry rule covers,
    and the message was acknowledged and gone (a week's decision, a close). It is retried
    with backoff now, and the next delivery finds the database back."""
    from types import SimpleNamespace

    from celery.exceptions import Retry

    from bot.errors import DatabaseUnreachable
    from bot.platform import tasks

    require_services(rabbitmq=False)  # the failures are counted in Redis
    monkeypatch.setattr(tasks, "_settings", PlatformSettings(queue_name="leverbot-test-ctx", data="synthetic"))
    monkeypatch.setattr(tasks, "_database_url", "postgresql+psycopg://u:s3cretPW99@127.0.0.1:1/db")
    monkeypatch.setattr(tasks, "_context", None)

    class Delivery:
        name = "leverbot.platform.decide"
        request = SimpleNamespace(retries=40, id=f"decide-{uuid.uuid4().hex}")  # busy waits too

        def retry(self, countdown: float) -> Retry:
            self.countdown = countdown
            return Retry(when=countdown)

    delivery = Delivery()
    for _ in range(tasks._settings.max_retries):  # its own failures are counted, not its retries
        with pytest.raises(Retry):
            tasks._context_for(delivery)
        assert 0 < delivery.countdown <= tasks._settings.retry_max_delay
    # not for ever: past BOT_PLATFORM_RETRIES it gives up on an error no autoretry rule
    # takes (a raw OperationalError was retried by Celery's for ever); a poll, which the
    # next round publishes again, is not retried at all (its retries would pile up)
    with pytest.raises(DatabaseUnreachable, match="could not be reached"):
        tasks._context_for(delivery)
    assert not isinstance(DatabaseUnreachable("x"), tasks._INFRASTRUCTURE["autoretry_for"])
    with pytest.raises(DatabaseUnreachable):
        tasks._context_for(Delivery(), retried=False)
    redis.Redis.from_url(tasks._settings.redis_url).delete(
        f"leverbot-test-ctx:context-failures:{delivery.request.id}")
    assert tasks.is_transient(DatabaseUnreachable("cannot connect"))
    with pytest.raises(DatabaseUnreachable, match=r"127\.0\.0\.1:1") as refused:
        tasks.context()
    assert "s3cretPW99" not in str(refused.value)


def test_a_bucket_whose_redis_clock_stepped_back_refills_from_then_on(ctx):
    """`at` is only moved forward: after Redis's clock stepped back (NTP, a failover to a
    replica behind), the bucket refilled never again until the clock caught up, and every
    request's wait grew."""
    key = f"{ctx.namespace}:bucket-clock"
    seconds, micros = ctx.redis.time()
    ctx.redis.hset(key, mapping={"tokens": "0", "at": repr(seconds + micros / 1e6 + 3600)})
    bucket = TokenBucket(ctx.redis, key, per_second=20, burst=3)
    assert bucket.reserve() == pytest.approx(0.05, abs=0.01)  # the empty bucket's next token
    time.sleep(0.3)  # six tokens' worth: refilled to its burst
    assert [bucket.reserve() for _ in range(3)] == [0, 0, 0]


def test_one_accounts_malformed_position_fails_no_other_account(ctx, monkeypatch):
    """The prefetch's log line parsed every account's positions to count the accounts:
    a bad quantity of one client failed whichever task took the snapshot, with an error
    naming another client's account."""
    from types import SimpleNamespace

    from bot.broker.broker_api import BrokerPlatform, PositionsSnapshot

    bad = PositionsSnapshot(VENUE_NOW, {"other": [SimpleNamespace(symbol="SPY", qty="")], "mine": []})
    monkeypatch.setattr(BrokerPlatform, "prefetch_positions", lambda _self: bad)
    assert ctx.positions_snapshot(1) is bad and len(bad) == 2
    assert bad.take("mine") == []
    with pytest.raises(BrokerError, match=r"positions\[other\]\[SPY\]\.qty"):
        bad.quantities()


@pytest.mark.parametrize(("url", "shown"), [
    ("amqp://user:pa/s3cretPW99@host:5672//", "amqp://user:***@host:5672//"),
    ("redis://:p@s3cretPW99@host/0", "redis://:***@host/0"),
    ("amqp://guest:s3cretPW99@127.0.0.1:5672//", "amqp://guest:***@127.0.0.1:5672//"),
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ("amqp://user@host//", "amqp://user@host//"),
    ("amqp://host:5672//?x=a@b", "amqp://host:5672//?x=a@b"),
    ("redis://:s3cretPW99@host:6379/0?name=a@b", "redis://:***@host:6379/0?name=a@b"),
    ("amqp://bot:pa?s3cretPW99@rabbit:5672//", "amqp://bot:***@rabbit:5672//"),
    ("redis://:s3cr?etPW99@redis:6379/0", "redis://:***@redis:6379/0"),
])
def test_a_url_is_shown_without_its_password_whatever_it_holds(url, shown):
    from bot.platform.settings import masked_url

    assert masked_url(url) == shown


@pytest.mark.parametrize(("env", "message"), [
    ({"BOT_BROKER_REQUESTS_PER_MINUTE": "fast"}, "BOT_BROKER_REQUESTS_PER_MINUTE: expected a number > 0 and <= 1e+06, got 'fast'"),
    ({"BOT_BROKER_REQUESTS_PER_MINUTE": "0"}, "expected a number > 0"),
    ({"BOT_PLATFORM_RETRIES": "2.5"}, "BOT_PLATFORM_RETRIES: expected a whole number >= 0"),
    ({"BOT_PLATFORM_NAME": "my platform"}, "BOT_PLATFORM_NAME: expected 1-40 letters"),
    ({"BOT_QUEUE_NAME": "a b"}, "BOT_QUEUE_NAME: expected letters"),
    ({"BOT_PLATFORM_LEASE": "0.000001"}, "BOT_PLATFORM_LEASE: expected 90 to 86400 seconds"),
    # a lease past timedelta's range passed the start, then failed every task
    ({"BOT_PLATFORM_LEASE": "1e14"}, "BOT_PLATFORM_LEASE: expected 90 to 86400 seconds"),
    ({"BOT_PLATFORM_LEASE": "nan"}, "BOT_PLATFORM_LEASE: expected 90 to 86400 seconds"),
    ({"BOT_PLATFORM_RETRY_DELAY": "100", "BOT_PLATFORM_RETRY_MAX_DELAY": "1"},
     "BOT_PLATFORM_RETRY_DELAY 100 must not exceed BOT_PLATFORM_RETRY_MAX_DELAY 1"),
    ({"BOT_BROKER_BURST": "1e30"}, "BOT_BROKER_BURST: expected a whole number > 0 and <= 1e+06"),
    ({"BOT_PLATFORM_RETRIES": "1e9"}, "BOT_PLATFORM_RETRIES: expected a whole number >= 0 and <= 100"),
    # a malformed queue or Redis URL: a traceback from Celery, or a client retrying a
    # host named "not%20a%20url" for ever; the password stays out of the message
    ({"BOT_QUEUE_URL": "amqp://guest:s3cretPW99@127.0.0.1:notaport//"},
     "BOT_QUEUE_URL: expected amqp://user:password@host:5672/vhost (or amqps://), got "
     "'amqp://guest:***@127.0.0.1:notaport//'"),
    ({"BOT_QUEUE_URL": "http://127.0.0.1:9/"}, "BOT_QUEUE_URL: expected amqp://"),
    ({"BOT_QUEUE_URL": "not a url"}, "BOT_QUEUE_URL: expected amqp://"),
    ({"BOT_REDIS_URL": "garbage"}, "BOT_REDIS_URL: expected redis://:password@host:6379/0"),
    ({"BOT_REDIS_URL": "redis://:s3cretPW99@redis:notaport/0"}, "'redis://:***@redis:notaport/0'"),
    # the parser quoted the password up to its '#' as a "port": none of it is shown
    ({"BOT_QUEUE_URL": "amqp://leverbot:s3cretPW99#rest@rabbitmq:5672//"}, "a password holding"),
    ({"BOT_PLATFORM_DATA": "alpacaa"}, "BOT_PLATFORM_DATA: expected alpaca, synthetic or a "
                                       "directory of CSV files, got 'alpacaa'"),
])
def test_bad_settings_are_named(env, message):
    import re

    with pytest.raises(BotError, match=re.escape(message)) as refused:
        PlatformSettings.from_env(env)
    assert "s3cretPW99" not in str(refused.value)


@pytest.mark.parametrize("data", ["synthetic", "."])
def test_live_workers_decide_on_alpacas_data_only(data):
    """A live worker with BOT_PLATFORM_DATA=synthetic (or a CSV folder) would have sent
    real orders sized on a made-up market."""
    assert PlatformSettings.from_env({"BOT_PLATFORM_DATA": data}).data == data
    with pytest.raises(BotError, match="live trading decides on Alpaca's market data only"):
        PlatformSettings.from_env({"BOT_PLATFORM_DATA": data}, live=True)


def test_settings_defaults_model_alpacas_published_limit():
    settings = PlatformSettings.from_env({"BOT_BROKER_REQUESTS_PER_MINUTE": "12000"})
    assert settings.requests_per_second == 200 and settings.burst == 200
    assert PlatformSettings.from_env({}).requests_per_minute == 200
    # paper and live never share a queue, locks or a budget unless told to
    assert PlatformSettings.from_env({}).queue_name == "leverbot"
    assert PlatformSettings.from_env({}, live=True).queue_name == "leverbot-live"
    assert PlatformSettings.from_env({"BOT_QUEUE_NAME": "mine"}, live=True).queue_name == "mine"


def test_a_published_decision_waits_until_its_batch_is_claimed(ctx, venue):
    """Published with no worker running: one waiting row per (day, mode) however often it
    is published; the batch's claim takes the row over (its publish time kept), and a
    publish of a day already decided records nothing."""
    add_accounts(ctx, venue, ["balanced"])
    published = VENUE_NOW - dt.timedelta(minutes=3)
    assert store.record_published(ctx.engine, DECISION_DAY, "paper", published)
    assert not store.record_published(ctx.engine, DECISION_DAY, "paper", VENUE_NOW)  # again
    assert store.record_published(ctx.engine, DECISION_DAY, "live", VENUE_NOW)  # another mode
    assert [(w.day, w.mode, w.published_at) for w in store.waiting_decisions(ctx.engine)] == [
        (DECISION_DAY, "paper", published), (DECISION_DAY, "live", VENUE_NOW)]
    assert store.batch_of_day(ctx.engine, DECISION_DAY, "paper") is None
    batch = decide_batch(ctx, DECISION_DAY)
    assert batch.created and store.batch_of_day(ctx.engine, DECISION_DAY, "paper") == batch.run_id
    assert [w.mode for w in store.waiting_decisions(ctx.engine)] == ["live"]
    assert rows(ctx, "SELECT run_id, mode FROM platform_batches ORDER BY id") == [
        (batch.run_id, "paper"), (None, "live")]
    (kept,) = rows(ctx, f"SELECT published_at FROM platform_batches WHERE run_id = {batch.run_id}")
    assert kept[0] is not None
    assert not store.record_published(ctx.engine, DECISION_DAY, "paper", VENUE_NOW)  # decided
    assert len(rows(ctx, "SELECT id FROM platform_batches")) == 2
    assert store.drop_waiting(ctx.engine, DECISION_DAY, "live")
    assert not store.drop_waiting(ctx.engine, DECISION_DAY, "paper")  # a batch stays
    assert rows(ctx, "SELECT run_id FROM platform_batches") == [(batch.run_id,)]


def test_a_decision_a_worker_gives_up_on_waits_no_more(ctx, monkeypatch):
    """The decide task fails for good (no account to decide for): its error is an
    incident, and `bot platform status` no longer shows the decision waiting."""
    from bot.platform import tasks

    monkeypatch.setattr(tasks, "_context", ctx)
    assert store.record_published(ctx.engine, DECISION_DAY, "paper", VENUE_NOW)
    result = tasks.decide.apply(args=[DECISION_DAY.isoformat(), "paper"]).get()
    assert "no active account in the registry" in result["error"]
    assert store.waiting_decisions(ctx.engine) == []
    assert [k for (k,) in rows(ctx, "SELECT kind FROM incidents")] == ["job:decide"]


def test_a_batch_whose_tasks_could_not_be_published_is_published_by_the_retry(ctx, venue, monkeypatch):
    """The batch committed, then publishing its tasks failed (RabbitMQ or Redis gone for
    a moment): the decide task used to fail outside its retry, be acked, and leave every
    account's task pending and never sent. Now the retry finds the batch and publishes."""
    from bot.platform import tasks

    add_accounts(ctx, venue, ["balanced", "aggressive"])
    monkeypatch.setattr(tasks, "_context", ctx)
    published, failures = [], [redis.ConnectionError("Connection refused")]

    def publish_each(task, args, task_id):
        if failures:
            raise failures.pop()
        published.extend(task_id(a) for a in args)

    monkeypatch.setattr(tasks, "publish_each", publish_each)
    result = tasks.decide.apply(args=[DECISION_DAY.isoformat(), "paper"]).get()
    assert result["published"] == 2 and not failures
    (run_id,) = [r for (r,) in rows(ctx, "SELECT run_id FROM platform_batches")]
    assert sorted(published) == sorted(f"rebalance-{run_id}-{t.id}"
                                       for t in store.tasks_of(ctx.engine, run_id, "rebalance"))
    assert rows(ctx, "SELECT count(*) FROM runs")[0][0] == 1  # decided once


def test_a_batch_whose_tasks_were_never_published_is_swept_by_the_poll_round(ctx, venue, monkeypatch):
    """RabbitMQ refused the batch's publish and the decide's retry could not be published
    either (a retry needs RabbitMQ too): the batch was committed with every task pending
    and no message. The poll round publishes tasks idle for 15 minutes again, once per
    15 minutes each; a task that ran is left alone."""
    from kombu.exceptions import OperationalError

    from bot.clock import SimulatedClock
    from bot.platform import tasks

    assert is_transient(OperationalError("connection refused"))  # RabbitMQ: retried
    add_accounts(ctx, venue, ["balanced", "aggressive"])
    batch = decide_batch(ctx, DECISION_DAY)
    first, second = store.tasks_of(ctx.engine, batch.run_id, "rebalance")
    run_task(ctx, first.id)  # this one's message arrived
    published = []
    monkeypatch.setattr(tasks, "publish_each",
                        lambda task, args, task_id: published.extend(task_id(a) for a in args))
    tasks._republish_stranded(ctx, batch.run_id)
    assert published == []  # not idle for long enough
    monkeypatch.setattr(ctx, "clock", SimulatedClock(dt.datetime.now(dt.UTC) + dt.timedelta(minutes=16)))
    tasks._republish_stranded(ctx, batch.run_id)
    assert published == [f"rebalance-{batch.run_id}-{second.id}"]
    tasks._republish_stranded(ctx, batch.run_id)
    assert len(published) == 1  # once per 15 minutes


def test_a_slow_batch_is_not_a_stranded_one(ctx, venue):
    """A large batch takes longer than 15 minutes at the broker's request budget: while
    its tasks are still being claimed, its queue is long, not lost, and nothing is
    published again (a flood of copies would skip the retries' backoff)."""
    add_accounts(ctx, venue, ["balanced"] * 3)
    batch = decide_batch(ctx, DECISION_DAY)
    first, second, third = store.tasks_of(ctx.engine, batch.run_id, "rebalance")
    start = ctx.clock.now()
    assert store.claim(ctx.engine, second.id, "d-2", False, start + dt.timedelta(minutes=10),
                       LEASE, 10).verdict == "go"
    later = start + dt.timedelta(minutes=16)
    quiet = dt.timedelta(minutes=15)
    assert store.stranded_rebalances(ctx.engine, batch.run_id, later, quiet, LEASE) == []
    stalled = start + dt.timedelta(minutes=26)  # no claim for 16 minutes
    assert [r.id for r in store.stranded_rebalances(ctx.engine, batch.run_id, stalled, quiet, LEASE)
            ] == [first.id, third.id]


def test_a_decision_or_batch_overtaken_by_a_newer_decision_does_not_trade(ctx, venue, monkeypatch):
    """Workers down past the next week's decision: both decisions wait in the queue. The
    older one used to trade every account to last week's targets, and the newer one then
    found their orders outstanding. Now the older decision is recorded as superseded and
    a task of an older batch is done without trading."""
    from bot.platform import tasks

    monkeypatch.setattr(tasks, "_context", ctx)
    (account,) = add_accounts(ctx, venue, ["balanced"])
    batch = decide_batch(ctx, DECISION_DAY)
    (row,) = store.tasks_of(ctx.engine, batch.run_id, "rebalance")
    newer = DECISION_DAY + dt.timedelta(days=7)
    assert store.record_published(ctx.engine, newer, ctx.mode, VENUE_NOW)
    outcome = run_task(ctx, row.id)
    assert outcome == {"skipped": f"the decision on the close of {newer} superseded this "
                                  f"batch's, of {DECISION_DAY}"}
    assert not venue.order_count() and store.get_task(ctx.engine, row.id).status == "done"
    older = DECISION_DAY - dt.timedelta(days=7)
    assert store.record_published(ctx.engine, older, ctx.mode, VENUE_NOW)
    result = tasks.decide.apply(args=[older.isoformat(), "paper"]).get()
    assert "was not made" in result["skipped"] and str(newer) in result["skipped"]
    assert store.batch_of_day(ctx.engine, older, ctx.mode) is None
    assert older not in [w.day for w in store.waiting_decisions(ctx.engine)]
    assert ("decision_superseded",) in rows(ctx, "SELECT kind FROM incidents")


def test_dead_lettered_accounts_can_be_published_again_after_an_outage(ctx, venue, monkeypatch, capsys):
    """A broker outage outlasted the retries: the account was dead-lettered and the batch
    ended failed. `bot platform retry-dead --run N` gives it another round; the batch is
    reopened and ends finished once it traded. An account whose profile was not decided
    stays dead."""
    from bot.cli import main
    from bot.platform import tasks

    (account,) = add_accounts(ctx, venue, ["balanced"])
    batch = decide_batch(ctx, DECISION_DAY)
    (row,) = store.tasks_of(ctx.engine, batch.run_id, "rebalance")
    claim = store.claim(ctx.engine, row.id, "d-1", False, ctx.clock.now(), LEASE, 10)
    assert store.mark_dead(ctx.engine, claim.row, ctx.clock.now(), "HTTP 503 (after 5 retries)")
    assert store.finish_if_complete(ctx.engine, batch.run_id, ctx.clock.now()).status == "running"
    assert store.summarize(ctx.engine, batch.run_id).status == "failed"
    published = []
    monkeypatch.setattr(tasks, "publish_each",
                        lambda task, args, task_id: published.extend(task_id(a) for a in args))
    url = str(ctx.engine.url)
    assert main(["platform", "retry-dead", "--run", str(batch.run_id), "--database", url]) == 0
    assert "1 dead-lettered account(s) published again" in capsys.readouterr().out
    assert published == [f"rebalance-{batch.run_id}-{row.id}-again"]
    assert store.get_task(ctx.engine, row.id).status == "pending"
    assert store.summarize(ctx.engine, batch.run_id).status == "running"
    assert run_task(ctx, row.id, "again")["sent"] > 0
    assert store.finish_if_complete(ctx.engine, batch.run_id, ctx.clock.now()).status == "running"
    assert store.summarize(ctx.engine, batch.run_id).status == "finished"
    assert main(["platform", "retry-dead", "--run", str(batch.run_id), "--database", url]) == 0
    assert "0 dead-lettered account(s)" in capsys.readouterr().out


def test_a_dead_task_whose_plan_was_closed_is_not_revived_and_a_batch_of_the_other_mode_is_refused(
    ctx, venue, monkeypatch, capsys
):
    """A task that died after its plan went out in part, whose unsent orders the poll then
    closed: reviving it would only fail again on its half-closed plan (PlanLost), so it
    stays dead and the command says why. A batch is revived only for its own mode."""
    from bot.cli import main

    ledger, row, calls = _killed_after_the_first_order(ctx, venue, monkeypatch)
    claim = store.claim(ctx.engine, row.id, "d-1", True, ctx.clock.now(), LEASE, 10)
    assert store.mark_dead(ctx.engine, claim.row, ctx.clock.now(), "HTTP 503 (after 5 retries)")
    with ctx.engine.begin() as conn:  # what the poll does to a dead task's unsent plan
        conn.execute(sa.text("UPDATE orders SET status = 'rejected' WHERE broker_order_id IS NULL"))
    url = str(ctx.engine.url)
    assert main(["platform", "retry-dead", "--run", str(row.run_id), "--database", url, "--live"]) == 2
    assert f"run {row.run_id} is a paper batch: drop --live" in capsys.readouterr().err
    assert main(["platform", "retry-dead", "--run", str(row.run_id), "--database", url]) == 0
    out = capsys.readouterr().out
    assert "0 dead-lettered account(s) published again; 1 left dead" in out
    assert store.get_task(ctx.engine, row.id).status == "dead"


def test_a_skipped_task_whose_plan_cannot_be_looked_up_closes_it_and_says_so(ctx, venue, monkeypatch):
    from bot.broker.alpaca import AlpacaBroker

    ledger, row, calls = _killed_after_the_first_order(ctx, venue, monkeypatch)
    ctx.registry.close(row.account_id, ctx.clock.now())

    def forbidden(self, client_order_id):
        raise BrokerError("order lookup: HTTP 403: account is not active")

    monkeypatch.setattr(AlpacaBroker, "find_order", forbidden)
    outcome = run_task(ctx, row.id, "d-1", redelivered=True)
    assert outcome["skipped"] == "the account is closed" and "adopted" not in outcome
    ((kind, message),) = rows(ctx, "SELECT kind, message FROM incidents")
    assert kind == "plan_not_looked_up" and "HTTP 403" in message
    assert store.get_task(ctx.engine, row.id).status == "done"


def test_a_decision_without_accounts_or_data_says_what_is_missing(ctx, venue):
    with pytest.raises(BotError, match="no active account in the registry"):
        decide_batch(ctx, DECISION_DAY)
    add_accounts(ctx, venue, ["balanced"])
    with pytest.raises(BotError, match="no daily bar for 2024-11-23"):
        decide_batch(ctx, dt.date(2024, 11, 23))  # a Saturday


def _send_fails_with_503(ctx, row, monkeypatch):
    """The task's first POST is answered 503 after its plan was committed: the error a
    worker retries (the task row 'retrying', its account lock released)."""
    def unavailable(self, request, now):
        raise BrokerError(f"order {request.client_order_id} not placed after 4 attempts "
                          "(last: HTTP 503 Service Unavailable)")

    with monkeypatch.context() as patched, pytest.raises(BrokerError, match="503"):
        patched.setattr(SellsFirst, "submit", unavailable)
        run_task(ctx, row.id, "d-1")
    store.mark_retrying(ctx.engine, row.id, "HTTP 503")


def test_a_poll_before_a_retry_leaves_the_plan_to_the_retry_that_sends_it(ctx, venue, monkeypatch):
    (account,) = add_accounts(ctx, venue, ["balanced"])
    batch = decide_batch(ctx, DECISION_DAY)
    (row,) = store.tasks_of(ctx.engine, batch.run_id, "rebalance")
    _send_fails_with_503(ctx, row, monkeypatch)
    planned = rows(ctx, "SELECT status, status_message FROM orders")
    assert len(planned) == 2 and set(planned) == {("new", account_jobs.PLANNED)}

    assert store.open_order_accounts(ctx.engine) == []  # the poll round leaves it alone
    assert account_jobs.poll(ctx, batch.run_id, account) == 0  # a poll published before
    assert rows(ctx, "SELECT status, status_message FROM orders") == planned

    outcome = run_task(ctx, row.id, "d-2")  # the retry
    assert (outcome["sent"], outcome["statuses"]) == (2, {"filled": 2})
    assert venue.order_count() == 2 and venue.ledger(account.broker_account_id).positions


def test_a_retry_whose_plan_was_closed_unsent_is_dead_lettered_not_done(ctx, venue, monkeypatch):
    """Should anything close the plan before the retry (as the poll did), the retry says
    so where it is seen instead of reporting done with nothing sent."""
    from types import SimpleNamespace

    from bot.platform import tasks

    (account,) = add_accounts(ctx, venue, ["balanced"])
    batch = decide_batch(ctx, DECISION_DAY)
    (row,) = store.tasks_of(ctx.engine, batch.run_id, "rebalance")
    _send_fails_with_503(ctx, row, monkeypatch)
    with ctx.engine.begin() as conn:
        conn.execute(sa.text("UPDATE orders SET status = 'rejected', status_message = 'not placed'"))

    monkeypatch.setattr(tasks, "_context", ctx)
    retry = SimpleNamespace(request=SimpleNamespace(id="d-2", delivery_info={}, hostname="w1"))
    assert tasks._account_task(retry, row.id, account.id, account_jobs.rebalance) == "dead"
    (error,) = rows(ctx, f"SELECT error FROM platform_tasks WHERE id = {row.id}")[0]
    assert "PlanLost" in error and "2 of its 2 planned orders were closed before this task sent them" in error
    assert rows(ctx, "SELECT kind FROM incidents") == [("dead_letter",)]
    assert venue.order_count() == 0


def test_an_account_alpaca_will_not_let_trade_is_skipped_with_the_reason(ctx, venue, capsys):
    """Alpaca's block flags were never read: each of the account's orders was sent and
    refused. The task sends nothing and is skipped with the reason (an account being
    updated is refused for a while only): the next batch trades it, and `bot platform
    status` names why."""
    from bot.cli import main

    blocked, fine = add_accounts(ctx, venue, ["balanced", "balanced"])
    venue.ledger(blocked.broker_account_id).account_patch = {"trading_blocked": True}
    batch = decide_batch(ctx, DECISION_DAY)
    tasks = {r.account_id: r for r in store.tasks_of(ctx.engine, batch.run_id, "rebalance")}
    outcome = run_task(ctx, tasks[blocked.id].id)
    assert "Alpaca reports trading_blocked for the account" in outcome["skipped"]
    assert "the next batch trades" in outcome["skipped"]
    assert not venue.ledger(blocked.broker_account_id).orders
    assert store.get_task(ctx.engine, tasks[blocked.id].id).status == "done"
    assert run_task(ctx, tasks[fine.id].id)["sent"] > 0
    url = ctx.engine.url.render_as_string(hide_password=False)
    assert main(["platform", "status", "--database", url]) == 0
    assert "skipped: 1 account: no decision taken" in capsys.readouterr().out


def test_an_account_closed_before_its_task_ran_is_skipped_and_its_batch_finishes(ctx, venue):
    """Closed after the decision, before a worker reached it: the task trades nothing and
    is done. It returned without marking its row, which stayed `running`: the batch never
    finished and each new publication of the decision sent the task again."""
    kept, closed = add_accounts(ctx, venue, ["balanced", "balanced"])
    batch = decide_batch(ctx, DECISION_DAY)
    tasks = {r.account_id: r for r in store.tasks_of(ctx.engine, batch.run_id, "rebalance")}
    ctx.registry.close(closed.id, ctx.clock.now())
    assert run_task(ctx, tasks[closed.id].id) == {"skipped": "the account is closed"}
    run_task(ctx, tasks[kept.id].id)
    statuses = dict(rows(ctx, f"SELECT account_id, status FROM platform_tasks WHERE run_id = {batch.run_id}"))
    assert statuses == {kept.id: "done", closed.id: "done"}
    assert store.finish_if_complete(ctx.engine, batch.run_id, ctx.clock.now()) is not None
    assert not venue.ledger(closed.broker_account_id).positions


def test_status_tells_the_accounts_skipped_from_those_that_traded(ctx_on, venue, capsys):
    """A skipped task is done (its batch can finish) but traded nothing: the status
    counted it with the accounts that traded, so a batch skipped whole looked traded."""
    import json

    from bot.cli import main

    kept, *closed = add_accounts(ctx_on, venue, ["balanced"] * 3)
    batch = decide_batch(ctx_on, DECISION_DAY)
    for account in closed:
        ctx_on.registry.close(account.id, ctx_on.clock.now())
    for row in store.tasks_of(ctx_on.engine, batch.run_id, "rebalance"):
        run_task(ctx_on, row.id)
    summary = store.summarize(ctx_on.engine, batch.run_id)
    assert (summary.done, summary.skipped) == (3, {"the account is closed": 2})

    url = ctx_on.engine.url.render_as_string(hide_password=False)
    assert main(["platform", "status", "--database", url]) == 0
    out = capsys.readouterr().out
    assert f"batch {batch.run_id}: 3 of 3 accounts done (2 of them skipped: nothing traded)" in out
    assert "skipped: 2 accounts: the account is closed" in out
    assert main(["platform", "status", "--database", url, "--format", "json"]) == 0
    (shown,) = json.loads(capsys.readouterr().out)
    assert (shown["done"], shown["skipped"], shown["skipped_because"]) == (
        3, 2, {"the account is closed": 2})


def test_an_account_closed_while_its_plan_waited_to_be_sent_sends_none_of_it(ctx, venue, monkeypatch):
    """The plan was recorded, its first submit failed (503), and the account was closed
    before the retry: the retry closes the plan as not sent instead of trading it."""
    (account,) = add_accounts(ctx, venue, ["balanced"])
    batch = decide_batch(ctx, DECISION_DAY)
    (row,) = store.tasks_of(ctx.engine, batch.run_id, "rebalance")
    _send_fails_with_503(ctx, row, monkeypatch)
    ctx.registry.close(account.id, ctx.clock.now())
    outcome = run_task(ctx, row.id, "d-2")
    assert outcome == {"skipped": "the account is closed", "not_sent": 2}
    assert venue.order_count() == 0
    assert set(rows(ctx, "SELECT status, status_message FROM orders")) == {
        ("canceled", "not sent: the account was closed before it went out")}
    assert rows(ctx, f"SELECT status FROM platform_tasks WHERE id = {row.id}") == [("done",)]


def test_the_unsent_plan_of_a_dead_task_is_closed_by_the_next_poll(ctx, venue, monkeypatch):
    (account,) = add_accounts(ctx, venue, ["balanced"])
    batch = decide_batch(ctx, DECISION_DAY)
    (row,) = store.tasks_of(ctx.engine, batch.run_id, "rebalance")

    def killed(*_args):
        raise Killed("SIGKILL")

    with monkeypatch.context() as patched, pytest.raises(Killed):
        patched.setattr(SellsFirst, "submit", killed)
        run_task(ctx, row.id)
    store.mark_dead(ctx.engine, row.id, ctx.clock.now(), "dead-lettered")
    from bot.clock import SimulatedClock

    # past the grace a venue's lookup may lag its submit (AlpacaBroker.UNCONFIRMED_GRACE)
    monkeypatch.setattr(ctx, "clock", SimulatedClock(ctx.clock.now() + dt.timedelta(minutes=3)))
    account_jobs.poll(ctx, batch.run_id, account)
    statuses = {OrderStatus(s) for (s,) in rows(ctx, "SELECT status FROM orders")}
    assert statuses == {OrderStatus.REJECTED} and not venue.order_count()


def test_workers_trade_on_alpacas_bars_and_freds_series_downloaded_once_a_day(ctx, venue, monkeypatch):
    """BOT_PLATFORM_DATA=alpaca, as in production: each profile's history comes from
    Alpaca's bars and FRED (as the daemon's), once per decision day for all its accounts."""
    from dataclasses import replace

    from bot.data.fred import FRED_IDS
    from bot.data.synthetic import synthetic_market
    from tests.fakes.alpaca_server import KEY_ID, SECRET, DailyBar, FakeAlpaca
    from tests.fakes.fred_server import FakeFred
    from tests.platform_rig import profile_symbols

    symbols = [s for group in profile_symbols().values() for s in group]
    market = synthetic_market(symbols, "2016-01-04", "2024-12-31")
    data, fred = FakeAlpaca(now=VENUE_NOW), FakeFred()
    days = market.prices.dates.astype("datetime64[D]").astype(object)
    for i, symbol in enumerate(symbols):
        closes = market.prices.close[:, i]
        data.daily_bars[symbol] = [DailyBar(d, c, c, c, c) for d, c in zip(days, closes, strict=True)
                                   if d <= DECISION_DAY]
    data.latest_trades = dict(venue.prices)
    for name, series in market.macro.items():
        fred.series[FRED_IDS[name]] = list(zip(series.dates.astype("datetime64[D]").astype(object),
                                               series.values.tolist(), strict=True))
    data.start()
    fred.start()
    try:
        for key, value in {"APCA_API_KEY_ID": KEY_ID, "APCA_API_SECRET_KEY": SECRET,
                           "APCA_API_DATA_URL": data.url, "BOT_FRED_URL": fred.url}.items():
            monkeypatch.setenv(key, value)
        ctx.settings = replace(ctx.settings, data="alpaca")
        add_accounts(ctx, venue, ["balanced", "balanced", "aggressive"])
        batch = decide_batch(ctx, DECISION_DAY)
        for row in store.tasks_of(ctx.engine, batch.run_id, "rebalance"):
            outcome = run_task(ctx, row.id, f"d-{row.id}")
            assert outcome["rebalance"] == "initial allocation" and outcome["sent"] > 0
        assert len(data.calls("GET", "/v2/stocks/bars")) == 2  # one per profile, not per account
        # feeds a free key may use: SIP bars (15+ minutes old), IEX latest trades
        assert {c.query["feed"] for c in data.calls("GET", "/v2/stocks/bars")} == {"sip"}
        assert {c.query["feed"] for c in data.calls("GET", "/v2/stocks/trades/latest")} == {"iex"}
        assert rows(ctx, "SELECT data_source, synthetic FROM runs") == [("alpaca+fred", False)]
        assert rows(ctx, "SELECT count(DISTINCT series) FROM macro_observations")[0][0] == 4
        for decision in batch.decisions.values():  # the LP's bounds: 50% per ETF, no leverage
            assert all(0 <= w <= 0.5 for w in decision.weights.values())
            assert 0.5 <= sum(decision.weights.values()) <= 1.0
    finally:
        data.stop()
        fred.stop()


def test_a_buy_cut_to_the_accounts_cash_is_recorded_as_sent_and_cut(ctx, venue, monkeypatch):
    """Buys sent at once share one budget, the cash less a buffer; with a buffer of a
    fifth the last buys go out cut, and their rows say both that they were sent and how
    far they were cut (before, the cut note replaced "sent after its plan was
    recorded")."""
    from bot.broker import sequenced

    monkeypatch.setattr(sequenced, "CASH_BUFFER", 0.2)
    add_accounts(ctx, venue, ["balanced"])
    batch = decide_batch(ctx, DECISION_DAY)
    (row,) = store.tasks_of(ctx.engine, batch.run_id, "rebalance")
    run_task(ctx, row.id)
    messages = [m for (m,) in rows(ctx, "SELECT status_message FROM orders")]
    cut = [m for m in messages if m != account_jobs.SENT]
    assert cut and len(cut) < len(messages)
    for message in cut:
        assert message.startswith(f"{account_jobs.SENT}; cut to ") and message.endswith(
            " shares to fit the cash")


def test_no_rebalance_starts_in_the_sessions_last_hour_or_after_the_close(ctx, venue):
    """Workers down for hours (or `retry-dead` run late) started a week's rebalance at any
    time: sells sent after the close waited for the next open, and sells sent in the last
    minutes filled while the buys behind them were held past the cutoff, leaving the
    account in cash overnight. As the daemon, no rebalance starts in the session's last
    hour: the task is done, skipped with the reason, and nothing is sent."""
    (account,) = add_accounts(ctx, venue, ["balanced"])
    batch = decide_batch(ctx, DECISION_DAY)
    (row,) = store.tasks_of(ctx.engine, batch.run_id, "rebalance")
    venue.set_now(dt.datetime(2024, 11, 27, 20, 30, tzinfo=dt.UTC))  # 15:30 New York
    outcome = run_task(ctx, row.id)
    assert "closes within 60 minutes" in outcome["skipped"] and "next batch" in outcome["skipped"]
    assert not venue.order_count() and not rows(ctx, "SELECT count(*) FROM orders")[0][0]
    assert store.get_task(ctx.engine, row.id).status == "done"
