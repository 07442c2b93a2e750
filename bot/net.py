"""HTTP timeouts and bounded retries for every venue and data call.

requests (and so alpaca-py) waits forever by default, and a daemon that hangs on one
socket misses its schedule silently. Each session gets an adapter that applies a default
timeout to every request and retries *idempotent* requests (GET, HEAD, OPTIONS, DELETE)
on 429, 5xx, timeouts and connection errors: urllib3's Retry does the counting, the
Retry-After parsing and the plumbing into requests; `BudgetRetry` adds what it lacks, a
time budget, jittered backoff, an injectable clock and sleep, and a log line per retry.

The bound is known: at most `attempts` tries; between them the backoff doubles from
`base_delay` up to `max_delay` (shortened by up to `jitter`); a server's Retry-After
longer than that is waited in full, and one longer than `max_retry_after` ends the
retries at once (never call back earlier than asked); no retry starts later than `budget`
seconds after the first failure. Each try has `timeout` to connect and `timeout` per read.

When the tries end without an answer (connection refused, a host name that does not
resolve, a timeout), the error requests raises carries a one-line account of it that
`describe_error` returns: the service and its endpoint (scheme://host[:port], never a
path, query string or key), the number of tries and the cause, e.g. "could not reach
Alpaca trading API at https://paper-api.alpaca.markets after 8 tries: connection refused".

POST is sent once: whether a failed order POST may be repeated is decided by the broker
after it looked the order up, never here. alpaca-py's own retry (429 and 504, three more
tries 3 s apart, POST included) is switched off by `take_over_sdk_retries`, so ours is
the only one and its budget is the whole budget.

A caller may name a last check for the requests it makes (`checked_before_sending`): it
runs after the throttle, just before a request goes out, and stops it by raising. The
wait for a shared budget's token can be long, and a send gate asked before it may no
longer hold after it.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import email.utils
import errno
import math
import random
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests
import structlog
from requests.adapters import HTTPAdapter
from urllib3.exceptions import (
    ConnectTimeoutError,
    MaxRetryError,
    NameResolutionError,
    NewConnectionError,
    ProtocolError,
    ProxyError,
    ReadTimeoutError,
    ResponseError,
)
from urllib3.exceptions import SSLError as TLSError
from urllib3.util.retry import Retry

log = structlog.get_logger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})


@dataclass(frozen=True)
class RetryPolicy:
    """How long one request may take and how often a transient failure is retried.

    `attempts` counts every try (1 = no retry). The n-th retry waits
    min(max_delay, base_delay * 2**n) scaled by a jitter factor in [1 - jitter, 1], so
    clients that failed together do not retry together, or the server's Retry-After if
    that is longer. `sleep`, `clock` and `rng` are injectable so tests run without
    waiting and with known delays.
    """

    attempts: int = 8
    timeout: float = 10.0
    base_delay: float = 1.0
    max_delay: float = 30.0
    max_retry_after: float = 120.0
    budget: float = 300.0
    jitter: float = 0.5
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False, compare=False)
    rng: Callable[[], float] = field(default=random.random, repr=False, compare=False)
    # Called before every try, retries included: a request budget shared with other
    # processes (e.g. a token bucket in Redis) that may block until a request is allowed.
    throttle: Callable[[], None] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.timeout <= 0:
            raise ValueError("timeout must be positive")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("jitter must be within [0, 1]")
        if self.budget < 0 or self.max_retry_after < 0:
            raise ValueError("budget and max_retry_after must not be negative")

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `retry` (0-based): the jittered backoff,
        or the server's Retry-After if that is longer."""
        backoff = min(self.max_delay, self.base_delay * (2**retry))
        backoff *= 1.0 - self.jitter * self.rng()
        return backoff if retry_after is None else max(backoff, retry_after)

    def wait(self, retry: int, retry_after: float | None = None) -> None:
        self.sleep(self.delay(retry, retry_after))

    def refusal(self, started: float, wait: float, retry_after: float | None) -> str | None:
        """Why the next retry must not happen (None: it may), `wait` seconds from now
        for a series of tries whose first failure was at `started` (policy clock)."""
        if retry_after is not None and retry_after > self.max_retry_after:
            return f"the server asks to wait {retry_after:.0f} s (limit {self.max_retry_after:.0f} s)"
        if self.clock() + wait - started > self.budget:
            return f"the retry budget of {self.budget:.0f} s is spent"
        return None


