"""The NYSE's sessions (day, open, close) as three arrays, kept on disk between commands.

Building exchange_calendars' XNYS calendar costs about 0.3 s per process (its import and
its holiday rules from 1900), a sixth of a cold `bot backtest`, and every command that
touches a trading day needed it. The arrays it yields are a pure function of the
installed exchange_calendars and of the day it is built (its calendar ends a year after
today), so they are stored once a day in the user's cache directory and read back in
about a millisecond. A cache that cannot be read or written is rebuilt or skipped,
never an error: it only saves time.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.util
import os
import tempfile
import time
import zlib
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np

from bot.logs import get_logger

log = get_logger(__name__)

CALENDAR_START = "1900-01-01"  # so data checks can place user files older than the bundled ones
CACHE_ENV = "BOT_CACHE_DIR"  # overrides the user cache directory (tests use their own)
_PREFIX = "xnys-sessions-"
# The package's files that decide XNYS sessions and hours: a reinstall or upgrade
# rewrites them, and their modification times then no longer match a stored table.
_SOURCES = ("exchange_calendar_xnys.py", "exchange_calendar.py", "us_holidays.py")


class SessionTable(NamedTuple):
    """XNYS sessions in order: each day with its regular open and close (early closes
    included) as UTC instants."""

    days: np.ndarray  # datetime64[D]
    opens: np.ndarray  # datetime64[ns], UTC
    closes: np.ndarray  # datetime64[ns], UTC


def today() -> dt.date:
    """The day the calendar is built for (tests move it)."""
    return dt.date.today()


def xnys_calendar():
    """exchange_calendars' XNYS calendar from CALENDAR_START to a year after today: what
    the table is made of, and what answers questions the table cannot (dates outside
    it, with the library's own errors). Built once a day: a daemon running for a year
    would otherwise reach its end, and every later day would be "not a session"."""
    return _calendar_for(today())


@lru_cache(maxsize=1)
def _calendar_for(day: dt.date):
    import warnings

    import exchange_calendars as xcals

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return xcals.get_calendar("XNYS", start=CALENDAR_START, end=day + dt.timedelta(days=365))


def session_table() -> SessionTable:
    """The XNYS sessions, from the day's stored table if there is a valid one (built
    again each day, as the calendar is). Its arrays are read-only: every caller shares
    them."""
    return _table_for(today())


@lru_cache(maxsize=1)
def _table_for(day: dt.date) -> SessionTable:
    try:
        path = cache_path(day)
    except Exception as exc:  # no home directory to find a cache in, for one
        log.debug("session_table.no_cache", error=str(exc))
        path = None
    table = read_table(path) if path is not None else None
    if table is None:
        table = build_table(day)
        if path is not None:
            write_table(path, table)
    for array in table:
        array.flags.writeable = False
    return table


def days_between(first: dt.date, last: dt.date) -> np.ndarray | None:
    """The sessions from `first` to `last` inclusive (a read-only view of the table), or
    None if the span is not inside the table: the caller then asks a calendar."""
    days = session_table().days
    lo, hi = np.datetime64(first, "D"), np.datetime64(last, "D")
    if not (days[0] <= lo and hi <= days[-1]):
        return None
    return days[np.searchsorted(days, lo) : np.searchsorted(days, hi, side="right")]


def build_table(day: dt.date | None = None) -> SessionTable:
    """The table from exchange_calendars itself (what a stored one must equal), as
    built on `day` (default today)."""
    cal = _calendar_for(day or today())
    return SessionTable(
        cal.sessions.values.astype("datetime64[D]"),
        cal.opens.dt.tz_localize(None).to_numpy().astype("datetime64[ns]"),  # UTC, naive
        cal.closes.dt.tz_localize(None).to_numpy().astype("datetime64[ns]"),
    )


def cache_dir() -> Path:
    """BOT_CACHE_DIR, else the platform's user cache directory for leverbot."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured)
    import platformdirs

    return Path(platformdirs.user_cache_dir("leverbot"))


def cache_path(day: dt.date) -> Path | None:
    """Where the table built on `day` by the installed exchange_calendars is stored;
    None if that package cannot be found (the build then says why)."""
    spec = importlib.util.find_spec("exchange_calendars")
    if spec is None or spec.origin is None:
        return None
    package = Path(spec.origin).parent
    try:
        stamps = [f"{name}:{(package / name).stat().st_mtime_ns}" for name in _SOURCES]
    except OSError:
        return None
    fingerprint = zlib.crc32("|".join([str(package), *stamps]).encode())
    return cache_dir() / f"{_PREFIX}{day:%Y%m%d}-{fingerprint:08x}.npz"


def _install(path: Path) -> str:
    """The fingerprint part of a table's name: which installed library built it."""
    return path.stem.rsplit("-", 1)[-1]


def read_table(path: Path) -> SessionTable | None:
    """The stored table at `path`, or None if it is missing or not a valid table."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            table = SessionTable(stored["days"], stored["opens"], stored["closes"])
    except FileNotFoundError:
        return None
    except Exception as exc:  # truncated, not a zip, wrong keys: rebuilt below
        log.debug("session_table.unreadable", path=str(path), error=str(exc))
        return None
    problem = _problem(table)
    if problem:
        log.debug("session_table.invalid", path=str(path), problem=problem)
        return None
    return table


def write_table(path: Path, table: SessionTable) -> None:
    """Store `table` at `path` atomically (a reader sees the old file or the whole new
    one) and remove tables of other days or versions; failures only cost the time."""
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".npz")
        with os.fdopen(fd, "wb") as out:
            np.savez(out, days=table.days, opens=table.opens, closes=table.closes)
        os.replace(tmp, path)
        tmp = None
        # Earlier days' tables of this install go; another install's (a second checkout
        # sharing the cache) stay, and so do temporary files younger than an hour (a
        # writer may be working on one), older ones being a killed writer's leftovers.
        for old in path.parent.glob(f"{_PREFIX}*-{_install(path)}.npz"):
            if old != path:
                old.unlink(missing_ok=True)
        for stale in path.parent.glob(f".{_PREFIX}*.npz"):
            if time.time() - stale.stat().st_mtime > 3600:
                stale.unlink(missing_ok=True)
    except OSError as exc:
        log.debug("session_table.not_stored", path=str(path), error=str(exc))
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _problem(table: SessionTable) -> str | None:
    """Why `table` is not a session table (None if it is one)."""
    days, opens, closes = table
    if days.dtype != np.dtype("datetime64[D]") or opens.dtype != np.dtype("datetime64[ns]") \
            or closes.dtype != np.dtype("datetime64[ns]"):
        return f"dtypes {days.dtype}, {opens.dtype}, {closes.dtype}"
    if days.ndim != 1 or not (len(days) == len(opens) == len(closes)) or len(days) < 2:
        return f"shapes {days.shape}, {opens.shape}, {closes.shape}"
    if not (np.diff(days.astype(np.int64)) > 0).all():
        return "days not strictly increasing"
    if not (closes > opens).all():
        return "a close not after its open"
    return None

