"""The allocation API's FastAPI application: routes, key checks, budgets, errors, headers.

Every /v1 route needs an API key (`Authorization: Bearer <key>` or `X-API-Key: <key>`)
and spends one request of that key's budget. Answers come from bot.api.profiles (the
engine's model and planner) and bot.api.accounts (the trade log, read-only). Nothing
here writes to the database, and no log line holds a request header: a key appears in
logs by its public id only.
"""

# No `from __future__ import annotations` here: FastAPI reads the route signatures'
# annotations at run time, and the dependencies below are local names.
import json
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import sqlalchemy as sa
import structlog
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.responses import Response

from bot import __version__
from bot.api import schemas
from bot.api.accounts import account_view
from bot.api.keys import ApiKey, ApiKeyStore, Authenticator, Verdict
from bot.api.profiles import (
    CASH_TOLERANCE,
    FieldProblem,
    NotFound,
    ProfileBook,
    allocation_view,
    profile_view,
)
from bot.api.ratelimit import Buckets, TokenBuckets, retry_after
from bot.errors import BotError

log = structlog.get_logger(__name__)

DEFAULT_RATE_PER_MINUTE = 60
AUTH_FAILURES_PER_MINUTE = 30  # per client address, before any key is checked again
MAX_BODY_BYTES = 65_536  # a plan request is a few hundred bytes

_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
_API_CSP = "default-src 'none'; frame-ancestors 'none'"
# /docs is Swagger UI: its script, style and icon come from this server (fastapi-offline
# ships them: no CDN, so the page works offline and loads nothing from elsewhere), and an
# inline script starts it.
DOCS_ASSETS = "/docs-assets"
_DOCS_CSP = (
    "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'"
)

