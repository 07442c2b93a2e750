"""Sending notifications through apprise, off the job's thread, without leaking tokens.

apprise speaks Telegram (tgram://), Discord (discord://), Slack (slack://), email
(mailto://) and ~100 other services from one URL each. The URLs hold the tokens, so
they come only from BOT_NOTIFY_URLS (the environment, or the secrets file named by
BOT_SECRETS_FILE); every secret part of them is registered with bot.logs, so no log
line, error or incident shows it.

Messages go into a queue that one background thread sends, so a slow or dead webhook
never delays a job. A message that could not be delivered (or was still queued when the
daemon stopped) is logged at once and handed back by `take_failures` for the daemon to
store as an incident: a notification failure never fails a job.

A failure repeats while its cause lasts (the poll job fails every few minutes while the
broker answers 429s): the same failure title is sent at most once per REPEAT_WINDOW, the
next one saying how many were held back. Each failure is still logged and stored as an
incident by the job that failed.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import structlog

from bot.errors import BotError
from bot.logs import mask_text, register_secret

log = structlog.get_logger(__name__)

URLS_VAR = "BOT_NOTIFY_URLS"
SEND_TIMEOUT = 60.0  # seconds one message may take across all services (each has its own too)
QUEUE_LIMIT = 500  # messages waiting to be sent; past it the newest are dropped (and said so)
REPEAT_WINDOW = 3600.0  # seconds: a failure title sent is not sent again sooner
_TOKEN_SPLIT = re.compile(r"[/:@?&=#,;+\s]+")


class NotifyError(BotError):
    """A notification URL apprise cannot use; the message names its position, never its text."""


@dataclass(frozen=True)
class Message:
    kind: str  # trades | risk | failures | daily
    title: str
    body: str
    repeat_key: str | None = None  # a failure's key in the repeat window (Notifier._repeats)
    held_back: int = 0  # failures like it held back before it, counted in its text


@dataclass(frozen=True)
class DeliveryFailure:
    """A message that did not reach every service; `error` is already masked."""

    at: dt.datetime
    kind: str
    title: str
    error: str


def load_urls(env: Mapping[str, str] | None = None) -> list[str]:
    """The notification URLs, separated by whitespace, from BOT_NOTIFY_URLS in the
    environment or else in the secrets file (BOT_SECRETS_FILE). None: an empty list."""
    from bot.secrets import SECRETS_FILE_VAR, read_secrets_file

    env = os.environ if env is None else env
    text = env.get(URLS_VAR, "").strip()
    path = env.get(SECRETS_FILE_VAR, "").strip()
    if not text and path:
        text = read_secrets_file(Path(path)).get(URLS_VAR, "").strip()
    return text.split()


def secret_parts(url: str, public_form: str) -> list[str]:
    """The pieces of `url` that its privacy form (apprise's `url(privacy=True)`, which each
    service writes knowing which of its fields are tokens) does not show in the clear."""
    _scheme, _, rest = url.partition("://")
    parts = {unquote(p) for p in _TOKEN_SPLIT.split(rest)} | set(_TOKEN_SPLIT.split(rest))
    public = unquote(public_form)
    # a query's parameter names are not secrets: `?token=...` dropped from the privacy
    # form registered the word "token", masked in every message after ("refused the ***")
    names = {name for raw in re.findall(r"[?&]([^=&]+)=", rest) for name in (raw, unquote(raw))}
    return sorted(p for p in parts if len(p) >= 4 and p not in public and p not in names)


#: a word that reads as a mistyped scheme ("telegram", "nosuchservice"), not as a token
_SCHEME_TYPO = re.compile(r"[a-z]{1,20}")


def _scheme(url: str) -> str:
    """The URL's scheme for an error message, if apprise knows it or it reads as a typo
    of one: anything else before `://` may be a token pasted in the wrong place."""
    import apprise

    if "://" not in url:
        return "(no scheme)"
    scheme = url.partition("://")[0]
    if _SCHEME_TYPO.fullmatch(scheme):
        return scheme
    known = {
        protocol.lower()
        for service in apprise.Apprise().details()["schemas"]
        for protocol in (*(service.get("protocols") or ()), *(service.get("secure_protocols") or ()))
    }
    return scheme if scheme.lower() in known else "(unknown scheme)"


def build_apprise(urls: Iterable[str]):
    """An apprise.Apprise holding every URL, each checked and its secrets registered for
    masking first (so even the error about a bad URL cannot show its token)."""
    import apprise

    collector()  # before parsing: apprise's own complaint about a bad URL may quote it
    client = apprise.Apprise()
    for position, url in enumerate(urls, start=1):
        if "://" in url.partition("://")[2]:
            # apprise would take "tgram://...,discord://id/token" for one URL and send
            # the webhook's token to Telegram as a chat id (then log its refusal)
            raise NotifyError(
                f"{URLS_VAR} item {position} ({_scheme(url)}://...): holds more than one URL; "
                "separate them with spaces, not commas"
            )
        service = apprise.Apprise.instantiate(url, suppress_exceptions=True)
        if not service:
            raise NotifyError(
                f"{URLS_VAR} item {position} ({_scheme(url)}://...): not a notification URL "
                "apprise understands; see https://github.com/caronc/apprise/wiki for the forms"
            )
        for part in secret_parts(url, service.url(privacy=True)):
            register_secret(part)
        client.add(service)
    return client


def check_urls(env: Mapping[str, str] | None = None) -> int:
    """Parse BOT_NOTIFY_URLS now (NotifyError if one is unusable), so a typo stops the
    command before it records a run; returns how many there are."""
    urls = load_urls(env)
    build_apprise(urls)
    return len(urls)


class _Collector(logging.Handler):
    """apprise reports a failed delivery only through its logger: keep those lines (masked)
    for the failure record, and stop them reaching stderr unmasked."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(mask_text(record.getMessage()))
        except Exception:  # noqa: BLE001 - a malformed log record must not stop delivery
            self.lines.append(f"{record.levelname} (unformattable message)")


