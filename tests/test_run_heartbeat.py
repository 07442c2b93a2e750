"""A run's heartbeat: a backtest killed on another machine sharing the trade log is closed
once its heartbeat is older than the lease; a live one, however long it runs, is not, nor
a paper session (its strategy's lock decides). The heartbeat thread survives a database
that refuses it, stops with the run, and never leaves a forked child holding a lock. A
run closed while its process was suspended still records its true end."""

from __future__ import annotations

import datetime as dt
import os
import select
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
from bot.store.abandoned import close_dead_runs, mark_abandoned
from bot.store.heartbeat import Heartbeat, database_now, process_state
from bot.store.holder import this_process
from bot.store.models import RUNS
from tests.conftest import CONFIG, REPO
from tests.test_store import backend_url

NOW = dt.datetime(2026, 1, 5, 12, 0, tzinfo=dt.UTC)  # before any real beat of a test
ELSEWHERE = "machine-b:4242:777"  # a holder of another host: /proc cannot tell


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    yield from backend_url(request, tmp_path)


def _open_run(log: TradeLog, holder: str | None, mode: str = "backtest") -> int:
    return log.start_run(mode=mode, strategy="s", config_hash="-", config={},
                         code_version="-", data_source="-", synthetic=False,
                         started_at=NOW, holder=holder)


def _runs(url: str) -> dict[int, tuple[str, dt.datetime | None]]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:  # through the table: its times come back aware
        rows = conn.execute(sa.select(RUNS.c.id, RUNS.c.status, RUNS.c.heartbeat_at)).all()
    engine.dispose()
    return {rid: (status, beat_at) for rid, status, beat_at in rows}


def _set_heartbeat(url: str, run_id: int, at: dt.datetime | None) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.update(RUNS).where(RUNS.c.id == run_id).values(heartbeat_at=at))
    engine.dispose()


def test_a_silent_backtest_of_another_host_is_closed_after_the_lease_only(url):
    """Judged by the clock heartbeats are written by (PostgreSQL's own on PostgreSQL)."""
    log = TradeLog.open(url)
    local = dt.datetime.now(dt.UTC)
    with log.engine.connect() as conn:
        clock = database_now(conn, local)
    lease, second = heartbeat_module.LEASE, dt.timedelta(seconds=5)
    fresh = _open_run(log, ELSEWHERE)
    silent = _open_run(log, ELSEWHERE)
    paper = _open_run(log, ELSEWHERE, mode="paper")  # its strategy's lock decides
    unheld = _open_run(log, None)  # no single process: no heartbeat
    legacy = _open_run(log, ELSEWHERE)  # recorded before heartbeats existed
    for run, beat_at in ((fresh, clock - lease + second), (silent, clock - lease - second),
                         (paper, clock - 10 * lease), (legacy, None)):
        _set_heartbeat(url, run, beat_at)
    current = _open_run(log, this_process())
    # PostgreSQL judges by its own clock, whatever this machine's says (an hour ahead
    # here would make the fresh run stale); SQLite by this machine's
    judge_local = local + dt.timedelta(hours=1) if url.startswith("postgresql") else local
    assert close_dead_runs(log, current, judge_local) == [silent]
    incidents = log.load_incidents()
    log.close()
    status = {rid: s for rid, (s, _) in _runs(url).items()}
    assert status[silent] == "failed"
    assert [status[r] for r in (fresh, paper, unheld, legacy, current)] == ["running"] * 5
    assert "no heartbeat for more than 10 minutes" in incidents["message"].iloc[0]
    assert process_state(ELSEWHERE, NOW - lease + second, NOW) == "alive"
    assert process_state(ELSEWHERE, NOW - lease - second, NOW) == "gone"
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
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        assert ready, "the other machine's process printed no run id within 60 s"
        remote = int(proc.stdout.readline())
        started = _runs(url)[remote][1]
        deadline = time.monotonic() + 30
        while _runs(url)[remote][1] <= started + dt.timedelta(seconds=0.3):  # it beats
            assert time.monotonic() < deadline, "no heartbeat from the other machine's run"
            time.sleep(0.1)
        time.sleep(2)  # longer than the lease: only its heartbeat keeps it alive
        here = _open_run(log, this_process())
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
    before = dt.datetime.now(dt.UTC)
    run = _open_run(log, this_process())
    first = _runs(url)[run][1]
    assert first >= before  # the start is the first beat
    beating = log._heartbeat
    deadline = time.monotonic() + 10
    while beating.beats < 3:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert _runs(url)[run][1] > first
    log.finish_run("finished", dt.datetime.now(dt.UTC))
    assert not beating._thread.is_alive() and log._heartbeat is None
    beats = beating.beats
    time.sleep(0.2)
    assert beating.beats == beats  # stopped, not only idle
    log.close()