#: Alpaca trading and market data: no fallback, so the larger budget.
ALPACA_POLICY = RetryPolicy()
#: FRED: a failed download falls back to the series stored by an earlier job.
FRED_POLICY = RetryPolicy(attempts=4, budget=60.0)


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """A Retry-After header in seconds (delay-seconds, decimals tolerated, or an
    HTTP-date); without one, the wait until X-RateLimit-Reset (a Unix time) when
    X-RateLimit-Remaining is 0, as Alpaca signals its rate limit; None if neither."""
    value = None if headers is None else headers.get("Retry-After")
    if value is None:
        return None if headers is None else _rate_limit_reset(headers)
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


def _rate_limit_reset(headers: Mapping[str, str]) -> float | None:
    """Seconds until the rate-limit window resets, if this answer says it is spent."""
    remaining, reset = headers.get("X-RateLimit-Remaining"), headers.get("X-RateLimit-Reset")
    if remaining is None or reset is None or remaining.strip() != "0":
        return None
    try:
        at = float(reset)
    except ValueError:
        return None
    if not math.isfinite(at):
        return None
    return max(0.0, at - time.time())


def response_retry_after(response: requests.Response | None) -> float | None:
    """The Retry-After of a requests response (e.g. an APIError's), in seconds."""
    return None if response is None else retry_after_seconds(response.headers)


