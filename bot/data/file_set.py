"""Writing a data folder's files as one set, and refusing a folder a write left half done.

`bot data fetch` rewrites many files (every price file, every macro series). Each file
renamed into place is whole, but a fetch stopped between two renames (Ctrl-C, a full
disk, a power cut) left some files new and some old: adjusted prices of two dates that
do not line up, which the loader could not tell from a good folder. So the files are
written in two steps: every new content first goes to a temporary file beside its
target (nothing has changed yet; on an error they are removed), then a marker file is
written in the data folder, the temporary files are renamed into place, and the marker
is removed. A writer holds an exclusive flock on the folder for its whole write, and a
reader (`check_complete`) waits for it with a shared one: a folder holding the marker
once no writer holds it was left half updated, and every reader refuses it until a
fetch finishes.

Each fetch writes only its own config's files, so the marker lists its targets, and a
marker one fetch left is removed by another only when that one rewrote every file it
lists: otherwise a fetch of other symbols cleared it and the half-updated files loaded
as whole. A marker that cannot be read is never removed (what it guards is unknown).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import tempfile
import time
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog

from bot.errors import DataError

try:
    import fcntl
except ImportError:  # Windows: no flock; writers and readers go on without it
    fcntl = None  # type: ignore[assignment]

log = structlog.get_logger(__name__)

#: the marker file in a data folder while (or since) a fetch renames its files
INCOMPLETE_MARKER = ".fetch-incomplete"
#: temporary files are named `.<target>.<random>.tmp` in the target's own folder
TEMP_SUFFIX = ".tmp"
#: seconds a reader waits for a fetch still writing the folder before it gives up
READ_WAIT = 30.0
#: seconds between a waiting reader's attempts at the folder's lock
LOCK_POLL = 0.05


def check_complete(directory: Path, wait: float | None = None) -> None:
    """Refuse a data folder that a fetch left half updated (its marker is still there),
    naming the files it lists as unfinished. A fetch still writing is waited for (up to
    `wait` seconds, READ_WAIT by default): its marker is there while it renames, and a
    backtest started then was told the folder was left half updated."""
    with reading_whole(directory, wait):
        pass


@contextlib.contextmanager
def reading_whole(directory: Path, wait: float | None = None) -> Iterator[None]:
    """check_complete, with the folder kept from writers until the block ends: a fetch
    that began after the check but before the files were read gave the reader some new
    files and some old."""
    with _no_writer(directory, READ_WAIT if wait is None else wait):
        marker = directory / INCOMPLETE_MARKER
        state = read_marker(marker)
        if state.present:  # no writer holds the folder: a marker left is an interrupted fetch's
            raise DataError(str(directory), None, _refusal(directory, marker, state))
        yield


@contextlib.contextmanager
def _no_writer(directory: Path, wait: float) -> Iterator[None]:
    """A shared flock on the folder (a writer holds an exclusive one for its whole write,
    `_one_writer`), so no fetch writes meanwhile. A folder that cannot be opened, or a
    platform without flock (Windows), goes on without it."""
    if fcntl is None:
        yield
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        _wait_for_writer(fd, directory, wait)
        yield
    finally:
        os.close(fd)  # releases the lock


def _wait_for_writer(fd: int, directory: Path, wait: float) -> None:
    """Take the shared lock on `fd`, waiting at most `wait` seconds for a writer to end;
    a DataError after that (a fetch still writing, or one hung holding the lock)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        except OSError as exc:  # a mount without flock (some network or FUSE ones)
            log.warning("data folder not locked for reading: its file system refuses flock",
                        folder=str(directory), error=str(exc))
            return
        left = deadline - time.monotonic()
        if left <= 0:
            raise DataError(
                str(directory), None,
                f"a `bot data fetch` is still writing this folder (waited {wait:g} s for "
                "it to finish); try again when it has ended",
            )
        time.sleep(min(LOCK_POLL, left))


def _refusal(directory: Path, marker: Path, state: MarkerState) -> str:
    """Why a folder holding `marker` is refused, and what to do about it."""
    said = (f"an interrupted `bot data fetch` left this folder half updated ({marker} is "
            "still there: some files are new, others old")
    if state.unreadable:
        return (f"{said}; it cannot be read ({state.unreadable}), so no fetch removes it: "
                "run `bot data fetch` again for every config writing here, then delete it "
                "by hand")
    if not state.targets:
        return f"{said}); run `bot data fetch` again"
    return (f"{said}; unfinished: {_names(directory, state.targets)}); run `bot data fetch` "
            "again (with the config that writes them)")


def _names(directory: Path, paths: Collection[Path], shown: int = 10) -> str:
    """`paths` relative to the data folder where they are in it, at most `shown` of them."""
    root = _absolute(directory)
    names = sorted(str(p.relative_to(root)) if p.is_relative_to(root) else str(p) for p in paths)
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


@dataclass(frozen=True)
class MarkerState:
    """What a data folder's marker says: whether there is one, the files it lists as
    unfinished (absolute), or why it cannot be read."""

    present: bool
    targets: frozenset[Path] = frozenset()
    unreadable: str | None = None


def read_marker(marker: Path) -> MarkerState:
    """The marker at `marker`: absent, its targets, or unreadable (and why). A marker
    written before it listed `targets` lists them as its renames' `to`."""
    try:
        text = marker.read_text(encoding="utf-8")
    except FileNotFoundError:
        return MarkerState(present=False)
    except (OSError, UnicodeDecodeError) as exc:
        return MarkerState(present=True, unreadable=str(exc))
    try:
        return MarkerState(present=True, targets=_targets(json.loads(text), marker.parent))
    except ValueError as exc:
        return MarkerState(present=True, unreadable=str(exc))


