"""A new SQLite trade log gets its schema from bot.store.sqlite_head instead of running
the migrations: it must be exactly what the migrations make. (Up to the order of a
table's constraints: the migrations' batch rebuilds list them in no fixed order, so
two migrated databases differ in it too.)"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command

from bot.store.engines import writer_engine
from bot.store.schema import HEAD_REVISION, alembic_config, migrated_sqlite_statements
from bot.store.sqlite_head import REVISION, STATEMENTS
from bot.store.tradelog import TradeLog


def lines(sql: str | None) -> list[str]:
    return sorted(line.strip().rstrip(",") for line in (sql or "").splitlines())


def master(engine: sa.Engine) -> tuple[list[tuple], list[tuple]]:
    """sqlite_master (every table and index, the statement's lines sorted) and the rows
    of every table."""
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name"
        ).all()
        tables = [r[1] for r in rows if r[0] == "table"]
        content = [(t, conn.exec_driver_sql(f'SELECT * FROM "{t}"').all()) for t in tables]
    return [(kind, name, table, lines(sql)) for kind, name, table, sql in rows], content


def test_the_module_is_what_the_migrations_leave():
    """After adding a migration: python -c 'from bot.store.schema import
    write_sqlite_head; write_sqlite_head()'."""
    assert REVISION == HEAD_REVISION
    assert sorted(map(lines, STATEMENTS)) == sorted(map(lines, migrated_sqlite_statements()))


def test_a_new_file_gets_exactly_the_migrated_schema(tmp_path):
    migrated = writer_engine(f"sqlite:///{tmp_path / 'migrated.sqlite'}")
    with migrated.begin() as conn:
        command.upgrade(alembic_config(conn), "head")
    created = TradeLog.open(f"sqlite:///{tmp_path / 'new.sqlite'}")
    expected, rows = master(migrated)
    assert master(created.engine) == (expected, rows)
    assert len(expected) > 50 and ("alembic_version", [(HEAD_REVISION,)]) in rows
    assert all(not r for t, r in rows if t != "alembic_version")
    created.close()
    migrated.dispose()
    reopened = TradeLog.open(f"sqlite:///{tmp_path / 'new.sqlite'}")  # at head: accepted
    reopened.close()


def test_a_new_in_memory_log_gets_it_too():
    migrated = writer_engine("sqlite://")
    with migrated.begin() as conn:
        command.upgrade(alembic_config(conn), "head")
    created = TradeLog.open("sqlite://")
    assert master(created.engine) == master(migrated)
    created.discard()
    migrated.dispose()
