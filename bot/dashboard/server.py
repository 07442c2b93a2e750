"""The dashboard's HTTP server: stdlib, GET only, read-only database.

Bound to 127.0.0.1 by default because the page shows an account's positions and has no
login; reach it from elsewhere through an SSH tunnel. `--host` binds another address
for a container, whose port is then published on the host's loopback only.

Routes: `/` the page, `/fragment` its <main> (the page's script swaps it in place),
`/api/summary` the same numbers as JSON, `/api/runs` the runs to choose from,
`/dashboard.js` the script. Each takes `?run=ID`, or `?run=latest` to follow the latest
run; without it, the run of `--run`, else the latest run, followed.

Binding to loopback is not enough on its own: a web page can point a name it controls at
127.0.0.1 (DNS rebinding) and read the answers as same-origin. So a request must name a
loopback host, the --host address or a configured name in its Host header, and every
answer forbids framing, sniffing, foreign scripts and referrers.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import json
import socket
from functools import partial
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import structlog

from bot.arguments import MAX_PORT, run_id
from bot.dashboard.page import SCRIPT, render, render_main
from bot.dashboard.snapshot import MarketCache, collect
from bot.errors import BotError
from bot.store.benchmark import load_run_market
from bot.store.queries import resolve_account
from bot.store.tradelog import TradeLog

log = structlog.get_logger(__name__)


class BadRunParameter(BotError):
    """?run= that is no run id (answered 400, not 503: the server is not down)."""

HOST = "127.0.0.1"
#: Host header names always accepted: a browser on this machine or an SSH tunnel to it
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
#: The page is self-contained (inline CSS and SVG, no script, no request elsewhere).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        # The page's own script (/dashboard.js) fetches /fragment from this server only.
        "default-src 'none'; script-src 'self'; connect-src 'self'; "
        "style-src 'unsafe-inline'; img-src data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def address_family(host: str) -> socket.AddressFamily:
    """AF_INET6 for an IPv6 address (`::1`, `::`), else AF_INET: the server's socket was
    always IPv4, so `--host ::1` failed as "no such address"."""
    try:
        version = ipaddress.ip_address(host).version
    except ValueError:  # a name such as localhost: resolved as IPv4, as before
        return socket.AF_INET
    return socket.AF_INET6 if version == 6 else socket.AF_INET


def url_host(host: str) -> str:
    """`host` as it goes in a URL: an IPv6 address in brackets (http://[::1]:8050/)."""
    return f"[{host}]" if address_family(host) == socket.AF_INET6 else host


#: Wildcard binds, and the loopback address of each: the one a browser can open
WILDCARDS = {"0.0.0.0": HOST, "::": "::1"}


def browse_url(bound: str, port: int) -> str:
    """The URL to open for a server bound to `bound`: a wildcard address (0.0.0.0, ::) is
    no address to open, nor a Host name the server accepts (421), so its loopback one."""
    return f"http://{url_host(WILDCARDS.get(bound, bound))}:{port}/"


def host_name(header: str | None) -> str | None:
    """The host name of a Host header ('[::1]:8050' -> '::1'), lower-cased, without a
    trailing dot; None if there is none or it is malformed."""
    if not header:
        return None
    text = header.strip().lower()
    if text.startswith("["):
        name, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
    else:
        name, colon, port = text.rpartition(":")
        if not colon:
            name = text
        elif not port.isdigit():
            return None
    name = name.rstrip(".")
    return name or None


class DashboardServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, tradelog: TradeLog, run: int | None, refresh: int,
                 markets: MarketCache, account: int | None = None, host: str = HOST,
                 allowed_hosts: frozenset[str] = frozenset()) -> None:
        self.tradelog = tradelog
        self.run = run
        self.account = account
        self.refresh = refresh
        self.markets = markets
        self.host = host  # the address asked for; the Host-header check accepts it
        names = allowed_hosts | ({host} if host not in WILDCARDS else set())
        self.allowed_hosts = LOOPBACK_NAMES | {HOST} | {h.lower().rstrip(".") for h in names}
        self.address_family = address_family(host)  # read by the socket server's __init__
        super().__init__((host, port), Handler)


