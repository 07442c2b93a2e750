"""Reading a SQLite trade log (inspection commands, the dashboard) writes nothing beside
it, still sees what a writer commits, and never returns rows read across a checkpoint.
What SQLite does on its own is checked too, so a change in SQLite shows up here."""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import tempfile
from pathlib import Path

import pytest
import sqlalchemy as sa

from bot.store.engines import TradeLogFileError
from bot.store.sqlite_read import SnapshotConnection
from bot.store.tradelog import TradeLog


def add_run(log: TradeLog, name: str = "s") -> int:
    return log.start_run(
        mode="backtest", strategy=name, config_hash="h", config={}, code_version="t",
        data_source="synthetic", synthetic=True, started_at=dt.datetime.now(dt.UTC),
    )


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def run_count(log: TradeLog) -> int:
    with log.engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM runs")).scalar_one()


@pytest.fixture
def closed_log(tmp_path) -> Path:
    """A WAL trade log with one run and no writer connected (only the .sqlite file left)."""
    path = tmp_path / "log.sqlite"
    writer = TradeLog.open(f"sqlite:///{path}")
    add_run(writer)
    writer.close()
    assert files(tmp_path) == ["log.sqlite"]
    return path


def test_sqlite_itself_creates_wal_files_on_a_read_only_open(closed_log) -> None:
    """Why the reader needs care: a plain mode=ro open of a WAL database that no writer
    has open creates -wal and -shm, and leaves them."""
    conn = sqlite3.connect(f"file:{closed_log}?mode=ro", uri=True)
    conn.execute("SELECT count(*) FROM runs").fetchone()
    conn.close()
    assert files(closed_log.parent) == ["log.sqlite", "log.sqlite-shm", "log.sqlite-wal"]


def test_reading_a_log_no_writer_has_open_creates_no_file(closed_log) -> None:
    reader = TradeLog.open_readonly(f"sqlite:///{closed_log}")
    try:
        assert run_count(reader) == 1
        assert reader.load_incidents().empty
    finally:
        reader.close()
    assert files(closed_log.parent) == ["log.sqlite"]


def test_a_reader_shares_a_running_writers_wal_and_creates_nothing(closed_log) -> None:
    writer = TradeLog.open(f"sqlite:///{closed_log}")
    add_run(writer)  # committed into the -wal, not yet in the database file
    before = files(closed_log.parent)
    reader = TradeLog.open_readonly(f"sqlite:///{closed_log}")
    try:
        assert run_count(reader) == 2
        with reader.engine.connect() as conn:
            assert not isinstance(conn.connection.dbapi_connection, SnapshotConnection)
    finally:
        reader.close()
        writer.close()
    assert before == ["log.sqlite", "log.sqlite-shm", "log.sqlite-wal"]


def test_a_reader_follows_a_writer_that_starts_and_stops_while_it_is_open(closed_log) -> None:
    """The dashboard stays up while the daemon starts, writes and stops: each read sees
    the latest commit, never the snapshot of an earlier connection."""
    url = f"sqlite:///{closed_log}"
    reader = TradeLog.open_readonly(url)
    try:
        assert run_count(reader) == 1
        writer = TradeLog.open(url)
        add_run(writer)
        assert run_count(reader) == 2  # through the writer's WAL
        add_run(writer)
        writer.close()
        assert run_count(reader) == 3
    finally:
        reader.close()


def test_a_checkpoint_during_a_snapshot_read_fails_the_read(closed_log) -> None:
    reader = TradeLog.open_readonly(f"sqlite:///{closed_log}")
    try:
        with reader.engine.connect() as conn:
            assert isinstance(conn.connection.dbapi_connection, SnapshotConnection)
            result = conn.execute(sa.text("SELECT id FROM runs"))
            # A writer connects, commits and checkpoints into the file mid-read.
            writer = sqlite3.connect(closed_log)
            writer.execute(
                "INSERT INTO runs (mode, strategy, config_hash, config, code_version, "
                "data_source, synthetic, started_at, status) VALUES "
                "('backtest', 'x', 'h', '{}', 't', 'synthetic', 1, '2024-01-02 00:00:00', 'running')"
            )
            writer.commit()
            writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            # One line naming the file and what to do (the CLI printed a traceback).
            with pytest.raises(TradeLogFileError, match=(
                    f"the trade log {closed_log}: the trade log was written while it was being "
                    "read; read it again .a writer opened it meanwhile; the next read sees its data.")):
                result.fetchall()
            writer.close()
        assert run_count(reader) == 2  # the next read opens afresh and sees it
    finally:
        reader.close()


