"""Trade-log frames out: readable terminal tables, CSV and JSON on stdout.

CSV and JSON keep money exact (Decimal written as its digits, never in exponent form; a
JSON string, since a JSON number would go through a float in most readers); tables round
for reading.
Query results (Rows) print without pandas; DataFrames are taken too.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import sys
from collections.abc import Sequence
from decimal import Decimal
from types import ModuleType
from typing import TYPE_CHECKING, Any, TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from bot.store.rows import Rows

if TYPE_CHECKING:
    import pandas as pd

FORMATS = ("table", "csv", "json")
TABLE_ROWS = 100  # a table longer than this shows its last rows unless --limit says otherwise

_MONEY = {"equity", "cash", "positions_value", "market_value", "value", "commission",
          "slippage_cost", "notional"}
_PRICES = {"price", "reference_price", "average_price", "stop_price"}
_QUANTITIES = {"quantity", "filled_quantity"}
_PERCENT = {"drawdown", "weight", "baseline", "overlay", "final"}


def _pandas() -> ModuleType | None:
    """pandas if anything imported it: only then can a value be one of its types (NaT)."""
    return sys.modules.get("pandas")


def plain(value: Any) -> Any:
    """A JSON-safe value: exact decimals as strings, aware times in ISO 8601, NaN as null."""
    pd = _pandas()
    if pd is not None and value is pd.NaT:
        return None
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, Decimal):
        return decimal_text(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dt.date):  # datetime and pandas' Timestamp too
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        return plain(value.item())
    if pd is not None and pd.isna(value):
        return None
    return str(value)


def decimal_text(value: Decimal) -> str:
    """The digits of an exact decimal, positional and without trailing zeros: "0.0000000187",
    "5", "0". str() would give the exponent form for small values ("1.87E-8") and for
    PostgreSQL's zeros at NUMERIC's scale ("0E-10"), and each backend's own trailing zeros
    ("5.0", "5.0000000000") for one number."""
    if not value.is_finite():
        return str(value)
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def records(table: Rows | pd.DataFrame) -> list[dict[str, Any]]:
    rows = Rows.of(table)
    return [{k: plain(v) for k, v in zip(rows.columns, row, strict=True)} for row in rows.rows]


def cell(column: str, value: Any) -> str:
    """One table cell, rounded for reading (exact values are in the CSV and JSON)."""
    pd = _pandas()
    if value is None or (pd is not None and value is pd.NaT) or (
        isinstance(value, float) and math.isnan(value)
    ):
        return "-"
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dict | list):
        return json.dumps(plain(value), separators=(",", ":"))
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Decimal | float):
        number = float(value)
        if column in _PERCENT:
            return f"{number * 100:.2f}%"
        if column in _MONEY:
            return f"{number:,.2f}"
        if column in _PRICES:
            return f"{number:,.4f}"
        if column in _QUANTITIES:
            return f"{number:,.6f}".rstrip("0").rstrip(".")
        return f"{number:,.4f}"
    return str(value)


# Free text that may wrap onto more lines; every other cell (numbers, times, ids) stays whole.
WRAPPING = {"reason", "status_message", "inputs", "message", "context", "warning", "action",
            "data_source", "strategy", "rebalance"}


# What makes a spreadsheet read a cell as a formula (=HYPERLINK(...) runs when opened).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value: Any) -> Any:
    """A CSV field: what JSON gets (plain), nested values as JSON text, None empty; a
    text a spreadsheet would run as a formula gets a leading ' (numbers are left as
    they are: -0.5 is data)."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    value = plain(value)
    if isinstance(value, dict | list):
        return json.dumps(value)
    return "" if value is None else value


def render_table(
    table_rows: Rows | pd.DataFrame, title: str, console: Console, *, total: int | None = None,
    drop: Sequence[str] = (),
) -> None:
    """A table that fits the console: `drop` names the columns to leave out, least
    important first, when it would not (a note says which; CSV and JSON keep them)."""
    from bot.terminal import drop_to_fit, literal, stack

    rows = Rows.of(table_rows)
    # escaped: the title names a SQLite file, which may hold brackets (`col[red]`)
    table = Table(title=literal(title), title_justify="left")
    for column in rows.columns:
        numeric = column in _MONEY | _PRICES | _QUANTITIES | _PERCENT
        table.add_column(column, justify="right" if numeric else "left")
    # Text, not str: rich would read a stored "[inverse_vol: ...]" as markup and drop it
    # (and ":smile:" as an emoji code); parsing every cell for markup was also half of
    # the time a table took to draw.
    for row in rows.rows:
        table.add_row(*(Text(cell(c, v)) for c, v in zip(rows.columns, row, strict=True)))
    table, dropped = drop_to_fit(table, console, drop, WRAPPING)
    # Parts of a table too wide repeat its row labels: the time, and the symbol after it
    # (an order's or a snapshot's time is shared by all the rows of its rebalance)
    headers = [str(c.header) for c in table.columns]
    keep = headers.index("symbol") + 1 if "symbol" in headers[:3] else 1
    for part in stack(table, console, keep=keep, wrap=WRAPPING):
        console.print(part)
    if dropped:
        console.print(f"not shown at {console.width} columns: {', '.join(dropped)} "
                      "(a wider terminal, or --format csv|json, has every column)")
    shown = len(rows)
    if total is not None and total > shown:
        console.print(f"showing the last {shown} of {total} rows; --limit N or --format csv for more")
    elif not shown:
        console.print("no rows match")


def write(
    table: Rows | pd.DataFrame, fmt: str, *, title: str, out: TextIO | None = None, truncate: bool = True,
    drop: Sequence[str] = (),
) -> None:
    """Print `frame` as a table (the last TABLE_ROWS rows if `truncate`), CSV or JSON."""
    out = out or sys.stdout
    if fmt == "csv":
        # Row by row, not through a DataFrame: pandas turns an integer column with an
        # empty cell (a run id, an account id) into floats, and 1 would print as 1.0.
        rows = Rows.of(table)
        writer = csv.writer(out, lineterminator="\n")
        # The csv module quotes a field holding "\n" but not a lone "\r", which readers
        # take for a line break: a row with one is written with every field quoted.
        quoted = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL)
        writer.writerow(rows.columns)
        for row in rows.rows:
            cells = [_csv_cell(v) for v in row]
            (quoted if any(isinstance(c, str) and "\r" in c for c in cells) else writer).writerow(cells)
    elif fmt == "json":
        out.write(json.dumps(records(table), indent=2, allow_nan=False) + "\n")
    else:
        from bot.terminal import console as make_console

        rows = Rows.of(table)
        shown = rows.tail(TABLE_ROWS) if truncate and len(rows) > TABLE_ROWS else rows
        render_table(shown, title, make_console(out), total=rows.matched, drop=drop)
