"""A fetch's files are written as one set: an error while writing changes nothing, an
interruption while renaming leaves a marker that every reader of the folder refuses,
and a fetch that brings nothing new touches nothing."""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from pathlib import Path

import pytest
import structlog.testing

from bot.data import file_set
from bot.data.csv_source import load_csv_directory
from bot.data.file_set import INCOMPLETE_MARKER, check_complete, write_file_set
from bot.errors import DataError

OLD = "date,close\n2024-01-02,10.0\n2024-01-03,10.5\n"
NEW = "date,close\n2024-01-02,5.0\n2024-01-03,5.25\n2024-01-04,5.5\n"  # a split since
SYMBOLS = ["AAA", "BBB", "CCC"]


def old_folder(root: Path) -> dict[Path, str]:
    """A data folder of three price files, as the last fetch left it; returns the files
    the next fetch writes (their new content)."""
    (root / "prices").mkdir(parents=True)
    for symbol in SYMBOLS:
        (root / "prices" / f"{symbol}.csv").write_text(OLD)
    return {root / "prices" / f"{s}.csv": NEW for s in SYMBOLS}


def listed(root: Path) -> list[str]:
    """The files the folder's marker lists as unfinished, relative to the folder."""
    targets = json.loads((root / INCOMPLETE_MARKER).read_text())["targets"]
    return sorted(str(Path(t).relative_to(root)) if Path(t).is_absolute() else t for t in targets)


def killed_at_rename(monkeypatch, number: int) -> None:
    """os.replace raises KeyboardInterrupt at its `number`th call (Ctrl-C mid-fetch)."""
    real_replace, calls = os.replace, []

    def replace(src, dst) -> None:
        if Path(dst).name != INCOMPLETE_MARKER:  # the marker's own (atomic) write is not counted
            calls.append(dst)
        if len(calls) == number and Path(dst).name != INCOMPLETE_MARKER:
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)


def leftovers(root: Path) -> list[str]:
    """Temporary files left anywhere in the folder."""
    return sorted(p.name for p in root.rglob(".*.tmp"))


def test_an_error_while_writing_changes_nothing_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    files = old_folder(tmp_path)
    times = {p: p.stat().st_mtime_ns for p in files}
    real_fsync, calls = os.fsync, []

    def disk_full_at_the_second_file(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", disk_full_at_the_second_file)
    with pytest.raises(OSError, match="No space left"):
        write_file_set(tmp_path, files)
    assert leftovers(tmp_path) == []
    assert not (tmp_path / INCOMPLETE_MARKER).exists()
    for path in files:
        assert path.read_text() == OLD and path.stat().st_mtime_ns == times[path]
    assert load_csv_directory(tmp_path, SYMBOLS, macro=()).prices.close[0, 0] == 10.0


def test_a_fetch_into_a_new_folder_that_fails_leaves_no_empty_prices_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(5, "I/O error")))
    with pytest.raises(OSError):
        write_file_set(tmp_path / "d", {tmp_path / "d" / "prices" / "AAA.csv": NEW})
    assert not (tmp_path / "d").exists()  # `data.source = auto` would take prices/ for data


@pytest.mark.parametrize("fails_at", [2, 3])
def test_an_interrupted_rename_leaves_a_marker_the_loader_refuses(tmp_path, monkeypatch, fails_at):
    files = old_folder(tmp_path)
    real_replace = os.replace
    killed_at_rename(monkeypatch, fails_at)
    with pytest.raises(KeyboardInterrupt):
        write_file_set(tmp_path, files)
    monkeypatch.setattr(os, "replace", real_replace)
    contents = [p.read_text() for p in files]
    assert contents == [NEW] * (fails_at - 1) + [OLD] * (len(files) - fails_at + 1)  # a mix
    marker = tmp_path / INCOMPLETE_MARKER
    assert marker.is_file() and "AAA.csv" in marker.read_text()
    assert leftovers(tmp_path) == []  # the renames not done: their files removed
    with pytest.raises(DataError) as caught:
        load_csv_directory(tmp_path, SYMBOLS, macro=())
    message = str(caught.value)
    assert str(tmp_path) in message
    assert "interrupted `bot data fetch` left this folder half updated" in message
    assert "run `bot data fetch` again" in message

    write_file_set(tmp_path, files)  # the fetch run again
    assert not marker.exists() and [p.read_text() for p in files] == [NEW] * len(files)
    assert load_csv_directory(tmp_path, SYMBOLS, macro=()).prices.close[-1, 0] == 5.5


