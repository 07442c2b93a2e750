"""In-memory trade logs for runs nobody keeps (reference portfolios, `bot once`, stress
tests). Each needs the migrated schema, five logs per `bot backtest`. It is created once
per process in a template (as TradeLog.open creates a new SQLite log, ~12 ms) and copied
into each new log with SQLite's backup API (well under a millisecond)."""

from __future__ import annotations

import os
import sqlite3
import threading
from functools import lru_cache

import sqlalchemy as sa

from bot.store.engines import writer_engine
from bot.store.tradelog import TradeLog

MEMORY = "sqlite://"
_TEMPLATE_LOCK = threading.Lock()  # one backup at a time from the shared template


@lru_cache(maxsize=1)
def _template() -> sqlite3.Connection:
    """A database migrated exactly as TradeLog.open migrates a new one."""
    migrated = TradeLog.open(MEMORY)
    template = sqlite3.connect(":memory:", check_same_thread=False)
    with migrated.engine.connect() as conn:
        conn.connection.driver_connection.backup(template)
    migrated.discard()
    return template


# A forked child (a process pool's worker) makes its own: SQLite connections must not be
# used across a fork.
os.register_at_fork(after_in_child=_template.cache_clear)


def _copy_schema(engine: sa.Engine) -> None:
    # An in-memory engine keeps one connection per thread, so the copy is the database
    # this thread's later statements use (as the migrations were before).
    with _TEMPLATE_LOCK, engine.connect() as conn:
        _template().backup(conn.connection.driver_connection)


def memory_tradelog() -> TradeLog:
    """An empty in-memory trade log at the current schema, owning its engine."""
    return TradeLog._checked(writer_engine(MEMORY), _copy_schema)
