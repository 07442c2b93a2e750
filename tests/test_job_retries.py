"""The paper daemon under rate limits and outages longer than one request's retry
budget: the decision is tried again within the session while that is safe, the close job
later that evening (for the right session, after midnight UTC too). The real jobs and
schedule on a simulated clock, against the fake Alpaca and FRED; the HTTP retry policy
sleeps by moving that clock, so minutes of 429 take no time."""

from __future__ import annotations

import datetime as dt
import sqlite3
from dataclasses import replace

import pytest
import sqlalchemy as sa

from bot.clock import SimulatedClock
from bot.daemon.live import build_live
from bot.daemon.service import build_schedule, run_replay
from bot.net import ALPACA_POLICY, RetryPolicy
from bot.store.tradelog import TradeLog
from tests import test_daemon_live as daemon_tests
from tests.fakes import Fault
from tests.test_daemon_live import FAST, OPEN_JOB, SETTINGS, TUESDAY, bought_before, open_log

venue = daemon_tests.venue  # fake Alpaca and FRED with the environment pointing at them

UTC = dt.UTC
BARS = "/v2/stocks/bars"
OPEN = OPEN_JOB - dt.timedelta(minutes=5)  # Tuesday 09:30 New York
CLOSE = dt.datetime(2024, 11, 26, 21, 0, tzinfo=UTC)  # Tuesday 16:00 New York


def on_clock(clock: SimulatedClock, policy: RetryPolicy) -> RetryPolicy:
    """`policy` whose waits move the daemon's simulated clock."""

    def sleep(seconds: float) -> None:
        clock.set(clock.now() + dt.timedelta(seconds=seconds))

    return replace(policy, sleep=sleep, clock=lambda: clock.now().timestamp())


def paper_daemon(tmp_path, venue, when: dt.datetime, policy: RetryPolicy = ALPACA_POLICY):
    venue.set_now(when)
    # The replays below move the daemon's clock, not the fake's: its free-key rule would
    # read the bars of a retry hours later as recent SIP data. A paid plan's feed here;
    # tests/test_alpaca_data.py checks that rule on one clock.
    venue.sip_allowed = True
    log, run_id = open_log(tmp_path)
    clock = SimulatedClock(when)
    jobs = build_live(
        SETTINGS, log, run_id, live=False, clock=clock,
        policy=on_clock(clock, policy), fred_policy=FAST,
    )
    return jobs, log, clock


def job_incidents(log, job: str):
    incidents = log.load_incidents()
    return incidents[incidents["kind"] == f"job:{job}"]


def test_429_for_minutes_at_the_open_does_not_lose_the_decision(tmp_path, venue):
    bought_before(venue, "TQQQ", 60_000.0)
    jobs, log, clock = paper_daemon(tmp_path, venue, OPEN_JOB)
    venue.inject("GET", BARS, *[Fault.error(429, message="rate limit", retry_after=60)] * 4)
    assert jobs.run("open", jobs.open_job)
    assert clock.now() == OPEN_JOB + dt.timedelta(minutes=4)  # waited as asked
    assert [o.data["side"] for o in venue.orders] == ["sell"]  # the rebalance went out
    assert log.load_state("diversified_leverage", "paper")["last_rebalance_day"] == "2024-11-25"
    log.close()


def test_a_decision_failing_past_the_budget_is_retried_within_the_session(tmp_path, venue):
    bought_before(venue, "TQQQ", 60_000.0)
    jobs, log, clock = paper_daemon(tmp_path, venue, OPEN)
    # 4 tries at 0, 100, 200, 300 s spend the first run's budget; the retry at 09:45
    # meets 3 more and gets through.
    venue.inject("GET", BARS, *[Fault.error(429, message="rate limit", retry_after=100)] * 7)
    loop = run_replay(build_schedule(jobs), jobs, clock, OPEN + dt.timedelta(minutes=20))
    assert [name for name, _ in loop.failures] == ["open"]
    assert venue.pending_faults() == 0
    assert [o.data["side"] for o in venue.orders] == ["sell"]
    [incident] = job_incidents(log, "open").itertuples()
    assert "HTTP 429" in incident.message
    assert incident.context["session"] == "2024-11-26" and incident.context["retry"] == 0
    assert incident.context["next_retry"] == "2024-11-26T14:45:00+00:00"  # open + 15 min
    assert log.load_state("diversified_leverage", "paper")["last_rebalance_day"] == "2024-11-25"
    log.close()


