"""Reading many accounts from a CSV file, every row checked before anything is stored.

Columns (a header row names them, in any order):

    broker_account_id   required: the Alpaca account id (a UUID)
    profile             required: conservative, balanced, aggressive or a config file
    suitability         optional: the suitability assessment as a JSON object
    status              optional: active, suspended or closed; when empty (or no such
                        column) a new account is active and a registered one keeps its
                        status, so a closed account stays closed
    created_at          optional: YYYY-MM-DD or an ISO timestamp with its zone; used
                        when the account is added (default: the time of the import)

Every problem is reported as `FILE row N, column C: what was expected` (N counts the
header as row 1, as a spreadsheet does), all of them at once; a file with any problem
imports nothing.
"""

from __future__ import annotations

import csv
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bot.accounts.registry import (
    AccountSpec,
    check_profile,
    parse_broker_account_id,
    parse_created,
    parse_status,
    parse_suitability,
)
from bot.errors import BotError

REQUIRED = ("broker_account_id", "profile")
OPTIONAL = ("suitability", "status", "created_at")
MAX_SHOWN = 20  # problems listed before "... and N more"


class CsvImportError(BotError):
    """A file that cannot be imported; `problems` lists each bad row and column."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.problems = problems
        shown = problems[:MAX_SHOWN]
        more = f"\n  ... and {len(problems) - MAX_SHOWN} more" if len(problems) > MAX_SHOWN else ""
        listed = "\n  ".join(shown)
        super().__init__(
            f"{path}: {len(problems)} problem(s), nothing imported:\n  {listed}{more}"
        )


def read_accounts_csv(path: Path) -> list[AccountSpec]:
    """The accounts of `path`, each row validated; CsvImportError lists every problem."""
    rows = _read_rows(path)
    if not rows:
        raise CsvImportError(path, ["row 1: expected a header row naming the columns"])
    header = [name.strip().lower() for name in rows[0]]
    problems = _header_problems(path, header)
    if problems:
        raise CsvImportError(path, problems)

    specs: list[AccountSpec] = []
    first_row: dict[str, int] = {}
    profile = functools.lru_cache(maxsize=64)(check_profile)  # a config file is read once
    for number, values in enumerate(rows[1:], start=2):
        if not any(v.strip() for v in values):
            continue  # blank lines
        where = f"{path} row {number}"
        if len(values) != len(header):
            problems.append(f"{where}: expected {len(header)} values, got {len(values)}")
            continue
        spec, row_problems = _row(where, dict(zip(header, values, strict=True)), profile)
        problems.extend(row_problems)
        if spec is None:
            continue
        earlier = first_row.setdefault(spec.broker_account_id, number)
        if earlier != number:
            problems.append(
                f"{where}, column broker_account_id: {spec.broker_account_id} is already "
                f"on row {earlier}"
            )
            continue
        specs.append(spec)
    if problems:
        raise CsvImportError(path, problems)
    return specs


def _read_rows(path: Path) -> list[list[str]]:
    """The file's records; a CSV error names the line the reader stopped on and why (a
    field over csv's limit, say), not only that the file cannot be read."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            try:
                return list(reader)
            except csv.Error as exc:
                raise BotError(f"{path} line {reader.line_num}: cannot be read as CSV: {exc}") from None
    except FileNotFoundError:
        raise BotError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BotError(f"{path}: cannot be read as UTF-8 CSV ({type(exc).__name__})") from None


def _header_problems(path: Path, header: list[str]) -> list[str]:
    problems = [
        f"{path} row 1: column {name} is missing (required: {', '.join(REQUIRED)})"
        for name in REQUIRED
        if name not in header
    ]
    known = set(REQUIRED) | set(OPTIONAL)
    for index, name in enumerate(header, start=1):
        if name not in known:
            problems.append(
                f"{path} row 1, column {index} {name!r}: unknown column "
                f"(expected {', '.join((*REQUIRED, *OPTIONAL))})"
            )
    duplicated = sorted({n for n in header if header.count(n) > 1})
    problems.extend(f"{path} row 1: column {n} appears twice" for n in duplicated)
    return problems


def _row(
    where: str, row: dict[str, str], check: Callable[[str], str]
) -> tuple[AccountSpec | None, list[str]]:
    """One row as an AccountSpec, or the problems of each of its bad columns."""
    problems: list[str] = []

    def field(name: str, parse: Callable[[str], Any], *, required: bool = False) -> Any:
        text = row.get(name, "").strip()
        if not text:
            if required:
                problems.append(f"{where}, column {name}: a value is required")
            return None
        try:
            return parse(text)
        except ValueError as exc:
            problems.append(f"{where}, column {name}: {exc}")
            return None

    account = field("broker_account_id", parse_broker_account_id, required=True)
    profile = field("profile", check, required=True)
    suitability = field("suitability", parse_suitability)
    status = field("status", parse_status)
    created = field("created_at", parse_created)
    if problems:
        return None, problems
    # no status: a registered account keeps its own (importing a file again never reopens)
    spec = AccountSpec(account, profile, suitability, status, created, where)
    return spec, []
