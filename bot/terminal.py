"""Terminal output that never cuts a number: consoles sized like the terminal, and rich
tables that stack or drop columns when they do not fit.

rich squeezes a table that is too wide by wrapping or ellipsizing its cells, so at 100
columns a return of 16699.44 became "166…". Here numeric cells never wrap; a table that
still does not fit is split into stacked parts (report tables: the row labels repeat in
each part) or loses its least important columns first (trade-log listings, where a
note says which, and CSV/JSON keep them all).
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Collection, Sequence
from functools import lru_cache
from typing import TextIO

from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table
from rich.text import Text

LABEL_MAX = 24  # a row label longer than this may fold inside a word
PIPED_WIDTH = 200  # a pipe has no width; rich's default 80 would squeeze every table


def console(file: TextIO | None = None, *, stderr: bool = False) -> Console:
    """A console as wide as the terminal; COLUMNS wins when set (as in a shell script),
    and piped output gets PIPED_WIDTH rather than rich's 80."""
    stream = file or (sys.stderr if stderr else sys.stdout)
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return _Console(file=stream, width=int(columns))
    if stream.isatty():
        return _Console(file=stream)
    return _Console(file=stream, width=PIPED_WIDTH)


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """rich exits with status 1 when the reader of its output is gone (`bot orders |
        head -1`); raised instead, so `bot` ends as it does for CSV and JSON (bot.cli)."""
        self.quiet = True
        raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))


def print_whole(con: Console, line: str) -> None:
    """Print a line meant to be copied (a command, a path) on one line, however long.
    rich wraps long lines with real newlines (at 200 columns piped, the terminal's width
    otherwise): a pasted rerun command then ran `--end` without its value."""
    con.print(line, markup=False, highlight=False, soft_wrap=True)


def literal(text: object) -> str:
    """`text` escaped for rich markup, to put a path, a data label or a note inside a
    styled line: a folder named `col[red]` printed as `col`, and `we[/ird]` failed with
    MarkupError."""
    return escape(str(text))


def _words(con: Console, cell: object) -> list[int]:
    """Widths of the words `cell` shows: a text cell as rendered (markup and emoji codes
    resolved; highlighting only styles it, so it is skipped), each distinct one once."""
    if isinstance(cell, str):
        return list(_text_words(con, cell))
    plain = getattr(cell, "plain", str(cell))
    return [cell_len(word) for word in plain.split()] or [0]


@lru_cache(maxsize=8192)
def _text_words(con: Console, cell: str) -> tuple[int, ...]:
    # A table is measured again for each column dropped or stacked: the same cells each time.
    plain = con.render_str(cell, highlight=False).plain
    return tuple(cell_len(word) for word in plain.split()) or (0,)


def min_width(table: Table, con: Console) -> int:
    """The narrowest the table can be drawn without cutting a cell: a no-wrap column as
    wide as its widest cell and header, any other as its longest word. (rich's own
    measure takes the longest word even for no-wrap columns.)"""
    total = 0
    for column in table.columns:
        header = max(_words(con, column.header))
        cells = [_words(con, c) for c in column._cells]
        if column.no_wrap:  # the header does not wrap either
            words = _words(con, column.header)
            header = sum(words) + len(words) - 1
            body = max((sum(w) + len(w) - 1 for w in cells), default=0)
        else:
            body = max((max(w) for w in cells), default=0)
        pad = table.padding[1] + table.padding[3] if table.pad_edge else 2
        total += max(header, body, column.min_width or 0) + pad
    edges = len(table.columns) + 1 if table.box and table.show_edge else len(table.columns) - 1
    return total + edges


def _column_like(column: Column, header: str | None = None) -> Column:
    return Column(
        header=column.header if header is None else header, justify=column.justify,
        style=column.style, header_style=column.header_style, no_wrap=column.no_wrap,
        overflow=column.overflow, min_width=column.min_width, max_width=column.max_width,
        ratio=column.ratio, vertical=column.vertical,
    )