def test_a_decision_that_failed_after_it_started_is_not_repeated(tmp_path, venue, monkeypatch):
    """Orders may be out: trying again could send a second rebalance."""
    from bot.daemon.jobs import TradingJobs

    bought_before(venue, "TQQQ", 60_000.0)
    jobs, log, clock = paper_daemon(tmp_path, venue, OPEN, FAST)

    def save_fails(self, engine):
        raise RuntimeError("disk full")

    monkeypatch.setattr(TradingJobs, "save", save_fails)
    loop = run_replay(build_schedule(jobs), jobs, clock, CLOSE - dt.timedelta(minutes=61))
    assert [name for name, _ in loop.failures] == ["open"]  # no retry ran
    assert len(venue.calls("POST", "/v2/orders")) == 1  # the sell, once
    [incident] = job_incidents(log, "open").itertuples()
    assert incident.context["next_retry"] is None
    assert "the decision had started" in incident.context["no_retry"]
    log.close()


def test_the_close_job_is_retried_that_evening_for_its_own_session(tmp_path, venue):
    """An account outage from the close until after midnight UTC: the fourth retry, at
    01:05 UTC on Wednesday, records Tuesday's equity (not Wednesday's)."""
    jobs, log, clock = paper_daemon(tmp_path, venue, CLOSE, replace(FAST, attempts=2))
    # Two requests per try (attempts=2): the regular run and three retries fail.
    venue.inject("GET", "/v2/account", *[Fault.error(503, message="unavailable")] * 8)
    venue.set_now(CLOSE + dt.timedelta(minutes=20))
    loop = run_replay(build_schedule(jobs), jobs, clock, CLOSE + dt.timedelta(hours=6))
    assert [(name, when.strftime("%H:%M")) for name, when in loop.failures] == [
        ("close", "21:20"), ("close-retry", "21:35"), ("close-retry", "22:05"), ("close-retry", "23:05"),
    ]
    equity = log.load_equity(log.run_id)
    assert [d.date() for d in equity.index] == [TUESDAY]
    incidents = job_incidents(log, "close")
    assert [c["retry"] for c in incidents["context"]] == [0, 1, 2, 3]
    assert [c["next_retry"][11:16] for c in incidents["context"]] == ["21:35", "22:05", "23:05", "01:05"]
    assert {c["session"] for c in incidents["context"]} == {"2024-11-26"}
    log.close()


@pytest.mark.parametrize("failed_writes", [1, 2])
def test_a_close_whose_commit_failed_is_stored_once_by_its_retry(
    tmp_path, venue, monkeypatch, failed_writes
):
    """The close job recorded the day but its commit failed (a locked SQLite file, a
    database outage): with both of the job's commits failing the records stay buffered,
    with one the second commit stored them. Either way the retry leaves one equity row
    for the day with its snapshot and the saved state, and nothing refused."""
    jobs, log, clock = paper_daemon(tmp_path, venue, CLOSE + dt.timedelta(minutes=20), FAST)
    write = log._write_buffers
    tries = []

    def locked(conn, prepared):
        tries.append(1)
        if len(tries) <= failed_writes:
            raise sa.exc.OperationalError("COMMIT", {}, sqlite3.OperationalError("database is locked"))
        return write(conn, prepared)

    monkeypatch.setattr(log, "_write_buffers", locked)
    assert not jobs.run("close", jobs.close_job)  # the regular run fails at its commit
    clock.set(CLOSE + dt.timedelta(minutes=35))
    assert jobs.run("close-retry", lambda: jobs.close_job(TUESDAY))
    equity = log.load_equity(log.run_id)
    assert [d.date() for d in equity.index] == [TUESDAY]
    positions = log.load_positions(log.run_id)
    assert set(positions["day"].dt.date) == {TUESDAY}
    assert log.load_state("diversified_leverage", "paper") is not None
    kinds = list(log.load_incidents()["kind"])
    assert kinds == ["job:close"]  # the failed commit; no rows refused by the database
    log.close()


