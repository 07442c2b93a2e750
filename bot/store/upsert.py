"""INSERT ... ON CONFLICT DO UPDATE for the two supported backends (SQLite and PostgreSQL).

Both speak the same ON CONFLICT clause; SQLAlchemy only needs the right dialect's
insert() to render it, so one helper covers both without a read-then-write race.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite


def dialect_insert(bind: sa.Connection | sa.Engine, table: sa.Table) -> Any:
    """The connection's (or engine's) own dialect's insert(), which renders ON CONFLICT:
    the one place that picks it, for every upsert and insert-or-ignore of bot/."""
    dialect = bind.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"upsert: unsupported database {dialect!r}")


def upsert(
    conn: sa.Connection,
    table: sa.Table,
    rows: list[dict[str, Any]],
    keys: Sequence[str],
    *,
    only_if_changed: Sequence[str] = (),
) -> None:
    """Insert `rows`; where `keys` already exist, overwrite the other columns.

    With `only_if_changed`, an existing row is overwritten only when one of those
    columns differs, so unchanged rows keep their other columns (e.g. fetch times).
    """
    insert = dialect_insert(conn, table)
    updated = {c.name: insert.excluded[c.name] for c in table.columns if c.name not in keys}
    where = None
    if only_if_changed:
        where = sa.or_(*(table.c[c].is_distinct_from(insert.excluded[c]) for c in only_if_changed))
    stmt = insert.on_conflict_do_update(index_elements=list(keys), set_=updated, where=where)
    conn.execute(stmt, rows)
