"""The allocation API serves a daily fetch's new closes without a restart: `bot serve`
watches its profiles' data files and loads a profile again once a fetch's files stopped
changing; a fetch it cannot read leaves it serving what it had."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from bot.api.profiles import ProfileBook, ProfileSpec, data_files, default_specs
from bot.config import load_settings
from bot.data.alpaca import write_csv_directory
from bot.data.synthetic import synthetic_market

BALANCED = next(s for s in default_specs() if s.name == "balanced")


def write_market(directory: Path, through: str) -> None:
    """The balanced profile's funds and macro series through `through`, as `bot data
    fetch` writes them (a seeded synthetic market standing in for Alpaca and FRED)."""
    settings = load_settings(BALANCED.config)
    market = synthetic_market(list(settings.symbols), dt.date(2015, 1, 2), dt.date(2024, 12, 31), seed=7)
    end = np.datetime64(through)
    keep = market.prices.dates <= end
    prices = dataclasses.replace(
        market.prices, dates=market.prices.dates[keep], close=market.prices.close[keep],
        open=market.prices.open[keep],
        filled=None if market.prices.filled is None else market.prices.filled[keep],
    )
    macro = {name: dataclasses.replace(s, dates=s.dates[s.dates <= end], values=s.values[s.dates <= end])
             for name, s in market.macro.items()}
    write_csv_directory(prices, macro, directory)


@pytest.fixture
def book(tmp_path):
    write_market(tmp_path, "2024-06-28")
    return ProfileBook.load([ProfileSpec("balanced", BALANCED.config)], tmp_path)


def test_a_fetchs_new_closes_are_served_once_its_files_hold_still(book, tmp_path):
    before = book.decision("balanced")
    assert book.get("balanced").latest_day == dt.date(2024, 6, 28)
    assert book.reload_changed() == []  # nothing changed: nothing read

    write_market(tmp_path, "2024-07-12")  # the daily fetch
    assert book.reload_changed() == []  # seen changing: not read yet (a fetch may be mid-way)
    assert book.reload_changed() == ["balanced"]  # unchanged since: read
    profile = book.get("balanced")
    assert profile.latest_day == dt.date(2024, 7, 12) and profile.generation == 1
    after = book.decision("balanced")
    assert after.day > before.day and after.profile is profile
    # An older day's answer is the new load's (adjusted prices may have moved under it).
    assert book.decision("balanced", before.day).profile is profile
    decision, _equity, _orders, priced_on = book.plan("balanced", {"SPY": 10.0}, 1000.0)
    assert decision.profile is profile and priced_on == dt.date(2024, 7, 12)
    assert book.reload_changed() == []


def test_a_fetch_still_writing_is_read_only_after_it_stopped(book, tmp_path):
    write_market(tmp_path, "2024-07-05")
    assert book.reload_changed() == []
    write_market(tmp_path, "2024-07-12")  # still going: another file changed meanwhile
    assert book.reload_changed() == []
    assert book.reload_changed() == ["balanced"]
    assert book.get("balanced").latest_day == dt.date(2024, 7, 12)


def test_files_it_cannot_read_leave_it_serving_what_it_had(book, tmp_path, capsys):
    served = book.decision("balanced")
    spy = tmp_path / "prices" / "SPY.csv"
    spy.write_text(spy.read_text() + "2024-07-01,not a number,,,,,\n")
    assert book.reload_changed() == [] and book.reload_changed() == []
    assert book.get("balanced").generation == 0 and book.decision("balanced") is served
    logged = capsys.readouterr().out
    assert "api.reload_failed" in logged and "SPY" in logged and "serving_through" in logged
    assert book.reload_changed() == []  # not tried again until the files change again
    write_market(tmp_path, "2024-07-12")  # the next fetch repairs it
    book.reload_changed()
    assert book.reload_changed() == ["balanced"]


def test_the_watch_thread_reloads_on_its_own_and_stops(book, tmp_path):
    stop = threading.Event()
    thread = book.watch(0.05, stop)
    assert thread is not None and thread.daemon
    write_market(tmp_path, "2024-07-12")
    deadline = time.monotonic() + 10
    while book.get("balanced").generation == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert book.get("balanced").latest_day == dt.date(2024, 7, 12)
    stop.set()
    thread.join(5)
    assert not thread.is_alive()
    assert book.watch(0, stop) is None  # --reload-every 0: loaded once


def test_a_synthetic_profile_has_nothing_to_watch(tmp_path):
    synthetic = ProfileBook.load([ProfileSpec("balanced", BALANCED.config)], None, synthetic=True)
    assert synthetic.get("balanced").data_dir is None
    assert synthetic.watch(0.05, threading.Event()) is None


def test_data_files_change_with_a_rename_into_place(tmp_path):
    write_market(tmp_path, "2024-06-28")
    first = data_files(tmp_path)
    assert [name for name, *_ in first][:2] == ["macro/DTB3.csv", "macro/T10Y2Y.csv"]
    spy = tmp_path / "prices" / "SPY.csv"
    stat = spy.stat()
    os.utime(spy, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert data_files(tmp_path) != first


def test_a_fetch_that_brings_no_new_bar_changes_no_file_and_reloads_nothing(book, tmp_path):
    """The fetcher runs every hour; rewriting identical files gave them new times, and
    the API loaded every profile again each hour for nothing."""
    before = data_files(tmp_path)
    time.sleep(0.01)
    write_market(tmp_path, "2024-06-28")  # the same bars again
    assert data_files(tmp_path) == before
    assert book.reload_changed() == [] and book.reload_changed() == []
    assert book.get("balanced").generation == 0
    assert not list(tmp_path.glob("*/.*.tmp"))  # no temporary file left either


def test_earlier_loads_answers_are_dropped_with_them(book, tmp_path):
    """Each cached decision holds its load's whole market: ten reloads kept eleven loads
    alive until the cache's 512 entries pushed them out (about 1 GB, three profiles a
    year)."""
    for through in ("2024-07-05", "2024-07-12", "2024-07-19"):
        write_market(tmp_path, through)
        book.reload_changed()
        assert book.reload_changed() == ["balanced"]
    generations = {generation for _name, generation, _t in book._decisions}
    assert generations == {book.get("balanced").generation} == {3}


def test_the_watch_outlives_a_file_it_cannot_stat(book, tmp_path):
    """A broken link in prices/ raised out of the watch thread, which died silently: the
    API served the old closes for good."""
    loop = tmp_path / "prices" / "LOOP.csv"
    loop.symlink_to(loop)
    stop = threading.Event()
    thread = book.watch(0.02, stop)
    time.sleep(0.2)
    assert thread.is_alive()
    loop.unlink()
    write_market(tmp_path, "2024-07-12")
    deadline = time.monotonic() + 10
    while book.get("balanced").latest_day < dt.date(2024, 7, 12) and time.monotonic() < deadline:
        time.sleep(0.02)
    stop.set()
    assert book.get("balanced").latest_day == dt.date(2024, 7, 12)


def test_a_data_folder_emptied_never_turns_a_profile_synthetic(book, tmp_path, capsys):
    """A fetch from scratch removed prices/: the reload fell back to the synthetic market
    (the default data folder does), bypassing `bot serve --allow-remote`'s refusal, and
    the profile was never watched again."""
    import shutil

    from bot.api import profiles

    real = profiles.load_profile

    def as_default_folder(name, config, data_dir, synthetic, generation=0):  # no folder given
        from bot.config import DefaultDataDir

        return real(name, config, DefaultDataDir(data_dir), synthetic, generation)

    served = book.decision("balanced")
    shutil.rmtree(tmp_path / "prices")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(profiles, "load_profile", as_default_folder)
        assert book.reload_changed() == [] and book.reload_changed() == []
    profile = book.get("balanced")
    assert not profile.market.synthetic and profile.data_dir == tmp_path
    assert book.decision("balanced") is served
    assert "holds no prices now" in capsys.readouterr().out
    write_market(tmp_path, "2024-07-12")  # the fetch finished: served again
    book.reload_changed()
    assert book.reload_changed() == ["balanced"]


def test_suitability_is_computed_on_the_data_served(book, tmp_path, monkeypatch):
    """It read the files again: after a reload the API refused (a bad row), the
    allocation was served from the loaded data and /suitability failed on the file."""
    from bot import robo_cli

    seen = []
    monkeypatch.setattr(robo_cli, "profile_report",
                        lambda config, args, market=None: seen.append(market) or {"profile": "balanced"})
    spy = tmp_path / "prices" / "SPY.csv"
    spy.write_text(spy.read_text() + "2024-07-01,not a number,,,,,\n")
    book.reload_changed()
    book.reload_changed()
    assert book.suitability("balanced")["profile"] == "balanced"
    assert seen == [book.get("balanced").market]


def test_a_fetch_interrupted_mid_rename_is_not_served_until_a_fetch_completes(book, tmp_path,
                                                                             monkeypatch, capsys):
    """A fetch killed between two renames left some files new and others old; the watch
    loaded the mix. Now the folder's marker makes the reload refuse it until the next
    fetch finishes."""
    from bot.data.file_set import INCOMPLETE_MARKER

    served = book.decision("balanced")
    real_replace, calls = os.replace, []

    def killed_at_the_third_rename(src, dst) -> None:
        calls.append(dst)
        if len(calls) == 3:
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", killed_at_the_third_rename)
    with pytest.raises(KeyboardInterrupt):
        write_market(tmp_path, "2024-07-12")
    monkeypatch.setattr(os, "replace", real_replace)
    assert (tmp_path / INCOMPLETE_MARKER).exists()
    assert book.reload_changed() == [] and book.reload_changed() == []
    assert book.decision("balanced") is served
    logged = capsys.readouterr().out
    assert "api.reload_failed" in logged and "interrupted `bot data fetch`" in logged
    write_market(tmp_path, "2024-07-12")  # run again: renames the rest, removes the marker
    assert not (tmp_path / INCOMPLETE_MARKER).exists()
    book.reload_changed()
    assert book.reload_changed() == ["balanced"]
    assert book.get("balanced").latest_day == dt.date(2024, 7, 12)


def test_a_fetch_that_only_removes_the_marker_is_a_change_to_load(book, tmp_path, capsys):
    """Killed after its last rename but before removing its marker: the next fetch
    rewrites no file, only the marker goes, and the watch must load the folder then."""
    from bot.data.file_set import INCOMPLETE_MARKER

    write_market(tmp_path, "2024-07-12")
    written = sorted(str(p) for p in [*tmp_path.glob("prices/*.csv"), *tmp_path.glob("macro/*.csv")])
    (tmp_path / INCOMPLETE_MARKER).write_text(json.dumps({"targets": written}))  # as the killed fetch left it
    assert book.reload_changed() == [] and book.reload_changed() == []
    assert "interrupted `bot data fetch`" in capsys.readouterr().out
    before = {name: mtime for name, _size, mtime in data_files(tmp_path)}
    write_market(tmp_path, "2024-07-12")
    assert not (tmp_path / INCOMPLETE_MARKER).exists()
    assert {name: mtime for name, _size, mtime in data_files(tmp_path)}.items() <= before.items()
    book.reload_changed()
    assert book.reload_changed() == ["balanced"]
    assert book.get("balanced").latest_day == dt.date(2024, 7, 12)
