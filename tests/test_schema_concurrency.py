"""Several processes opening one new trade log at the same moment (the daemon and a
backtest, two backtests): every one of them must get the complete schema, none an
'already exists' error or the advice to run `bot db upgrade`. Real processes, on SQLite
and on PostgreSQL."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from bot.store.schema import TABLES, head_revision
from tests.test_store import backend_url

PROCESSES = 4


def open_at_once(url: str, barrier, answers) -> None:
    """One process: import everything first, then open the log together with the others."""
    from bot.store.tradelog import TradeLog

    barrier.wait(timeout=120)
    try:
        TradeLog.open(url).close()
        answers.put("ok")
    except BaseException as exc:  # reported to the test, not a traceback in a child
        answers.put(f"{type(exc).__name__}: {exc}")


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from backend_url(request, tmp_path)


def test_processes_creating_one_new_database_at_once_all_succeed(url: str) -> None:
    ctx = mp.get_context("fork")  # the children start with everything imported
    barrier, answers = ctx.Barrier(PROCESSES), ctx.Queue()
    procs = [ctx.Process(target=open_at_once, args=(url, barrier, answers)) for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    results = [answers.get(timeout=180) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert results == ["ok"] * PROCESSES
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            versions = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
            tables = set(sa.inspect(conn).get_table_names())
    finally:
        engine.dispose()
    assert versions == [head_revision()]  # stamped once
    assert tables >= TABLES


class _LockedTwice:
    """A cursor whose first two journal-mode switches meet SQLite's deadlock answer."""

    def __init__(self, failures: int = 2) -> None:
        self.failures, self.calls = failures, 0

    def execute(self, sql: str) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise sqlite3.OperationalError("database is locked")


def test_the_switch_to_wal_is_tried_again_when_sqlite_answers_locked_at_once():
    from bot.store.engines import switch_to_wal

    cursor = _LockedTwice()
    switch_to_wal(cursor)
    assert cursor.calls == 3
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        switch_to_wal(_LockedTwice(failures=10**6), wait=0.2)
    with pytest.raises(sqlite3.OperationalError, match="disk I/O"):  # other errors: at once
        switch_to_wal(_Failing("disk I/O error"))


class _Failing:
    def __init__(self, message: str) -> None:
        self.message = message

    def execute(self, sql: str) -> None:
        raise sqlite3.OperationalError(self.message)
