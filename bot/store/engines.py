"""Engines for the trade log: a writer for runs, read-only ones for inspection, masked URLs.

SQLite runs in WAL mode so readers never wait for the daemon; read-only engines make
the promise "inspection never writes" hold in the database itself, not just in code.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from bot.errors import BotError, DatabaseUnreachable
from bot.store.locate import SUPPORTED_BACKENDS
from bot.store.sqlite_read import CHANGED, connect_for_reading, drop_if_stale

BUSY_TIMEOUT_MS = 5000
#: how long opening a trade log waits for another process creating or upgrading its schema
SCHEMA_LOCK_TIMEOUT_S = 60
URL_EXAMPLES = "sqlite:///var/tradelog.sqlite or postgresql+psycopg://user:password@host/db"
# user:password@, masked up to the last @: a password may hold one unencoded, which
# SQLAlchemy would read as part of the host (masking too much is the safe side).
_USERINFO = re.compile(r"(://[^:/@]*:).*@")
# A password given as a query parameter (libpq takes password=, sslpassword=, ...).
_SECRET_QUERY = re.compile(r"([?&;][^=&#]*(?:pass|pwd|secret|token|key)[^=&#]*=)[^&#]*", re.I)


def mask_url(url: str | URL) -> str:
    """The URL with its password replaced by ***, safe to print, log and store; by
    pattern, so text that is not a valid URL (a typo must not leak the password in its
    error) and a password in the query string are masked too."""
    text = url if isinstance(url, str) else url.render_as_string(hide_password=True)
    return _SECRET_QUERY.sub(r"\1***", _USERINFO.sub(r"\1***@", text))


def parse_database_url(url: str | URL) -> URL:
    """make_url with a BotError naming the (masked) text and what was expected, for text
    that is no URL and for a database the trade log does not support (mysql://: it asked
    to install MySQLdb, as if that would do)."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise BotError(
            f"{mask_url(url)!r} is not a database URL; expected e.g. {URL_EXAMPLES}"
        ) from None
    backend = parsed.get_backend_name()
    if backend not in SUPPORTED_BACKENDS:
        raise BotError(f"{mask_url(parsed)}: the trade log lives in SQLite or PostgreSQL, not "
                       f"{backend!r}; expected e.g. {URL_EXAMPLES}")
    return parsed


def _create_engine(parsed: URL, **kwargs: Any) -> sa.Engine:
    """sa.create_engine, with an unknown backend or a missing driver said plainly."""
    try:
        return sa.create_engine(parsed, **kwargs)
    except NoSuchModuleError:
        raise BotError(
            f"{mask_url(parsed)}: unknown database backend {parsed.drivername!r}; "
            f"expected e.g. {URL_EXAMPLES}"
        ) from None
    except ModuleNotFoundError as exc:
        raise BotError(
            f"{mask_url(parsed)}: the database driver {exc.name!r} is not installed"
        ) from None


CONNECT_TIMEOUT_S = 10


def _server_timeouts(parsed: URL) -> dict[str, Any]:
    """How long connecting to a database server may take (libpq's connect_timeout),
    unless the URL says: a server that accepts the connection and never answers would
    otherwise hold a job, a heartbeat or a command for ever."""
    if parsed.get_backend_name() != "postgresql" or "connect_timeout" in parsed.query:
        return {}
    return {"connect_timeout": CONNECT_TIMEOUT_S}


def _connected(engine: sa.Engine, url: str | URL) -> sa.Engine:
    """`engine` once one connection works; an unreachable server, a wrong password or an
    unopenable file becomes a BotError naming the masked URL, here rather than as a
    traceback from the first query. Errors of a statement are left alone: those are bugs."""
    try:
        with engine.connect():
            pass
    except DBAPIError as exc:
        engine.dispose()
        if exc.statement is not None:
            raise
        reason = " ".join(str(exc.orig).split()) if exc.orig is not None else str(exc)
        raise DatabaseUnreachable(
            f"cannot connect to the trade-log database {mask_url(url)}: {reason}{_folder_advice(url)}"
        ) from None
    return engine


def _folder_advice(url: str | URL) -> str:
    """Why SQLite could not open a file, when its folder says: SQLite's own "unable to
    open database file" gave no hint of a read-only mount or folder."""
    path = sqlite_file(url)
    if path is None or not path.parent.is_dir() or os.access(path.parent, os.W_OK):
        return ""
    return (f" (its folder {path.parent} is not writable by this user: a read-only mount or "
            "permissions; a trade log needs to write its journal beside the file)")


def sqlite_file(url: str | URL) -> Path | None:
    """The file of a SQLite URL; None for other backends and in-memory databases."""
    parsed = make_url(url)
    db = parsed.database
    if parsed.get_backend_name() != "sqlite" or not db or db == ":memory:":
        return None
    if db.startswith("file:"):
        return Path(db[len("file:"):].split("?", 1)[0]).expanduser()
    return Path(db).expanduser()


