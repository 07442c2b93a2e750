"""Alpaca credentials and endpoints from the environment or a private secrets file.

Keys are read once and carried in a `Credentials` whose repr and str are masked, so an
object printed in a log line or a traceback never shows them. Error messages name the
variable, file and line that is wrong, never a value. Paper trading is the default: live
needs both the caller's live=True and BOT_LIVE_CONFIRM=yes in the environment.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bot.errors import BotError

KEY_ID_VAR = "APCA_API_KEY_ID"
SECRET_VAR = "APCA_API_SECRET_KEY"
SECRETS_FILE_VAR = "BOT_SECRETS_FILE"
TRADING_URL_VAR = "APCA_API_BASE_URL"
DATA_URL_VAR = "APCA_API_DATA_URL"
FRED_URL_VAR = "BOT_FRED_URL"
FRED_API_URL_VAR = "BOT_FRED_API_URL"
FRED_API_KEY_VAR = "FRED_API_KEY"
LIVE_CONFIRM_VAR = "BOT_LIVE_CONFIRM"
# Alpaca's Broker API (many client accounts under one broker key pair, basic auth).
BROKER_KEY_VAR = "APCA_BROKER_API_KEY"
BROKER_SECRET_VAR = "APCA_BROKER_API_SECRET"
BROKER_URL_VAR = "APCA_BROKER_API_URL"

# Service URLs that hold passwords, read from the environment or the secrets file
# (`setting`): a trade log's URL in the file must not leave the bot on a new SQLite log.
SERVICE_URL_VARS = ("BOT_DATABASE_URL", "BOT_QUEUE_URL", "BOT_REDIS_URL")

PAPER_TRADING_URL = "https://paper-api.alpaca.markets"
LIVE_TRADING_URL = "https://api.alpaca.markets"
DATA_URL = "https://data.alpaca.markets"
FRED_URL = "https://fred.stlouisfed.org"
FRED_API_URL = "https://api.stlouisfed.org"
BROKER_SANDBOX_URL = "https://broker-api.sandbox.alpaca.markets"
BROKER_LIVE_URL = "https://broker-api.alpaca.markets"

# Hosts compared after lower-casing and dropping a trailing dot, so every spelling of the
# live host is recognised. Loopback is for test doubles and local proxies.
PAPER_HOSTS = frozenset({"paper-api.alpaca.markets"})
LIVE_HOSTS = frozenset({"api.alpaca.markets"})
DATA_HOSTS = frozenset({"data.alpaca.markets"})
FRED_HOSTS = frozenset({"fred.stlouisfed.org"})
FRED_API_HOSTS = frozenset({"api.stlouisfed.org"})
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
BROKER_SANDBOX_HOSTS = frozenset({"broker-api.sandbox.alpaca.markets"})
BROKER_LIVE_HOSTS = frozenset({"broker-api.alpaca.markets"})
# scheme://host[:port][/path] and nothing else: no user info, query, fragment or
# backslash, which URL parsers disagree about (so the host we check is the host used).
_URL_SHAPE = re.compile(
    r"(?P<scheme>https?)://(?P<host>[A-Za-z0-9.-]+|\[::1\])(?::\d{1,5})?(?:/[A-Za-z0-9._~/-]*)?",
    re.ASCII | re.IGNORECASE,
)


class SecretsError(BotError):
    """Credentials are missing or stored unsafely; the message never contains a value."""


class LiveModeError(BotError):
    """Live trading was requested without the explicit confirmation, or against the
    wrong endpoint."""


class EndpointError(BotError):
    """A market-data or FRED URL that is not the official host over https nor a loopback
    address: the keys (sent with every data request) must not reach another host."""


@dataclass(frozen=True)
class Credentials:
    """An Alpaca key pair. Masked in repr/str; compare and use, never print."""

    key_id: str = field(repr=False)
    secret: str = field(repr=False)

    def __repr__(self) -> str:
        return f"Credentials(key_id={mask(self.key_id)}, secret=***)"

    __str__ = __repr__


def mask(value: str) -> str:
    """Enough of a key id to tell two keys apart (last 4 characters), nothing more."""
    return f"'***{value[-4:]}'" if len(value) >= 12 else "'***'"


def load_credentials(
    env: Mapping[str, str] | None = None,
    *,
    key_var: str = KEY_ID_VAR,
    secret_var: str = SECRET_VAR,
) -> Credentials:
    """The key pair from APCA_API_KEY_ID / APCA_API_SECRET_KEY (or the variables named),
    falling back to the file named by BOT_SECRETS_FILE; environment variables win over
    the file."""
    env = os.environ if env is None else env
    values = {k: env[k].strip() for k in (key_var, secret_var) if env.get(k, "").strip()}
    for name, value in values.items():  # as the secrets file refuses them: a 401 later
        if value[:1] in ("'", '"') or value[-1:] in ("'", '"') or any(c.isspace() for c in value):
            raise SecretsError(f"{name} holds quotes or spaces (copied with them?); expected "
                               "the key alone, as Alpaca shows it")
    path = env.get(SECRETS_FILE_VAR, "").strip()
    if len(values) < 2 and path:
        from_file = read_secrets_file(Path(path))
        values = {**from_file, **values}
    missing = [name for name in (key_var, secret_var) if not values.get(name)]
    if missing:  # every one named at once, not one per attempt
        where = f"the environment or {path}" if path else "the environment"
        names, lines = " and ".join(missing), " and ".join(f"{n}=..." for n in missing)
        verb, them = ("is", "it") if len(missing) == 1 else ("are", "them")
        raise SecretsError(
            f"{names} {verb} not set in {where}; export {them} or put {lines} in a file "
            f"named by {SECRETS_FILE_VAR} (chmod 600)"
        )
    return Credentials(values[key_var], values[secret_var])


def setting(name: str, env: Mapping[str, str] | None = None) -> str | None:
    """`name` from the environment, else from the secrets file BOT_SECRETS_FILE names
    (read only when the environment does not set it), else None."""
    env = os.environ if env is None else env
    value = env.get(name, "").strip()
    if value:
        return value
    path = env.get(SECRETS_FILE_VAR, "").strip()
    if not path:
        return None
    return read_secrets_file(Path(path)).get(name) or None


def load_broker_credentials(env: Mapping[str, str] | None = None) -> Credentials:
    """The Broker API key pair: APCA_BROKER_API_KEY / APCA_BROKER_API_SECRET."""
    return load_credentials(env, key_var=BROKER_KEY_VAR, secret_var=BROKER_SECRET_VAR)


def read_secrets_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines ('export ' prefix, quotes and # comment lines allowed). Refuses a
    file that group or others may read, as ssh does for private keys. Every value read is
    a secret: log lines and stored messages mask it from then on."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise SecretsError(f"secrets file {path} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(mode):  # a folder's mode would draw a chmod advice that cannot help
        raise SecretsError(f"secrets file {path} is not a file (a directory?); expected a "
                           "file of KEY=VALUE lines")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretsError(
            f"secrets file {path} is accessible by group or others "
            f"(mode {stat.S_IMODE(mode):o}); run: chmod 600 {path}"
        )
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM (Windows editors) is not part of a key
    except UnicodeDecodeError:
        raise SecretsError(f"secrets file {path} is not UTF-8 text (saved as UTF-16?); "
                           "expected KEY=VALUE lines in UTF-8") from None
    except OSError as exc:
        raise SecretsError(f"secrets file {path} cannot be read: {exc.strerror or type(exc).__name__}") from None
    values = _parse_lines(path, text)
    from bot.logs import register_secret

    for value in values.values():
        if len(value) >= 8:  # a key, a password, a URL; not a word like "true"
            register_secret(value)
    return values


def _parse_lines(path: Path, text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            # The line may hold a secret: name its number, never its text.
            raise SecretsError(f"secrets file {path} line {number}: expected KEY=VALUE")
        value = _without_comment(value.strip())
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif value[:1] in ("'", '"') or value[-1:] in ("'", '"'):
            # a quote on one side only: the key would include it and fail later as a 401
            raise SecretsError(f"secrets file {path} line {number}: {key}'s value has an "
                               "unbalanced quote; expected KEY=VALUE or KEY=\"VALUE\"")
        if key in values:
            raise SecretsError(f"secrets file {path} line {number}: {key} is set twice; "
                               "expected one line per key")
        values[key] = value
    return values


_COMMENT = re.compile(r"\s+#.*$")


def _without_comment(value: str) -> str:
    """A value without a trailing ` # comment` (as .env files and shells read it): the
    comment became part of the key, which passed every check and failed as a 401. A
    quoted value keeps everything inside its quotes; a `#` with no space before it is
    part of the value (a password may hold one)."""
    if value[:1] in ("'", '"'):
        end = value.find(value[0], 1)
        if end > 0:
            rest = value[end + 1:]
            if not rest or _COMMENT.fullmatch(rest):
                return value[: end + 1]
        return value  # unbalanced, or text after the closing quote: refused by the caller
    return _COMMENT.sub("", value)


@dataclass(frozen=True)
class Endpoints:
    """Where the bot talks to: trading (paper unless confirmed live), data and FRED (its
    CSV download and its API)."""

    trading_url: str
    data_url: str
    fred_url: str
    paper: bool
    fred_api_url: str = FRED_API_URL


def load_endpoints(env: Mapping[str, str] | None = None, *, live: bool = False) -> Endpoints:
    """Base URLs from the environment (defaults: Alpaca paper, Alpaca data, FRED)."""
    env = os.environ if env is None else env
    paper = resolve_paper(live, env)
    default_trading = PAPER_TRADING_URL if paper else LIVE_TRADING_URL
    trading = base_url(env.get(TRADING_URL_VAR) or default_trading)
    check_trading_url(trading, paper=paper)
    data = base_url(env.get(DATA_URL_VAR) or DATA_URL)
    check_service_url(DATA_URL_VAR, data, DATA_HOSTS)
    fred = base_url(env.get(FRED_URL_VAR) or FRED_URL)
    check_service_url(FRED_URL_VAR, fred, FRED_HOSTS)
    fred_api = base_url(env.get(FRED_API_URL_VAR) or FRED_API_URL)
    check_service_url(FRED_API_URL_VAR, fred_api, FRED_API_HOSTS)
    return Endpoints(trading_url=trading, data_url=data, fred_url=fred, paper=paper,
                     fred_api_url=fred_api)


#: FRED's API keys: 32 lower-case letters and digits
_FRED_KEY = re.compile(r"[a-z0-9]{32}")


def load_fred_key(env: Mapping[str, str] | None = None) -> str | None:
    """FRED's API key from FRED_API_KEY (environment, else the secrets file), masked in
    logs from now on; None without one (the CSV download is tried, which FRED refuses to
    scripts since 2026-05). A value of the wrong shape is refused without echoing it."""
    key = setting(FRED_API_KEY_VAR, env)
    if key is None:
        return None
    from bot.logs import register_secret

    register_secret(key)
    if not _FRED_KEY.fullmatch(key):
        raise SecretsError(
            f"{FRED_API_KEY_VAR} is not a FRED API key (expected 32 lower-case letters and "
            "digits, as https://fredaccount.stlouisfed.org/apikeys shows it)"
        )
    return key


def check_trading_url(url: str, *, paper: bool) -> None:
    """Refuse a trading URL that does not match the mode: paper may only talk to the
    paper host or loopback, live only to the live host or loopback. The host is parsed
    and normalised first, since a string compare lets 'https://API.alpaca.markets'
    (or ':443', or a trailing dot) send paper orders to the real-money account."""
    check_venue_url(
        url, paper=paper, paper_hosts=PAPER_HOSTS, live_hosts=LIVE_HOSTS, variable=TRADING_URL_VAR
    )


def check_venue_url(
    url: str,
    *,
    paper: bool,
    paper_hosts: frozenset[str],
    live_hosts: frozenset[str],
    variable: str,
) -> None:
    """check_trading_url's rule for any Alpaca API with a paper (sandbox) and a live host:
    the mode's official host over https, or loopback."""
    scheme, host = _scheme_and_host(variable, url, LiveModeError)
    if host in LOOPBACK_HOSTS:
        return
    if scheme != "https":
        raise LiveModeError(f"{variable} must use https for {host}")
    if paper and host in live_hosts:
        raise LiveModeError(
            f"{variable} is the live endpoint but live trading was not requested; "
            f"unset it or run in live mode with {LIVE_CONFIRM_VAR}=yes"
        )
    if not paper and host in paper_hosts:
        raise LiveModeError(f"live trading requested but {variable} is the paper endpoint")
    allowed = paper_hosts if paper else live_hosts
    if host not in allowed:
        mode = "paper" if paper else "live"
        raise LiveModeError(
            f"{variable} host {host!r} is not Alpaca's {mode} endpoint "
            f"({', '.join(sorted(allowed))}) or a loopback address"
        )


