"""The platform's settings: where its queue, Redis and market data are, and the broker's
request budget. From the environment (the same for the scheduler and every worker, as in
deploy/docker-compose.yml); a bad value is a one-line error naming the variable.

    BOT_QUEUE_URL          RabbitMQ (default amqp://guest:guest@127.0.0.1:5672//)
    BOT_QUEUE_NAME         the queue tasks go through (default leverbot)
    BOT_REDIS_URL          Redis: the shared request budget and the account locks
                           (default redis://127.0.0.1:6379/0)
    BOT_BROKER_REQUESTS_PER_MINUTE
                           the Broker API budget of all workers together (default 200:
                           Alpaca's published trading-API limit; a Broker API partner
                           sets the limit agreed with Alpaca, see the README)
    BOT_BROKER_BURST       requests allowed at once before the rate applies (default: one
                           second's worth, at least 1)
    BOT_PLATFORM_RETRIES   retries of an account's task after a broker 429/5xx before it
                           is dead-lettered (default 5)
    BOT_PLATFORM_RETRY_DELAY, BOT_PLATFORM_RETRY_MAX_DELAY
                           backoff of those retries in seconds (default 2 and 60;
                           doubled per retry, with jitter)
    BOT_HTTP_RETRY_DELAY   first backoff of a broker request's own retries (GETs, and an
                           order POST proven absent) in seconds (default 0.5, doubled per
                           retry, 4 tries)
    BOT_PLATFORM_LEASE     seconds an account stays locked by a task that stopped
                           answering; a working task renews it (default 300, at least
                           90)
    BOT_PLATFORM_NAME      the platform's name: the start of every client_order_id and
                           state key (default platform)
    BOT_PLATFORM_DATA      market history: "alpaca" (bars and FRED, as the daemon),
                           "synthetic", or a CSV directory (default alpaca; live: alpaca
                           only)
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from bot.errors import BotError
from bot.secrets import setting

DEFAULT_QUEUE_URL = "amqp://guest:guest@127.0.0.1:5672//"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
#: Alpaca's documented default for its trading API; Broker API limits are per partner
DEFAULT_REQUESTS_PER_MINUTE = 200.0
_NAME = re.compile(r"[A-Za-z0-9_]{1,40}")


@dataclass(frozen=True)
class PlatformSettings:
    queue_url: str = DEFAULT_QUEUE_URL
    queue_name: str = "leverbot"
    redis_url: str = DEFAULT_REDIS_URL
    requests_per_minute: float = DEFAULT_REQUESTS_PER_MINUTE
    burst: int = 3
    max_retries: int = 5
    retry_delay: float = 2.0
    retry_max_delay: float = 60.0
    lease_seconds: float = 300.0
    http_retry_delay: float = 0.5
    name: str = "platform"
    data: str = "alpaca"
    # Funds an account holds outside its profile (a client moved to another profile) are
    # sold with its next rebalance; False only reports them (BOT_PLATFORM_SELL_OUTSIDE=no)
    sell_outside_profile: bool = True

    @property
    def requests_per_second(self) -> float:
        return self.requests_per_minute / 60.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, live: bool = False) -> PlatformSettings:
        """The settings from the environment. The queue (and Redis namespace) defaults to
        `leverbot` for paper and `leverbot-live` for live: a live decision published to a
        queue paper workers read was dropped by them, and the two shared account locks
        and the request budget."""
        env = os.environ if env is None else env
        rate = _number(env, "BOT_BROKER_REQUESTS_PER_MINUTE", DEFAULT_REQUESTS_PER_MINUTE,
                       top=1_000_000)
        default_burst = max(1, math.floor(rate / 60.0))
        name = env.get("BOT_PLATFORM_NAME", "platform")
        if not _NAME.fullmatch(name):
            raise BotError(
                f"BOT_PLATFORM_NAME: expected 1-40 letters, digits or _, got {name!r}"
            )
        retry_delay = _number(env, "BOT_PLATFORM_RETRY_DELAY", 2.0, top=3600)
        retry_max_delay = _number(env, "BOT_PLATFORM_RETRY_MAX_DELAY", 60.0, top=86_400)
        if retry_delay > retry_max_delay:
            raise BotError(f"BOT_PLATFORM_RETRY_DELAY {retry_delay:g} must not exceed "
                           f"BOT_PLATFORM_RETRY_MAX_DELAY {retry_max_delay:g}")
        return cls(
            # the environment, else the secrets file (their passwords); checked now, so a
            # typo stops the command here rather than in a client that retries for ever
            queue_url=_queue_url(setting("BOT_QUEUE_URL", env) or DEFAULT_QUEUE_URL),
            queue_name=_queue_name(env.get("BOT_QUEUE_NAME") or ("leverbot-live" if live else "leverbot")),
            redis_url=_redis_url(setting("BOT_REDIS_URL", env) or DEFAULT_REDIS_URL),
            requests_per_minute=rate,
            burst=int(_number(env, "BOT_BROKER_BURST", default_burst, whole=True, top=1_000_000)),
            max_retries=int(_number(env, "BOT_PLATFORM_RETRIES", 5, whole=True, zero=True, top=100)),
            retry_delay=retry_delay,
            retry_max_delay=retry_max_delay,
            lease_seconds=_lease(env),
            http_retry_delay=_number(env, "BOT_HTTP_RETRY_DELAY", 0.5, top=60),
            name=name,
            data=_data_source(env, live),
            sell_outside_profile=_yes_no(env, "BOT_PLATFORM_SELL_OUTSIDE", True),
        )


#: the shortest account lock lease: a task renews it between its requests, whose single
#: waits and retry budgets the lease bounds (bot.platform.lease.request_limits); below
#: this a request's own timeout (2 x 10 s) would be a large part of it
MIN_LEASE_SECONDS = 90.0


#: the longest: a worker that died keeps its accounts locked this long
MAX_LEASE_SECONDS = 86_400.0


def _lease(env: Mapping[str, str]) -> float:
    text = env.get("BOT_PLATFORM_LEASE")
    expected = (f"BOT_PLATFORM_LEASE: expected {MIN_LEASE_SECONDS:g} to {MAX_LEASE_SECONDS:g} "
                "seconds (a task's broker calls must fit in the account lock; a dead worker's "
                "accounts stay locked that long)")
    if text is None or not text.strip():
        return 300.0
    try:
        lease = float(text)
    except ValueError:
        raise BotError(f"{expected}, got {text!r}") from None
    if not MIN_LEASE_SECONDS <= lease <= MAX_LEASE_SECONDS:  # NaN too
        raise BotError(f"{expected}, got {text!r}")
    return lease


def _queue_url(url: str) -> str:
    """BOT_QUEUE_URL as kombu reads it: amqp:// or amqps://, a host, a port if any."""
    from kombu.utils.url import parse_url

    expected = "expected amqp://user:password@host:5672/vhost (or amqps://)"
    try:
        parts = parse_url(url)
    except ValueError:  # its text may quote part of a password holding '/', '#' or '?'
        raise BotError(f"BOT_QUEUE_URL: {expected}, got {masked_url(url)!r} ({_UNREADABLE})") from None
    if parts["transport"] not in ("amqp", "amqps", "pyamqp") or not (parts["hostname"] or "").strip():
        raise BotError(f"BOT_QUEUE_URL: {expected}, got {masked_url(url)!r}")
    return url