# SQLite answers that are about the file or the disk under it, not the statement: what
# they mean for the user and what to do. Matched on SQLite's own message text.
_DISK_ADVICE = (
    "the disk may be full, a file-size limit (ulimit -f) reached, or the device failing; "
    "free space or raise the limit and run again"
)
_SQLITE_FILE_ERRORS: dict[str, str] = {
    "database or disk is full": _DISK_ADVICE,
    "disk I/O error": _DISK_ADVICE,
    "database disk image is malformed": (
        "the file is damaged: restore a backup, or save what is readable with "
        "`sqlite3 {path} .recover | sqlite3 recovered.sqlite`"
    ),
    "file is not a database": "the file is not a SQLite database (or is damaged beyond reading)",
}
# Only for readers: moments a read cannot see the file as it is (run the command again).
_SQLITE_READER_ERRORS = {
    **_SQLITE_FILE_ERRORS,
    CHANGED: "a writer opened it meanwhile; the next read sees its data",
    "database is locked": "a writer holds it locked (a migration, or a long transaction); "
                          "try again in a moment",
    "unable to open database file": "it was moved or deleted, or its folder is unreadable",
}
# Only for the writer: on a reader engine a write is refused on purpose (a bug if tried).
_SQLITE_WRITER_ERRORS = {
    **_SQLITE_FILE_ERRORS,
    "attempt to write a readonly database": "the file or its folder is read-only",
}


class TradeLogFileError(BotError):
    """SQLite refused the trade log's file (disk full, damaged, read-only): names the file."""


def _file_errors(path: Path, known: dict[str, str] = _SQLITE_FILE_ERRORS) -> Any:
    """A handle_error listener turning SQLite's file-level failures (`known`) into a
    one-line TradeLogFileError naming the file; any other error is left as it is (a bug)."""

    def handle(context: sa.engine.ExceptionContext) -> None:
        error = context.original_exception
        if not isinstance(error, sqlite3.DatabaseError):
            return
        text = str(error)
        for key, advice in known.items():
            if key in text:
                raise TradeLogFileError(
                    f"the trade log {path}: {text} ({advice.format(path=path)})"
                ) from error

    return handle


def _writer_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets readers work while the daemon writes; SQLite leaves foreign keys off by default.

    The connection is opened with a busy timeout of SCHEMA_LOCK_TIMEOUT_S: switching a new
    file to WAL waits for another process that is creating the schema in it."""
    cursor = dbapi_connection.cursor()
    switch_to_wal(cursor)
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.close()


def switch_to_wal(cursor: Any, wait: float = SCHEMA_LOCK_TIMEOUT_S) -> None:
    """PRAGMA journal_mode=WAL, retried for `wait` seconds on 'database is locked'.

    Processes switching one new file to WAL together can each hold the lock the other
    needs; SQLite then answers one of them 'database is locked' at once instead of
    waiting on the busy timeout (its deadlock rule). Seen once in a full test run, with
    four processes opening a new trade log at the same moment: tried again a moment
    later, the switch finds the file in WAL already."""
    deadline = time.monotonic() + wait
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


def _reader_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA query_only=ON")
    # SQLite opens any file without reading it: read the header now, so a file that is
    # not a database fails the connection check (a clear error) and not the first query.
    cursor.execute("PRAGMA schema_version")
    cursor.close()


def writer_engine(url: str) -> sa.Engine:
    """Engine for recording; creates the SQLite file's directory if needed."""
    parsed = parse_database_url(url)
    if parsed.get_backend_name() != "sqlite":
        args = _server_timeouts(parsed)
        return _connected(_create_engine(parsed, pool_pre_ping=True, connect_args=args), url)
    path = sqlite_file(parsed)
    if path is not None and not (parsed.database or "").startswith("file:"):
        _make_parent(path, url)
    engine = _create_engine(parsed, connect_args={"timeout": SCHEMA_LOCK_TIMEOUT_S})
    sa.event.listen(engine, "connect", _writer_pragmas)
    if path is not None:
        sa.event.listen(engine, "handle_error", _file_errors(path, _SQLITE_WRITER_ERRORS))
    return _connected(engine, url)


def _make_parent(path: Path, url: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BotError(
            f"cannot create the folder of the trade log {mask_url(url)}: {exc.strerror or exc}"
        ) from None


def _read_only_session(dbapi_connection: Any, _record: Any) -> None:
    """Make every transaction of a new PostgreSQL session read-only.

    Set by a statement after connecting, not through libpq's `options`: passing that
    replaced the URL's own ?options= (and PGOPTIONS), so a reader of a log kept in
    another schema (`-csearch_path=bot`) silently read the public one."""
    cursor = dbapi_connection.cursor()
    cursor.execute("SET SESSION default_transaction_read_only = on")
    cursor.close()
    dbapi_connection.commit()


def reader_engine(url: str) -> sa.Engine:
    """Engine that cannot write: SQLite opened read-only (and without creating -wal or
    -shm files, see bot.store.sqlite_read), PostgreSQL in read-only transactions (the
    URL's own options, such as a search_path, are kept).

    A missing SQLite file is an error here rather than a new empty database.
    """
    parsed = parse_database_url(url)
    if parsed.get_backend_name() != "sqlite":
        args = _server_timeouts(parsed)
        engine = _create_engine(parsed, pool_pre_ping=True, connect_args=args)
        sa.event.listen(engine, "connect", _read_only_session)
        return _connected(engine, url)
    path = sqlite_file(parsed)
    if path is None:
        raise BotError(f"{mask_url(url)}: an in-memory database has no trade log to read")
    if not path.is_file():
        raise BotError(f"no trade log at {path}: run a backtest (or the daemon) first")

    def connect() -> sqlite3.Connection:
        return connect_for_reading(path)

    engine = sa.create_engine("sqlite://", creator=connect, poolclass=sa.pool.QueuePool)
    sa.event.listen(engine, "connect", _reader_pragmas)
    sa.event.listen(engine, "handle_error", _file_errors(path, _SQLITE_READER_ERRORS))
    sa.event.listen(engine, "checkout", drop_if_stale)
    return _connected(engine, url)