def load_broker_endpoint(env: Mapping[str, str] | None = None, *, live: bool = False) -> tuple[str, bool]:
    """The Broker API base URL and whether it is the sandbox: the sandbox unless live=True
    and BOT_LIVE_CONFIRM=yes; APCA_BROKER_API_URL may point elsewhere within the same
    host rule as the trading URL (the mode's host over https, or loopback)."""
    env = os.environ if env is None else env
    sandbox = resolve_paper(live, env)
    url = base_url(env.get(BROKER_URL_VAR) or (BROKER_SANDBOX_URL if sandbox else BROKER_LIVE_URL))
    url = url.removesuffix("/v1")  # alpaca-py appends the version itself
    check_venue_url(
        url, paper=sandbox, paper_hosts=BROKER_SANDBOX_HOSTS, live_hosts=BROKER_LIVE_HOSTS,
        variable=BROKER_URL_VAR,
    )
    return url, sandbox


def check_service_url(variable: str, url: str, hosts: frozenset[str]) -> None:
    """The rule of the trading URL for the data and FRED URLs: the official host over
    https, or a loopback address (a local test server or proxy); no credentials, query
    or odd spelling in the URL (the keys travel with every market-data request)."""
    scheme, host = _scheme_and_host(variable, url, EndpointError)
    if host in LOOPBACK_HOSTS:
        return
    if host not in hosts:
        raise EndpointError(
            f"{variable} host {host!r} is not {' or '.join(sorted(hosts))} "
            "or a loopback address"
        )
    if scheme != "https":
        raise EndpointError(f"{variable} must use https for {host}")


