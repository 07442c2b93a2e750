"""The dashboard answers only requests addressed to it by a loopback name (or one the user
allowed), so a page that points its own domain at 127.0.0.1 (DNS rebinding) reads
nothing; every answer carries headers that forbid framing, sniffing and scripts."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import threading
from collections.abc import Iterator

import pytest

from bot.dashboard.server import DashboardServer, host_name, make_server
from bot.store.tradelog import TradeLog
from tests.conftest import CONFIG


@pytest.fixture(scope="module")
def log_url(tmp_path_factory) -> str:
    """A trade log with one (empty) run: enough for a page and /api/summary."""
    path = tmp_path_factory.mktemp("dash") / "log.sqlite"
    log = TradeLog.open(f"sqlite:///{path}")
    log.start_run(
        mode="paper", strategy="diversified_leverage", config_hash="h", config={},
        code_version="t", data_source="alpaca+fred", synthetic=False,
        started_at=dt.datetime(2024, 11, 25, tzinfo=dt.UTC),
    )
    log.close()
    return f"sqlite:///{path}"


def serve(url: str, allowed: frozenset[str] = frozenset()) -> Iterator[DashboardServer]:
    srv = make_server(url, port=0, run=None, refresh=30, config_path=CONFIG, allowed_hosts=allowed)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        srv.tradelog.engine.dispose()
        thread.join()


@pytest.fixture(scope="module")
def server(log_url) -> Iterator[DashboardServer]:
    yield from serve(log_url)


def get(srv: DashboardServer, path: str, host: str | None, method: str = "GET"):
    """A raw request with exactly the Host header given (None: no Host header at all)."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=30)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        if host is not None:
            conn.putheader("Host", host)
        conn.putheader("Content-Length", "0")
        conn.endheaders()
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


@pytest.mark.parametrize(
    "host",
    ["attacker.example:{port}", "attacker.example", "127.0.0.1.attacker.example:{port}",
     "localhost.attacker.example", "[::2]:{port}", "127.0.0.1:x", "", None],
)
def test_a_foreign_or_missing_host_gets_no_data(server, host) -> None:
    port = server.server_address[1]
    for path in ("/", "/api/summary"):
        status, headers, body = get(server, path, None if host is None else host.format(port=port))
        assert status == 421
        assert b"diversified_leverage" not in body and b"equity" not in body
        assert headers["X-Frame-Options"] == "DENY"


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST.", "[::1]:{port}", "localhost:9000"])
def test_loopback_names_are_served_with_security_headers(server, host) -> None:
    """localhost on another port: an SSH tunnel `-L 9000:127.0.0.1:8050`."""
    status, headers, body = get(server, "/api/summary", host.format(port=server.server_address[1]))
    assert status == 200
    assert json.loads(body)["run"]["strategy"] == "diversified_leverage"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    # Scripts and fetches only from the dashboard itself: never inline, never elsewhere.
    assert "script-src 'self';" in csp and "connect-src 'self';" in csp and "unsafe-eval" not in csp
    assert "'unsafe-inline'" not in csp.split("script-src", 1)[1].split(";", 1)[0]
    status, headers, body = get(server, "/", host.format(port=server.server_address[1]))
    assert status == 200 and b"<html" in body and headers["X-Frame-Options"] == "DENY"


def test_refused_writes_carry_the_headers_too(server) -> None:
    status, headers, _ = get(server, "/", f"127.0.0.1:{server.server_address[1]}", method="POST")
    assert status == 405 and headers["X-Content-Type-Options"] == "nosniff"
    assert get(server, "/", "evil.example", method="POST")[0] == 421


def test_head_answers_as_get_without_the_body(server) -> None:
    """Before: 501, without the security headers."""
    host = f"127.0.0.1:{server.server_address[1]}"
    status, headers, body = get(server, "/", host, method="HEAD")
    get_status, get_headers, get_body = get(server, "/", host)
    assert (status, body) == (200, b"") and get_status == 200
    assert headers["Content-Length"] == get_headers["Content-Length"] == str(len(get_body))
    assert headers["X-Frame-Options"] == "DENY" and "Content-Security-Policy" in headers
    assert get(server, "/", "evil.example", method="HEAD")[0] == 421


def test_a_configured_host_name_is_accepted(log_url) -> None:
    for srv in serve(log_url, frozenset({"Dash.Internal"})):
        assert get(srv, "/api/summary", "dash.internal:8443")[0] == 200
        assert get(srv, "/api/summary", "other.internal")[0] == 421


@pytest.mark.parametrize(
    ("header", "name"),
    [("127.0.0.1:8050", "127.0.0.1"), ("[::1]:8050", "::1"), ("[::1]", "::1"), ("LocalHost.", "localhost"),
     ("host:", None), ("[::1", None), ("[::1]x", None), (None, None), ("a:b:c", None)],
)
def test_host_header_parsing(header, name) -> None:
    assert host_name(header) == name


