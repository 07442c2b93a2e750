"""Opening a SQLite trade log for reading without writing anything beside it.

What SQLite (3.40) does with a read-only open, checked by tests/test_sqlite_readers.py:
- a WAL database whose `-wal` file exists (a writer is connected, or one crashed):
  `mode=ro` shares the writer's `-wal` and `-shm` and creates nothing;
- a WAL database without `-wal` (no writer connected: the last one checkpointed and
  removed it): `mode=ro` *creates* `-wal` and `-shm` and leaves them behind, and fails
  ("attempt to write a readonly database") where the folder is not writable;
- a rollback-journal database: `mode=ro` creates nothing.

`immutable=1` creates nothing and takes no lock, but promises SQLite that the file never
changes: its page cache never sees later commits, and a writer checkpointing into the
file during a read would hand it a mix of old and new pages. So it is used only in the
second case, and guarded: the connection remembers the file's identity (inode, size,
modification time) when it opened; every statement and fetch checks that the file is
unchanged and that no writer has connected since (a `-wal` exists), and fails rather than
return rows that may mix old and new pages; the pool drops such a connection at checkout,
so the next read sees the writer's data through `mode=ro`.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote

_HEADER = b"SQLite format 3\x00"
_WAL_VERSION = 2  # bytes 18 and 19 of the header: file format versions, 2 = WAL
CHANGED = "the trade log was written while it was being read; read it again"


def wal_file(path: Path) -> Path:
    return path.with_name(path.name + "-wal")


def is_wal_database(path: Path) -> bool:
    """True if the database file's header says WAL (False for anything unreadable)."""
    try:
        with path.open("rb") as handle:
            header = handle.read(20)
    except OSError:
        return False
    return (
        len(header) == 20
        and header[:16] == _HEADER
        and header[18] == _WAL_VERSION
        and header[19] == _WAL_VERSION
    )


def _identity(path: Path) -> tuple[int, ...]:
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class SnapshotConnection(sqlite3.Connection):
    """An immutable=1 connection to a file no writer had open; see the module docstring."""

    path: Path
    opened: tuple[int, ...]

    def cursor(self, factory: Any = None) -> sqlite3.Cursor:  # type: ignore[override]
        return super().cursor(factory or SnapshotCursor)

    def unchanged(self) -> bool:
        """The file is the one opened (its pages in our cache are still right)."""
        try:
            return _identity(self.path) == self.opened
        except OSError:
            return False

    def reusable(self) -> bool:
        """Unchanged, and no writer connected since (its commits live in its -wal)."""
        return self.unchanged() and not wal_file(self.path).exists()

    def check(self) -> None:
        """Fail once a writer has connected or the file changed: a checkpoint can only
        come from a connected writer, and a timestamp may be too coarse to show it."""
        if not self.reusable():
            raise sqlite3.OperationalError(CHANGED)


class SnapshotCursor(sqlite3.Cursor):
    """Checks after each step that the rows just read came from an unchanged file."""

    connection: SnapshotConnection

    def execute(self, *args: Any) -> SnapshotCursor:  # type: ignore[override]
        super().execute(*args)
        self.connection.check()
        return self

    def fetchone(self) -> Any:
        row = super().fetchone()
        self.connection.check()
        return row

    def fetchmany(self, *args: Any, **kwargs: Any) -> list[Any]:
        rows = super().fetchmany(*args, **kwargs)
        self.connection.check()
        return rows

    def fetchall(self) -> list[Any]:
        rows = super().fetchall()
        self.connection.check()
        return rows


def connect_for_reading(path: Path) -> sqlite3.Connection:
    """A read-only connection that leaves no file beside `path` (see the module docstring)."""
    path = path.resolve()
    uri = f"file:{quote(str(path))}?mode=ro"
    if wal_file(path).exists() or not is_wal_database(path):
        return sqlite3.connect(uri, uri=True, check_same_thread=False)
    opened = _identity(path)
    conn = sqlite3.connect(
        uri + "&immutable=1", uri=True, check_same_thread=False, factory=SnapshotConnection
    )
    assert isinstance(conn, SnapshotConnection)
    conn.path, conn.opened = path, opened
    return conn


def drop_if_stale(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """Pool checkout hook: a snapshot connection whose file changed, or that a writer
    has joined, is discarded (DisconnectionError makes the pool open a fresh one)."""
    if isinstance(dbapi_connection, SnapshotConnection) and not dbapi_connection.reusable():
        from sqlalchemy.exc import DisconnectionError

        raise DisconnectionError("the trade log changed since this connection opened")
