"""Rows whose key is one of many values: the look-ups that tell a write which of its
records the database already holds (orders a restart re-records, accounts an import
updates, rebalancing runs seen before).

PostgreSQL gets the values as one array, `column = ANY(:values)`. An IN list of 500
parameters is the same statement for every chunk, which psycopg prepares on the server
after five runs; PostgreSQL's generic plan for it compares each row with the 500 values
one by one, over the whole table while its statistics still call it small: on a fresh
trade log each backtest's flush took 0.6-0.7 s longer than the one before
(benchmarks/tradelog_flush.py). SQLite has no arrays and binds at most 999 variables in
old builds: chunks of 500, each an index look-up.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY

CHUNK = 500  # SQLite's bound-variable limit, with room to spare


def rows_where_in(
    conn: sa.Connection, query: sa.Select[Any], column: sa.Column[Any], values: Sequence[Any]
) -> Iterator[sa.Row[Any]]:
    """The rows of `query` whose `column` is one of `values`."""
    if not values:
        return
    if conn.dialect.name == "postgresql":
        array = sa.bindparam("values", list(values), type_=ARRAY(column.type), unique=True)
        yield from conn.execute(query.where(column == sa.any_(array)))
        return
    for start in range(0, len(values), CHUNK):
        yield from conn.execute(query.where(column.in_(values[start : start + CHUNK])))