class Handler(BaseHTTPRequestHandler):
    server: DashboardServer

    def do_GET(self) -> None:
        if not self._host_allowed():
            return
        parts = urlsplit(self.path)
        path = parts.path
        if path == "/dashboard.js":
            self._send(HTTPStatus.OK, "text/javascript; charset=utf-8", SCRIPT.encode())
            return
        if path not in ("/", "/api/summary", "/fragment", "/api/runs"):
            self._send(HTTPStatus.NOT_FOUND, "text/plain", b"not found\n")
            return
        try:
            run = self._run(parts.query)
            if path == "/api/runs":
                self._send(HTTPStatus.OK, "application/json", json.dumps(self._runs()).encode())
                return
            data = collect(self.server.tradelog, run, self.server.markets, self.server.account)
        except BotError as exc:  # e.g. no runs yet: say so, on the page and in the JSON
            from bot.store.queries import RunNotFound

            status = (HTTPStatus.BAD_REQUEST if isinstance(exc, BadRunParameter)
                      else HTTPStatus.NOT_FOUND if isinstance(exc, RunNotFound)
                      else HTTPStatus.SERVICE_UNAVAILABLE)  # nothing recorded yet: a monitor waits
            self._send(status, "text/plain; charset=utf-8", f"{exc}\n".encode())
            return
        except Exception:
            log.exception("dashboard.request_failed", path=path)
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, "text/plain", b"internal error; see the log\n")
            return
        if path == "/api/summary":
            body = json.dumps(data, allow_nan=False).encode()
            self._send(HTTPStatus.OK, "application/json", body)
        elif path == "/fragment":
            self._send(HTTPStatus.OK, "text/html; charset=utf-8", render_main(data).encode())
        else:
            page = render(data, self.server.refresh, runs=self._runs(), followed=run is None)
            self._send(HTTPStatus.OK, "text/html; charset=utf-8", page.encode())

    def _run(self, query: str) -> int | None:
        """?run=ID; ?run=latest: None (the latest run, followed, even under --run);
        no ?run: the server's --run, else None."""
        values = parse_qs(query).get("run")
        if values and values[-1] == "latest":
            return None
        if not values or values[-1] == "":
            return self.server.run
        try:  # the commands' own check: a 20-digit id overflowed SQLite (a 500)
            return run_id(values[-1])
        except argparse.ArgumentTypeError as exc:
            raise BadRunParameter(f"?run=: {exc}") from None

    def _runs(self) -> list[dict]:
        from bot.store import queries
        from bot.store.export import records

        with self.server.tradelog.engine.connect() as conn:
            frame = queries.runs(conn, queries.Filters()).frame()
        columns = ["id", "mode", "strategy", "status", "process", "started_at", "synthetic"]
        return list(reversed(records(frame[[c for c in columns if c in frame.columns]])))

    def do_HEAD(self) -> None:
        """GET's status and headers (the security headers with them), without the body:
        what a monitor or a proxy's health check asks (it was a bare 501)."""
        self._head_only = True
        try:
            self.do_GET()
        finally:
            self._head_only = False

    def do_POST(self) -> None:
        if self._host_allowed():
            self._send(HTTPStatus.METHOD_NOT_ALLOWED, "text/plain", b"read-only\n")

    do_PUT = do_DELETE = do_PATCH = do_POST

    def _host_allowed(self) -> bool:
        """Answer only requests addressed to this server by a name it accepts; anything
        else gets 421 and no data (a rebinding page sends its own name)."""
        name = host_name(self.headers.get("Host"))
        if name in self.server.allowed_hosts:
            return True
        log.warning("dashboard.host_refused", host=(self.headers.get("Host") or "")[:100])
        where = browse_url(self.server.host, self.server.server_address[1])
        self._send(HTTPStatus.MISDIRECTED_REQUEST, "text/plain; charset=utf-8",
                   f"unknown Host header; open {where}\n".encode())
        return False

    def _send(self, status: HTTPStatus, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()
        if not getattr(self, "_head_only", False):
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        log.debug("dashboard.request", line=format % args)


def make_server(
    url: str, *, port: int, run: int | None, refresh: int, config_path: Path,
    account: str | None = None, host: str = HOST, allowed_hosts: frozenset[str] = frozenset(),
) -> DashboardServer:
    """Open the trade log read-only and bind `host`:`port` (0: any free port).
    `account` (a registry id or broker account id) shows one client account;
    `allowed_hosts` are Host names accepted besides the loopback ones and `host` (a name
    that points at this machine through a tunnel or proxy)."""
    check_port(port)
    tradelog = TradeLog.open_readonly(url)
    markets = MarketCache(partial(_market, config_path=config_path))
    try:
        account_id = None
        if account is not None:
            with tradelog.engine.connect() as conn:
                account_id = resolve_account(conn, account)
        return DashboardServer(port, tradelog, run, refresh, markets, account_id, host,
                               allowed_hosts)
    except BotError:
        tradelog.engine.dispose()
        raise
    except OSError as exc:
        tradelog.engine.dispose()
        raise _bind_error(host, port, exc) from None


def check_port(port: int) -> None:
    """Before any work: socket.bind would raise OverflowError for a port past 65535."""
    if not 0 <= port <= MAX_PORT:
        raise BotError(f"--port {port}: expected a port number 1-{MAX_PORT} (0: any free port)")


def _bind_error(host: str, port: int, exc: OSError) -> BotError:
    """The reason a port cannot be listened on, in the user's terms."""
    where = f"cannot serve the dashboard on {url_host(host)}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return BotError(f"{where}: the port is already in use (another dashboard?); "
                        "choose a free one with --port")
    if exc.errno == errno.EACCES:
        return BotError(f"{where}: permission denied (ports below 1024 need root); "
                        f"choose one 1024-{MAX_PORT} with --port")
    if exc.errno == errno.EADDRNOTAVAIL or isinstance(exc, socket.gaierror):
        return BotError(f"{where}: no such address on this machine; --host takes one of its "
                        "addresses (0.0.0.0: all of them, e.g. in a container)")
    return BotError(f"{where}: {exc.strerror or exc}")


def _market(config: dict, synthetic: bool, data_source: str | None, *, config_path: Path):
    return load_run_market(config, synthetic, config_path, data_source=data_source)
