"""Schema versions: Alembic upgrades, and a refusal to run on an out-of-date database.

A daemon on an old schema would fail in the middle of a trading job, or write half a
record, so opening a trade log checks its revision first and says what to run. A database
at the right revision whose tables lack a column the code writes (changed by hand, or a
half-restored backup) is refused too, naming what is missing. The Alembic Config is built
here in code: the installed package needs no alembic.ini.

Alembic is imported only when a database is not already at HEAD_REVISION: loading it and
its scripts cost a read-only command (`bot orders`) more than its query. A new SQLite
database does not need it either: it gets the statements the migrations leave in
sqlite_master (bot.store.sqlite_head, checked against the migrations by the tests), so
its schema is the migrated one, without running ten revisions on every new file.
"""

from __future__ import annotations

import shlex
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from bot.errors import BotError
from bot.store.engines import BUSY_TIMEOUT_MS, SCHEMA_LOCK_TIMEOUT_S, mask_url, writer_engine
from bot.store.models import METADATA

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

MIGRATIONS = Path(__file__).with_name("migrations")
TABLES = frozenset(METADATA.tables)
# Tables of trade logs created before migrations existed (by create_all); see `_adopt`.
PRE_MIGRATION_TABLES = frozenset({
    "runs", "regime_decisions", "targets", "risk_events", "orders", "order_events", "fills",
    "equity", "positions", "incidents",
})
INITIAL_REVISION = "0001"
#: The newest revision in migrations/versions; tests check it is Alembic's head. A
#: database stamped with it is current without asking Alembic (see _at_head).
HEAD_REVISION = "0018"
#: pg_advisory_xact_lock key of schema changes (any fixed number; "lvrbot" in ASCII)
SCHEMA_LOCK_KEY = 0x6C7672626F74


class SchemaOutdated(BotError):
    """The database's schema is older than the code; the message says what to run."""

    def __init__(self, url: str, detail: str) -> None:
        shown = mask_url(url)
        hint = ""
        if make_url(url).password:
            hint = " (the password is hidden here; with BOT_DATABASE_URL set, `bot db upgrade` uses it)"
        super().__init__(
            f"the trade-log database {shown} {detail}. "
            f"Run: bot db upgrade --database {shlex.quote(shown)}{hint}"
        )


@dataclass(frozen=True)
class SchemaState:
    """Where a database stands: its revision (None if unversioned) and which of our tables exist."""

    current: str | None
    head: str
    tables: frozenset[str]

    @property
    def empty(self) -> bool:
        return self.current is None and not self.tables

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


