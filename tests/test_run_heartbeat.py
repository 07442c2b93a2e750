"""A run's heartbeat: a run killed on another machine sharing the trade log is closed once
its heartbeat is older than the lease; a live one, however long it runs, is not. The
heartbeat thread survives a database that refuses it, stops with the run, and never
leaves a forked child holding its lock."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
import structlog

from bot.store import TradeLog
from bot.store import heartbeat as heartbeat_module
from bot.store.abandoned import close_dead_runs
from bot.store.heartbeat import Heartbeat, beat, process_state
from bot.store.holder import this_process
from bot.store.models import RUNS
from tests.conftest import CONFIG, REPO
from tests.test_store import backend_url

NOW = dt.datetime(2026, 1, 5, 12, 0, tzinfo=dt.UTC)  # before any real beat of a test
ELSEWHERE = "machine-b:4242:777"  # a holder of another host: /proc cannot tell


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    yield from backend_url(request, tmp_path)


def _open_run(log: TradeLog, holder: str | None, started: dt.datetime = NOW) -> int:
    return log.start_run(mode="backtest", strategy="s", config_hash="-", config={},
                         code_version="-", data_source="-", synthetic=False,
                         started_at=started, holder=holder)


def _runs(url: str) -> dict[int, tuple[str, dt.datetime | None]]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:  # through the table: its times come back aware
        rows = conn.execute(sa.select(RUNS.c.id, RUNS.c.status, RUNS.c.heartbeat_at)).all()
    engine.dispose()
    return {rid: (status, beat_at) for rid, status, beat_at in rows}


def test_a_silent_run_of_another_host_is_closed_after_the_lease_only(url):
    log = TradeLog.open(url)
    lease = heartbeat_module.LEASE
    fresh = _open_run(log, ELSEWHERE, NOW - lease + dt.timedelta(seconds=5))
    silent = _open_run(log, ELSEWHERE, NOW - lease - dt.timedelta(seconds=5))
    unheld = _open_run(log, None, NOW - 10 * lease)  # no single process: no heartbeat
    with log.engine.begin() as conn:  # recorded before heartbeats existed
        conn.execute(sa.text("INSERT INTO runs (mode, strategy, config_hash, config, "
                             "code_version, data_source, synthetic, started_at, status, holder) "
                             "SELECT mode, strategy, config_hash, config, code_version, "
                             "data_source, synthetic, started_at, status, holder FROM runs "
                             f"WHERE id = {silent}"))
    legacy = max(_runs(url))
    current = _open_run(log, this_process(), NOW)
    assert close_dead_runs(log, current, NOW) == [silent]
    incidents = log.load_incidents()
    log.close()
    status = {rid: s for rid, (s, _) in _runs(url).items()}
    assert status[silent] == "failed"
    assert [status[r] for r in (fresh, unheld, legacy, current)] == ["running"] * 4
    assert "no heartbeat for more than 10 minutes" in incidents["message"].iloc[0]
    assert process_state(ELSEWHERE, NOW - lease + dt.timedelta(seconds=5), NOW) == "alive"
    assert process_state(ELSEWHERE, NOW - lease - dt.timedelta(seconds=5), NOW) == "gone"
    assert process_state(ELSEWHERE, None, NOW) == "unknown"


def test_a_run_killed_on_another_machine_is_closed_by_the_next_run_here(url, monkeypatch):
    """A real process, posing as another host, beats every 0.2 s; while it lives a run
    started here leaves its run alone, once it is killed the next one closes it."""
    script = textwrap.dedent(f"""
        import datetime as dt, socket, time
        socket.gethostname = lambda: "machine-b"   # another machine: /proc cannot tell
        from bot.store import heartbeat
        heartbeat.INTERVAL = dt.timedelta(seconds=0.2)
        from bot import runner
        from bot.config import load_settings
        from bot.store import TradeLog
        log = TradeLog.open({url!r})
        print(runner.start_run(log, load_settings({str(CONFIG)!r}), "backtest", "-", True),
              flush=True)
        time.sleep(120)
    """)
    monkeypatch.setattr(heartbeat_module, "LEASE", dt.timedelta(seconds=1.5))
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE,
                            text=True)
    log = TradeLog.open(url)
    try:
        remote = int(proc.stdout.readline())
        started = _runs(url)[remote][1]
        deadline = time.monotonic() + 30
        while _runs(url)[remote][1] <= started + dt.timedelta(seconds=0.3):  # it beats
            assert time.monotonic() < deadline, "no heartbeat from the other machine's run"
            time.sleep(0.1)
        time.sleep(2)  # longer than the lease: only its heartbeat keeps it alive
        here = _open_run(log, this_process(), dt.datetime.now(dt.UTC))
        assert close_dead_runs(log, here, dt.datetime.now(dt.UTC)) == []
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        time.sleep(2)
        assert close_dead_runs(log, here, dt.datetime.now(dt.UTC)) == [remote]
    finally:
        proc.kill()
        proc.wait()
        log.close()
    assert _runs(url)[remote][0] == "failed"


def test_the_heartbeat_beats_while_the_run_is_open_and_stops_with_it(tmp_path, monkeypatch):
    monkeypatch.setattr(heartbeat_module, "INTERVAL", dt.timedelta(seconds=0.05))
    url = f"sqlite:///{tmp_path / 't.sqlite'}"
    log = TradeLog.open(url)
    run = _open_run(log, this_process(), NOW)
    assert _runs(url)[run][1] == NOW  # the first beat is the start
    beating = log._heartbeat
    deadline = time.monotonic() + 10
    while beating.beats < 3:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert _runs(url)[run][1] > NOW
    log.finish_run("finished", dt.datetime.now(dt.UTC))
    assert not beating._thread.is_alive() and log._heartbeat is None
    last = _runs(url)[run][1]
    time.sleep(0.2)
    assert _runs(url)[run] == ("finished", last)  # no beat after the end
    log.close()


def test_an_in_memory_trade_log_has_no_heartbeat():
    log = TradeLog.open("sqlite://")
    _open_run(log, this_process(), NOW)
    assert log._heartbeat is None
    log.close()


def test_a_refused_beat_is_logged_and_the_next_one_tried(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'empty.sqlite'}")  # no runs table yet
    with structlog.testing.capture_logs() as logs:
        heart = Heartbeat(engine, this_process(), interval=0.02).start()
        deadline = time.monotonic() + 10
        while not any(e["event"] == "run heartbeat not written" for e in logs):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert heart._thread.is_alive() and heart.beats == 0
        log = TradeLog.open(f"sqlite:///{tmp_path / 'empty.sqlite'}")  # the schema arrives
        run = _open_run(log, heart.holder, NOW)
        while heart.beats == 0:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        heart.stop()
    assert _runs(f"sqlite:///{tmp_path / 'empty.sqlite'}")[run][1] > NOW
    assert "no such table" in next(e for e in logs if e["event"] == "run heartbeat not written")["error"]
    log.close()
    engine.dispose()


def test_a_process_whose_runs_were_closed_by_another_says_so(tmp_path):
    url = f"sqlite:///{tmp_path / 't.sqlite'}"
    log = TradeLog.open(url)
    run = _open_run(log, this_process(), NOW)
    assert beat(log.engine, this_process(), NOW) == 1
    with log.engine.begin() as conn:  # another host judged this one dead (it was suspended)
        conn.execute(sa.text(f"UPDATE runs SET status = 'failed' WHERE id = {run}"))
    with structlog.testing.capture_logs() as logs:
        heart = Heartbeat(log.engine, this_process())
        heart._beat_once()
        heart._beat_once()
    closed = [e for e in logs if e["event"] == "this process's runs were closed by another process"]
    assert len(closed) == 1 and closed[0]["holder"] == this_process()  # said once
    log.close()


def test_a_fork_never_inherits_the_heartbeat_lock(tmp_path):
    """The heartbeat beats without pause; 40 forks each find its lock free and can write
    to the database (a child that inherited it held, mid-beat, would hang)."""
    url = f"sqlite:///{tmp_path / 't.sqlite'}"
    log = TradeLog.open(url)
    _open_run(log, this_process(), NOW)
    heart = Heartbeat(log.engine, this_process(), interval=0.0).start()
    try:
        for _ in range(40):
            pid = os.fork()
            if pid == 0:  # the child: exit 0 only if the lock is free and the database works
                ok = heart._lock.acquire(timeout=5)
                try:
                    child = sa.create_engine(url)
                    with child.begin() as conn:
                        conn.execute(sa.text("SELECT count(*) FROM runs"))
                    code = 0 if ok and not heart._thread.is_alive() else 1
                except Exception:
                    code = 2
                os._exit(code)
            deadline = time.monotonic() + 20
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
                if time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    pytest.fail("a forked child hung on a lock the heartbeat held")
                time.sleep(0.005)
            assert os.waitstatus_to_exitcode(status) == 0
        assert heart.beats > 0 and heart._thread.is_alive()
    finally:
        heart.stop()
        log.close()
