"""Bulk INSERT of plain tuples: the trade log's flush of a whole backtest in one executemany
per table.

SQLAlchemy's own executemany builds a parameter dict per row and converts it cell by cell
through the compiled statement; for the ~60,000 rows of a 15-year backtest that
bookkeeping cost more than the database's work. Here each column is converted in one
pass with its type's own bind processor (the same conversion any statement applies, so
the stored values are the same) and the driver gets the rows as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa


def insert_rows(
    conn: sa.Connection, table: sa.Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """INSERT `rows` (tuples of values in `columns` order) into `table` in one executemany.

    Errors come as SQLAlchemy's (IntegrityError, DataError; StatementError for a value
    its column type refuses) and the transaction is the caller's, as with conn.execute()."""
    if not rows:
        return
    dialect = conn.dialect
    # inline(): no RETURNING of the new ids, which executemany could not return anyway.
    compiled = sa.insert(table).inline().compile(dialect=dialect, column_keys=list(columns))
    sql = str(compiled)
    try:
        values = [_converted(cells, table.c[name], dialect)
                  for name, cells in zip(columns, zip(*rows, strict=True), strict=True)]
    except Exception as error:  # a value its type refuses: raised as conn.execute() would
        kind = f"{type(error).__module__}.{type(error).__name__}"
        raise sa.exc.StatementError(f"({kind}) {error}", sql, None, error) from error
    if dialect.positional:
        where = {name: i for i, name in enumerate(columns)}
        ordered = [values[where[name]] for name in compiled.positiontup or ()]
        params: list[Any] = list(zip(*ordered, strict=True))
    else:
        params = [dict(zip(columns, row, strict=True)) for row in zip(*values, strict=True)]
    conn.exec_driver_sql(sql, params)


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
        key = (type(v), v)
        if key not in memo:
            memo[key] = processor(v)
        out.append(memo[key])
    return out


def _temporal(type_: sa.types.TypeEngine[Any]) -> bool:
    """A Date or DateTime column, or a TypeDecorator over one (UtcDateTime)."""
    impl = getattr(type_, "impl_instance", type_)
    return isinstance(impl, (sa.Date, sa.DateTime))