_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <key>` (`bot api-keys create`)")
_header_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="the key in X-API-Key instead")


@dataclass(frozen=True)
class Limits:
    default_rate_per_minute: int = DEFAULT_RATE_PER_MINUTE
    auth_failures_per_minute: int = AUTH_FAILURES_PER_MINUTE


@dataclass(frozen=True)
class _AddressFailures:
    """One client address's budget of failed key checks (bot.api.keys.FailureBudget)."""

    buckets: Buckets
    name: str
    per_minute: int

    def take(self) -> float:
        return self.buckets.take(self.name, self.per_minute)

    def give_back(self) -> None:
        self.buckets.give_back(self.name, self.per_minute)


#: field errors listed in one answer (6,000 bad holdings made a 958 KB answer to 63 KB)
MAX_FIELD_ERRORS = 20


def _error(status: int, error: str, message: str, headers: dict[str, str] | None = None,
           fields: list[dict[str, str]] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": error, "message": message}
    if fields is not None:
        body["fields"] = fields
    return JSONResponse(body, status_code=status, headers=headers)


def _is_json(content_type: str | None) -> bool:
    """A JSON media type, with or without parameters (charset), as FastAPI reads one:
    application/json or application/<anything>+json."""
    media = (content_type or "").split(";")[0].strip().lower()
    kind, _, subtype = media.partition("/")
    return kind == "application" and (subtype == "json" or subtype.endswith("+json"))


_ERRORS = {
    400: {"model": schemas.ErrorBody, "description": "a Transfer-Encoding header (a body of unknown size)"},
    401: {"model": schemas.ErrorBody, "description": "no API key, or not a valid one"},
    403: {"model": schemas.ErrorBody, "description": "the API key is revoked"},
    422: {"model": schemas.ErrorBody, "description": "a field of the request is invalid (named)"},
    413: {"model": schemas.ErrorBody, "description": f"a request body over {MAX_BODY_BYTES} bytes"},
    429: {"model": schemas.ErrorBody, "description": "the key's request budget is spent (see Retry-After)"},
}
_BODY_ERRORS = {
    411: {"model": schemas.ErrorBody, "description": "no Content-Length header"},
    415: {"model": schemas.ErrorBody, "description": "a body not sent as application/json"},
}
_NOT_FOUND = {404: {"model": schemas.ErrorBody, "description": "no such profile, day or account"}}



class RepeatedKey(ValueError):
    """A JSON object gives one key twice."""


def _no_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are each given once: `{"cash": 100, "cash": 200}` was read
    as 200 without a word (the parser keeps the last), as a repeated query parameter is not."""
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise RepeatedKey(f"the key {key[:50]!r} is given more than once in one object")
        seen[key] = value
    return seen


class _StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = json.loads(await self.body(), object_pairs_hook=_no_repeated_keys)
        return self._json


class _StrictJsonRoute(APIRoute):
    """A route whose JSON body refuses repeated keys (FastAPI's documented way to change
    how a route reads its request: a Request subclass through the route class)."""

    def get_route_handler(self) -> Callable:
        handle = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handle(_StrictJsonRequest(request.scope, request.receive))

        return strict


def _known_query(request: Request) -> None:
    """Refuse a query parameter the route does not take, or one given twice: `?dat=2020-03-20`
    or `?Date=...` answered today's allocation with a 200, as if no date had been asked."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    known = {p.alias for p in _query_params(dependant)}
    for name in request.query_params:
        if name not in known:
            expected = ", ".join(sorted(known)) or "none"
            raise FieldProblem(f"query.{name}", f"unknown query parameter; expected {expected}")
        if len(request.query_params.getlist(name)) > 1:
            raise FieldProblem(f"query.{name}", "given more than once; expected one value")


def _query_params(dependant: Any) -> list[Any]:
    """The query parameters of a route and of its dependencies."""
    found = list(dependant.query_params)
    for sub in dependant.dependencies:
        found += _query_params(sub)
    return found

def create_app(
    book: ProfileBook,
    engine: sa.Engine,
    limits: Limits = Limits(),
    buckets: Callable[[str], Buckets] = lambda _purpose: TokenBuckets(),
) -> FastAPI:
    """The application over loaded profiles and a read-only trade-log engine. `buckets`
    makes the request budgets ("requests") and the failed-login budgets ("auth-failures"):
    this process's own by default, shared through Redis with `bot serve --redis`."""
    app = FastAPIOffline(
        static_url=DOCS_ASSETS,
        title="leverbot allocation API",
        version=__version__,
        description=(
            "Robo-advisor profiles: their allocations with every signal and reason (the "
            "explanation a MiFID II suitability file needs), orders for a client's "
            "portfolio, suitability measures, and client accounts from the trade log. "
            "Authenticate with `Authorization: Bearer <key>` or `X-API-Key`."
        ),
        redoc_url=None,
    )
    v1 = APIRouter(prefix="/v1", responses=_ERRORS, dependencies=[Depends(_known_query)],
                   route_class=_StrictJsonRoute)
    keys = ApiKeyStore(engine)
    authenticator = Authenticator(keys)
    budgets = buckets("requests")
    failures = buckets("auth-failures")

    def authorize(request: Request) -> ApiKey:
        """The request's key, checked and charged one request of its budget; an
        HTTPException (401, 403 or 429) otherwise. Reads the headers itself (the
        security schemes below only document them), so an error handler can call it."""
        checked = getattr(request.state, "key", None)
        if checked is not None:
            return checked  # checked and charged already
        # The failures budget is the authenticator's to charge: a key it verified before
        # passes even when the address's budget is spent (behind one proxy, every client
        # shares an address, and junk from one of them locked every client out).
        client = f"auth-failures:{request.client.host if request.client else '-'}"
        check = authenticator.check(_presented_key(request),
                                    _AddressFailures(failures, client, limits.auth_failures_per_minute))
        if check.verdict is Verdict.THROTTLED:
            raise HTTPException(429, "too many failed API key checks from this address",
                                headers={"Retry-After": retry_after(check.wait)})
        if check.verdict is not Verdict.OK:
            if check.verdict is Verdict.REVOKED:
                assert check.key is not None and check.key.revoked_at is not None
                request.state.caller = check.key.shown
                raise HTTPException(403, f"API key {check.key.shown} was revoked on "
                                         f"{check.key.revoked_at:%Y-%m-%d}")
            message = ("no API key: send Authorization: Bearer <key> or X-API-Key: <key>"
                       if check.verdict is Verdict.MISSING else "invalid API key")
            raise HTTPException(401, message, headers={"WWW-Authenticate": "Bearer"})
        key = check.key
        assert key is not None
        request.state.caller, request.state.key = key.shown, key
        rate = key.rate_per_minute or limits.default_rate_per_minute
        wait = budgets.take(key.key_id, rate)
        if wait > 0:
            raise HTTPException(
                429, f"rate limit of {rate} requests a minute for API key {key.shown} reached",
                headers={"Retry-After": retry_after(wait)},
            )
        return key

    def caller(
        request: Request,
        _bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        _header: Annotated[str | None, Depends(_header_key)],
    ) -> ApiKey:
        return authorize(request)

    app.state.authorize = authorize
    Caller = Annotated[ApiKey, Depends(caller)]
    DateQuery = Annotated[
        schemas.IsoDate | None,
        Query(description="decide at this trading day's close (or the last one before it), "
                          "YYYY-MM-DD; default: the decision in force on the latest data day "
                          "(a weekly profile's last week's close)"),
    ]

    @app.get("/healthz", response_model=schemas.HealthOut, tags=["service"])
    async def health() -> dict[str, Any]:
        """Liveness, without a key (no data in it). On the event loop, not the worker
        threads: a burst of first suitability requests held those for seconds, and a
        probe with a 1 s timeout called the server dead."""
        return {"status": "ok", "profiles": len(book.profiles)}

    @v1.get("/profiles", response_model=schemas.ProfilesOut, tags=["profiles"])
    def profiles(_key: Caller) -> dict[str, Any]:
        """The served robo profiles with their MiFID II risk class range (intended SRRI)."""
        return {"profiles": [profile_view(p) for p in book.profiles.values()]}

    @v1.get("/profiles/{profile}/allocation", response_model=schemas.AllocationOut,
             tags=["profiles"], responses=_NOT_FOUND)
    def allocation(profile: str, _key: Caller, date: DateQuery = None) -> dict[str, Any]:
        """The profile's target weights at a day's close, as the engine's factor model
        decides them, with every signal, score, rank and the LP's reason per ETF."""
        return allocation_view(book.decision(profile, date), date)

    @v1.get("/profiles/{profile}/suitability", response_model=schemas.SuitabilityOut,
             tags=["profiles"], responses=_NOT_FOUND)
    def suitability(profile: str, _key: Caller) -> dict[str, Any]:
        """SRRI (CESR/10-673) and PRIIPs MRM of the profile and of its static example mix,
        from a backtest over the profile's data (computed once, on the first request)."""
        return book.suitability(profile)

    @v1.post("/plan", response_model=schemas.PlanOut, tags=["profiles"],
             responses={**_NOT_FOUND, **_BODY_ERRORS})
    def plan(request: schemas.PlanRequest, _key: Caller) -> dict[str, Any]:
        """The orders that move a client's holdings and cash to the profile's allocation,
        from the engine's planner (minimum trade size, fractional shares, sells first)."""
        if request.profile not in book.profiles:
            raise FieldProblem("profile", f"unknown profile {request.profile!r}; expected one of "
                                          f"{', '.join(book.profiles)}")
        decision, equity, orders, priced_on = book.plan(request.profile, request.holdings,
                                                        request.cash, request.date)
        spent = sum(o.quantity * o.reference_price * (1 if o.side == "buy" else -1) for o in orders)
        left = request.cash - spent
        if -CASH_TOLERANCE < left < 0:  # rounding of the sums, not cash: no tiny overdraft
            left = 0.0
        return {
            "profile": request.profile,
            "day": decision.day.isoformat(),
            "priced_on": priced_on.isoformat(),
            "equity": equity,
            "targets": dict(zip(decision.profile.symbols, map(float, decision.weights), strict=True)),
            "orders": [
                {"client_order_id": o.client_order_id, "symbol": o.symbol, "side": o.side.value,
                 "quantity": o.quantity, "reference_price": o.reference_price,
                 "notional": o.quantity * o.reference_price, "reason": o.reason}
                for o in orders
            ],
            "cash_after": left,
        }

    @v1.get("/accounts/{account}", response_model=schemas.AccountOut, tags=["accounts"],
             responses=_NOT_FOUND)
    def account(account: str, key: Caller) -> dict[str, Any]:
        """A client account by its registry id or broker account id: positions, equity and
        the last rebalance, from the trade log. A key made for some accounts only gets
        404 for any other, as for an account that does not exist."""
        return account_view(engine, account, lambda account_id: keys.may_read(key, account_id))

    app.include_router(v1)
    app.add_middleware(_HeadAsGet)
    _install_handlers(app)
    _document_profile_names(app, list(book.profiles))
    return app


class _HeadAsGet:
    """Answer HEAD as GET without the body (RFC 9110 9.3.2: a general-purpose server must
    support both): FastAPI's GET routes answered HEAD with a 405. The route sees a copy of
    the request's scope saying GET; the server, holding the original, sends no body."""

    def __init__(self, app: Callable) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] == "http" and scope["method"] == "HEAD":
            scope = {**scope, "method": "GET"}
        await self.app(scope, receive, send)


def _document_profile_names(app: FastAPI, names: list[str]) -> None:
    """The OpenAPI document lists the served profiles as the values `profile` takes, in
    a path and in a plan's body: the server refuses any other (404 or 422), and a client
    generated from the document should know so."""
    make = app.openapi

    def openapi() -> dict[str, Any]:
        spec = make()  # FastAPI's, cached by it
        for path in spec["paths"].values():
            for operation in path.values():
                for parameter in operation.get("parameters", []):
                    if parameter["name"] == "profile" and parameter["in"] == "path":
                        parameter["schema"]["enum"] = names
        spec["components"]["schemas"]["PlanRequest"]["properties"]["profile"]["enum"] = names
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        from http import HTTPStatus

        unread = _unreadable_body(exc)
        if unread is not None:
            return await bad_input(request, [{"field": "body", "message": f"not valid JSON ({unread})"}])
        return _error(exc.status_code, HTTPStatus(exc.status_code).phrase.lower(), str(exc.detail),
                      headers=exc.headers)

    async def bad_input(request: Request, fields: list[dict[str, str]]) -> JSONResponse:
        # FastAPI reads a JSON body before it runs the dependencies: a request whose body
        # is not JSON must still pass the key check first, and spend its budget.
        try:
            await run_in_threadpool(request.app.state.authorize, request)
        except HTTPException as refused:
            return await http_error(request, refused)
        more = len(fields) - MAX_FIELD_ERRORS
        fields = fields[:MAX_FIELD_ERRORS]
        message = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
        if more > 0:
            message += f"; and {more} more"
        return _error(422, "invalid request", message, fields=fields)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return await bad_input(request, [_field_error(e) for e in exc.errors()])

    @app.exception_handler(FieldProblem)
    async def field_problem(request: Request, exc: FieldProblem) -> JSONResponse:
        # after the key check, as every 422 (an unknown query parameter is refused by a
        # dependency that runs before the route's key check)
        return await bad_input(request, [{"field": exc.field, "message": exc.message}])

    @app.exception_handler(NotFound)
    async def not_found(_request: Request, exc: NotFound) -> JSONResponse:
        return _error(404, "not found", str(exc))

    @app.exception_handler(BotError)
    async def bot_error(request: Request, exc: BotError) -> JSONResponse:
        log.error("api.request_failed", path=request.url.path, error=str(exc))
        return _error(500, "internal server error", "the request failed; see the server's log")

    @app.middleware("http")
    async def headers_and_log(request: Request, call_next) -> Response:
        started = time.perf_counter()
        response: Response
        length = request.headers.get("content-length")
        if request.method == "POST" and length is None:  # a chunked body has no known size
            response = _error(411, "length required", "expected a Content-Length header")
        elif "transfer-encoding" in request.headers:
            # With a Content-Length beside it, the server read the whole chunked body
            # past the size checked below (300 MB parsed), and a proxy going by the
            # length would read another request than this server: refused (RFC 9112 6.1).
            response = _error(400, "bad request", "expected a Content-Length header and no "
                                                  "Transfer-Encoding (a body of known size)")
        elif length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            response = _error(413, "content too large",
                              f"expected a request body of at most {MAX_BODY_BYTES} bytes")
        elif (request.method == "POST" and length != "0"
              and not _is_json(request.headers.get("content-type"))):
            response = _error(415, "unsupported media type",
                              "expected a JSON body with Content-Type: application/json")
        else:
            try:
                response = await call_next(request)
            except Exception as exc:  # a bug: logged with its traceback, answered like any error
                # A plain traceback: log.exception on a terminal renders the frames'
                # local variables, among them the request and the key it carried.
                log.error("api.request_failed", method=request.method, path=request.url.path,
                          error=f"{type(exc).__name__}: {exc}",
                          traceback="".join(traceback.format_exception(exc)))
                response = _error(500, "internal server error", "the request failed; see the server's log")
        response.headers.update(_HEADERS)
        docs = request.url.path in ("/docs", "/docs/oauth2-redirect")
        response.headers["Content-Security-Policy"] = _DOCS_CSP if docs else _API_CSP
        (log.debug if request.url.path == "/healthz" else log.info)(
            "api.request", method=request.method, path=request.url.path,
            status=response.status_code, ms=round((time.perf_counter() - started) * 1000, 1),
            caller=getattr(request.state, "caller", None),
        )
        return response


def _unreadable_body(exc: HTTPException) -> str | None:
    """Why the JSON parser refused a body that FastAPI then answers 400 on its own (before
    any dependency: no key check), or None for any other HTTPException: an integer of
    more digits than Python converts, nesting past the recursion limit, bytes that are not
    UTF-8."""
    cause = exc.__cause__
    if exc.status_code != 400 or cause is None:
        return None
    if isinstance(cause, RecursionError):
        return "nested too deeply"
    if isinstance(cause, RepeatedKey):  # its text quotes the client's key: match nothing in it
        return str(cause)
    if isinstance(cause, ValueError):
        if "digits" in str(cause):
            return f"a number of more than {sys.get_int_max_str_digits()} digits"
        return str(cause).splitlines()[0][:200] if str(cause) else type(cause).__name__
    return None


def _presented_key(request: Request) -> str | None:
    """The key in `Authorization: Bearer <key>`, else in X-API-Key; None without one."""
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return request.headers.get("x-api-key") or None


def _field_error(error: dict[str, Any]) -> dict[str, str]:
    """One pydantic error as {field, message}: the dotted field name without the request
    part (body, query, path) and what was expected, with the value given."""
    loc = [str(p) for p in error.get("loc", ()) if p != "[key]"]
    if loc and loc[0] in ("body", "query", "path", "header") and len(loc) > 1:
        loc = loc[1:]
    field = ".".join(loc) or "body"
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    if error.get("type") == "string_pattern_mismatch" and field.startswith("holdings."):
        message = "expected an upper-case ticker symbol such as SPY"
    if error.get("type") == "json_invalid":
        field, message = "body", f"not valid JSON ({error.get('ctx', {}).get('error', 'parse error')})"
    given = error.get("input")
    if error.get("type") != "missing" and isinstance(given, (str, int, float, bool)) and given is not None:
        message += f" (got {given!r})"
    return {"field": field, "message": message}