def alembic_config(connection: sa.Connection, location: Path = MIGRATIONS) -> Config:
    """A Config that runs env.py on `connection` (inside the caller's transaction)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(location))
    config.attributes["connection"] = connection
    return config


@lru_cache(maxsize=8)
def _scripts(location: str) -> ScriptDirectory:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", location)
    return ScriptDirectory.from_config(config)


def head_revision(location: Path = MIGRATIONS) -> str:
    head = _scripts(str(location)).get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations in {location}")
    return head


def schema_state(conn: sa.Connection, location: Path = MIGRATIONS) -> SchemaState:
    from alembic.migration import MigrationContext

    current = MigrationContext.configure(conn).get_current_revision()
    ours = TABLES & set(sa.inspect(conn).get_table_names())
    return SchemaState(current, head_revision(location), frozenset(ours))


def missing_layout(conn: sa.Connection) -> list[str]:
    """What the models need that the database lacks: whole tables, or columns of a table
    (one query per kind on PostgreSQL). Extra tables and columns are no concern."""
    inspector = sa.inspect(conn)
    present = set(inspector.get_table_names())
    wanted = [t for t in METADATA.tables if t in present]
    columns = inspector.get_multi_columns(filter_names=wanted) if wanted else {}
    have = {table: {c["name"] for c in cols} for (_schema, table), cols in columns.items()}
    problems = []
    for name, table in METADATA.tables.items():
        if name not in present:
            problems.append(f"table {name} is missing")
            continue
        lacking = [c.name for c in table.columns if c.name not in have.get(name, set())]
        if lacking:
            problems.append(f"table {name} lacks column {', '.join(lacking)}")
    return problems


class SchemaMismatch(BotError):
    """The database says it is at a revision its tables do not match."""

    def __init__(self, url: str, revision: str | None, problems: list[str]) -> None:
        super().__init__(
            f"the trade-log database {mask_url(url)} is at schema revision {revision} but its "
            f"tables do not match it: {'; '.join(problems)}. It was changed outside the bot or "
            "restored in part; `bot db upgrade` cannot repair that: restore a backup or use a "
            "new database"
        )


def _at_head(conn: sa.Connection, location: Path) -> SchemaState | None:
    """The state of a database stamped HEAD_REVISION, or of one with no tables at all,
    read with one query; None for any other (or another `location`'s), which
    schema_state() then reads through Alembic."""
    if location != MIGRATIONS:
        return None
    present = set(sa.inspect(conn).get_table_names())
    if not present:
        return SchemaState(None, HEAD_REVISION, frozenset())
    if "alembic_version" not in present:
        return None
    stamped = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
    if stamped != [HEAD_REVISION]:
        return None
    return SchemaState(HEAD_REVISION, HEAD_REVISION, frozenset(TABLES & present))


def _check_layout(conn: sa.Connection, url: str, state: SchemaState) -> SchemaState:
    problems = missing_layout(conn)
    if problems:
        raise SchemaMismatch(url, state.current, problems)
    return state


def ensure_current(engine: sa.Engine, url: str, location: Path = MIGRATIONS) -> SchemaState:
    """Create the schema in an empty database; refuse one at another revision or one whose
    tables do not match its revision.

    Two processes opening a new database at once (the daemon and a backtest, two
    backtests) would both see it empty and both create the tables: the second fails with
    'already exists' or, seeing half the tables, is told to run `bot db upgrade`. So the
    state is read again, and the schema created, under a database-wide lock held until the
    creation commits: whoever comes second finds the schema complete."""
    with engine.connect() as conn:  # the usual case, current already: no lock needed
        state = _at_head(conn, location) or schema_state(conn, location)
        if state.up_to_date:
            return _check_layout(conn, url, state)
    with schema_lock(engine) as conn:
        state = _at_head(conn, location) or schema_state(conn, location)
        if state.up_to_date:
            return _check_layout(conn, url, state)
        if state.empty and conn.dialect.name == "sqlite" and location == MIGRATIONS:
            create_sqlite_head(conn)
            return SchemaState(HEAD_REVISION, HEAD_REVISION, TABLES)
        if state.empty:
            from alembic import command

            command.upgrade(alembic_config(conn, location), "head")
            return SchemaState(state.head, state.head, TABLES)
    raise _mismatch(url, state, location)


@contextmanager
def schema_lock(engine: sa.Engine, *, rebuilds_tables: bool = False) -> Iterator[sa.Connection]:
    """A transaction that holds the database's schema lock until it ends.

    SQLite: BEGIN IMMEDIATE takes the write lock at once (pysqlite would otherwise run the
    DDL outside any transaction, table by table, for others to see half done); waiters
    queue on the busy timeout, raised for the creation. PostgreSQL: a transaction-level
    advisory lock (DDL is transactional there, and the lock ends with the transaction).

    `rebuilds_tables` (migrations): on SQLite foreign keys are off for the transaction
    and checked before it commits. A table altered in batch mode is copied, dropped and
    renamed, and with them on, SQLite's DROP TABLE deletes the rows first: any fill or
    event pointing at an order failed the whole upgrade (its PRAGMA is a no-op inside a
    transaction, hence set around it)."""
    with engine.connect() as conn:
        keys_off = rebuilds_tables and conn.dialect.name == "sqlite"
        if keys_off:
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            conn.commit()
        try:
            with conn.begin():
                yield from _locked(conn, check_keys=keys_off)
        finally:
            if keys_off:
                conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                conn.commit()


def _locked(conn: sa.Connection, *, check_keys: bool) -> Iterator[sa.Connection]:
    """schema_lock's lock, taken in `conn`'s open transaction."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql(f"PRAGMA busy_timeout={SCHEMA_LOCK_TIMEOUT_S * 1000}")
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            if check_keys:
                _refuse_orphans_before(conn)
            yield conn
            broken = conn.exec_driver_sql("PRAGMA foreign_key_check").first() if check_keys else None
            if broken is not None:
                raise BotError(f"the schema change left rows of {broken[0]} pointing at rows of "
                               f"{broken[2]} that do not exist; nothing was changed")
        finally:
            conn.exec_driver_sql(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    else:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{SCHEMA_LOCK_TIMEOUT_S}s'")
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
        yield conn


def _refuse_orphans_before(conn: sa.Connection) -> None:
    """Rows already pointing at rows that do not exist (deleted by hand with foreign keys
    off) would be blamed on the schema change after it, with no way forward: named
    before it starts, with the rows to repair."""
    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if not broken:
        return
    by_table: dict[tuple[str, str], list[int]] = {}
    for table, rowid, parent, _key in broken:
        by_table.setdefault((table, parent), []).append(rowid)
    listed = "; ".join(
        f"{table} rowid {', '.join(map(str, rows[:10]))}{' ...' if len(rows) > 10 else ''} "
        f"({len(rows)} row(s)) -> {parent}"
        for (table, parent), rows in by_table.items()
    )
    raise BotError(f"the trade log already holds rows pointing at rows that do not exist, before "
                   f"any schema change: {listed}; nothing was changed: repair or delete them "
                   "(`PRAGMA foreign_key_check` lists them) and run again")


def create_sqlite_head(conn: sa.Connection) -> None:
    """Create the migrated schema, stamped HEAD_REVISION, in an empty SQLite database."""
    from bot.store.sqlite_head import REVISION, STATEMENTS

    if REVISION != HEAD_REVISION:  # a migration added without regenerating the module
        raise RuntimeError(f"bot.store.sqlite_head is at {REVISION}, not {HEAD_REVISION}")
    for statement in STATEMENTS:
        conn.exec_driver_sql(statement)
    conn.exec_driver_sql(f"INSERT INTO alembic_version (version_num) VALUES ('{REVISION}')")


def migrated_sqlite_statements(location: Path = MIGRATIONS) -> list[str]:
    """The statements in sqlite_master of a new SQLite database migrated by Alembic to
    head, in creation order (SQLite's own indexes excluded: the statements make them)."""
    from alembic import command

    engine = writer_engine("sqlite://")
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn, location), "head")
            rows = conn.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY rowid"
            ).scalars().all()
    finally:
        engine.dispose()
    return list(rows)


