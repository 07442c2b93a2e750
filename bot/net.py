"""HTTP timeouts and bounded retries for every venue and data call.

requests (and so alpaca-py) waits forever by default, and a daemon that hangs on one
socket misses its schedule silently. Each session gets an adapter that applies a default
timeout to every request and retries *idempotent* requests (GET, HEAD, OPTIONS, DELETE)
on 429, 5xx, timeouts and connection errors with exponential backoff and jitter. POST is
sent once: whether a failed order POST may be repeated is decided by the broker after it
looked the order up, never here.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests
import structlog
from requests.adapters import HTTPAdapter

log = structlog.get_logger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})
TRANSIENT_ERRORS = (requests.Timeout, requests.ConnectionError)


@dataclass(frozen=True)
class RetryPolicy:
    """How long one request may take and how often a transient failure is retried.

    `attempts` counts every try (1 = no retry). The n-th retry waits
    min(max_delay, base_delay * 2**n) scaled by a jitter factor in [1 - jitter, 1], so
    clients that failed together do not retry together. `sleep` and `rng` are injectable
    so tests run without waiting and with known delays.
    """

    attempts: int = 4
    timeout: float = 10.0
    base_delay: float = 0.5
    max_delay: float = 8.0
    jitter: float = 0.5
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)
    rng: Callable[[], float] = field(default=random.random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.timeout <= 0:
            raise ValueError("timeout must be positive")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("jitter must be within [0, 1]")

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `retry` (0-based); a server's Retry-After
        is honoured up to max_delay."""
        backoff = min(self.max_delay, self.base_delay * (2**retry))
        backoff *= 1.0 - self.jitter * self.rng()
        if retry_after is not None:
            backoff = max(backoff, min(retry_after, self.max_delay))
        return backoff

    def wait(self, retry: int, retry_after: float | None = None) -> None:
        self.sleep(self.delay(retry, retry_after))


def retry_after_seconds(response: requests.Response | None) -> float | None:
    """The Retry-After header in seconds, if the server sent a numeric one."""
    if response is None:
        return None
    value = response.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class RetryingAdapter(HTTPAdapter):
    """An HTTPAdapter with a default timeout and the retry policy for idempotent calls."""

    def __init__(self, policy: RetryPolicy) -> None:
        super().__init__(max_retries=0)
        self.policy = policy

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.policy.timeout
        method = (request.method or "GET").upper()
        tries = self.policy.attempts if method in IDEMPOTENT_METHODS else 1
        for attempt in range(tries):
            last = attempt == tries - 1
            try:
                response = super().send(request, **kwargs)
            except TRANSIENT_ERRORS as exc:
                if last:
                    raise
                _log_retry(request, attempt, error=type(exc).__name__)
                self.policy.wait(attempt)
                continue
            if response.status_code not in RETRY_STATUSES or last:
                return response
            _log_retry(request, attempt, status=response.status_code)
            retry_after = retry_after_seconds(response)
            response.close()
            self.policy.wait(attempt, retry_after)
        raise AssertionError("unreachable: the last attempt returns or raises")


def _log_retry(request: requests.PreparedRequest, attempt: int, **why: Any) -> None:
    """The method and path only: query strings and headers stay out of logs."""
    path = requests.utils.urlparse(request.url or "").path
    log.warning("http_retry", method=request.method, path=path, attempt=attempt + 1, **why)


def install(session: requests.Session, policy: RetryPolicy) -> requests.Session:
    """Mount the retrying adapter on `session` for http and https; returns the session."""
    adapter = RetryingAdapter(policy)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def make_session(policy: RetryPolicy) -> requests.Session:
    return install(requests.Session(), policy)


def describe_error(exc: BaseException) -> str:
    """A short, secret-free description of a transport error (type and reason only)."""
    if isinstance(exc, requests.exceptions.JSONDecodeError):
        return "malformed JSON in the response"
    if isinstance(exc, requests.Timeout):
        return f"timed out ({type(exc).__name__})"
    if isinstance(exc, requests.ConnectionError):
        return f"connection failed ({type(exc).__name__})"
    return type(exc).__name__