def test_the_host_address_is_an_accepted_host_name():
    """`--host 127.0.0.2` (a container's or a second loopback address) is answered by its
    own name; a wildcard bind does not make every name acceptable."""
    from bot.dashboard.server import DashboardServer

    for host, allowed in (("127.0.0.2", True), ("0.0.0.0", False)):
        server = DashboardServer(0, None, None, 30, None, host=host)
        try:
            assert ("127.0.0.2" in server.allowed_hosts) is allowed
            assert "0.0.0.0" not in server.allowed_hosts
        finally:
            server.server_close()


def test_an_ipv6_host_is_served_over_ipv6(log_url) -> None:
    """`--host ::1`: the socket was always IPv4, so binding failed with "no such address"."""
    import socket

    from bot.dashboard.server import url_host

    srv = make_server(log_url, port=0, run=None, refresh=30, config_path=CONFIG, host="::1")
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        assert srv.socket.family == socket.AF_INET6
        conn = http.client.HTTPConnection("::1", srv.server_address[1], timeout=30)
        try:
            conn.request("GET", "/api/summary", headers={"Host": f"[::1]:{srv.server_address[1]}"})
            response = conn.getresponse()
            assert response.status == 200
            assert json.loads(response.read())["run"]["strategy"] == "diversified_leverage"
        finally:
            conn.close()
    finally:
        srv.shutdown()
        srv.server_close()
        srv.tradelog.engine.dispose()
        thread.join()
    assert (url_host("::1"), url_host("127.0.0.1"), url_host("localhost")) == (
        "[::1]", "127.0.0.1", "localhost"
    )


@pytest.mark.parametrize("run", ["99999999999999999999", "0", "-1", "abc", "1" * 5000])
def test_a_run_id_no_command_could_use_is_answered_like_other_bad_ids(server, run) -> None:
    """?run=99999999999999999999 overflowed SQLite's integers: a 500 and a traceback in
    the log. Checked as `--run` is, it gets the same answer as any unknown run."""
    for path in ("/", "/api/summary", "/fragment"):
        status, headers, body = get(server, f"{path}?run={run}", f"127.0.0.1:{server.server_address[1]}")
        assert status == 400, (path, status)  # a bad request, not a server that is down
        assert b"expected a run id, a whole number from 1 to" in body
        assert headers["X-Content-Type-Options"] == "nosniff"


def test_a_run_the_log_does_not_hold_is_refused_at_start(log_url, capsys) -> None:
    """Before: `bot dashboard --run 999` started, then answered 503 to every request."""
    from bot.cli import main

    code = main(["dashboard", "--database", log_url, "--run", "999", "--port", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "no run 999 in the trade log" in err and "Traceback" not in err


@pytest.mark.parametrize(("host", "shown"), [("0.0.0.0", "127.0.0.1"), ("::", "[::1]")])
def test_a_wildcard_bind_prints_a_url_the_server_answers(log_url, capsys, monkeypatch, host, shown) -> None:
    """`bot dashboard --host 0.0.0.0` printed http://0.0.0.0:8050/, which its own Host check
    answers with 421. The server is bound to 127.0.0.1 here (never to every interface in a
    test): the printed URL is then fetched as a browser would open it."""
    import urllib.request

    from bot.cli import main
    from bot.dashboard import server as server_module

    real_make_server, real_serve = server_module.make_server, DashboardServer.serve_forever
    answers: list[int] = []

    def on_loopback(url: str, **kwargs):
        return real_make_server(url, **{**kwargs, "host": "127.0.0.1"})

    def fetch_printed_url(srv: DashboardServer) -> None:
        printed = capsys.readouterr().out.split(" on ", 1)[1].split()[0]
        assert printed == f"http://{shown}:{srv.server_address[1]}/"
        opened = printed.replace("[::1]", "127.0.0.1")  # the bind here is IPv4 only
        thread = threading.Thread(target=real_serve, args=(srv, 0.05), daemon=True)
        thread.start()
        try:
            request = urllib.request.Request(f"{opened}api/summary", headers={"Host": printed[7:-1]})
            with urllib.request.urlopen(request, timeout=30) as response:
                answers.append(response.status)
        finally:
            srv.shutdown()
            thread.join()

    monkeypatch.setattr(server_module, "make_server", on_loopback)
    monkeypatch.setattr(server_module.DashboardServer, "serve_forever", fetch_printed_url)
    assert main(["dashboard", "--database", log_url, "--host", host, "--port", "0"]) == 0
    assert answers == [200]