_COLLECTOR: _Collector | None = None


def collector() -> _Collector:
    """The one handler on apprise's logger (installed on first use): WARNING and above
    are kept, masked, and nothing reaches stderr unmasked; its debug lines, which print
    whole webhook URLs, are never produced."""
    global _COLLECTOR
    if _COLLECTOR is None:
        _COLLECTOR = _Collector()
        apprise_log = logging.getLogger("apprise")
        apprise_log.addHandler(_COLLECTOR)
        apprise_log.propagate = False
        apprise_log.setLevel(logging.WARNING)
    return _COLLECTOR


def repeat_key(title: str, body: str) -> str:
    """What makes two failures the same for the repeat window: the title (the job), the
    error's first line with every word holding a digit left out (ids, prices, waits,
    times), and the HTTP statuses it names. The title alone held a new kind of failure
    of a job (an account blocked, after an hour of 429s) back for up to an hour; the
    numbers would make every repeat look new, while a 403 after 429s is news."""
    first = body.split("\n", 1)[0]
    statuses = ",".join(_STATUS.findall(first))
    return f"{title}\n{_HAS_DIGIT.sub('#', first)}\n{statuses}"


_HAS_DIGIT = re.compile(r"\S*[0-9]\S*")
_STATUS = re.compile(r"(?:HTTP|answered|status)\s+([1-5][0-9][0-9])\b")


