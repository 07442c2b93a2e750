"""Writing a data folder's files as one set, and refusing a folder a write left half done.

`bot data fetch` rewrites many files (every price file, every macro series). Each file
renamed into place is whole, but a fetch stopped between two renames (Ctrl-C, a full
disk, a power cut) left some files new and some old: adjusted prices of two dates that
do not line up, which the loader could not tell from a good folder. So the files are
written in two steps: every new content first goes to a temporary file beside its
target (nothing has changed yet; on an error they are removed), then a marker file is
written in the data folder, the temporary files are renamed into place, and the marker
is removed. A folder holding the marker was left half updated, and every reader refuses
it (`check_complete`) until a fetch finishes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import structlog

from bot.errors import DataError

log = structlog.get_logger(__name__)

#: the marker file in a data folder while (or since) a fetch renames its files
INCOMPLETE_MARKER = ".fetch-incomplete"
#: temporary files are named `.<target>.<random>.tmp` in the target's own folder
TEMP_SUFFIX = ".tmp"


def check_complete(directory: Path) -> None:
    """Refuse a data folder that a fetch left half updated (its marker is still there)."""
    marker = directory / INCOMPLETE_MARKER
    if marker.exists():
        raise DataError(
            str(directory), None,
            f"an interrupted `bot data fetch` left this folder half updated ({marker} is "
            "still there: some files are new, others old); run `bot data fetch` again",
        )


def write_file_set(directory: Path, files: Mapping[Path, str]) -> list[Path]:
    """Write `files` (path -> whole text) as one set under the data folder `directory`:
    either every changed file is replaced, or (an error before the renames) none is. A
    file that already holds its text is left alone, mtime included, so an hourly fetch
    that brings no new bar gives a watching server (`bot serve`) nothing to reload.
    Returns every path of `files`."""
    with _one_writer(directory):
        return _write_file_set(directory, files)


@contextlib.contextmanager
def _one_writer(directory: Path) -> Iterator[None]:
    """Two fetches into one folder take turns (an exclusive flock on the folder itself,
    so no lock file is left behind): at once, one removed the marker while the other
    was still renaming. A folder not made yet, or a platform without flock, goes on."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not there yet: the first fetch into it
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _write_file_set(directory: Path, files: Mapping[Path, str]) -> list[Path]:
    staged: list[tuple[Path, Path]] = []  # (temporary file, target)
    made: list[Path] = []  # folders this call created
    try:
        for path, text in files.items():
            if not _holds(path, text):
                staged.append((_stage(path, text, made), path))
    except BaseException:
        _discard(staged, made)
        raise
    if staged:
        _rename_all(directory, staged)
    else:
        _clear_stale_marker(directory)
    return list(files)


def _clear_stale_marker(directory: Path) -> None:
    """Every file already holds what this write wants (the interrupted fetch renamed
    them all before it stopped): the folder is whole again, so its marker goes."""
    marker = directory / INCOMPLETE_MARKER
    if marker.exists():
        marker.unlink(missing_ok=True)
        log.info("data folder complete again; marker removed", folder=str(directory))


def _holds(path: Path, text: str) -> bool:
    """Whether `path` already holds exactly `text`."""
    try:
        return path.read_text(encoding="utf-8") == text
    except (FileNotFoundError, UnicodeDecodeError):
        return False


def _stage(path: Path, text: str, made: list[Path]) -> Path:
    """`text` in a new temporary file beside `path`, on disk (fsync). Its name is unique
    (mkstemp): two fetches at once never rename each other's half-written files."""
    _make_folders(path.parent, made)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)


def _make_folders(folder: Path, made: list[Path]) -> None:
    """Create `folder` and its missing parents, remembering which were created (so a
    failed write leaves no empty prices/ folder that would pass for a data folder)."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    for p in reversed(missing):
        p.mkdir(exist_ok=True)
        made.append(p)


def _discard(staged: list[tuple[Path, Path]], made: list[Path]) -> None:
    """Remove the temporary files (and folders created for them): nothing was changed."""
    for tmp, _path in staged:
        tmp.unlink(missing_ok=True)
    for folder in reversed(made):
        with contextlib.suppress(OSError):  # not empty: another writer's files are there
            folder.rmdir()


def _rename_all(directory: Path, staged: list[tuple[Path, Path]]) -> None:
    """Rename the temporary files into place under the marker. An error before the
    first rename removes them and the marker (nothing changed); after it, the marker
    stays, so no reader takes the mix of new and old files for a folder (as does the
    marker an earlier interrupted fetch left: that folder is still half updated)."""
    marker = directory / INCOMPLETE_MARKER
    left_before = marker.exists()
    renamed = 0
    try:
        _write_marker(marker, staged)
        for tmp, path in staged:
            os.replace(tmp, path)
            renamed += 1
    except BaseException:
        _discard(staged[renamed:], [])
        if renamed == 0 and not left_before:
            marker.unlink(missing_ok=True)
        else:
            log.error("data folder left half updated", folder=str(directory),
                      renamed=renamed, of=len(staged), marker=str(marker))
        raise
    _sync_folders({path.parent for _tmp, path in staged})
    marker.unlink()


def _write_marker(marker: Path, staged: list[tuple[Path, Path]]) -> None:
    """The marker, on disk before any rename: when the fetch began and what it renames
    (for whoever finds it after a crash)."""
    body = {
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "pid": os.getpid(),
        "renames": [{"from": str(tmp), "to": str(path)} for tmp, path in staged],
        "meaning": "an interrupted `bot data fetch` left this folder half updated; "
                   "run `bot data fetch` again",
    }
    with marker.open("w", encoding="utf-8") as f:
        json.dump(body, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    _sync_folders({marker.parent})


def _sync_folders(folders: set[Path]) -> None:
    """fsync each folder, so its renames (or the new marker) survive a power cut; a
    platform that cannot open a folder (Windows) is skipped."""
    for folder in folders:
        try:
            fd = os.open(folder, os.O_RDONLY)
        except OSError:
            continue
        try:
            with contextlib.suppress(OSError):
                os.fsync(fd)
        finally:
            os.close(fd)
