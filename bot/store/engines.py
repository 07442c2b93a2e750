"""Engines for the trade log: a writer for runs, read-only ones for inspection, masked URLs.

SQLite runs in WAL mode so readers never wait for the daemon; read-only engines make
the promise "inspection never writes" hold in the database itself, not just in code.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from bot.errors import BotError

BUSY_TIMEOUT_MS = 5000


def mask_url(url: str | URL) -> str:
    """The URL with its password replaced by ***, safe to print and log."""
    return make_url(url).render_as_string(hide_password=True)


def sqlite_file(url: str | URL) -> Path | None:
    """The file of a SQLite URL; None for other backends and in-memory databases."""
    parsed = make_url(url)
    db = parsed.database
    if parsed.get_backend_name() != "sqlite" or not db or db == ":memory:":
        return None
    if db.startswith("file:"):
        return Path(db[len("file:"):].split("?", 1)[0]).expanduser()
    return Path(db).expanduser()


def _writer_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets readers work while the daemon writes; SQLite leaves foreign keys off by default."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.close()


def _reader_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA query_only=ON")
    cursor.close()


def writer_engine(url: str) -> sa.Engine:
    """Engine for recording; creates the SQLite file's directory if needed."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(parsed, pool_pre_ping=True)
    path = sqlite_file(parsed)
    if path is not None and not (parsed.database or "").startswith("file:"):
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(parsed)
    sa.event.listen(engine, "connect", _writer_pragmas)
    return engine


def reader_engine(url: str) -> sa.Engine:
    """Engine that cannot write: SQLite opened with mode=ro, PostgreSQL in read-only transactions.

    A missing SQLite file is an error here rather than a new empty database.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        args = {"options": "-c default_transaction_read_only=on"}
        return sa.create_engine(parsed, pool_pre_ping=True, connect_args=args)
    path = sqlite_file(parsed)
    if path is None:
        raise BotError(f"{mask_url(url)}: an in-memory database has no trade log to read")
    if not path.is_file():
        raise BotError(f"no trade log at {path}: run a backtest (or the daemon) first")
    uri = f"file:{path.resolve()}?mode=ro"

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(uri, uri=True, check_same_thread=False)

    engine = sa.create_engine("sqlite://", creator=connect, poolclass=sa.pool.QueuePool)
    sa.event.listen(engine, "connect", _reader_pragmas)
    return engine