def test_a_decision_whose_commit_failed_is_not_undone_by_the_jobs_after_it(
    tmp_path, venue, monkeypatch
):
    """The database reads but refuses writes (a full disk, a read-only failover) from the
    decision until after the close. Every job after the decision used to reload the
    older committed state and save it over the buffered one, so the rebalance the
    decision sent was due again next morning and went out twice."""
    bought_before(venue, "TQQQ", 60_000.0)
    jobs, log, clock = paper_daemon(tmp_path, venue, OPEN_JOB, FAST)
    write = log._write_buffers
    refusing = [True]

    def full_disk(conn, prepared):
        if refusing[0]:
            raise sa.exc.OperationalError("COMMIT", {}, sqlite3.OperationalError("disk I/O error"))
        return write(conn, prepared)

    monkeypatch.setattr(log, "_write_buffers", full_disk)
    assert not jobs.run("open", jobs.open_job)  # sent its orders, then failed to commit
    assert venue.orders  # the sells; the buys wait for them
    clock.set(CLOSE + dt.timedelta(minutes=20))
    venue.set_now(clock.now())
    assert not jobs.run("close", jobs.close_job)
    refusing[0] = False
    assert jobs.run("poll", jobs.poll_job)  # writes are back: everything buffered is stored
    reader = TradeLog(log.engine)
    assert reader.load_state("diversified_leverage", "paper")["last_rebalance_day"] == "2024-11-25"
    wednesday = OPEN_JOB + dt.timedelta(days=1)
    clock.set(wednesday)
    venue.set_now(wednesday)
    assert jobs.run("open", jobs.open_job)
    rebalances = {o.data["client_order_id"].rsplit("-", 2)[0] for o in venue.orders}
    assert rebalances == {"diversified_leverage-20241125-rb"}  # its buys, no second rebalance
    log.close()


def test_the_close_job_gives_up_after_its_last_slot(tmp_path, venue):
    jobs, log, clock = paper_daemon(tmp_path, venue, CLOSE, replace(FAST, attempts=1))
    venue.inject("GET", "/v2/account", *[Fault.error(503, message="unavailable")] * 20)
    run_replay(build_schedule(jobs), jobs, clock, CLOSE + dt.timedelta(hours=9))
    incidents = job_incidents(log, "close")
    assert len(incidents) == 5  # the regular run and four retries
    last = incidents["context"].iloc[-1]
    assert last["next_retry"] is None and last["no_retry"] == "no retry slot left in the session"
    assert log.load_equity(log.run_id).empty
    assert venue.pending_faults() == 20 - 5
    log.close()


@pytest.mark.parametrize("close_hour", [21, 18])  # 16:00 and a 13:00 early close
def test_decision_retry_slots_leave_the_last_hour_of_the_session_alone(close_hour):
    from bot.broker.base import TradingSession
    from bot.daemon.retries import CLOSE_PLAN, OPEN_PLAN

    opened = dt.datetime(2024, 11, 29, 14, 30, tzinfo=UTC)
    session = TradingSession(opened.date(), opened, opened.replace(hour=close_hour))
    slots = OPEN_PLAN.slots(session)
    assert [t.strftime("%H:%M") for t in slots] == ["14:45", "15:00", "15:30", "16:30"]
    assert all(t <= session.close - dt.timedelta(hours=1) for t in slots)
    short = TradingSession(opened.date(), opened, opened + dt.timedelta(hours=2))
    assert [t.strftime("%H:%M") for t in OPEN_PLAN.slots(short)] == ["14:45", "15:00", "15:30"]
    evening = CLOSE_PLAN.slots(session)
    assert len(evening) == 4 and evening[-1] == session.close + dt.timedelta(minutes=245)


def test_a_close_job_run_after_midnight_utc_records_its_own_session(tmp_path, venue):
    """A daemon restarted at 19:30 New York (00:30 UTC on Wednesday) runs Tuesday's
    close job late: it records Tuesday, the session whose close job time passed last (it
    took the UTC date's session, Wednesday's, not yet traded)."""
    late = CLOSE + dt.timedelta(hours=3, minutes=30)
    jobs, log, clock = paper_daemon(tmp_path, venue, late, FAST)
    [close] = [spec for spec in build_schedule(jobs).jobs if spec.name == "close"]
    assert close.first_run(late) == CLOSE + dt.timedelta(minutes=20)
    assert close.run()
    assert [d.date() for d in log.load_equity(log.run_id).index] == [TUESDAY]
    log.close()


def test_a_missed_job_is_recorded_as_an_incident_by_the_next_job(tmp_path, venue):
    jobs, log, clock = paper_daemon(tmp_path, venue, CLOSE + dt.timedelta(minutes=20), FAST)
    schedule = build_schedule(jobs)
    schedule.on_missed("open", OPEN_JOB)  # what the scheduler's thread reports
    assert jobs.run("close", jobs.close_job)
    [incident] = log.load_incidents().itertuples()
    assert incident.kind == "missed:open"
    assert "job open of 2024-11-26 14:35 UTC did not run" in incident.message
    assert incident.context["scheduled"] == OPEN_JOB.isoformat()
    log.close()
