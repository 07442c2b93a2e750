"""One trading process per strategy instance and trade log (bot.daemon.instance): a second
is refused while the first lives, the lock outlives no holder (SIGKILL included), and
the next start marks the dead holder's run failed with an `abandoned` incident."""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from bot.daemon.instance import InstanceBusy, InstanceLock, close_abandoned_runs
from bot.store import TradeLog
from tests.conftest import REPO
from tests.test_store import backend_url

T0 = dt.datetime(2024, 3, 4, 14, 0, tzinfo=dt.UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    yield from backend_url(request, tmp_path)


@pytest.fixture
def tradelog(url: str) -> Iterator[TradeLog]:
    log = TradeLog.open(url)
    yield log
    log.close()


def test_a_second_holder_is_refused_until_the_first_lets_go(url, tradelog):
    other = TradeLog.open(url)  # another process's log: its own engine and connections
    try:
        with InstanceLock.acquire(tradelog, "paper", "diversified_leverage"):
            with pytest.raises(InstanceBusy, match="another bot is already trading "
                                                   "'diversified_leverage' \\(paper\\)"):
                InstanceLock.acquire(other, "paper", "diversified_leverage", wait=0.3)
            # another instance, or the same one in the other mode, is not held
            InstanceLock.acquire(other, "paper", "robo_balanced", wait=0).release()
            InstanceLock.acquire(other, "live", "diversified_leverage", wait=0).release()
        InstanceLock.acquire(other, "paper", "diversified_leverage", wait=0).release()
    finally:
        other.close()


def test_a_holder_killed_by_sigkill_leaves_the_lock_free(url, tradelog):
    holder = textwrap.dedent(f"""
        import sys, time
        from bot.daemon.instance import InstanceLock
        from bot.store import TradeLog
        lock = InstanceLock.acquire(TradeLog.open({url!r}), "paper", "s", wait=0)
        print("held", flush=True)
        time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", holder], cwd=REPO, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(InstanceBusy):
            InstanceLock.acquire(tradelog, "paper", "s", wait=0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        InstanceLock.acquire(tradelog, "paper", "s", wait=5).release()
    finally:
        proc.kill()
        proc.wait()


def _run(log: TradeLog, mode: str, strategy: str) -> int:
    return log.start_run(mode=mode, strategy=strategy, config_hash="-", config={},
                         code_version="-", data_source="-", synthetic=False, started_at=T0)


def test_the_next_start_marks_the_dead_runs_of_its_instance_failed(tradelog):
    dead = [_run(tradelog, "paper", "s"), _run(tradelog, "paper", "s")]
    finished = _run(tradelog, "paper", "s")
    tradelog.finish_run("finished", T0)
    others = [_run(tradelog, "live", "s"), _run(tradelog, "paper", "t"),
              _run(tradelog, "backtest", "s")]
    current = _run(tradelog, "paper", "s")
    later = T0 + dt.timedelta(days=1)

    assert close_abandoned_runs(tradelog, current, later) == dead
    with tradelog.engine.connect() as conn:
        status = dict(conn.execute(sa.text("SELECT id, status FROM runs")).all())
        incidents = conn.execute(
            sa.text("SELECT run_id, kind, message FROM incidents ORDER BY run_id")
        ).all()
    assert [status[r] for r in dead] == ["failed", "failed"]
    assert status[finished] == "finished"
    assert [status[r] for r in [*others, current]] == ["running"] * 4
    assert [(r, k) for r, k, _m in incidents] == [(r, "abandoned") for r in dead]
    assert f"marked failed by run {current} at its start" in incidents[0][2]
    assert close_abandoned_runs(tradelog, current, later) == []  # done once


def _end_lock_sessions(log: TradeLog) -> None:
    """What a database server restart does to the holder: its session, and lock, end.
    Only in this test's database: another test run on the same server keeps its own."""
    held = (
        "FROM pg_locks WHERE locktype = 'advisory' AND pid <> pg_backend_pid() AND database = "
        "(SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    with log.engine.connect() as conn:
        conn.execute(sa.text(f"SELECT pg_terminate_backend(pid) {held}"))
        conn.commit()
        # pg_terminate_backend only signals: the lock goes when that backend has exited.
        deadline = time.monotonic() + 30
        while conn.execute(sa.text(f"SELECT count(*) {held}")).scalar():
            assert time.monotonic() < deadline, "a terminated session kept its advisory lock"
            conn.commit()
            time.sleep(0.05)


def test_a_postgres_lock_whose_session_ends_is_taken_again_unless_another_took_it(
    pg_database_url,
):
    from tests.test_store import reset_pg

    log, other = TradeLog.open(pg_database_url), TradeLog.open(pg_database_url)
    try:
        lock = InstanceLock.acquire(log, "paper", "s", wait=0)
        assert lock.still_held()
        _end_lock_sessions(other)
        assert lock.still_held()  # taken again, on a new connection
        with pytest.raises(InstanceBusy):
            InstanceLock.acquire(other, "paper", "s", wait=0)
        _end_lock_sessions(other)
        thief = InstanceLock.acquire(other, "paper", "s", wait=0)  # before the holder looked
        assert not lock.still_held()
        thief.release()
    finally:
        log.close()
        other.close()
        reset_pg(pg_database_url)


def test_the_daemon_stops_and_says_why_when_its_lock_is_someone_elses(tmp_path):
    import threading

    from bot.daemon.instance import lock_watch

    class Lost:
        key = "leverbot:paper:s"

        def still_held(self) -> bool:
            return False

    log = TradeLog.open(f"sqlite:///{tmp_path / 't.sqlite'}")
    _run(log, "paper", "s")
    stop, lost = threading.Event(), threading.Event()
    job = lock_watch(Lost(), log, stop, lost)
    assert job.name == "instance-lock" and job.run() is False
    assert stop.is_set() and lost.is_set()
    incidents = log.load_incidents()
    log.close()
    assert list(incidents["kind"]) == ["lock_lost"]
    assert "held by another process now" in incidents["message"].iloc[0]


def test_a_trade_log_named_by_a_file_uri_is_locked_too(tmp_path):
    """SQLite's `file:` URI form names a file like a path does: the lock is taken on it
    (it was skipped as if in memory, and two daemons traded the same instance)."""
    url = f"sqlite:///file:{tmp_path / 'uri.sqlite'}?uri=true"
    first, second = TradeLog.open(url), TradeLog.open(url)
    try:
        with InstanceLock.acquire(first, "paper", "diversified_leverage"), pytest.raises(InstanceBusy):
            InstanceLock.acquire(second, "paper", "diversified_leverage", wait=0)
        InstanceLock.acquire(second, "paper", "diversified_leverage", wait=0).release()
    finally:
        first.close()
        second.close()
    assert list(tmp_path.glob("uri.sqlite.*.lock"))


def test_an_in_memory_trade_log_needs_no_lock():
    log = TradeLog.open("sqlite:///file::memory:?cache=shared&uri=true")
    try:
        InstanceLock.acquire(log, "paper", "diversified_leverage", wait=0).release()
    finally:
        log.close()
