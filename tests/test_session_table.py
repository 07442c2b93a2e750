"""The exchange's sessions stored between commands (bot.session_table): the stored table
is exactly the calendar's, a damaged or outdated one is rebuilt, a cache that cannot be
written costs only time, and a command with a stored table never builds the calendar."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from bot import calendar, session_table
from bot.session_table import SessionTable, build_table, cache_path, read_table, write_table


def test_the_table_is_the_calendars_sessions_with_their_hours() -> None:
    cal = session_table.xnys_calendar()
    table = build_table()
    assert table.days.tolist() == [d.date() for d in cal.sessions]
    opens = pd.DatetimeIndex(table.opens).tz_localize("UTC")
    closes = pd.DatetimeIndex(table.closes).tz_localize("UTC")
    assert (opens == cal.opens.to_numpy()).all() and (closes == cal.closes.to_numpy()).all()
    # an early close is kept: the day after Thanksgiving 2024 closed at 13:00 New York
    day = table.days.tolist().index(dt.date(2024, 11, 29))
    assert closes[day] == pd.Timestamp("2024-11-29 18:00", tz="UTC")


def test_a_stored_table_reads_back_equal(tmp_path: Path) -> None:
    table = build_table()
    path = tmp_path / "xnys-sessions-20261203-0.npz"
    write_table(path, table)
    back = read_table(path)
    assert back is not None
    for mine, theirs in zip(back, table, strict=True):
        assert mine.dtype == theirs.dtype and np.array_equal(mine, theirs)
    assert not [p for p in tmp_path.iterdir() if p != path]  # no temporary file left


@pytest.mark.parametrize(
    "damage",
    [
        lambda path: path.write_bytes(b"not a zip file"),
        lambda path: path.write_bytes(path.read_bytes()[:1000]),  # truncated
        lambda path: np.savez(path, days=np.arange(3)),  # keys missing
        lambda path: np.savez(  # days out of order
            path, days=np.array(["2024-01-03", "2024-01-02"], dtype="datetime64[D]"),
            opens=np.array(["2024-01-03T14:30", "2024-01-02T14:30"], dtype="datetime64[ns]"),
            closes=np.array(["2024-01-03T21:00", "2024-01-02T21:00"], dtype="datetime64[ns]"),
        ),
    ],
    ids=["garbage", "truncated", "keys missing", "unordered"],
)
def test_a_damaged_table_is_not_used(tmp_path: Path, damage) -> None:
    path = tmp_path / "xnys-sessions-20261203-0.npz"
    write_table(path, build_table())
    damage(path)
    assert read_table(path) is None


def test_writing_replaces_this_installs_older_tables_only(tmp_path: Path) -> None:
    table = build_table()
    old = tmp_path / "xnys-sessions-20261202-0000000a.npz"
    other_install = tmp_path / "xnys-sessions-20261202-0000000b.npz"
    stale_tmp, fresh_tmp = tmp_path / ".xnys-sessions-x-1.npz", tmp_path / ".xnys-sessions-x-2.npz"
    for path in (old, other_install):
        write_table(path, table)
    for path in (stale_tmp, fresh_tmp):
        path.write_bytes(b"partial")
    os.utime(stale_tmp, (time.time() - 7200, time.time() - 7200))  # a killed writer's
    new = tmp_path / "xnys-sessions-20261203-0000000a.npz"
    write_table(new, table)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [new.name, other_install.name, fresh_tmp.name]
    )



def test_a_cache_that_cannot_be_found_or_written_only_costs_the_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    write_table(blocked / "xnys-sessions-20261203-0.npz", build_table())  # folder is a file
    assert blocked.read_text() == ""

    def no_home() -> Path:
        raise RuntimeError("could not determine the home directory")

    monkeypatch.setattr(session_table, "cache_dir", no_home)
    session_table._table_for.cache_clear()
    try:
        table = session_table.session_table()
        assert len(table.days) > 30_000
        assert not any(array.flags.writeable for array in table)  # shared: read-only
    finally:
        session_table._table_for.cache_clear()


def test_the_path_changes_with_the_day_and_the_installed_library(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "exchange_calendars"
    package.mkdir()
    for name in session_table._SOURCES:
        (package / name).write_text("")
    spec = SimpleNamespace(origin=str(package / "__init__.py"))
    monkeypatch.setattr(session_table.importlib.util, "find_spec", lambda name: spec)
    monkeypatch.setenv("BOT_CACHE_DIR", str(tmp_path / "cache"))
    first = cache_path(dt.date(2026, 12, 3))
    assert first is not None and first.parent == tmp_path / "cache"
    assert cache_path(dt.date(2026, 12, 3)) == first
    assert cache_path(dt.date(2026, 12, 4)) != first
    stamp = (package / "us_holidays.py").stat().st_mtime_ns
    os.utime(package / "us_holidays.py", ns=(stamp + 10**9, stamp + 10**9))  # an upgrade
    assert cache_path(dt.date(2026, 12, 3)) != first


def test_a_command_with_a_stored_table_never_builds_the_calendar(tmp_path: Path) -> None:
    """The point of the table: the second process reads it and imports no calendar."""
    script = (
        "import sys, datetime as dt\n"
        "from bot import calendar\n"
        "from bot.daemon.sessions import exchange_sessions\n"
        "days = calendar.sessions('2010-01-04', '2024-12-31')\n"
        "nxt = calendar.next_session(dt.date(2024, 12, 24))\n"
        "week = exchange_sessions(dt.date(2024, 12, 23), dt.date(2024, 12, 27))\n"
        "print(len(days), nxt, len(week), 'exchange_calendars' in sys.modules)\n"
    )
    env = {**os.environ, "BOT_CACHE_DIR": str(tmp_path)}
    runs = [
        subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                       check=True).stdout.split()
        for _ in range(2)
    ]
    assert runs[0] == ["3774", "2024-12-26", "4", "True"]  # built, then stored
    assert runs[1] == ["3774", "2024-12-26", "4", "False"]  # read back: no calendar
    assert len(list(tmp_path.glob("xnys-sessions-*.npz"))) == 1


def test_calendar_answers_agree_with_the_library_inside_and_outside_the_table() -> None:
    cal = session_table.xnys_calendar()
    expected = cal.sessions_in_range("1999-12-20", "2000-01-10").values.astype("datetime64[D]")
    assert np.array_equal(calendar.sessions("1999-12-20", "2000-01-10"), expected)
    assert np.array_equal(calendar.sessions(dt.date(2024, 7, 4), dt.date(2024, 7, 4)),
                          np.array([], dtype="datetime64[D]"))  # Independence Day
    for day in (dt.date(2024, 7, 3), dt.date(2024, 7, 4), dt.date(2024, 7, 6), dt.date(1999, 12, 31)):
        ts = pd.Timestamp(day)
        nxt = cal.date_to_session(ts, direction="next")
        assert calendar.next_session(day) == (cal.next_session(ts) if nxt == ts else nxt).date()
    last = cal.last_session
    with pytest.raises(Exception) as inside:  # beyond the table: the library's own error
        calendar.sessions(last.date(), (last + pd.Timedelta(days=30)).date())
    with pytest.raises(type(inside.value)):
        cal.sessions_in_range(last, last + pd.Timedelta(days=30))
    # a time of day is not a date: refused as the library refuses it, not truncated
    with pytest.raises(ValueError):
        cal.sessions_in_range("2024-01-05 15:30", "2024-01-10")
    with pytest.raises(ValueError):
        calendar.sessions("2024-01-05 15:30", "2024-01-10")
    assert isinstance(build_table(), SessionTable)


def test_a_process_running_for_more_than_a_year_still_knows_the_sessions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """exchange_calendars' calendar ends a year after the day it is built: a daemon
    that built it once at its start found, a year later, every day "not a session" and
    refused every bar download. The table and the calendar are built again each day."""
    started = dt.date(2026, 12, 4)
    monkeypatch.setattr(session_table, "today", lambda: started)
    first = session_table.session_table().days[-1]
    assert first >= np.datetime64(started + dt.timedelta(days=360))
    a_year_on = dt.date(2027, 12, 6)  # a Monday, past the first table's end
    assert not calendar.session_mask(np.array([a_year_on], dtype="datetime64[D]"))[0]
    monkeypatch.setattr(session_table, "today", lambda: a_year_on)
    assert calendar.session_mask(np.array([a_year_on], dtype="datetime64[D]"))[0]
    assert calendar.next_session(a_year_on + dt.timedelta(days=360)) > a_year_on
    assert session_table.session_table().days[-1] > first
