"""Query results as named columns over plain row tuples.

The inspection commands (`bot orders`, `bot runs`, ...) only print what a query returns;
building a DataFrame for that meant importing pandas, a third of such a command's time.
`Rows` keeps the values exactly as the database driver returned them and becomes a
DataFrame, the same one a query used to build, for the callers that analyse it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class Rows:
    """`rows` are tuples in `columns` order; `total` is how many rows matched when a limit
    kept only these (None: these are all of them)."""

    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    total: int | None = None

    @classmethod
    def of(cls, table: Rows | pd.DataFrame) -> Rows:
        """`table` as Rows (a DataFrame's index is left out)."""
        if isinstance(table, Rows):
            return table
        return cls(tuple(str(c) for c in table.columns),
                   list(table.itertuples(index=False, name=None)))

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def empty(self) -> bool:
        return not self.rows

    def column(self, name: str) -> list[Any]:
        i = self.columns.index(name)
        return [row[i] for row in self.rows]

    def drop(self, names: Iterable[str]) -> Rows:
        """Without the columns `names` (ones it does not have are ignored)."""
        gone = set(names)
        keep = [i for i, c in enumerate(self.columns) if c not in gone]
        return Rows(tuple(self.columns[i] for i in keep),
                    [tuple(row[i] for i in keep) for row in self.rows], self.total)

    def inserted(self, position: int, name: str, values: Sequence[Any]) -> Rows:
        """With column `name` holding `values`, placed at `position`."""
        columns = (*self.columns[:position], name, *self.columns[position:])
        rows = [(*row[:position], v, *row[position:])
                for row, v in zip(self.rows, values, strict=True)]
        return Rows(columns, rows, self.total)

    def where(self, name: str, keep: Callable[[Any], bool]) -> Rows:
        """Only the rows whose value in column `name` passes `keep`."""
        i = self.columns.index(name)
        return Rows(self.columns, [row for row in self.rows if keep(row[i])])

    def tail(self, n: int) -> Rows:
        return Rows(self.columns, self.rows[-n:] if n > 0 else [], self.matched)

    @property
    def matched(self) -> int:
        """How many rows matched: `total` if a limit cut them, else the rows here."""
        return len(self.rows) if self.total is None else self.total

    def frame(self) -> pd.DataFrame:
        """The rows as a DataFrame (numbers and times as the driver returned them)."""
        import pandas as pd

        return pd.DataFrame(self.rows, columns=list(self.columns))
