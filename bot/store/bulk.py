"""Bulk INSERT of plain tuples: the trade log's flush of a whole backtest in one executemany
per table.

SQLAlchemy's own executemany builds a parameter dict per row and converts it cell by cell
through the compiled statement; for the ~60,000 rows of a 15-year backtest that
bookkeeping cost more than the database's work. Here each column is converted in one
pass with its type's own bind processor (the same conversion any statement applies, so
the stored values are the same) and the driver gets the rows as they are.

The conversion (prepare_rows) and the INSERT (insert_prepared) are separate steps: a flush
converts before its transaction opens, and a sweep worker converts its run's records for
the process that writes them. On PostgreSQL (psycopg) the rows go in by COPY, about twice
as fast as an executemany there (benchmarks/tradelog_flush.py).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa


@dataclass(frozen=True)
class PreparedRows:
    """Rows for one table, converted for one dialect column by column: the CPU part of
    an INSERT, done before the transaction that runs it (or in another process: a sweep
    worker prepares its run's records and the main process only inserts them). Plain
    values, so it pickles small."""

    table: str
    columns: tuple[str, ...]
    values: tuple[Sequence[Any], ...]  # one converted sequence per column; () if no rows

    @property
    def count(self) -> int:
        return len(self.values[0]) if self.values else 0


def prepare_rows(
    dialect: sa.Dialect, table: sa.Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> PreparedRows:
    """`rows` (tuples of values in `columns` order) as `table`'s columns bind them for
    `dialect`. A value its column type refuses raises SQLAlchemy's StatementError, as
    conn.execute() would."""
    columns = tuple(columns)
    if not rows:
        return PreparedRows(table.name, columns, ())
    try:
        values = tuple(_converted(cells, table.c[name], dialect)
                       for name, cells in zip(columns, zip(*rows, strict=True), strict=True))
    except Exception as error:  # a value its type refuses: raised as conn.execute() would
        kind = f"{type(error).__module__}.{type(error).__name__}"
        sql = str(_insert(table, columns, dialect))
        raise sa.exc.StatementError(f"({kind}) {error}", sql, None, error) from error
    return PreparedRows(table.name, columns, values)


def insert_prepared(
    conn: sa.Connection,
    table: sa.Table,
    prepared: PreparedRows,
    *,
    before: tuple[str, Sequence[Any]] | None = None,
    keep: Sequence[int] | None = None,
) -> None:
    """INSERT `prepared` into `table`: one executemany, or one COPY on PostgreSQL
    (psycopg). `before`: a column (name, one value per row) put in front, whose values
    need no conversion (the order ids a flush learns in its transaction); `keep`: only
    these rows, by position.

    Errors come as SQLAlchemy's (IntegrityError, DataError) and the transaction is the
    caller's, as with conn.execute()."""
    if prepared.table != table.name:
        raise ValueError(f"rows prepared for {prepared.table} inserted into {table.name}")
    if not prepared.count:
        return
    columns, values = prepared.columns, list(prepared.values)
    if before is not None:
        name, cells = before
        if len(cells) != prepared.count:
            raise ValueError(f"{name}: {len(cells)} values for {prepared.count} rows")
        columns, values = (name, *columns), [cells, *values]
    dialect = conn.dialect
    if dialect.driver == "psycopg":
        rows = list(zip(*values, strict=True))
        _copy(conn, table, columns, rows if keep is None else [rows[i] for i in keep])
        return
    compiled = _insert(table, columns, dialect)
    if dialect.positional:
        where = {name: i for i, name in enumerate(columns)}
        ordered = [values[where[name]] for name in compiled.positiontup or ()]
        params: list[Any] = list(zip(*ordered, strict=True))
    else:
        params = [dict(zip(columns, row, strict=True)) for row in zip(*values, strict=True)]
    if keep is not None:
        params = [params[i] for i in keep]
        if not params:
            return
    conn.exec_driver_sql(str(compiled), params)


def _copy(
    conn: sa.Connection, table: sa.Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """PostgreSQL's COPY FROM STDIN through psycopg, in the caller's transaction: about
    twice as fast as psycopg's pipelined executemany for a backtest's tables. psycopg
    adapts each value as it would for an INSERT; its errors come wrapped as
    SQLAlchemy's (IntegrityError, DataError...), as from conn.execute()."""
    if not rows:
        return
    import psycopg

    quote = conn.dialect.identifier_preparer
    sql = (f"COPY {quote.format_table(table)} ({', '.join(quote.quote(c) for c in columns)}) "
           "FROM STDIN")
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        with cursor.copy(sql) as copy:
            for row in rows:
                copy.write_row(row)
    except psycopg.Error as error:
        raise sa.exc.DBAPIError.instance(sql, None, error, psycopg.Error) from error
    finally:
        cursor.close()


def _insert(table: sa.Table, columns: Sequence[str], dialect: sa.Dialect) -> Any:
    # inline(): no RETURNING of the new ids, which executemany could not return anyway.
    return sa.insert(table).inline().compile(dialect=dialect, column_keys=list(columns))


def _converted(cells: Sequence[Any], column: sa.Column[Any], dialect: sa.Dialect) -> Sequence[Any]:
    """The column's values as its type binds them for `dialect`.

    Days and timestamps repeat across a day's rows (every order of a rebalance has the
    same time), so each distinct one is converted once: equal dates are the same day and
    equal aware datetimes the same instant, which their types store identically."""
    bind_many = getattr(column.type, "bind_many", None)
    if bind_many is not None:  # a type that converts a whole column in one call
        return bind_many(cells, dialect)
    processor: Callable[[Any], Any] | None = column.type.dialect_impl(dialect).bind_processor(dialect)
    if processor is None:
        return cells
    if not _temporal(column.type):
        return [processor(v) for v in cells]
    memo: dict[Any, Any] = {}
    out = []
    for v in cells:
        if v is None:
            out.append(processor(v))
            continue
        # the offset too: 01:30 EDT and 01:30 EST (fold 0 and 1 of the autumn's repeated
        # hour, one tzinfo) compare and hash equal, and the second took the first's instant
        key = (type(v), v, v.utcoffset() if isinstance(v, dt.datetime) else None)
        if key not in memo:
            memo[key] = processor(v)
        out.append(memo[key])
    return out


def _temporal(type_: sa.types.TypeEngine[Any]) -> bool:
    """A Date or DateTime column, or a TypeDecorator over one (UtcDateTime)."""
    impl = getattr(type_, "impl_instance", type_)
    return isinstance(impl, (sa.Date, sa.DateTime))
