"""Schema migrations on SQLite and PostgreSQL: created on first use, refused when out of
date (with the command to run), fixed by `bot db upgrade`."""

from __future__ import annotations

import datetime as dt
import shutil
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import make_url

from bot.cli import main
from bot.errors import BotError
from bot.store import TradeLog
from bot.store.engines import writer_engine
from bot.store.models import METADATA
from bot.store.schema import (
    HEAD_REVISION,
    INITIAL_REVISION,
    MIGRATIONS,
    PRE_MIGRATION_TABLES,
    TABLES,
    SchemaOutdated,
    alembic_config,
    head_revision,
    new_revision,
    upgrade,
)
from bot.types import OrderStatus
from tests.test_store import backend_url, reset_pg, start

NEXT = "9001"  # the test-only revision's id, after whatever head the shipped ones reach
SECOND_REVISION = '''
"""Test-only revision: orders get a venue."""

import sqlalchemy as sa
from alembic import op

revision = "9001"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("orders") as batch_op:
        batch_op.add_column(sa.Column("venue", sa.Text(), nullable=True))


def downgrade():
    with op.batch_alter_table("orders") as batch_op:
        batch_op.drop_column("venue")
'''


def revision_of(db_url: str) -> str | None:
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def schema_differences(db_url: str) -> list:
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            return compare_metadata(MigrationContext.configure(conn), METADATA)
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from backend_url(request, tmp_path)


@pytest.fixture
def migrations_with_second_revision(tmp_path: Path) -> Path:
    """The shipped migrations plus one more revision, in a temp dir (nothing fake is shipped)."""
    location = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, location, ignore=shutil.ignore_patterns("__pycache__"))
    text = SECOND_REVISION.replace("{head}", head_revision())
    (location / "versions" / f"{NEXT}_venue.py").write_text(text)
    return location


def test_a_new_database_gets_the_whole_schema_at_head(url: str) -> None:
    log = TradeLog.open(url)
    log.close()
    assert revision_of(url) == head_revision()
    assert schema_differences(url) == []
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        assert set(sa.inspect(conn).get_table_names()) >= TABLES
    engine.dispose()
    TradeLog.open(url).close()  # opening again is a no-op


def test_an_older_revision_is_refused_until_upgraded(
    url: str, migrations_with_second_revision: Path
) -> None:
    head = head_revision()
    log = TradeLog.open(url)  # the shipped migrations: their head
    run_id = start(log)
    log.close()

    with pytest.raises(SchemaOutdated) as refused:
        TradeLog.open(url, migrations=migrations_with_second_revision)
    message = str(refused.value)
    assert f"is at schema revision {head}; this version of the bot needs {NEXT}" in message
    assert f"Run: bot db upgrade --database {make_url(url).render_as_string()}" in message
    with pytest.raises(SchemaOutdated):
        TradeLog.open_readonly(url, migrations=migrations_with_second_revision)
    assert revision_of(url) == head  # refusing changed nothing

    engine = writer_engine(url)
    assert upgrade(engine, migrations_with_second_revision) == (head, NEXT)
    assert upgrade(engine, migrations_with_second_revision) == (NEXT, NEXT)
    with engine.connect() as conn:
        assert "venue" in {c["name"] for c in sa.inspect(conn).get_columns("orders")}
    engine.dispose()
    log = TradeLog.open(url, migrations=migrations_with_second_revision)
    assert log.runs()["id"].tolist() == [run_id]
    log.close()


def _pre_migration_database(db_url: str) -> None:
    """A trade log as create_all made it before migrations: revision 0001's first half (the
    tables that existed then), without alembic_version, notional and the two newer tables."""
    engine = writer_engine(db_url)
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), INITIAL_REVISION)
        for table in ("alembic_version", "strategy_state", "macro_observations"):
            conn.execute(sa.text(f"DROP TABLE {table}"))
        conn.execute(sa.text("ALTER TABLE orders DROP COLUMN notional"))
        assert set(sa.inspect(conn).get_table_names()) == PRE_MIGRATION_TABLES
        conn.execute(
            sa.insert(METADATA.tables["runs"]),
            {"mode": "backtest", "strategy": "old", "config_hash": "h", "config": {},
             "code_version": "0.0.9", "data_source": "csv", "synthetic": False,
             "started_at": dt.datetime(2024, 1, 2, tzinfo=dt.UTC), "status": "finished"},
        )
    engine.dispose()