def marker_listing(root: Path, files: dict[Path, str]) -> None:
    """The marker a fetch of `files` killed after its renames left (before it listed
    `targets`, the renames' `to` said which files it wrote)."""
    renames = [{"from": str(p.parent / f".{p.name}.x.tmp"), "to": str(p)} for p in files]
    (root / INCOMPLETE_MARKER).write_text(json.dumps({"renames": renames}))


def test_a_fetch_after_one_killed_before_removing_its_marker_removes_it(tmp_path, monkeypatch):
    """Every rename was done, the marker not removed: the next fetch rewrites nothing
    (every file holds its text) and must still say the folder is whole again."""
    files = old_folder(tmp_path)
    write_file_set(tmp_path, files)
    marker_listing(tmp_path, files)
    write_file_set(tmp_path, files)
    assert not (tmp_path / INCOMPLETE_MARKER).exists()
    load_csv_directory(tmp_path, SYMBOLS, macro=())


def test_a_fetch_that_brings_nothing_new_touches_no_file(tmp_path, monkeypatch):
    files = old_folder(tmp_path)
    write_file_set(tmp_path, files)
    times = {p: p.stat().st_mtime_ns for p in files}
    monkeypatch.setattr(os, "replace", lambda *_: pytest.fail("nothing to rename"))
    assert write_file_set(tmp_path, files) == list(files)
    assert {p: p.stat().st_mtime_ns for p in files} == times
    assert leftovers(tmp_path) == [] and not (tmp_path / INCOMPLETE_MARKER).exists()


def test_another_fetchs_half_written_file_is_never_renamed(tmp_path):
    """Both fetches wrote to `.AAA.csv.tmp`: one renamed the other's half-written file
    into place. Each now writes a file of its own."""
    files = old_folder(tmp_path)
    theirs = tmp_path / "prices" / ".AAA.csv.tmp"
    theirs.write_text("date,close\n2024-01-02,")  # another fetch, mid-write
    write_file_set(tmp_path, files)
    assert theirs.read_text() == "date,close\n2024-01-02,"
    assert (tmp_path / "prices" / "AAA.csv").read_text() == NEW


def test_a_fetch_failing_before_its_first_rename_keeps_an_earlier_fetchs_marker(tmp_path, monkeypatch):
    """The folder an interrupted fetch left is still half updated when the next fetch
    fails before renaming anything: its marker must stay."""
    files = old_folder(tmp_path)
    earlier = {tmp_path / "prices" / "AAA.csv": NEW}
    marker_listing(tmp_path, earlier)
    real_replace = os.replace

    def failing(src, dst) -> None:  # every rename of a data file; the marker's own goes
        if Path(dst).name != INCOMPLETE_MARKER:
            raise OSError(5, "I/O error")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(OSError):
        write_file_set(tmp_path, files)
    assert (tmp_path / INCOMPLETE_MARKER).exists() and leftovers(tmp_path) == []
    assert listed(tmp_path) == ["prices/AAA.csv"]  # as it was: not this write's files too
    with pytest.raises(DataError, match="half updated"):
        load_csv_directory(tmp_path, SYMBOLS, macro=())