def _subtable(table: Table, indexes: Sequence[int], title: str | Text | None) -> Table:
    part = Table(*[_column_like(table.columns[i]) for i in indexes], title=title,
                 title_justify=table.title_justify, box=table.box, show_lines=table.show_lines)
    cells = [table.columns[i]._cells for i in indexes]
    for r, row in enumerate(table.rows):
        part.add_row(*[column[r] for column in cells], style=row.style, end_section=row.end_section)
    return part


def stack(table: Table, con: Console, keep: int = 1, wrap: Collection[str] = frozenset()) -> list[Table]:
    """`table` as it is if it fits `con`, else stacked parts of consecutive columns, each
    repeating the first `keep` columns (the row labels). Columns after those never wrap,
    except the ones named in `wrap` (free text)."""
    for column in table.columns[keep:]:
        column.no_wrap = str(column.header) not in wrap
        if not column.no_wrap:  # free text folds a word too long for its line, never cuts it
            column.overflow = "fold"  # ("ellipsis" also cut a line of wide characters that fit)
    for column in table.columns[:keep]:  # labels wrap between words, never mid-word
        longest = max((max(_words(con, c)) for c in column._cells), default=0)
        column.min_width = max(column.min_width or 0, min(longest, LABEL_MAX))
        column.overflow = "fold"
    if min_width(table, con) <= con.width or len(table.columns) <= keep + 1:
        return [table]
    labels = list(range(keep))
    groups: list[list[int]] = []
    current: list[int] = []
    for index in range(keep, len(table.columns)):
        trial = current + [index]
        if current and min_width(_subtable(table, labels + trial, None), con) > con.width:
            groups.append(current)
            trial = [index]
        current = trial
    groups.append(current)
    parts = [
        _subtable(table, labels + group, _part_title(table.title, n, len(groups)))
        for n, group in enumerate(groups, start=1)
    ]
    if any(min_width(part, con) > con.width for part in parts):
        return [_records(table)]  # not even one column beside the labels fits
    return parts


def _records(table: Table) -> Table:
    """`table` one field a line, each row a section: for a terminal too narrow for even
    one column beside the row labels, where rich would cut the numbers."""
    title = table.title
    note = " (one field a line: too narrow for columns)"
    records = Table(Column("field", overflow="fold"), Column("value", overflow="fold"),
                    title=title + note if isinstance(title, Text) else f"{title or ''}{note}".strip(),
                    title_justify=table.title_justify, box=table.box, show_header=False)
    cells = [column._cells for column in table.columns]
    for r in range(table.row_count):
        for c, column in enumerate(table.columns):
            records.add_row(column.header, cells[c][r], end_section=c == len(table.columns) - 1)
    return records


def _part_title(title: str | Text | None, n: int, parts: int) -> str | Text | None:
    """The title of part n of a stacked table. A Text title (a path or label, not markup)
    stays Text: made a str, it was read as markup again, and `col[red]` became `col`."""
    if not title:
        return None
    if isinstance(title, Text):
        return title + f" ({n}/{parts})"
    return f"{title} ({n}/{parts})"


def drop_to_fit(
    table: Table, con: Console, order: Sequence[str], wrap: set[str] = frozenset()
) -> tuple[Table, list[str]]:
    """`table` without its least important columns (`order`: the first goes first) until it
    fits `con`; returns it and the headers dropped. Only the columns named in `wrap` may
    wrap their text; every other cell (numbers, times, ids) stays whole."""
    for column in table.columns:
        column.no_wrap = str(column.header) not in wrap
    dropped: list[str] = []
    keep = list(range(len(table.columns)))
    headers = [str(c.header) for c in table.columns]
    for name in order:
        if min_width(_subtable(table, keep, table.title), con) <= con.width:
            break
        if name in headers and headers.index(name) in keep:
            keep.remove(headers.index(name))
            dropped.append(name)
    return (_subtable(table, keep, table.title) if dropped else table), dropped
