"""structlog set-up: readable on a terminal, JSON lines otherwise, secrets always masked.

structlog is imported only when something logs or asks for the set-up: with the rich
modules it loads for pretty tracebacks it costs 0.1 s, a fifth of `bot orders`, which
reads and prints but never logs. Such commands `defer_logging`; modules on their path
take a `get_logger` proxy, which applies the deferred set-up before its first line.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import sys
from typing import Any

_SECRET_KEYS = re.compile(r"(secret|password|passwd|token|api_key|key_id|authorization)", re.I)
_SECRET_ENV = ("APCA_API_SECRET_KEY", "APCA_API_KEY_ID", "BOT_DATABASE_URL", "BOT_NOTIFY_URLS",
               "APCA_BROKER_API_SECRET", "APCA_BROKER_API_KEY", "BOT_QUEUE_URL", "BOT_REDIS_URL",
               "FRED_API_KEY",
               # deploy/.env's passwords, in the containers' environment beside the URLs
               "POSTGRES_PASSWORD", "RABBITMQ_PASSWORD", "REDIS_PASSWORD")
_REGISTERED: set[str] = set()  # secrets only known at run time (tokens inside URLs)


def register_secret(value: str) -> None:
    """Mask `value` in every log line and `mask_text` from now on (e.g. a webhook token
    taken apart from a notification URL, which no environment variable holds alone)."""
    if len(value) >= 4:
        _REGISTERED.add(value)


#: connection URLs: only their password is secret, so a message can still say which
#: database or server it means (`bot db upgrade --database sqlite:///...` stays usable)
_URL_ENV = frozenset({"BOT_DATABASE_URL", "BOT_QUEUE_URL", "BOT_REDIS_URL"})


#: scheme://user:PASSWORD@host, the password up to the last @ as SQLAlchemy reads it (a
#: generated password may hold '/' or '#', where urlsplit ends the host part)
_URL_PASSWORD = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^:/@]*:(.*)@[^@]*$")
_URL_USER = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://([^:/@]+)@[^@]*$")


@functools.lru_cache(maxsize=64)
def _env_secrets(name: str, value: str) -> frozenset[str]:
    """What to mask of environment variable `name`'s `value`: the password of a URL (as
    written and decoded), or a Redis URL's user when it has no password (a token may
    stand there); nothing of a URL with a user only (PostgreSQL's trust login); else the
    whole value: credentials in a query, or too short to mask alone."""
    if name in _URL_ENV and "://" in value and "?" not in value:  # a query: all of it
        from urllib.parse import unquote

        if "@" not in value:
            return frozenset()  # no credentials in it (a SQLite path)
        found = _URL_PASSWORD.match(value)
        if found is None:
            found = _URL_USER.match(value)
            if found is not None and not value.startswith(("redis://", "rediss://", "unix://")):
                return frozenset()  # a login name only, as PostgreSQL's trust login has
        if found is not None and len(found.group(1)) >= 6:  # Redis takes a token as its user
            return frozenset({found.group(1), unquote(found.group(1))})
    return frozenset({value} if len(value) >= 6 else ())


def _secrets() -> list[str]:
    """Every known secret, as written and as it reads once escaped, longest first, so a
    secret containing another is masked whole."""
    return list(_masking()[0])


def _masking() -> tuple[tuple[str, ...], re.Pattern[str] | None]:
    """The secrets and one pattern matching any of them (longest first), made again only
    when a secret was registered or a secret variable changed: built for every log line,
    twice, it cost more than the line."""
    env = tuple(os.environ.get(name) for name in _SECRET_ENV)
    return _masking_for(len(_REGISTERED), env)  # the set only grows: its size is its version


@functools.lru_cache(maxsize=8)
def _masking_for(_version: int, env: tuple[str | None, ...]) -> tuple[tuple[str, ...], re.Pattern[str] | None]:
    found = set(_REGISTERED)
    for name, value in zip(_SECRET_ENV, env, strict=True):
        if value:
            found |= _env_secrets(name, value)
    forms: set[str] = set()
    for secret in found:
        forms |= _escaped_forms(secret)
    ordered = tuple(sorted(forms, key=len, reverse=True))
    pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None
    return ordered, pattern


@functools.lru_cache(maxsize=256)
def _escaped_forms(secret: str) -> frozenset[str]:
    """`secret` and its text inside a rendered line: JSON (ASCII-escaped or not) and repr
    escape `"`, `\\` and non-ASCII letters, once or twice (an exception's repr inside a
    JSON line), so a secret nested in a dict or an exception logged as it is no longer
    matched as written (`Sec"ret\\pässw0rd` leaked from {"pw": ...} in JSON lines)."""
    def escapes(text: str) -> set[str]:
        return {json.dumps(text)[1:-1], json.dumps(text, ensure_ascii=False)[1:-1], repr(text)[1:-1]}

    once = escapes(secret)
    twice = {twice for form in once for twice in escapes(form)}
    return frozenset(form for form in {secret, *once, *twice} if len(form) >= 4)


def mask_text(text: str) -> str:
    """`text` with every known secret replaced by ***: for messages stored or sent on."""
    pattern = _masking()[1]
    return text if pattern is None else pattern.sub("***", text)


def _mask_secrets(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    """Drop secret-looking fields and scrub known secret values from every string."""
    pattern = _masking()[1]
    for key, value in list(event.items()):
        if _SECRET_KEYS.search(key):
            event[key] = "***"
        elif isinstance(value, str) and pattern is not None:
            event[key] = pattern.sub("***", value)
    return event


def _mask_rendered(_logger: Any, _name: str, line: str) -> str:
    """The rendered line with every known secret masked: also inside nested values, objects
    logged as they are and exception texts, which `_mask_secrets` does not look into."""
    return mask_text(line)


class _ToStructlog(logging.Handler):
    """Python logging's handler of last resort, used when a library logs and no handler is
    set up (the daemon: APScheduler, SQLAlchemy's pool, urllib3): its warnings come out as
    the bot's lines, masked and in the log format, instead of as raw text and tracebacks."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            get_logger(record.name).log(
                record.levelno, record.getMessage(), logger=record.name, exc_info=record.exc_info
            )
        except Exception:  # noqa: BLE001 - logging must not raise; say so as logging does
            self.handleError(record)


_LAST_RESORT = _ToStructlog()


class _CurrentStderr:
    """Writes to whatever sys.stderr is at the time of writing, not at configuration:
    a stream captured or replaced later (tests, daemonizing) must not break logging."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def mask_crashes() -> None:
    """Print the traceback of an exception nobody caught (the process's, or a thread's such
    as the scheduler's) with every known secret masked, like a log line; for the `bot`
    process itself, not for a caller that has hooks of its own (tests, a notebook)."""
    import threading
    import traceback

    def show(kind: Any, value: Any, tb: Any, heading: str = "") -> None:
        sys.stderr.write(mask_text(heading + "".join(traceback.format_exception(kind, value, tb))))

    def thread_hook(args: Any) -> None:
        if args.exc_type is not SystemExit:
            name = args.thread.name if args.thread is not None else "?"
            show(args.exc_type, args.exc_value, args.exc_traceback, f"Exception in thread {name}:\n")

    sys.excepthook = show
    threading.excepthook = thread_hook


LOG_FORMATS = ("console", "json")
_deferred: tuple[str, str | None] | None = None  # defer_logging's set-up, not applied yet


def _log_format(fmt: str | None) -> str:
    """The format asked for, else BOT_LOG_FORMAT, else console on a terminal and JSON
    otherwise; a BOT_LOG_FORMAT that is neither is an error, not JSON by default."""
    fmt = fmt or os.environ.get("BOT_LOG_FORMAT") or ("console" if sys.stderr.isatty() else "json")
    if fmt not in LOG_FORMATS:
        from bot.errors import BotError

        raise BotError(f"BOT_LOG_FORMAT: expected {' or '.join(LOG_FORMATS)}, got {fmt!r}")
    return fmt


def defer_logging(level: str = "INFO", fmt: str | None = None) -> None:
    """configure_logging's set-up, applied when a `get_logger` proxy first logs (at once if
    structlog is loaded already: a module using it directly may log any time)."""
    global _deferred
    _deferred = (level, _log_format(fmt))  # a bad BOT_LOG_FORMAT fails now, not at a first line
    logging.lastResort = _LAST_RESORT
    if "structlog" in sys.modules:
        configure_logging(level, fmt)


def get_logger(name: str) -> Any:
    """A logger that imports and sets up structlog when it is first used."""
    return _LazyLogger(name)


class _LazyLogger:
    __slots__ = ("_name", "_logger")

    def __init__(self, name: str) -> None:
        self._name = name
        self._logger: Any = None

    def __getattr__(self, attr: str) -> Any:
        if self._logger is None:
            import structlog

            if _deferred is not None:
                configure_logging(*_deferred)
            self._logger = structlog.get_logger(self._name)
        return getattr(self._logger, attr)


def configure_logging(level: str = "INFO", fmt: str | None = None) -> None:
    """Console renderer when stderr is a terminal, JSON otherwise (BOT_LOG_FORMAT overrides)."""
    global _deferred
    import structlog

    _deferred = None
    fmt = _log_format(fmt)
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if fmt == "console"
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,  # before masking: a traceback may quote a secret
            _mask_secrets,
            renderer,
            _mask_rendered,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),
        cache_logger_on_first_use=False,
    )
    logging.lastResort = _LAST_RESORT