SQLITE_HEAD = Path(__file__).with_name("sqlite_head.py")


def write_sqlite_head(path: Path = SQLITE_HEAD) -> Path:
    """Regenerate bot.store.sqlite_head from the migrations (after adding one)."""
    lines = [
        '"""The schema the migrations leave in a new SQLite database, created without them',
        "(bot.store.schema.create_sqlite_head). Generated by bot.store.schema.write_sqlite_head",
        'after each new migration; tests/test_sqlite_head.py checks it."""',
        "",
        f"REVISION = {head_revision()!r}",
        "",
        "STATEMENTS: tuple[str, ...] = (",
        *(f"    {statement!r}," for statement in migrated_sqlite_statements()),
        ")",
        "",
    ]
    path.write_text("\n".join(lines))
    return path


def check_current(engine: sa.Engine, url: str, location: Path = MIGRATIONS) -> SchemaState:
    """For read-only users: raise unless the schema is at head (an empty database included)
    and its tables match it."""
    with engine.connect() as conn:
        state = _at_head(conn, location) or schema_state(conn, location)
        if state.up_to_date:
            return _check_layout(conn, url, state)
    if state.empty:
        raise BotError(f"{mask_url(url)} holds no trade log yet: run a backtest (or the daemon) first")
    raise _mismatch(url, state, location)