class BudgetRetry(Retry):
    """urllib3's Retry bounded by a RetryPolicy (see the module docstring)."""

    def __init__(
        self, *args: Any, policy: RetryPolicy | None = None, started: float | None = None,
        wait: float = 0.0, **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.policy = policy or RetryPolicy()
        self.started = started  # policy clock at the first failure of this request
        self.planned_wait = wait  # what sleep() waits before the next try

    @classmethod
    def for_policy(cls, policy: RetryPolicy) -> BudgetRetry:
        return cls(
            total=policy.attempts - 1,
            connect=None, read=None, status=None, redirect=None,
            other=0,  # e.g. TLS errors: retrying does not help
            allowed_methods=IDEMPOTENT_METHODS,
            status_forcelist=RETRY_STATUSES,
            raise_on_status=False,  # the last answer goes back to the caller as it is
            respect_retry_after_header=True,
            policy=policy,
        )

    def new(self, **kw: Any) -> BudgetRetry:
        retry = super().new(**kw)
        retry.policy, retry.started, retry.planned_wait = self.policy, self.started, 0.0
        return retry

    def increment(  # type: ignore[override]
        self,
        method: str | None = None,
        url: str | None = None,
        response: Any = None,
        error: Exception | None = None,
        _pool: Any = None,
        _stacktrace: Any = None,
    ) -> BudgetRetry:
        if method is None or method.upper() not in IDEMPOTENT_METHODS:
            self._give_up(url, response, error, _pool, _stacktrace, "not an idempotent request")
        try:
            retry = super().increment(method, url, response, error, _pool, _stacktrace)
        except MaxRetryError:
            spent = len(self.history) + 1 >= self.policy.attempts
            reason = f"all {self.policy.attempts} tries failed" if spent else "not retried"
            _log_giving_up(method, url, reason, response, error, _pool)
            self._give_up(url, response, error, _pool, _stacktrace, reason)
        policy = self.policy
        retry.started = self.started if self.started is not None else policy.clock()
        retry_after = retry_after_seconds(response.headers) if response is not None else None
        wait = policy.delay(len(retry.history) - 1, retry_after)
        refused = policy.refusal(retry.started, wait, retry_after)
        if refused is not None:
            _log_giving_up(method, url, refused, response, error, _pool)
            self._give_up(url, response, error, _pool, _stacktrace, refused)
        retry.planned_wait = wait
        _log_retry(method, url, len(retry.history), wait, response, error, _pool)
        return retry

    def sleep(self, response: Any = None) -> None:
        if self.planned_wait > 0:
            self.policy.sleep(self.planned_wait)
        if self.policy.throttle is not None:  # the retry is a request like any other
            self.policy.throttle()

    def _give_up(
        self, url: str | None, response: Any, error: Exception | None, pool: Any,
        stacktrace: Any, reason: str,
    ) -> None:
        """End the tries the way urllib3 does, so requests raises what it always raises:
        a read error as itself (ReadTimeout), anything else as MaxRetryError (mapped to
        ConnectionError / ConnectTimeout; for an answer, urllib3 hands the answer back)."""
        tries = len(self.history) + 1  # the one that just failed included
        if error is not None and self._is_read_error(error):
            error.tries = tries  # type: ignore[attr-defined]  # read by TimeoutAdapter
            raise error.with_traceback(stacktrace)
        gave_up = MaxRetryError(pool, url, error or ResponseError(reason))
        gave_up.tries = tries  # type: ignore[attr-defined]
        raise gave_up


def _path(url: str | None) -> str:
    """The path only: query strings (symbols, dates, tokens) stay out of logs."""
    return requests.utils.urlparse(url or "").path


def _pool_endpoint(pool: Any) -> str | None:
    """scheme://host:port of a urllib3 connection pool (None without one)."""
    host = getattr(pool, "host", None)
    if not host:
        return None
    host = f"[{host}]" if ":" in host else host
    port = getattr(pool, "port", None)
    return f"{getattr(pool, 'scheme', 'http')}://{host}" + (f":{port}" if port else "")


def _why(response: Any, error: Exception | None) -> dict[str, Any]:
    if response is not None and getattr(response, "status", None):
        return {"status": response.status}
    return {"error": type(error).__name__ if error is not None else "unknown"}


def _log_retry(
    method: str | None, url: str | None, retry: int, wait: float, response: Any,
    error: Exception | None, pool: Any,
) -> None:
    log.warning(
        "http_retry", method=method, endpoint=_pool_endpoint(pool), path=_path(url),
        attempt=retry, wait_s=round(wait, 3), **_why(response, error),
    )


def _log_giving_up(
    method: str | None, url: str | None, reason: str, response: Any, error: Exception | None,
    pool: Any,
) -> None:
    log.warning("http_retry_stopped", method=method, endpoint=_pool_endpoint(pool),
                path=_path(url), reason=reason, **_why(response, error))


_last_check: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar(
    "net_last_check", default=None)


@contextlib.contextmanager
def checked_before_sending(check: Callable[[], None]) -> Iterator[None]:
    """Run `check` before each request this thread makes inside the block, after the
    throttle's wait; what it raises stops the request unsent and reaches the caller."""
    reset = _last_check.set(check)
    try:
        yield
    finally:
        _last_check.reset(reset)


class TimeoutAdapter(HTTPAdapter):
    """An HTTPAdapter with a default timeout and the policy's retries. `service` names
    what it talks to ("Alpaca trading API") in the error of a request that got no answer."""

    def __init__(self, policy: RetryPolicy, service: str | None = None) -> None:
        super().__init__(max_retries=BudgetRetry.for_policy(policy))
        self.policy = policy
        self.service = service

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.policy.timeout
        if self.policy.throttle is not None:
            self.policy.throttle()
        check = _last_check.get()
        if check is not None:
            # cleared while it runs: a check that makes a request itself (the platform's
            # gate asks the venue's clock) recursed here without end, a token each time
            reset = _last_check.set(None)
            try:
                check()
            finally:
                _last_check.reset(reset)
        try:
            return super().send(request, **kwargs)
        except (requests.ConnectionError, requests.Timeout) as exc:
            exc.unreachable = unreachable(  # type: ignore[attr-defined]  # describe_error
                self.service, request.url, exc, kwargs["timeout"]
            )
            raise


def install(
    session: requests.Session, policy: RetryPolicy, service: str | None = None
) -> requests.Session:
    """Mount the retrying adapter on `session` for http and https; returns the session."""
    adapter = TimeoutAdapter(policy, service)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def make_session(policy: RetryPolicy, service: str | None = None) -> requests.Session:
    return install(requests.Session(), policy, service)


def endpoint(url: str | None) -> str:
    """scheme://host[:port] of a URL: no user info, path, query string or fragment."""
    parts = urllib.parse.urlsplit(url or "")
    host = parts.hostname or "?"
    try:
        port = parts.port
    except ValueError:
        port = None
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme or 'http'}://{host}" + (f":{port}" if port is not None else "")