def test_a_run_of_another_holder_or_on_a_private_database_gets_no_heartbeat(tmp_path):
    log = TradeLog.open(f"sqlite:///{tmp_path / 't.sqlite'}")
    _open_run(log, ELSEWHERE)  # only the process that holds a run beats for it
    assert log._heartbeat is None
    log.close()


def test_an_in_memory_trade_log_has_no_heartbeat():
    log = TradeLog.open("sqlite://")
    _open_run(log, this_process())
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
        run = _open_run(log, heart.holder)
        first = _runs(f"sqlite:///{tmp_path / 'empty.sqlite'}")[run][1]
        while heart.beats == 0:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        heart.stop()
    assert _runs(f"sqlite:///{tmp_path / 'empty.sqlite'}")[run][1] > first
    assert "no such table" in next(e for e in logs if e["event"] == "run heartbeat not written")["error"]
    log.close()
    engine.dispose()


def test_a_run_closed_as_abandoned_while_its_process_was_suspended_ends_truly(url):
    """Its process ends it as it ended, and an incident says it had been closed wrongly."""
    log = TradeLog.open(url)
    run = _open_run(log, this_process())
    other = TradeLog.open(url)
    mark_abandoned(other, [run], run + 1, NOW, "no heartbeat for more than 10 minutes")
    other.close()
    log.finish_run("finished", NOW + dt.timedelta(minutes=20))
    incidents = log.load_incidents()
    log.close()
    assert _runs(url)[run][0] == "finished"
    assert incidents["kind"].tolist() == ["abandoned", "resumed"]
    assert "closed as abandoned while its process still ran" in incidents["message"].iloc[1]
    log = TradeLog.open(url)  # an ordinary end records nothing more
    ordinary = _open_run(log, this_process())
    log.finish_run("finished", NOW)
    assert len(log.load_incidents()) == 2 and _runs(url)[ordinary][0] == "finished"
    log.close()


def test_a_run_closed_as_abandoned_while_it_ends_still_says_so(pg_database_url):
    """A judge that commits its `abandoned` mark just before the run's end is written
    (PostgreSQL, read committed): the end overwrites it, and the `resumed` incident,
    written after the end, sees the judge's mark."""
    from tests.test_store import reset_pg

    log, judge = TradeLog.open(pg_database_url), TradeLog.open(pg_database_url)
    try:
        run = _open_run(log, this_process())
        judged = []

        def judge_first(conn, cursor, statement, *_args) -> None:
            if statement.startswith("UPDATE runs SET") and "finished_at" in statement and not judged:
                judged.append(mark_abandoned(judge, [run], run + 1, NOW, "test"))

        sa.event.listen(log.engine, "before_cursor_execute", judge_first)
        log.finish_run("finished", NOW)
        sa.event.remove(log.engine, "before_cursor_execute", judge_first)
        assert judged == [[run]]
        assert _runs(pg_database_url)[run][0] == "finished"
        assert log.load_incidents()["kind"].tolist() == ["abandoned", "resumed"]
    finally:
        log.close()
        judge.close()
        reset_pg(pg_database_url)


def test_a_beat_neither_skips_nor_blocks_a_run_whose_records_are_being_written(
    pg_database_url,
):
    """An order or incident being inserted for a run holds FOR KEY SHARE on it until its
    transaction ends; the beat (FOR NO KEY UPDATE) still marks that run alive."""
    from tests.test_store import reset_pg

    log = TradeLog.open(pg_database_url)
    try:
        me = this_process()
        busy, other = _open_run(log, me), _open_run(log, me)
        log._stop_heartbeat()
        with log.engine.connect() as conn:
            conn.execute(sa.text("SET lock_timeout = '5s'"))
            conn.execute(sa.text(
                f"INSERT INTO incidents (run_id, at, kind, message) "
                f"VALUES ({busy}, now(), 'test', 'open transaction')"
            ))  # not committed: the run's row stays key-share locked
            assert heartbeat_module.beat(log.engine, me) == 2
            conn.rollback()
        assert {busy, other} <= set(_runs(pg_database_url))
    finally:
        log.close()
        reset_pg(pg_database_url)


