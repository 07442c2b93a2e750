"""Schema versions: Alembic upgrades, and a refusal to run on an out-of-date database.

A daemon on an old schema would fail in the middle of a trading job, or write half a
record, so opening a trade log checks its revision first and says what to run. The
Alembic Config is built here in code: the installed package needs no alembic.ini.
"""

from __future__ import annotations

import shlex
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url

from bot.errors import BotError
from bot.store.engines import BUSY_TIMEOUT_MS, SCHEMA_LOCK_TIMEOUT_S, mask_url, writer_engine
from bot.store.models import Base

MIGRATIONS = Path(__file__).with_name("migrations")
TABLES = frozenset(Base.metadata.tables)
# Tables of trade logs created before migrations existed (by create_all); see `_adopt`.
PRE_MIGRATION_TABLES = TABLES - {"strategy_state", "macro_observations"}
INITIAL_REVISION = "0001"
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
    config = Config()
    config.set_main_option("script_location", str(location))
    config.attributes["connection"] = connection
    return config


@lru_cache(maxsize=8)
def _scripts(location: str) -> ScriptDirectory:
    config = Config()
    config.set_main_option("script_location", location)
    return ScriptDirectory.from_config(config)


def head_revision(location: Path = MIGRATIONS) -> str:
    head = _scripts(str(location)).get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations in {location}")
    return head


def schema_state(conn: sa.Connection, location: Path = MIGRATIONS) -> SchemaState:
    current = MigrationContext.configure(conn).get_current_revision()
    ours = TABLES & set(sa.inspect(conn).get_table_names())
    return SchemaState(current, head_revision(location), frozenset(ours))


def ensure_current(engine: sa.Engine, url: str, location: Path = MIGRATIONS) -> SchemaState:
    """Create the schema in an empty database; refuse one at another revision.

    Two processes opening a new database at once (the daemon and a backtest, two
    backtests) would both see it empty and both create the tables: the second fails with
    'already exists' or, seeing half the tables, is told to run `bot db upgrade`. So the
    state is read again, and the schema created, under a database-wide lock held until the
    creation commits: whoever comes second finds the schema complete."""
    with engine.connect() as conn:  # the usual case, current already: no lock needed
        state = schema_state(conn, location)
    if state.up_to_date:
        return state
    with schema_lock(engine) as conn:
        state = schema_state(conn, location)
        if state.up_to_date:
            return state
        if state.empty:
            command.upgrade(alembic_config(conn, location), "head")
            return SchemaState(state.head, state.head, TABLES)
    raise _mismatch(url, state, location)


@contextmanager
def schema_lock(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A transaction that holds the database's schema lock until it ends.

    SQLite: BEGIN IMMEDIATE takes the write lock at once (pysqlite would otherwise run the
    DDL outside any transaction, table by table, for others to see half done); waiters
    queue on the busy timeout, raised for the creation. PostgreSQL: a transaction-level
    advisory lock (DDL is transactional there, and the lock ends with the transaction)."""
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql(f"PRAGMA busy_timeout={SCHEMA_LOCK_TIMEOUT_S * 1000}")
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                yield conn
            finally:
                conn.exec_driver_sql(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        else:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{SCHEMA_LOCK_TIMEOUT_S}s'")
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
            yield conn


def check_current(engine: sa.Engine, url: str, location: Path = MIGRATIONS) -> SchemaState:
    """For read-only users: raise unless the schema is at head (an empty database included)."""
    with engine.connect() as conn:
        state = schema_state(conn, location)
    if state.up_to_date:
        return state
    if state.empty:
        raise BotError(f"{mask_url(url)} holds no trade log yet: run a backtest (or the daemon) first")
    raise _mismatch(url, state, location)


def _mismatch(url: str, state: SchemaState, location: Path) -> BotError:
    if state.current is None:
        return SchemaOutdated(
            url, "has trade-log tables but no schema version (it predates migrations)"
        )
    known = {s.revision for s in _scripts(str(location)).walk_revisions()}
    if state.current not in known:
        return BotError(
            f"the trade-log database {mask_url(url)} is at revision {state.current}, which this "
            f"version of the bot does not know (its newest is {state.head}): upgrade the bot"
        )
    return SchemaOutdated(
        url, f"is at schema revision {state.current}; this version of the bot needs {state.head}"
    )


def upgrade(engine: sa.Engine, location: Path = MIGRATIONS) -> tuple[str | None, str]:
    """Migrate to head; a database from before migrations is adopted first. Returns (from, to)."""
    with schema_lock(engine) as conn:
        state = schema_state(conn, location)
        config = alembic_config(conn, location)
        adopted = state.current is None and bool(state.tables)
        if adopted:
            _adopt(conn, state, config)
        command.upgrade(config, "head")
        if adopted and location == MIGRATIONS:
            # Adoption trusts that the old tables were made by create_all: verify it.
            problems = compare_metadata(MigrationContext.configure(conn), Base.metadata)
            if problems:
                listed = "; ".join(str(p) for p in problems[:10])
                raise BotError(f"after adopting, the schema still differs from the code: {listed}")
    return state.current, state.head


def new_revision(message: str, location: Path = MIGRATIONS) -> Path:
    """Autogenerate the next revision file from the models against a scratch database at head."""
    with tempfile.TemporaryDirectory() as tmp:
        engine = writer_engine(f"sqlite:///{tmp}/scratch.sqlite")
        try:
            with engine.begin() as conn:
                config = alembic_config(conn, location)
                command.upgrade(config, "head")
                number = len(list(_scripts(str(location)).walk_revisions())) + 1
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