def test_a_database_from_before_migrations_is_refused_then_adopted(url: str, capsys) -> None:
    _pre_migration_database(url)
    with pytest.raises(SchemaOutdated, match="no schema version .it predates migrations.*bot db upgrade"):
        TradeLog.open(url)

    assert main(["db", "upgrade", "--database", url]) == 0
    head = head_revision()
    assert f"upgraded from no version to {head} (head)" in capsys.readouterr().out
    assert revision_of(url) == head and schema_differences(url) == []
    log = TradeLog.open(url)
    assert log.runs()["strategy"].tolist() == ["old"]
    log.close()
    assert main(["db", "current", "--database", url]) == 0
    assert f"revision {head} (head)" in capsys.readouterr().out


def log_with_one_fill(url: str) -> TradeLog:
    """A trade log holding one run, one filled order, its events and its fill."""
    from tests.test_store import make_fill, make_order

    log = TradeLog.open(url)
    start(log)
    order = make_order("rb-SPY-buy")
    log.order(order)
    order.status = OrderStatus.FILLED
    log.execution(order, make_fill("rb-SPY-buy"), order.submitted_at)
    log.flush()
    return log


def test_a_log_with_orders_and_fills_upgrades_through_every_table_rebuild(url: str) -> None:
    """On SQLite a migration that alters `orders` copies, drops and renames it; with
    foreign keys on, DROP TABLE deletes its rows first and every fill or event pointing
    at one failed the whole upgrade: a log from 0001 with one fill could never be
    upgraded, and every command asked for the upgrade that failed. Down to 0001 with
    an order, its event and its fill, then `bot db upgrade`: every row is kept."""
    from bot.store.schema import schema_lock
    from tests.test_store import count

    log = log_with_one_fill(url)
    before = {t: count(log, t) for t in ("runs", "orders", "order_events", "fills")}
    log.close()
    assert before["fills"] == 1 and before["order_events"] >= 1
    engine = writer_engine(url)
    with schema_lock(engine, rebuilds_tables=True) as conn:
        command.downgrade(alembic_config(conn), INITIAL_REVISION)
    engine.dispose()
    assert revision_of(url) == INITIAL_REVISION

    assert main(["db", "upgrade", "--database", url]) == 0
    assert revision_of(url) == head_revision() and schema_differences(url) == []
    log = TradeLog.open(url)
    assert {t: count(log, t) for t in before} == before
    log.close()
    if url.startswith("sqlite"):  # the writer's connections enforce foreign keys again
        log = TradeLog.open(url)
        with log.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        log.close()


def test_a_revision_unknown_to_this_code_is_refused(url: str) -> None:
    TradeLog.open(url).close()
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0099'"))
    engine.dispose()
    with pytest.raises(BotError, match="at revision 0099, which this version of the bot does not know"):
        TradeLog.open(url)


def test_database_passwords_never_reach_the_output(pg_database_url: str, capsys) -> None:
    secret_url = make_url(pg_database_url).set(password="s3cretpw").render_as_string(
        hide_password=False
    )
    # trust authentication accepts any password, so this URL really connects
    assert main(["db", "upgrade", "--database", secret_url]) == 0
    assert main(["db", "current", "--database", secret_url]) == 0
    out = capsys.readouterr().out
    assert "s3cretpw" not in out and ":***@" in out
    message = str(SchemaOutdated(secret_url, "is old"))
    assert "s3cretpw" not in message and ":***@" in message and "BOT_DATABASE_URL" in message
    reset_pg(pg_database_url)