def test_two_writers_into_one_folder_take_turns(tmp_path):
    """One fetch removed the marker while another was still renaming: they take turns
    now, each holding the folder's lock for its whole write."""
    import fcntl
    import threading
    import time

    from bot.data.file_set import write_file_set

    folder = tmp_path / "data"
    (folder / "prices").mkdir(parents=True)
    held = os.open(folder, os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_EX)  # another fetch is writing
    done = threading.Event()
    writer = threading.Thread(target=lambda: (write_file_set(folder, {folder / "prices" / "A.csv": "x\n"}),
                                              done.set()))
    writer.start()
    time.sleep(0.3)
    assert not done.is_set() and not (folder / "prices" / "A.csv").exists()
    os.close(held)  # the other fetch ends
    writer.join(timeout=10)
    assert done.is_set() and (folder / "prices" / "A.csv").read_text() == "x\n"
    assert sorted(p.name for p in folder.iterdir()) == ["prices"]  # no lock file left


def interrupted_fetch_of_aaa_and_bbb(root: Path, monkeypatch) -> dict[Path, str]:
    """Config A's fetch (AAA, BBB) stopped after renaming AAA: BBB is still old.
    Returns A's files."""
    files = old_folder(root)
    a = {p: t for p, t in files.items() if p.stem in ("AAA", "BBB")}
    killed_at_rename(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        write_file_set(root, a)
    monkeypatch.undo()
    assert [p.read_text() for p in a] == [NEW, OLD]
    return a


def test_a_fetch_of_other_files_keeps_the_marker_an_interrupted_fetch_left(tmp_path, monkeypatch):
    """Config B's fetch (other symbols) removed the marker config A's interrupted fetch
    left, and A's half-updated files loaded as whole. The marker now goes only when a
    fetch rewrote every file it lists."""
    a = interrupted_fetch_of_aaa_and_bbb(tmp_path, monkeypatch)
    write_file_set(tmp_path, {tmp_path / "prices" / "CCC.csv": NEW})  # config B's fetch
    assert (tmp_path / "prices" / "CCC.csv").read_text() == NEW
    assert listed(tmp_path) == ["prices/AAA.csv", "prices/BBB.csv"]
    with pytest.raises(DataError, match=r"unfinished: prices/AAA.csv, prices/BBB.csv\)"):
        load_csv_directory(tmp_path, SYMBOLS, macro=())

    write_file_set(tmp_path, a)  # A's fetch run again
    assert not (tmp_path / INCOMPLETE_MARKER).exists()
    assert load_csv_directory(tmp_path, SYMBOLS, macro=()).prices.close[-1, 1] == 5.5


def test_a_fetch_that_rewrites_nothing_keeps_another_fetchs_marker(tmp_path, monkeypatch):
    """The same when config B's files already hold what its fetch brings (nothing is
    renamed): the marker is not B's to remove."""
    interrupted_fetch_of_aaa_and_bbb(tmp_path, monkeypatch)
    ccc = tmp_path / "prices" / "CCC.csv"
    write_file_set(tmp_path, {ccc: OLD})  # CCC holds OLD already
    assert listed(tmp_path) == ["prices/AAA.csv", "prices/BBB.csv"]


def test_the_marker_lists_every_unfinished_file_of_two_interrupted_fetches(tmp_path, monkeypatch):
    """A stopped, then B stopped too: the marker lists both's files, and a rerun of A
    leaves it listing B's until B's fetch completes."""
    a = interrupted_fetch_of_aaa_and_bbb(tmp_path, monkeypatch)
    b = {tmp_path / "prices" / "CCC.csv": NEW, tmp_path / "macro" / "VIX.csv": "date,value\n"}
    killed_at_rename(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        write_file_set(tmp_path, b)
    monkeypatch.undo()
    assert listed(tmp_path) == ["macro/VIX.csv", "prices/AAA.csv", "prices/BBB.csv", "prices/CCC.csv"]
    write_file_set(tmp_path, a)
    assert listed(tmp_path) == ["macro/VIX.csv", "prices/CCC.csv"]
    with pytest.raises(DataError, match=r"unfinished: macro/VIX.csv, prices/CCC.csv\)"):
        load_csv_directory(tmp_path, SYMBOLS, macro=())
    write_file_set(tmp_path, b)
    assert not (tmp_path / INCOMPLETE_MARKER).exists()


@pytest.mark.parametrize("body", ["", "{}", '{"targets": [3]}', "not json"])
def test_a_marker_that_cannot_be_read_is_kept_and_said(tmp_path, body, capsys):
    """What an unreadable marker guards is unknown: no fetch removes it (nor overwrites
    it), and the loader says it cannot be read and what to do."""
    files = old_folder(tmp_path)
    (tmp_path / INCOMPLETE_MARKER).write_text(body)
    with structlog.testing.capture_logs() as logged:
        write_file_set(tmp_path, files)
    assert [p.read_text() for p in files] == [NEW] * len(files)
    assert (tmp_path / INCOMPLETE_MARKER).read_text() == body
    assert any("marker cannot be read; kept" in e["event"] for e in logged)
    with pytest.raises(DataError, match="cannot be read .*delete it by hand"):
        load_csv_directory(tmp_path, SYMBOLS, macro=())


def paused_at_the_second_rename(monkeypatch) -> tuple[threading.Event, threading.Event]:
    """os.replace stops at its second call until the returned `go` is set (`paused` is
    set then): a healthy fetch caught among its renames, its marker there."""
    real_replace, calls = os.replace, []
    paused, go = threading.Event(), threading.Event()

    def replace(src, dst) -> None:
        if Path(dst).name == INCOMPLETE_MARKER:  # the marker's own (atomic) write
            real_replace(src, dst)
            return
        calls.append(dst)
        if len(calls) == 2:
            paused.set()
            go.wait(10)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    return paused, go


def test_a_reader_waits_for_a_fetch_still_renaming(tmp_path, monkeypatch):
    """A backtest started while a healthy fetch renamed its files was told an
    interrupted fetch left the folder half updated. It now waits for the fetch (the
    writer's exclusive lock) and reads the whole new folder."""
    files = old_folder(tmp_path)
    paused, go = paused_at_the_second_rename(monkeypatch)
    writer = threading.Thread(target=write_file_set, args=(tmp_path, files))
    writer.start()
    assert paused.wait(10) and (tmp_path / INCOMPLETE_MARKER).exists()
    read: list[object] = []
    reader = threading.Thread(target=lambda: read.append(_load_or_error(tmp_path)))
    reader.start()
    time.sleep(0.3)
    assert read == []  # waiting, not refusing
    go.set()
    writer.join(10)
    reader.join(10)
    assert len(read) == 1 and not isinstance(read[0], Exception), read
    assert read[0].prices.close[-1, 0] == 5.5  # the new files, all of them


def _load_or_error(folder: Path) -> object:
    """The loaded folder, or the error loading it raised (a thread cannot raise to the test)."""
    try:
        return load_csv_directory(folder, SYMBOLS, macro=())
    except Exception as exc:  # noqa: BLE001 - handed to the test to assert on
        return exc


def test_a_reader_gives_up_on_a_fetch_that_keeps_writing(tmp_path, monkeypatch):
    """A writer that holds the folder longer than the reader waits: the error says a
    fetch is still writing (not that one was interrupted)."""
    old_folder(tmp_path)
    (tmp_path / INCOMPLETE_MARKER).write_text(json.dumps({"targets": []}))  # its marker
    held = os.open(tmp_path, os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_EX)
    monkeypatch.setattr(file_set, "READ_WAIT", 0.3)
    try:
        began = time.monotonic()
        with pytest.raises(DataError, match=r"a `bot data fetch` is still writing this folder "
                                            r"\(waited 0.3 s"):
            load_csv_directory(tmp_path, SYMBOLS, macro=())
        assert time.monotonic() - began >= 0.3
    finally:
        os.close(held)
    with pytest.raises(DataError, match="interrupted `bot data fetch`"):  # the writer gone
        check_complete(tmp_path, wait=0.3)


def test_without_flock_a_reader_judges_the_marker_at_once(tmp_path, monkeypatch):
    """Windows has no fcntl: the marker alone says, as before the lock."""
    old_folder(tmp_path)
    held = os.open(tmp_path, os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_EX)
    monkeypatch.setattr(file_set, "fcntl", None)
    try:
        check_complete(tmp_path, wait=5)  # no wait, no error: there is no marker
        (tmp_path / INCOMPLETE_MARKER).write_text(json.dumps({"targets": []}))
        with pytest.raises(DataError, match="interrupted"):
            check_complete(tmp_path, wait=5)
    finally:
        os.close(held)
    assert sorted(p.name for p in tmp_path.iterdir()) == [INCOMPLETE_MARKER, "prices"]


def test_a_fetch_waits_for_a_reader_to_finish_reading_the_folder(tmp_path, monkeypatch):
    """The reader checked the marker, let the folder go, then read its files: a fetch
    that began in between gave it some files old and some new. It holds the folder
    (shared) until its last file is read; the fetch waits."""
    from bot.data import csv_source

    files = old_folder(tmp_path)
    reading, go_on = threading.Event(), threading.Event()
    real_read = csv_source._read_price_file
    first = []

    def slow_read(path):
        if not first:
            first.append(path)
            reading.set()
            go_on.wait(10)
        return real_read(path)

    monkeypatch.setattr(csv_source, "_read_price_file", slow_read)
    loaded = []
    reader = threading.Thread(target=lambda: loaded.append(load_csv_directory(tmp_path, SYMBOLS, macro=[])))
    reader.start()
    assert reading.wait(10)
    writer = threading.Thread(target=write_file_set, args=(tmp_path, files))
    writer.start()
    time.sleep(0.3)
    assert all(p.read_text() == OLD for p in files)  # the fetch waits for the reader
    go_on.set()
    reader.join(10)
    writer.join(10)
    (market,) = loaded
    assert market.prices.close[:, 0].tolist() == [10.0, 10.5]  # all old, none new
    assert all(p.read_text() == NEW for p in files)


def test_a_folder_reached_by_another_path_is_the_same_folder(tmp_path, monkeypatch):
    """The marker listed absolute paths as written: a fetch stopped while writing through
    `real/` was never cleared by one through a link to it (or a container's mount), and
    the folder stayed refused. Its files are listed relative to the folder now."""
    real = tmp_path / "real"
    files = old_folder(real)
    killed_at_rename(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        write_file_set(real, files)
    monkeypatch.undo()
    assert listed(real) == ["prices/AAA.csv", "prices/BBB.csv", "prices/CCC.csv"]
    link = tmp_path / "link"
    link.symlink_to(real)
    write_file_set(link, {link / p.relative_to(real): NEW for p in files})
    assert not (real / INCOMPLETE_MARKER).exists()


def test_a_marker_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    """Written in place, a crash between its truncation and its fsync left an empty
    marker: unreadable, so kept for ever and the folder refused until deleted by hand."""
    files = old_folder(tmp_path)
    real_fsync, synced = os.fsync, []

    def crash_at_the_markers_fsync(fd) -> None:
        synced.append(fd)
        if len(synced) == len(files) + 1:  # the staged files, then the marker
            raise KeyboardInterrupt
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", crash_at_the_markers_fsync)
    with pytest.raises(KeyboardInterrupt):
        write_file_set(tmp_path, files)
    monkeypatch.undo()
    assert not (tmp_path / INCOMPLETE_MARKER).exists() and leftovers(tmp_path) == []
    assert [p.read_text() for p in files] == [OLD] * len(files)  # nothing renamed yet