def unreachable(
    service: str | None, url: str | None, exc: requests.RequestException, timeout: Any = None
) -> str:
    """One line for a request that got no answer: who, where, how many tries and why,
    e.g. "could not reach FRED at https://fred.stlouisfed.org after 4 tries: connection
    refused". Built from the exception's type and errno only (its text holds the URL with
    its query string)."""
    inner = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else None
    tries = getattr(inner, "tries", None)
    reason = inner.reason if isinstance(inner, MaxRetryError) else inner
    connected, cause = _cause(reason, timeout)
    if cause is None:  # requests' own classification, the type at least
        connected = isinstance(exc, requests.ReadTimeout)
        cause = "timed out" if isinstance(exc, requests.Timeout) else f"failed ({type(exc).__name__})"
    where = endpoint(url) if service is None else f"{service} at {endpoint(url)}"
    counted = f" after {tries} tries" if isinstance(tries, int) and tries > 1 else ""
    return f"{'no answer from' if connected else 'could not reach'} {where}{counted}: {cause}"


_ERRNO_CAUSES = {
    errno.ECONNREFUSED: "connection refused",
    errno.ENETUNREACH: "network unreachable",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ECONNRESET: "connection reset",
}


def _cause(error: BaseException | None, timeout: Any) -> tuple[bool, str | None]:
    """(whether a connection had been made, what went wrong) for urllib3's error;
    None when it is not one this knows."""
    if isinstance(error, NameResolutionError):  # before NewConnectionError, its base
        return False, "host name not found (DNS)"
    if isinstance(error, NewConnectionError):  # before ConnectTimeoutError, its base
        os_error = error.__cause__ or error.__context__
        if isinstance(os_error, TimeoutError):
            return False, f"connect timed out{_seconds(timeout, 0)}"
        if isinstance(os_error, OSError):
            known = _ERRNO_CAUSES.get(os_error.errno) if os_error.errno is not None else None
            return False, known or (os_error.strerror or type(os_error).__name__).lower()
        return False, "connection failed"
    if isinstance(error, ConnectTimeoutError):
        return False, f"connect timed out{_seconds(timeout, 0)}"
    if isinstance(error, ReadTimeoutError):
        return True, f"read timed out{_seconds(timeout, 1)}"
    if isinstance(error, TLSError):
        return False, "TLS failed (certificate or handshake)"
    if isinstance(error, ProxyError):
        return False, "the proxy failed"
    if isinstance(error, ProtocolError):
        inner = error.args[1] if len(error.args) > 1 else None
        if isinstance(inner, OSError) and inner.errno in _ERRNO_CAUSES:
            return True, _ERRNO_CAUSES[inner.errno]
        return True, "the connection closed without an answer"
    return False, None


def _seconds(timeout: Any, phase: int) -> str:
    """" (10 s)": the connect (phase 0) or read (1) timeout of a request, if known."""
    if isinstance(timeout, tuple):
        timeout = timeout[phase] if len(timeout) > phase else None
    return f" ({timeout:g} s)" if isinstance(timeout, int | float) else ""


def take_over_sdk_retries(client: Any, policy: RetryPolicy, service: str | None = None) -> None:
    """Give an alpaca-py client our adapter and no retry of its own.

    alpaca-py's RESTClient._request retries 429 and 504 `_retry` times (default 3) with a
    fixed 3 s sleep, for every method: it would re-send an order POST blindly and
    multiply our budget. Its constructor treats retry_attempts=0 as "use the default"
    (and TradingClient does not pass it on), so the attribute is the only switch."""
    client._retry = 0
    install(client._session, policy, service)


def describe_error(exc: BaseException) -> str:
    """A short, secret-free description of a transport error (type and reason only); for
    a request that got no answer, the service, endpoint, tries and cause (`unreachable`)."""
    said = getattr(exc, "unreachable", None)
    if isinstance(said, str):
        return said
    if isinstance(exc, requests.exceptions.JSONDecodeError):
        return "malformed JSON in the response"
    if isinstance(exc, requests.Timeout):
        return f"timed out ({type(exc).__name__})"
    if isinstance(exc, requests.ConnectionError):
        return f"connection failed ({type(exc).__name__})"
    return type(exc).__name__