def test_a_log_locked_or_moved_under_a_reader_is_named_with_what_to_do(closed_log) -> None:
    """A writer holding the file locked (a migration), or the file moved away: the
    dashboard answered 500 'internal error', the CLI a traceback."""
    reader = TradeLog.open_readonly(f"sqlite:///{closed_log}")
    try:
        locker = sqlite3.connect(closed_log, timeout=0)
        locker.execute("PRAGMA locking_mode=EXCLUSIVE")
        locker.execute("BEGIN EXCLUSIVE")
        with pytest.raises(TradeLogFileError, match="database is locked .a writer holds it locked"):
            run_count(reader)
        locker.rollback()
        locker.close()
        reader.engine.dispose()
        closed_log.rename(closed_log.with_name("moved.sqlite"))
        with pytest.raises(TradeLogFileError, match="it was moved or deleted"):
            run_count(reader)
    finally:
        reader.close()


def test_a_rollback_journal_database_is_read_without_new_files(tmp_path) -> None:
    path = tmp_path / "log.sqlite"
    writer = TradeLog.open(f"sqlite:///{path}")
    add_run(writer)
    writer.close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.close()
    reader = TradeLog.open_readonly(f"sqlite:///{path}")
    try:
        assert run_count(reader) == 1
    finally:
        reader.close()
    assert files(tmp_path) == ["log.sqlite"]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to become nobody")
def test_a_user_who_cannot_write_the_folder_can_still_read(closed_log) -> None:
    """`bot orders` run by another user (or on read-only media): a plain mode=ro open
    fails there with 'attempt to write a readonly database'. A forked child becomes
    nobody (root ignores permissions) and reads a copy in a folder it cannot write."""
    folder = Path(tempfile.mkdtemp(prefix="bot-ro-", dir="/tmp"))
    try:
        target = folder / "log.sqlite"
        target.write_bytes(closed_log.read_bytes())
        target.chmod(0o644)
        folder.chmod(0o755)
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report and leave, never return into pytest
            answer = b"?"
            try:
                os.setgid(65534)
                os.setuid(65534)
                log = TradeLog.open_readonly(f"sqlite:///{target}")
                answer = str(run_count(log)).encode()
                log.close()
            except BaseException as exc:  # noqa: BLE001 - sent to the parent
                answer = repr(exc).encode()[:500]
            finally:
                os.write(write_end, answer)
                os._exit(0)
        os.close(write_end)
        os.waitpid(pid, 0)
        with os.fdopen(read_end, "rb") as pipe:
            assert pipe.read() == b"1"
        assert files(folder) == ["log.sqlite"]
    finally:
        for p in folder.iterdir():
            p.unlink()
        folder.rmdir()


def test_snapshots_join_their_runs_equity_through_the_run_day_index(tmp_path) -> None:
    """`bot positions` and the dashboard join each snapshot to that day's equity of the
    same account (`account_id IS account_id`). Without an index on (run_id, day) for
    every row, SQLite searched the account index, whose NULL entries are every
    single-account row of every run: 9.3 s after three backtests, 0.55 s with it."""
    from bot.store import queries

    log = TradeLog.open(f"sqlite:///{tmp_path / 'plan.sqlite'}")
    add_run(log)
    statements: list[str] = []
    sa.event.listen(log.engine, "before_cursor_execute",
                    lambda _c, _cur, sql, *_a: statements.append(sql))
    with log.engine.connect() as conn:
        queries.positions(conn, queries.Filters(run=1))
        select = next(s for s in statements if "FROM positions" in s and "equity" in s)
        plans = conn.exec_driver_sql(
            "EXPLAIN QUERY PLAN " + select, tuple([1] * select.count("?"))
        ).all()
    detail = " | ".join(str(row[-1]) for row in plans)
    assert "ix_equity_run_id_day" in detail, detail
    log.close()