def test_db_revision_autogenerates_the_next_file(tmp_path: Path) -> None:
    location = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, location, ignore=shutil.ignore_patterns("__pycache__"))
    head = head_revision()
    highest = max(int(p.name[:4]) for p in (location / "versions").glob("[0-9]*.py"))
    path = new_revision("nothing changed", location)
    number = f"{highest + 1:04d}"
    assert path.parent == location / "versions" and path.name.startswith(f"{number}_")
    assert head_revision(location) == number
    text = path.read_text()
    assert f"down_revision = '{head}'" in text or f'down_revision = "{head}"' in text
    compile(text, str(path), "exec")
    assert textwrap.dedent(text).count("def upgrade") == 1


def test_head_revision_constant_is_alembics_head():
    """Opening a log at HEAD_REVISION skips Alembic: after adding a migration, set
    HEAD_REVISION in bot/store/schema.py to its id."""
    assert head_revision() == HEAD_REVISION


def test_rows_orphaned_before_an_upgrade_are_named_as_such(tmp_path: Path, capsys) -> None:
    """A log whose fills point at an order deleted by hand (foreign keys off) failed its
    upgrade with "the schema change left rows of fills pointing at ...": blamed on the
    migration, with no way forward. Named before the change now, with the rows."""
    from bot.store.schema import schema_lock

    url = f"sqlite:///{tmp_path / 'log.sqlite'}"
    log_with_one_fill(url).close()
    engine = writer_engine(url)
    with schema_lock(engine, rebuilds_tables=True) as conn:
        command.downgrade(alembic_config(conn), INITIAL_REVISION)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
        conn.exec_driver_sql("DELETE FROM orders")
        conn.commit()
    engine.dispose()
    assert main(["db", "upgrade", "--database", url]) == 2
    err = capsys.readouterr().err
    assert "already holds rows pointing at rows that do not exist, before any schema change" in err
    assert "fills rowid 1 (1 row(s)) -> orders" in err
    assert revision_of(url) == INITIAL_REVISION  # nothing was changed


def test_upgrading_a_trade_log_that_is_not_there_says_it_created_one(tmp_path: Path, capsys) -> None:
    """A mistyped path printed "upgraded from no version to head", and the operator took
    the real log for upgraded. A deployment's first start runs `bot db upgrade` on no file
    on purpose: it still creates the log, and now says that is what it did."""
    typo = tmp_path / "typo" / "tradelgo.sqlite"
    assert main(["db", "upgrade", "--database", f"sqlite:///{typo}"]) == 0
    out = capsys.readouterr().out
    assert f"no trade log was at {typo}: created a new one at schema revision" in out
    assert "upgraded" not in out and typo.exists()
    assert main(["db", "upgrade", "--database", f"sqlite:///{typo}"]) == 0
    assert "already at schema revision" in capsys.readouterr().out


def test_a_bulk_write_keeps_the_two_instants_of_the_autumns_repeated_hour(tmp_path: Path) -> None:
    """01:30 EDT and 01:30 EST compare and hash equal (one tzinfo, fold 0 and 1): the
    bulk writer converted the first and reused it for the second, an hour off."""
    from zoneinfo import ZoneInfo

    from bot.types import Order, OrderRequest, Side

    new_york = ZoneInfo("America/New_York")
    edt = dt.datetime(2024, 11, 3, 1, 30, tzinfo=new_york)
    est = dt.datetime(2024, 11, 3, 1, 30, fold=1, tzinfo=new_york)
    assert edt == est and hash(edt) == hash(est)  # why a memo of the value alone fails
    log = TradeLog.open(f"sqlite:///{tmp_path / 'log.sqlite'}")
    start(log)
    log.order(Order(OrderRequest("fold-1", "rb", "SPY", Side.BUY, 1.0, "r", 1.0), OrderStatus.NEW, edt))
    log.order_status("fold-1", OrderStatus.CANCELED, est, message="an hour later")
    log.flush()
    with log.engine.connect() as conn:
        stamps = [r[0] for r in conn.exec_driver_sql("SELECT at FROM order_events ORDER BY id")]
    log.close()
    assert [pd_utc(s) for s in stamps] == [dt.datetime(2024, 11, 3, 5, 30, tzinfo=dt.UTC),
                                           dt.datetime(2024, 11, 3, 6, 30, tzinfo=dt.UTC)]


def pd_utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(str(text)).replace(tzinfo=dt.UTC)