def _mismatch(url: str, state: SchemaState, location: Path) -> BotError:
    if state.current is None:
        return SchemaOutdated(
            url, "has trade-log tables but no schema version (it predates migrations)"
        )
    unknown = _unknown_revision(url, state, location)
    if unknown is not None:
        return unknown
    return SchemaOutdated(
        url, f"is at schema revision {state.current}; this version of the bot needs {state.head}"
    )


def known_revision(revision: str, location: Path = MIGRATIONS) -> bool:
    """Whether a migration here names `revision` (else a newer bot wrote it)."""
    return revision in {s.revision for s in _scripts(str(location)).walk_revisions()}


def _unknown_revision(url: str, state: SchemaState, location: Path) -> BotError | None:
    """A revision no migration here names: written by a newer version of the bot."""
    if state.current is None or known_revision(state.current, location):
        return None
    return BotError(
        f"the trade-log database {mask_url(url)} is at revision {state.current}, which this "
        f"version of the bot does not know (its newest is {state.head}): upgrade the bot"
    )


def upgrade(
    engine: sa.Engine, location: Path = MIGRATIONS, url: str | None = None
) -> tuple[str | None, str]:
    """Migrate to head; a database from before migrations is adopted first. Returns (from, to).
    A revision this code does not know, or tables that do not match their revision
    afterwards, are BotErrors naming the (masked) `url`."""
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    shown = url or engine.url.render_as_string(hide_password=True)
    with schema_lock(engine, rebuilds_tables=True) as conn:
        state = schema_state(conn, location)
        unknown = _unknown_revision(shown, state, location)
        if unknown is not None:
            raise unknown
        config = alembic_config(conn, location)
        adopted = state.current is None and bool(state.tables)
        if adopted:
            _adopt(conn, state, config)
        command.upgrade(config, "head")
        if adopted and location == MIGRATIONS:
            # Adoption trusts that the old tables were made by create_all: verify it.
            problems = compare_metadata(MigrationContext.configure(conn), METADATA)
            if problems:
                listed = "; ".join(str(p) for p in problems[:10])
                raise BotError(f"after adopting, the schema still differs from the code: {listed}")
        _check_layout(conn, shown, SchemaState(state.head, state.head, state.tables))
    return state.current, state.head


def new_revision(message: str, location: Path = MIGRATIONS) -> Path:
    """Autogenerate the next revision file from the models against a scratch database at head."""
    from alembic import command

    with tempfile.TemporaryDirectory() as tmp:
        engine = writer_engine(f"sqlite:///{tmp}/scratch.sqlite")
        try:
            with engine.begin() as conn:
                config = alembic_config(conn, location)
                command.upgrade(config, "head")
                # After the highest numbered revision (ids need not be contiguous).
                numbered = [int(r.revision) for r in _scripts(str(location)).walk_revisions()
                            if r.revision.isdigit()]
                number = max(numbered, default=0) + 1
                script = command.revision(
                    config, message, autogenerate=True, rev_id=f"{number:04d}"
                )
        finally:
            engine.dispose()
    _scripts.cache_clear()
    if script is None or isinstance(script, list):
        raise RuntimeError("alembic did not write exactly one revision")
    return Path(script.path)


def _adopt(conn: sa.Connection, state: SchemaState, config: Config) -> None:
    """Bring a trade log made by create_all before migrations existed to revision 0001.

    Revision 0001 creates exactly that layout and then adds to it, so with the
    `adopt_pre_migration` flag it skips the tables that already exist.
    """
    from alembic import command

    columns = {c["name"] for c in sa.inspect(conn).get_columns("orders")} if "orders" in state.tables else set()
    if state.tables != PRE_MIGRATION_TABLES or "notional" in columns:
        raise BotError(
            "the database has trade-log tables but no schema version, and they are not the "
            f"pre-migration layout ({', '.join(sorted(state.tables))}): restore a backup or "
            "use a new database"
        )
    config.attributes["adopt_pre_migration"] = True
    try:
        command.upgrade(config, INITIAL_REVISION)
    finally:
        config.attributes["adopt_pre_migration"] = False