def _redis_url(url: str) -> str:
    """BOT_REDIS_URL as redis-py reads it (redis://, rediss:// or unix://), parsed now."""
    import redis

    try:
        redis.ConnectionPool.from_url(url)
    except ValueError:
        raise BotError(f"BOT_REDIS_URL: expected redis://:password@host:6379/0 (or rediss://, "
                       f"unix://), got {masked_url(url)!r} ({_UNREADABLE})") from None
    return url


#: why a queue or Redis URL did not parse, without the parser's own text (which quotes
#: the part of a password before a '/', '#' or '?' as a "port")
_UNREADABLE = ("not a URL of that form: a port that is not a number, or a password holding "
               "'/', '#', '?' or '@' that is not percent-encoded")


def _data_source(env: Mapping[str, str], live: bool) -> str:
    """BOT_PLATFORM_DATA: alpaca, synthetic or an existing CSV directory; live money is
    only ever decided on Alpaca's market data."""
    data = (env.get("BOT_PLATFORM_DATA") or "alpaca").strip()
    if data not in ("alpaca", "synthetic") and not os.path.isdir(os.path.expanduser(data)):
        raise BotError(f"BOT_PLATFORM_DATA: expected alpaca, synthetic or a directory of CSV "
                       f"files, got {data!r} (no such directory)")
    if live and data != "alpaca":
        raise BotError(f"BOT_PLATFORM_DATA: live trading decides on Alpaca's market data only "
                       f"(alpaca), got {data!r}")
    return data


def _yes_no(env: Mapping[str, str], name: str, default: bool) -> bool:
    text = (env.get(name) or "").strip().lower()
    if not text:
        return default
    if text in ("yes", "true", "1"):
        return True
    if text in ("no", "false", "0"):
        return False
    raise BotError(f"{name}: expected yes or no, got {text!r}")


def _number(
    env: Mapping[str, str], name: str, default: float, *, whole: bool = False, zero: bool = False,
    top: float = math.inf,
) -> float:
    """A positive number (or whole number) from the environment, at most `top`; `zero`
    allows 0."""
    text = env.get(name)
    if text is None or not text.strip():
        return default
    kind = "a whole number" if whole else "a number"
    bound = (">= 0" if zero else "> 0") + (f" and <= {top:g}" if top < math.inf else "")
    try:
        value = float(text)
    except ValueError:
        raise BotError(f"{name}: expected {kind} {bound}, got {text!r}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero) or value > top or (
        whole and value != int(value)
    ):
        raise BotError(f"{name}: expected {kind} {bound}, got {text!r}")
    return value


def _queue_name(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,200}", text):
        raise BotError(f"BOT_QUEUE_NAME: expected letters, digits and _.:- only, got {text!r}")
    return text


def masked_url(url: str) -> str:
    """A queue or Redis URL for messages: its password replaced by ***. The password runs
    to the URL's last `@` (a password may hold `/`, `?` or `@`; a host holds none), unless
    that `@` sits in a query (`?x=a@b`: a `?` then an `=` before it), where the password,
    if any, ends before the query."""
    query = url.find("?")
    if query != -1 and "=" in url[query:url.rfind("@")]:
        return _masked(url[:query]) + url[query:]
    return _masked(url)


def _masked(url: str) -> str:
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/@]*):.*@(?=[^@]*$)", r"\1:***@", url)