class Notifier:
    """Queue and background sender for one daemon. `send` never blocks and never raises."""

    def __init__(
        self, client, events: Iterable[str], prefix: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self.events = frozenset(events)
        self.prefix = prefix
        self._clock = clock
        self._queue: queue.Queue[Message | None] = queue.Queue(maxsize=QUEUE_LIMIT)
        self._failures: list[DeliveryFailure] = []
        self._repeats: dict[str, tuple[float, int]] = {}  # failure title: sent at, held back since
        self._lock = threading.Lock()
        self._collector = collector()
        self._closed = False
        self._sending: Message | None = None  # the message the sender is delivering now
        self._thread = threading.Thread(target=self._work, name="notify", daemon=True)
        self._thread.start()

    @classmethod
    def from_settings(cls, settings, mode: str, env: Mapping[str, str] | None = None) -> Notifier | None:
        """A notifier for the daemon, or None when no URL is configured or no event wanted."""
        urls = load_urls(env)
        events = settings.notify.events
        if not urls or not events:
            return None
        notifier = cls(build_apprise(urls), events, f"[{settings.strategy.name} {mode}]")
        log.info("notifications on", services=len(urls), events=list(events))
        return notifier

    def wants(self, kind: str) -> bool:
        return kind in self.events

    def send(self, kind: str, title: str, body: str) -> None:
        """Queue one message of `kind` if that kind is wanted (a repeated failure only once
        per REPEAT_WINDOW). Masked first: the text of an error may quote a secret."""
        if kind not in self.events:
            return
        key, held = None, 0
        if kind == "failures":
            key = repeat_key(title, body)
            held = self._held_back(key)
            if held is None:
                return
            if held:
                body += (f"\n({held} more like it since the last message were not notified; "
                         "see `bot incidents`)")
        message = Message(kind, mask_text(f"{self.prefix} {title}"), mask_text(body), key, held)
        if self._closed:
            self._fail(message, "not sent: notifications were already closed")
            return
        try:
            self._queue.put_nowait(message)
        except queue.Full:
            self._fail(message, f"not sent: {QUEUE_LIMIT} messages already waiting")

    def _held_back(self, key: str) -> int | None:
        """None for a failure like one sent less than REPEAT_WINDOW ago (counted); else
        how many like it were held back since the last one (its message says so)."""
        now = self._clock()
        with self._lock:
            sent_at, held = self._repeats.get(key, (None, 0))
            recent = sent_at is not None and now - sent_at < REPEAT_WINDOW
            self._repeats[key] = (sent_at, held + 1) if recent else (now, 0)
        if recent:
            log.info("notification held back: the same failure was notified recently",
                     failure=key, held_back=held + 1)
            return None
        return held

    def take_failures(self) -> list[DeliveryFailure]:
        """Failures since the last call, for the daemon to record as incidents."""
        with self._lock:
            taken, self._failures = self._failures, []
        return taken

    def close(self, timeout: float = 30.0) -> None:
        """Send what is queued (waiting at most `timeout` seconds), then stop the thread."""
        if self._closed:
            return
        self._closed = True
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            pass
        else:
            self._thread.join(timeout)
        sending = self._sending
        if self._thread.is_alive():
            log.warning("notification sender still busy at shutdown", waited_seconds=timeout)
            if sending is not None:  # its outcome comes after the daemon's last records
                self._fail(sending, f"not confirmed: still being sent when the daemon stopped "
                                    f"(waited {timeout:.0f} s)")
        # What the sender did not take in time is lost with the process: a failure each.
        while True:
            try:
                message = self._queue.get_nowait()
            except queue.Empty:
                break
            if message is not None:
                self._fail(message, f"not sent: still queued when the daemon stopped (waited {timeout:.0f} s)")

    def _work(self) -> None:
        while (message := self._queue.get()) is not None:
            self._sending = message
            self._deliver(message)
            self._sending = None

    def _deliver(self, message: Message) -> None:
        from apprise import NotifyFormat

        self._collector.lines.clear()
        try:
            delivered = self._client.notify(
                title=message.title, body=message.body, body_format=NotifyFormat.TEXT,
                timeout=SEND_TIMEOUT,
            )
        except Exception as exc:  # noqa: BLE001 - a failed notification must not stop the sender
            self._fail(message, f"{type(exc).__name__}: {exc}")
            self._reopen_window(message)
            return
        if not delivered:
            self._fail(message, "; ".join(self._collector.lines) or "a service refused it")
            self._reopen_window(message)

    def _reopen_window(self, message: Message) -> None:
        """A failure message no service took does not start the repeat window: the next
        one like it goes out (with the count held back so far). Only for a refused
        delivery: a full queue or a closed notifier is no reason to send more."""
        if message.repeat_key is None:
            return
        with self._lock:  # the count it carried is owed again, with those held since
            _sent_at, held = self._repeats.get(message.repeat_key, (None, 0))
            self._repeats[message.repeat_key] = (None, held + message.held_back)

    def _fail(self, message: Message, error: str) -> None:
        failure = DeliveryFailure(dt.datetime.now(dt.UTC), message.kind, message.title, mask_text(error))
        log.error("notification not delivered", kind=message.kind, error=failure.error)
        with self._lock:
            self._failures.append(failure)
