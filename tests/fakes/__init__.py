"""Fake HTTP venues for tests: real HTTP on 127.0.0.1, served from a background thread.

`FakeServer` routes requests to handler methods by method and path template, records every
request, and applies a scripted queue of faults per route, so a test can say "the next POST
/v2/orders answers 500 after creating the order" and drive the real client against it.
When no scripted fault is queued, `fault_policy` (if set) may pick one for any request:
`RandomFaults` draws 429s, 500s, lost and slow answers at seeded random, for soaks.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Response:
    status: int = 200
    body: Any = None  # dict/list -> JSON, str/bytes -> as is, None -> empty
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"

    def encoded(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body).encode()


@dataclass
class Fault:
    """One scripted answer for the next request on a route.

    process=False: the request is not handled (nothing changes at the venue) and
    `response` is sent. process=True: the request is handled (e.g. the order is created),
    then `response` replaces the real answer (None keeps it). `delay` holds the answer
    back (longer than the client's timeout makes the client time out); `gate` holds it
    until released (`release()`), e.g. while a test kills the client waiting for it.
    """

    response: Response | None = None
    process: bool = False
    delay: float = 0.0
    before: Callable[[], None] | None = None  # runs first, e.g. to make a race happen
    gate: threading.Event | None = None  # the answer waits for it (see held())
    answered: threading.Event = field(default_factory=threading.Event)  # request handled

    def release(self) -> None:
        """Let a held answer go (see held())."""
        if self.gate is not None:
            self.gate.set()

    @classmethod
    def error(
        cls,
        status: int,
        code: int | None = None,
        message: str = "error",
        *,
        process: bool = False,
        retry_after: float | None = None,
        rate_reset_in: float | None = None,
    ) -> Fault:
        """`retry_after`: a Retry-After header; `rate_reset_in`: Alpaca's way instead, the
        X-RateLimit headers with the window's reset that many seconds from now."""
        body: dict[str, Any] = {"message": message}
        if code is not None:
            body = {"code": code, "message": message}
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        if rate_reset_in is not None:
            headers |= {"X-RateLimit-Limit": "200", "X-RateLimit-Remaining": "0",
                        "X-RateLimit-Reset": str(int(time.time() + rate_reset_in))}
        return cls(Response(status, body, headers), process=process)

    @classmethod
    def text(cls, status: int, text: str, *, process: bool = False) -> Fault:
        return cls(Response(status, text, content_type="text/plain"), process=process)

    @classmethod
    def malformed(cls, *, process: bool = False) -> Fault:
        """200 with a body that is not JSON."""
        return cls(Response(200, '{"id": "truncated'), process=process)

    @classmethod
    def slow(cls, seconds: float, *, process: bool = True) -> Fault:
        """Answer only after `seconds`; process=True handles the request first (the order
        is created), process=False never handles it (the answer is then a 504)."""
        return cls(None, process=process, delay=seconds)

    @classmethod
    def first(cls, action: Callable[[], None]) -> Fault:
        """Run `action` (a state change at the venue), then handle the request normally."""
        return cls(None, process=True, before=action)

    @classmethod
    def passthrough(cls) -> Fault:
        """Handle this request normally (to fault a later one in the queue)."""
        return cls(None, process=True)

    @classmethod
    def held(cls, *, process: bool = True) -> Fault:
        """Handle the request (process=True: the order exists at the venue), then hold the
        answer until `release()`: the client waits as for a reply lost in the network.
        `answered` is set once the request has been handled, so a test can kill the
        client exactly while it waits."""
        return cls(None, process=process, gate=threading.Event())


#: kinds RandomFaults can draw, and what each does at the venue
FAULT_KINDS = ("429", "500", "lost", "slow")


@dataclass
class RandomFaults:
    """A `fault_policy` drawing one fault per request at seeded random.

    `rates` maps a kind to its probability per request: "429" (rate limited, with a
    Retry-After, nothing handled), "500" (server error, nothing handled), "lost" (handled,
    e.g. the order is created, but the answer is a 504: lost on the way back), "slow"
    (handled, answered after `slow_seconds`; beyond the client's timeout it is lost too).
    `routes` limits the draw to some (method, route template) pairs; `drawn` records
    (method, path, kind) of every fault drawn, for a soak's report."""

    rates: dict[str, float]
    seed: int = 0
    slow_seconds: float = 0.5
    retry_after: float = 0.0
    routes: set[tuple[str, str]] | None = None
    drawn: list[tuple[str, str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        unknown = set(self.rates) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"RandomFaults: unknown kinds {sorted(unknown)}; use {FAULT_KINDS}")
        self._rng = random.Random(self.seed)

    def __call__(self, request: Request) -> Fault | None:
        if self.routes is not None and (request.method, request.route) not in self.routes:
            return None
        draw, edge = self._rng.random(), 0.0
        for kind in FAULT_KINDS:
            edge += self.rates.get(kind, 0.0)
            if draw < edge:
                self.drawn.append((request.method, request.path, kind))
                return self._fault(kind)
        return None

    def _fault(self, kind: str) -> Fault:
        if kind == "429":
            return Fault.error(429, message="too many requests", retry_after=self.retry_after)
        if kind == "500":
            return Fault.error(500, message="internal server error")
        if kind == "lost":
            return Fault(Response(504, {"message": "gateway timeout"}), process=True)
        return Fault.slow(self.slow_seconds, process=True)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    route: str
    query: dict[str, str]
    body: Any
    headers: dict[str, str]
    peer: tuple[str, int] | None = None  # the client's address: one per TCP connection


Handler = Callable[..., Response]


class FakeServer:
    """Base class: subclasses register routes in __init__ with `self.route(...)`.

    `keep_alive` serves HTTP/1.1 persistent connections (one TCP connection per client
    session, as a real API gateway does; much faster for many requests); `record_requests`
    False keeps no request log (a long benchmark would hold every request in memory)."""

    keep_alive = False

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.record_requests = True
        self.requests: list[Request] = []
        self._routes: list[tuple[str, str, re.Pattern[str], Handler]] = []
        self._faults: dict[tuple[str, str], deque[Fault]] = defaultdict(deque)
        # Asked for a fault when none is queued for a request (e.g. RandomFaults).
        self.fault_policy: Callable[[Request], Fault | None] | None = None
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # --- set-up ----------------------------------------------------------------------

    def route(self, method: str, template: str, handler: Handler) -> None:
        pattern = re.sub(
            r"\{(\w+)\}",
            r"(?P<\1>[^/]+)",
            re.escape(template).replace(r"\{", "{").replace(r"\}", "}"),
        )
        self._routes.append((method, template, re.compile(f"^{pattern}$"), handler))

    def start(self, port: int = 0) -> str:
        """Serve on 127.0.0.1:`port` (0: any free port); returns the base URL."""
        fake = self

        class _Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake._serve(self)

            do_POST = do_DELETE = do_PATCH = do_PUT = do_GET

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

        _Handler.protocol_version = "HTTP/1.1" if self.keep_alive else "HTTP/1.0"
        # Headers and body go out in two writes: without TCP_NODELAY the body waits for
        # the client's delayed ACK (~40 ms a request on a kept-alive connection).
        _Handler.disable_nagle_algorithm = self.keep_alive

        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self.url

    def stop(self) -> None:
        self._stopping.set()  # releases handlers held back by a delay fault
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> FakeServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- test control ----------------------------------------------------------------

    def inject(self, method: str, route: str, *faults: Fault) -> None:
        """Queue faults for the next requests on `route` (a registered template such as
        '/v2/orders/{order_id}'), consumed one per request in order."""
        if not any(m == method and t == route for m, t, _, _ in self._routes):
            raise KeyError(f"no route {method} {route}")
        with self.lock:
            self._faults[(method, route)].extend(faults)

    def pending_faults(self) -> int:
        with self.lock:
            return sum(len(q) for q in self._faults.values())

    def calls(self, method: str, route: str) -> list[Request]:
        """Requests received on a route (template), in order, faulted ones included."""
        with self.lock:
            return [r for r in self.requests if r.method == method and r.route == route]

    # --- serving ---------------------------------------------------------------------

    def authorize(self, request: Request) -> Response | None:
        """None if the request may proceed; subclasses check credentials."""
        return None

    def _serve(self, http: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(http.path)
        length = int(http.headers.get("Content-Length") or 0)
        raw = http.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        match = self._match(http.command, parts.path)
        route, handler, params = match if match else ("", None, {})
        request = Request(
            http.command, parts.path, route, query, body, dict(http.headers.items()),
            tuple(http.client_address[:2]),
        )
        with self.lock:
            if self.record_requests:
                self.requests.append(request)
            queue = self._faults.get((http.command, route))
            fault = queue.popleft() if queue else None
            if fault is None and self.fault_policy is not None and route:
                fault = self.fault_policy(request)
        response = self._answer(request, handler, params, fault)
        if fault is not None:
            fault.answered.set()
            if fault.delay:
                self._stopping.wait(fault.delay)
            if fault.gate is not None:
                while not (fault.gate.is_set() or self._stopping.is_set()):
                    fault.gate.wait(0.05)
        self._write(http, response)

    def _answer(
        self, request: Request, handler: Handler | None, params: dict[str, str], fault: Fault | None
    ) -> Response:
        if fault is not None and fault.before is not None:
            with self.lock:
                fault.before()
        if fault is not None and not fault.process:
            # Never reached the venue: nothing changes. A bare delay ends in a gateway timeout.
            return fault.response or Response(504, {"message": "gateway timeout"})
        denied = self.authorize(request)
        if denied is not None:
            return denied
        if handler is None:
            return Response(404, {"code": 40410000, "message": "endpoint not found"})
        with self.lock:
            real = handler(request, **params)
        if fault is not None and fault.response is not None:
            return fault.response
        return real

    def _match(self, method: str, path: str) -> tuple[str, Handler, dict[str, str]] | None:
        for m, template, pattern, handler in self._routes:
            found = pattern.match(path)
            if m == method and found:
                return template, handler, found.groupdict()
        return None

    @staticmethod
    def _write(http: BaseHTTPRequestHandler, response: Response) -> None:
        payload = response.encoded()
        try:
            http.send_response(response.status)
            http.send_header("Content-Type", response.content_type)
            http.send_header("Content-Length", str(len(payload)))
            for key, value in response.headers.items():
                http.send_header(key, value)
            http.end_headers()
            http.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout): what a real server sees too
