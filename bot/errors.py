"""Errors that name what was wrong and where, so users can fix their input."""

from __future__ import annotations

import errno


class BotError(Exception):
    """Base class of every error the bot raises on purpose."""


class DatabaseUnreachable(BotError):
    """The trade-log database refused or did not answer a connection (its message names
    the masked URL and the reason): worth trying again later, unlike a bug's error."""


class ExecutionStopped(BotError):
    """This execution no longer holds what it works under (a platform task's claim or its
    account's lock: another took it): it stops at once and writes nothing more. Never
    caught by a catch-all that goes on (a release of queued buys, say)."""


class Terminated(BaseException):  # noqa: N818 - named as KeyboardInterrupt is
    """SIGTERM before the daemon's own handlers are in place (while it starts): the run is
    marked failed with the reason, and the command exits 143, as the signal would."""


class AccountCannotTrade(BotError):
    """The venue refuses the account's orders now (a block flag, a status other than
    ACTIVE): nothing is decided or sent, and the reason is said."""


class ConfigError(BotError):
    """A configuration file is invalid; `problems` lists each field and what was expected."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid configuration {source}:\n{lines}")


class DataError(BotError):
    """A data file or series is unusable; names the file (or series) and the field."""

    def __init__(self, source: str, field: str | None, message: str):
        self.source = source
        self.field = field
        where = f"{source}" + (f" [{field}]" if field else "")
        super().__init__(f"{where}: {message}")


_NO_ROOM = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


def cannot_write(path: object, error: OSError) -> BotError:
    """A file that could not be written (disk full, a file-size limit, no permission), as
    a one-line error naming it. A plain BotError, so it also crosses a process pool."""
    reason = error.strerror or str(error)
    if error.errno in _NO_ROOM:
        reason += " (the disk is full or a file-size limit such as ulimit -f was reached)"
    return BotError(f"cannot write {path}: {reason}")
