"""Scratch trade logs get the migrated schema by copy: the same schema as a migrated new
database, a fresh database each time, in any thread."""

from __future__ import annotations

import threading

from bot.backtest import scratch_tradelog
from bot.store.scratch import memory_tradelog
from bot.store.tradelog import TradeLog


def schema(log: TradeLog) -> list[tuple]:
    """Every table and index; a statement's lines sorted, since the migrations' table
    rebuilds list a table's constraints in no fixed order."""
    with log.engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT type, name, tbl_name, sql FROM sqlite_master").all()
    return sorted(
        (kind, name, table, sorted(line.strip().rstrip(",") for line in (sql or "").splitlines()))
        for kind, name, table, sql in rows
    )


def test_a_copied_schema_is_the_migrated_one():
    migrated = TradeLog.open("sqlite://")
    copied = memory_tradelog()
    assert schema(copied) == schema(migrated) and len(schema(copied)) > 20
    with copied.engine.connect() as conn:
        versions = conn.exec_driver_sql("SELECT version_num FROM alembic_version").all()
    with migrated.engine.connect() as conn:
        assert versions == conn.exec_driver_sql("SELECT version_num FROM alembic_version").all()
    migrated.discard()
    copied.discard()


def test_each_scratch_log_is_its_own_database_in_any_thread():
    first, second = scratch_tradelog("a"), scratch_tradelog("b")
    assert first.run_id == second.run_id == 1  # nothing shared
    assert len(first.runs()) == len(second.runs()) == 1
    seen = []

    def in_a_thread() -> None:
        log = scratch_tradelog("c")
        seen.append((log.run_id, len(log.runs())))
        log.discard()

    thread = threading.Thread(target=in_a_thread)
    thread.start()
    thread.join()
    assert seen == [(1, 1)]
    first.discard()
    second.discard()


def test_a_forked_child_makes_its_own_template():
    import multiprocessing

    scratch_tradelog("parent").discard()  # the parent's template exists
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.apply(_run_id_in_a_child) == 1


def _run_id_in_a_child() -> int:
    from bot.store.scratch import _template

    assert _template.cache_info().currsize == 0  # not the parent's connection
    log = scratch_tradelog("child")
    try:
        return log.run_id
    finally:
        log.discard()