def _targets(body: object, folder: Path) -> frozenset[Path]:
    """The files a marker's JSON lists; ValueError saying what was expected."""
    if not isinstance(body, dict):
        raise ValueError(f"expected a JSON object, got {type(body).__name__}")
    if "targets" in body:
        names = body["targets"]
    elif isinstance(body.get("renames"), list):
        names = [r.get("to") if isinstance(r, dict) else None for r in body["renames"]]
    else:
        raise ValueError("expected a 'targets' list (or 'renames' with 'to' paths), found neither")
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise ValueError("expected 'targets' (or each rename's 'to') to be file paths")
    return frozenset(_absolute(folder / n) for n in names)  # a relative name: in the folder


def _absolute(path: Path) -> Path:
    """`path` made absolute and resolved (symlinks too), so a marker's paths compare with
    this write's whatever the working folder or the path the folder was reached by
    (`--data-dir` through a link, a container's mount)."""
    return path.resolve()


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
    if fcntl is None:
        yield
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not there yet: the first fetch into it
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:  # a mount without flock (some network or FUSE ones)
            log.warning("data folder not locked for writing: its file system refuses flock",
                        folder=str(directory), error=str(exc))
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
    marker = directory / INCOMPLETE_MARKER
    earlier = read_marker(marker)
    covered = frozenset(_absolute(p) for p in files)  # each holds this write's text after it
    listed = earlier.targets  # what the marker on disk lists, if any
    if staged:
        listed = _rename_all(directory, staged, earlier)
    _settle_marker(directory, earlier, covered, listed)
    return list(files)


def _settle_marker(directory: Path, earlier: MarkerState, covered: frozenset[Path],
                   listed: frozenset[Path]) -> None:
    """After a whole write: the marker goes only if this write's files cover every file
    an earlier marker listed (another config's fetch, stopped mid-way, is not finished
    by this one); else it is rewritten listing the files still unfinished. A marker that
    cannot be read stays: what it guards is unknown. `listed`: what the marker on disk
    lists now (not rewritten when unchanged: a watching server would reload for nothing)."""
    marker = directory / INCOMPLETE_MARKER
    if earlier.unreadable:
        log.warning("data folder's marker cannot be read; kept, so readers still refuse "
                    "the folder: delete it by hand once every config writing here fetched "
                    "again", folder=str(directory), marker=str(marker), why=earlier.unreadable)
        return
    left = earlier.targets - covered
    if left:
        if left != listed:
            _write_marker(marker, [], left)
        log.warning("data folder still half updated: an earlier fetch's files were not "
                    "rewritten by this one", folder=str(directory),
                    unfinished=_names(directory, left))
        return
    marker.unlink(missing_ok=True)
    if earlier.present:
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


def _rename_all(
    directory: Path, staged: list[tuple[Path, Path]], earlier: MarkerState
) -> frozenset[Path]:
    """Rename the temporary files into place under the marker, which lists this write's
    targets and those an earlier marker left unfinished. An error before the first
    rename removes the temporary files and puts the marker back as it was (none, or
    the earlier one's list); after it, the marker stays, so no reader takes the mix of
    new and old files for a folder. A marker that cannot be read is left as it is.
    Returns the files the marker lists."""
    marker = directory / INCOMPLETE_MARKER
    listed = earlier.targets | {_absolute(path) for _tmp, path in staged}
    renamed = 0
    try:
        if not earlier.unreadable:
            _write_marker(marker, staged, listed)
        for tmp, path in staged:
            os.replace(tmp, path)
            renamed += 1
    except BaseException:
        _discard(staged[renamed:], [])
        if renamed == 0 and not earlier.unreadable:
            _restore_marker(marker, earlier)
        else:
            log.error("data folder left half updated", folder=str(directory),
                      renamed=renamed, of=len(staged), marker=str(marker))
        raise
    _sync_folders({path.parent for _tmp, path in staged})
    return listed


def _restore_marker(marker: Path, earlier: MarkerState) -> None:
    """Nothing was renamed: the marker as it was before this write (none, or the
    earlier one's unfinished files), so a rerun of that fetch alone clears it."""
    if not earlier.present:
        marker.unlink(missing_ok=True)
        return
    try:
        _write_marker(marker, [], earlier.targets)
    except OSError as exc:  # still lists a superset, or is unreadable: refused either way
        log.error("data folder's marker not restored", marker=str(marker), error=str(exc))


def _write_marker(marker: Path, staged: list[tuple[Path, Path]], targets: Collection[Path]) -> None:
    """The marker, on disk before any rename: when the fetch began, what it renames,
    and every file still unfinished (`targets`, which another fetch must rewrite before
    it may remove the marker)."""
    folder = _absolute(marker.parent)
    body = {
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "pid": os.getpid(),
        "renames": [{"from": str(tmp), "to": _in_folder(folder, path)} for tmp, path in staged],
        # relative to the folder: the same files however the folder is reached next time
        "targets": sorted(_in_folder(folder, p) for p in targets),
        "meaning": "an interrupted `bot data fetch` left this folder half updated; "
                   "run `bot data fetch` again",
    }
    # whole or not at all (a temporary file renamed over it): a crash while writing it in
    # place left an empty marker, unreadable, so kept for ever and the folder refused
    fd, name = tempfile.mkstemp(prefix=f"{INCOMPLETE_MARKER}.", suffix=TEMP_SUFFIX, dir=marker.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(body, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(name, marker)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    _sync_folders({marker.parent})


def _in_folder(folder: Path, path: Path) -> str:
    """`path` relative to the data folder where it is inside it, else absolute."""
    resolved = _absolute(path)
    return str(resolved.relative_to(folder)) if resolved.is_relative_to(folder) else str(resolved)


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
