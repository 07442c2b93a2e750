"""argparse types shared by the commands: a value no command could use is a usage error
naming the option and what was expected, before any work, never a traceback from the
database (a 31-digit run id overflows SQLite's 64-bit integers) or from logging."""

from __future__ import annotations

import argparse
import math

from bot.types import is_ticker

#: the largest id the trade log can store (64-bit signed integers in SQLite and PostgreSQL)
MAX_ID = 2**63 - 1
#: more rows than any trade log holds; 0 already means "all"
MAX_ROWS = 10**9
#: the highest TCP port
MAX_PORT = 65535
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def whole_number(text: str, low: int, high: int, expected: str) -> int:
    """`text` as an int in [low, high], or a usage error saying what was expected."""
    try:
        value = int(text)
    except ValueError:  # also the digit limit of int() on thousands of digits
        value = None
    if value is None or not low <= value <= high:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def positive_seconds(text: str) -> float:
    """A duration in seconds: finite and above 0 (nan or inf would make every comparison
    with it pass or fail whatever the clock says)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0, got {text!r}")
    return value


def interval_seconds(text: str) -> float:
    """How often to do something, in seconds: 0 (never) to a day; finite."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 86_400:  # nan too
        raise argparse.ArgumentTypeError(f"expected seconds from 0 to 86400, got {text!r}")
    return value


def directory(text: str) -> str:
    """A folder the user names (--data-dir): not empty. `--data-dir "$DATA"` with DATA
    unset was read as no folder given, and the run used the synthetic market."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a directory, got an empty value")
    return text


def symbol(text: str) -> str:
    """A ticker as the trade log stores it: " tqqq" is TQQQ, not a symbol nothing matches."""
    ticker = text.strip().upper()
    if not is_ticker(ticker):
        raise argparse.ArgumentTypeError(f"expected a ticker such as TQQQ, got {text!r}")
    return ticker


def run_id(text: str) -> int:
    """A run id as `bot runs` lists them."""
    return whole_number(
        text, 1, MAX_ID, f"a run id, a whole number from 1 to {MAX_ID} (see `bot runs`)"
    )


def refresh_seconds(text: str) -> int:
    """--refresh of the dashboard: whole seconds, at least 2 (a page polled faster only
    loads the database)."""
    return whole_number(text, 2, 86_400, "a whole number of seconds from 2 to 86400")


def row_limit(text: str) -> int:
    """--limit: how many of the most recent rows; 0 for all."""
    return whole_number(text, 0, MAX_ROWS, f"a row count from 0 (all) to {MAX_ROWS}")


def positive_count(text: str) -> int:
    """A count of 1 or more (workers, concurrency, batches listed)."""
    return whole_number(text, 1, MAX_ROWS, f"a whole number from 1 to {MAX_ROWS}")


def port_number(text: str) -> int:
    """--port of a server that prints its address (so 0, "any free port", is refused)."""
    return whole_number(text, 1, MAX_PORT, f"a port number 1-{MAX_PORT}")


def log_level(text: str) -> str:
    """--log-level, in any case; the choices are listed in the error."""
    level = text.upper()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(
            f"expected one of {', '.join(LOG_LEVELS)}, got {text!r}"
        )
    return level