def _scheme_and_host(
    variable: str, url: str, error: type[BotError] = LiveModeError
) -> tuple[str, str]:
    """Lower-cased scheme and host (trailing dot and IPv6 brackets removed). The URL is
    never echoed in the error: it may carry credentials."""
    match = _URL_SHAPE.fullmatch(url)
    if match is None:
        raise error(
            f"{variable} is not a plain http(s)://host[:port][/path] URL "
            "(credentials, queries and fragments are refused)"
        )
    host = match["host"].lower().strip("[]").rstrip(".")
    return match["scheme"].lower(), host


def resolve_paper(live: bool, env: Mapping[str, str] | None = None) -> bool:
    """True (paper) unless live=True and BOT_LIVE_CONFIRM=yes; live without the
    confirmation is an error rather than a silent fallback to paper."""
    env = os.environ if env is None else env
    if not live:
        return True
    if env.get(LIVE_CONFIRM_VAR, "").strip().lower() != "yes":
        raise LiveModeError(
            f"live trading requested; set {LIVE_CONFIRM_VAR}=yes to confirm real-money orders"
        )
    return False


def base_url(url: str) -> str:
    """A base URL as alpaca-py wants it: no trailing slash and no '/v2' (the client
    appends the version itself; the environment variable often carries it)."""
    url = url.strip().rstrip("/")
    return url.removesuffix("/v2")