def test_a_fork_never_inherits_the_heartbeat_lock(tmp_path):
    """The heartbeat beats without pause; 40 forks each find its lock free and write
    through the parent's engine (a child forked mid-beat would inherit the beat's locks
    held: its own, the connection pool's, SQLite's, and hang on them)."""
    url = f"sqlite:///{tmp_path / 't.sqlite'}"
    log = TradeLog.open(url)
    _open_run(log, this_process())
    heart = Heartbeat(log.engine, this_process(), interval=0.0).start()
    try:
        for _ in range(40):
            pid = os.fork()
            if pid == 0:  # the child: exit 0 only if no lock it needs is held
                ok = heart._lock.acquire(timeout=5)
                try:
                    # the parent's engine, as SQLAlchemy says to use one after a fork: its
                    # pool (whose lock a beat takes) without the parent's connections
                    log.engine.dispose(close=False)
                    with log.engine.begin() as conn:
                        conn.execute(sa.text("UPDATE runs SET strategy = strategy"))
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


def test_the_migrations_go_down_and_up_with_runs_and_their_incidents(url):
    """0012 and 0011 down and up again on a trade log whose runs have incidents pointing at them
    (a rebuilt SQLite table would fail those foreign keys)."""
    from alembic import command

    from bot.store.engines import writer_engine
    from bot.store.schema import alembic_config

    log = TradeLog.open(url)
    run = _open_run(log, this_process())
    mark_abandoned(log, [run], run + 1, NOW, "test")
    log.close()
    engine = writer_engine(url)  # as the bot opens it: SQLite's foreign keys enforced
    try:
        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), "0011")
        columns = {c["name"] for c in sa.inspect(engine).get_columns("runs")}
        assert "heartbeat_at" not in columns and "holder" in columns
        with engine.begin() as conn:  # and 0011's holder, the same way
            command.downgrade(alembic_config(conn), "0010")
        assert "holder" not in {c["name"] for c in sa.inspect(engine).get_columns("runs")}
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "head")
        inspector = sa.inspect(engine)
        assert "heartbeat_at" in {c["name"] for c in inspector.get_columns("runs")}
        assert "ix_runs_running_holder" in {i["name"] for i in inspector.get_indexes("runs")}
    finally:
        engine.dispose()
    assert _runs(url)[run] == ("failed", None)


def test_beats_and_a_sweeps_closer_never_deadlock_on_postgresql(pg_database_url):
    """Beats without pause while batches of the same holder's runs are closed, shuffled,
    as a sweep's results arrive: neither side may ever be aborted as a deadlock."""
    import random
    import threading

    from bot.store.sweeps import finish_sweep_runs
    from tests.test_store import reset_pg

    log = TradeLog.open(pg_database_url)
    try:
        me = this_process()
        runs = [_open_run(log, me) for _ in range(360)]
        log._stop_heartbeat()  # the test beats itself
        errors: list[BaseException] = []
        done = threading.Event()

        def beating() -> None:
            while not done.is_set():
                try:
                    heartbeat_module.beat(log.engine, me)
                except BaseException as exc:  # noqa: BLE001 - collected for the assert
                    errors.append(exc)

        thread = threading.Thread(target=beating)
        thread.start()
        try:
            random.seed(7)
            random.shuffle(runs)
            for k in range(0, len(runs), 6):
                ends = [{"run_id": r, "status": "finished", "finished_at": NOW,
                         "summary": None, "error": None} for r in runs[k:k + 6]]
                finish_sweep_runs(log.engine, ends)
        finally:
            done.set()
            thread.join()
        assert errors == []
        assert {s for s, _ in _runs(pg_database_url).values()} == {"finished"}
    finally:
        log.close()
        reset_pg(pg_database_url)
