"""A fake of the Alpaca Broker API endpoints the platform uses, for the real alpaca-py
BrokerClient (`url_override=fake.url`).

Each client account is a `Ledger` (tests.fakes.alpaca_ledger), the same book and order
rules as the trading-API fake. Basic auth with the broker key pair, JSON as the Broker
API sends it, on 127.0.0.1 with HTTP/1.1 keep-alive. Built to hold 10,000 accounts:
every lookup is by dict, and the request log can be switched off.

Routes (v1):
    GET    /v1/trading/accounts/{account_id}/account        the trade account
    GET    /v1/trading/accounts/{account_id}/positions
    GET    /v1/accounts/positions                           every account's, in one call
    POST   /v1/trading/accounts/{account_id}/orders
    GET    /v1/trading/accounts/{account_id}/orders
    DELETE /v1/trading/accounts/{account_id}/orders
    GET    /v1/trading/accounts/{account_id}/orders:by_client_order_id
    GET    /v1/trading/accounts/{account_id}/orders/{order_id}
    DELETE /v1/trading/accounts/{account_id}/orders/{order_id}
    GET    /v1/clock, /v1/calendar
    POST, GET  /v1/rebalancing/portfolios;  GET, PATCH /v1/rebalancing/portfolios/{id}
    POST, GET  /v1/rebalancing/subscriptions;  DELETE /v1/rebalancing/subscriptions/{id}
    GET    /v1/rebalancing/runs

Test control:
    fake.open_account(cash=...) -> account id      fake.ledger(account_id) -> its Ledger
    fake.set_now(t), fake.sessions, fake.prices     as in the trading-API fake
    fake.fill_open()                                fill every routed order of every account
    fake.run_rebalancing()                          Alpaca's rebalancer: each subscribed
                                                    account is traded to its portfolio's weights
    fake.inject(method, route, Fault...)            scripted faults on one route
    fake.rate_limit(per_second, burst)              429 with Retry-After past a token bucket
    fake.fail_randomly(rate, status, seed)          that share of requests answers `status`
    fake.failing_accounts                           ids whose every request answers 503
    GET /fake/stats[?orders=1]                      request counts by status, orders, orders
                                                    repeated per (account, symbol, side), and
                                                    with `record_times` each request's time

In its own process (a benchmark's venue, so the clients do not share its interpreter):
    python -m tests.fakes.alpaca_broker_server --accounts 10000 --ids accounts.txt
prints the URL, writes the account ids one a line, serves until SIGTERM or Ctrl-C
(`--help` lists the options: prices, fills on submit, a rate limit, failing accounts).
"""

from __future__ import annotations

import base64
import datetime as dt
import random
import threading
import time
import uuid
from decimal import ROUND_DOWN, Decimal
from typing import Any

from tests.fakes import FakeServer, Fault, Request, Response
from tests.fakes.alpaca_ledger import (
    INVALID,
    FakeSession,
    Ledger,
    VenueClock,
    asset_answer,
    dec,
    not_found,
    thanksgiving_week,
    ts,
)

__all__ = ["BROKER_KEY", "BROKER_SECRET", "FakeBrokerAPI", "FakeSession", "Fault"]

BROKER_KEY = "fake-broker-key-for-tests"
BROKER_SECRET = "fake-broker-secret-Hq3mT8vW2pLx9cRb"
ACCOUNTS = "/v1/trading/accounts/{account_id}"
NOT_AUTHORIZED = 40110000


class FakeBrokerAPI(FakeServer, VenueClock):
    keep_alive = True

    def __init__(
        self, *, now: dt.datetime | None = None, sessions: list[FakeSession] | None = None
    ) -> None:
        super().__init__()
        self.key, self.secret = BROKER_KEY, BROKER_SECRET
        self._expected_auth = "Basic " + base64.b64encode(
            f"{BROKER_KEY}:{BROKER_SECRET}".encode()
        ).decode()
        self.prices: dict[str, float] = {}
        self.not_fractionable: set[str] = set()  # assets Alpaca trades in whole shares only
        self.not_tradable: set[str] = set()
        self.sessions = sessions if sessions is not None else thanksgiving_week()
        self._now = now or dt.datetime(2024, 11, 27, 15, 0, tzinfo=dt.UTC)  # Wed 10:00 New York
        self.accounts: dict[str, Ledger] = {}
        self.portfolios: dict[str, dict[str, Any]] = {}
        self.subscriptions: dict[str, dict[str, Any]] = {}
        self.runs: list[dict[str, Any]] = []
        self._bucket: _TokenBucket | None = None
        self._chaos: tuple[float, int, random.Random] | None = None
        self.failing_accounts: set[str] = set()
        self.fill_on_submit = 0.0  # given to each account opened from now on
        self.record_times = False
        self._times: list[float] = []
        self._answers: dict[int, int] = {}
        self._routes_setup()

    def _routes_setup(self) -> None:
        r = self.route
        r("GET", f"{ACCOUNTS}/account", self._get_account)
        r("GET", f"{ACCOUNTS}/positions", self._get_positions)
        r("GET", "/v1/accounts/positions", self._all_positions)
        r("POST", f"{ACCOUNTS}/orders", self._post_order)
        r("GET", f"{ACCOUNTS}/orders", self._list_orders)
        r("DELETE", f"{ACCOUNTS}/orders", self._cancel_all)
        r("GET", f"{ACCOUNTS}/orders:by_client_order_id", self._get_by_client_id)
        r("GET", f"{ACCOUNTS}/orders/{{order_id}}", self._get_order)
        r("DELETE", f"{ACCOUNTS}/orders/{{order_id}}", self._cancel_order)
        r("GET", "/v1/clock", self._get_clock)
        r("GET", "/v1/calendar", self._get_calendar)
        r("GET", "/v1/assets/{symbol}", lambda request, symbol: asset_answer(self, symbol))
        r("POST", "/v1/rebalancing/portfolios", self._create_portfolio)
        r("GET", "/v1/rebalancing/portfolios", self._list_portfolios)
        r("GET", "/v1/rebalancing/portfolios/{portfolio_id}", self._get_portfolio)
        r("PATCH", "/v1/rebalancing/portfolios/{portfolio_id}", self._update_portfolio)
        r("POST", "/v1/rebalancing/subscriptions", self._create_subscription)
        r("GET", "/v1/rebalancing/subscriptions", self._list_subscriptions)
        r("DELETE", "/v1/rebalancing/subscriptions/{subscription_id}", self._unsubscribe)
        r("GET", "/v1/rebalancing/runs", self._list_runs)
        r("GET", "/fake/stats", self._stats)

    # --- test control ----------------------------------------------------------------

    def open_account(self, cash: float = 100_000, account_id: str | None = None) -> str:
        """A new funded client account; returns its id."""
        account_id = account_id or str(uuid.uuid4())
        with self.lock:
            number = f"SB{len(self.accounts) + 1:010d}"
            self.accounts[account_id] = ledger = Ledger(
                self, cash=cash, account_id=account_id, account_number=number
            )
            ledger.fill_on_submit = self.fill_on_submit
        return account_id

    def ledger(self, account_id: str) -> Ledger:
        return self.accounts[account_id]

    def set_now(self, when: dt.datetime) -> None:
        """Move the clock; routes waiting orders at an open, expires day orders at a close."""
        with self.lock:
            self._now = when.astimezone(dt.UTC)
            for ledger in self.accounts.values():
                ledger.advance(self._now)

    def fill_open(self) -> int:
        """Fill every routed order of every account (sells first per account)."""
        with self.lock:
            return sum(ledger.fill_open() for ledger in self.accounts.values())

    def order_count(self) -> int:
        with self.lock:
            return sum(len(ledger.orders) for ledger in self.accounts.values())

    def rate_limit(self, per_second: float, burst: int) -> None:
        """Answer 429 (with Retry-After) to requests past a token bucket, as Alpaca's
        gateway does past the key's request budget; nothing is processed then."""
        self._bucket = _TokenBucket(per_second, burst)

    def fail_randomly(self, rate: float, status: int = 503, seed: int = 7) -> None:
        """Answer `status` to that share of requests, unprocessed (a flaky gateway)."""
        self._chaos = (rate, status, random.Random(seed))

    # --- serving ---------------------------------------------------------------------

    def authorize(self, request: Request) -> Response | None:
        if request.headers.get("Authorization") != self._expected_auth:
            return Response(401, {"code": NOT_AUTHORIZED, "message": "request is not authorized"})
        return None

    def _answer(self, request, handler, params, fault):  # type: ignore[no-untyped-def]
        response = self._gateway(request, handler, params, fault)
        with self.lock:
            self._answers[response.status] = self._answers.get(response.status, 0) + 1
            if self.record_times:
                self._times.append(time.time())
        return response

    def _gateway(self, request, handler, params, fault):  # type: ignore[no-untyped-def]
        if request.route == "/fake/stats":
            return super()._answer(request, handler, params, fault)
        if fault is None and self._bucket is not None:
            wait = self._bucket.take()
            if wait > 0:
                headers = {"Retry-After": f"{wait:.3f}"}
                return Response(429, {"code": 42910000, "message": "rate limit exceeded"}, headers)
        if fault is None and self._chaos is not None:
            rate, status, rng = self._chaos
            with self.lock:
                hit = rng.random() < rate
            if hit:
                return Response(status, {"message": "service unavailable"})
        if params.get("account_id") in self.failing_accounts:
            return Response(503, {"message": "service unavailable for this account"})
        return super()._answer(request, handler, params, fault)

    def _stats(self, request: Request) -> Response:
        """What a test or benchmark in another process checks: answers by status, the
        orders, and how many (account, symbol, side) got more than one order."""
        orders = [
            (aid, o.data["client_order_id"], o.data["symbol"], o.data["side"], o.data["qty"],
             o.data["status"])
            for aid, ledger in self.accounts.items() for o in ledger.orders
        ]
        seen: dict[tuple[str, str, str], int] = {}
        for aid, _cid, symbol, side, _qty, _status in orders:
            seen[(aid, symbol, side)] = seen.get((aid, symbol, side), 0) + 1
        body: dict[str, Any] = {
            "answers": {str(k): v for k, v in sorted(self._answers.items())},
            "orders": len(orders),
            "accounts_with_orders": len({o[0] for o in orders}),
            "repeated": sum(1 for n in seen.values() if n > 1),
            "times": self._times if self.record_times else None,
        }
        if request.query.get("orders"):
            body["order_list"] = orders
        return Response(200, body)

    def _account(self, account_id: str) -> Ledger | Response:
        ledger = self.accounts.get(account_id)
        if ledger is None:
            return not_found("account not found")
        return ledger

    def _get_account(self, request: Request, account_id: str) -> Response:
        ledger = self._account(account_id)
        if isinstance(ledger, Response):
            return ledger
        body = ledger.account_json()
        # The Broker API's trade account adds the previous close's values and the clearing broker.
        session = self.session_at(self._now) or self.next_session(self._now)
        body.update(
            cash_withdrawable=body["cash"],
            cash_transferable=body["cash"],
            previous_close=ts(session.close_utc - dt.timedelta(days=1)) if session else None,
            last_long_market_value=body["long_market_value"],
            last_short_market_value="0",
            last_cash=body["cash"],
            last_initial_margin="0",
            last_regt_buying_power=body["regt_buying_power"],
            last_buying_power=body["buying_power"],
            clearing_broker="APEX",
        )
        return Response(200, body)

    def _get_positions(self, request: Request, account_id: str) -> Response:
        ledger = self._account(account_id)
        return ledger if isinstance(ledger, Response) else Response(200, ledger.positions_json())

    def _all_positions(self, request: Request) -> Response:
        held = {aid: ledger.positions_json() for aid, ledger in self.accounts.items() if ledger.positions}
        return Response(200, {"as_of": ts(self._now), "positions": held})

    def _post_order(self, request: Request, account_id: str) -> Response:
        ledger = self._account(account_id)
        if isinstance(ledger, Response):
            return ledger
        response = ledger.post_order(request.body if isinstance(request.body, dict) else {})
        if response.status == 200:
            response.body["commission"] = 0
        return response

    def _list_orders(self, request: Request, account_id: str) -> Response:
        ledger = self._account(account_id)
        return ledger if isinstance(ledger, Response) else ledger.list_orders(request.query)

    def _cancel_all(self, request: Request, account_id: str) -> Response:
        ledger = self._account(account_id)
        return ledger if isinstance(ledger, Response) else ledger.cancel_all()

    def _get_by_client_id(self, request: Request, account_id: str) -> Response:
        ledger = self._account(account_id)
        if isinstance(ledger, Response):
            return ledger
        return ledger.get_by_client_id(request.query.get("client_order_id", ""))

    def _get_order(self, request: Request, account_id: str, order_id: str) -> Response:
        ledger = self._account(account_id)
        return ledger if isinstance(ledger, Response) else ledger.get_order(order_id)

    def _cancel_order(self, request: Request, account_id: str, order_id: str) -> Response:
        ledger = self._account(account_id)
        return ledger if isinstance(ledger, Response) else ledger.cancel_order(order_id)

    # --- rebalancing -----------------------------------------------------------------

    def _weights_problem(self, weights: Any) -> Response | None:
        if not isinstance(weights, list) or not weights:
            return _invalid("weights are required")
        total = Decimal(0)
        for w in weights:
            if w.get("type") == "asset" and w.get("symbol") not in self.prices:
                return _invalid(f'asset "{w.get("symbol")}" not found')
            total += dec(w.get("percent", 0))
        if total != 100:
            return _invalid(f"weights must add up to 100, got {total}")
        return None

    def _create_portfolio(self, request: Request) -> Response:
        body = request.body if isinstance(request.body, dict) else {}
        problem = self._weights_problem(body.get("weights"))
        if problem:
            return problem
        if any(p["name"] == body.get("name") for p in self.portfolios.values()):
            return Response(409, {"code": 40910000, "message": "portfolio name already exists"})
        stamp = ts(self._now)
        portfolio = {
            "id": str(uuid.uuid4()),
            "name": body.get("name"),
            "description": body.get("description", ""),
            "status": "active",
            "cooldown_days": body.get("cooldown_days", 0),
            "created_at": stamp,
            "updated_at": stamp,
            "weights": body["weights"],
            "rebalance_conditions": body.get("rebalance_conditions"),
        }
        self.portfolios[portfolio["id"]] = portfolio
        return Response(200, dict(portfolio))

    def _list_portfolios(self, request: Request) -> Response:
        name = request.query.get("name")
        found = [p for p in self.portfolios.values() if name is None or p["name"] == name]
        return Response(200, [dict(p) for p in found])

    def _get_portfolio(self, request: Request, portfolio_id: str) -> Response:
        portfolio = self.portfolios.get(portfolio_id)
        return not_found("portfolio not found") if portfolio is None else Response(200, dict(portfolio))

    def _update_portfolio(self, request: Request, portfolio_id: str) -> Response:
        portfolio = self.portfolios.get(portfolio_id)
        if portfolio is None:
            return not_found("portfolio not found")
        body = request.body if isinstance(request.body, dict) else {}
        if "weights" in body:
            problem = self._weights_problem(body["weights"])
            if problem:
                return problem
        for key in ("name", "description", "weights", "cooldown_days", "rebalance_conditions"):
            if key in body:
                portfolio[key] = body[key]
        portfolio["updated_at"] = ts(self._now)
        return Response(200, dict(portfolio))

    def _create_subscription(self, request: Request) -> Response:
        body = request.body if isinstance(request.body, dict) else {}
        account_id, portfolio_id = body.get("account_id"), body.get("portfolio_id")
        if account_id not in self.accounts:
            return _invalid("account not found")
        if portfolio_id not in self.portfolios:
            return _invalid("portfolio not found")
        if any(s["account_id"] == account_id for s in self.subscriptions.values()):
            return Response(409, {"code": 40910000, "message": "account is already subscribed"})
        subscription = {
            "id": str(uuid.uuid4()),
            "account_id": account_id,
            "portfolio_id": portfolio_id,
            "created_at": ts(self._now),
            "last_rebalanced_at": None,
        }
        self.subscriptions[subscription["id"]] = subscription
        return Response(200, dict(subscription))

    def _list_subscriptions(self, request: Request) -> Response:
        q = request.query
        found = [
            s for s in self.subscriptions.values()
            if q.get("account_id") in (None, s["account_id"])
            and q.get("portfolio_id") in (None, s["portfolio_id"])
        ]
        return _page(request, "subscriptions", found)

    def _unsubscribe(self, request: Request, subscription_id: str) -> Response:
        if self.subscriptions.pop(subscription_id, None) is None:
            return not_found("subscription not found")
        return Response(204)

    def _list_runs(self, request: Request) -> Response:
        q = request.query
        found = [
            r for r in self.runs
            if q.get("account_id") in (None, r["account_id"]) and q.get("type") in (None, r["type"])
        ]
        return _page(request, "runs", found)

    def run_rebalancing(self) -> list[dict[str, Any]]:
        """What Alpaca's rebalancer does for each subscription: sell what is over the
        portfolio's weights, buy what is under (whole dollars of notional turned into
        quantities at the current prices), fill at once while a session is open; each run
        is recorded with its orders and status. Returns the new runs."""
        new = []
        with self.lock:
            for sub in self.subscriptions.values():
                portfolio = self.portfolios[sub["portfolio_id"]]
                new.append(self._rebalance(self.accounts[sub["account_id"]], portfolio))
                sub["last_rebalanced_at"] = ts(self._now)
            self.runs.extend(new)
        return new

    def _rebalance(self, ledger: Ledger, portfolio: dict[str, Any]) -> dict[str, Any]:
        equity = ledger.cash + ledger.market_value()
        wanted = {
            w["symbol"]: dec(w["percent"]) / 100 for w in portfolio["weights"] if w["type"] == "asset"
        }
        symbols = sorted(set(wanted) | set(ledger.positions))
        orders, failed = [], []
        sells, buys = [], []
        for symbol in symbols:
            price = dec(self.prices[symbol])
            target = (equity * wanted.get(symbol, Decimal(0)) / price).quantize(
                Decimal("0.000000001"), rounding=ROUND_DOWN
            )
            held = ledger.positions[symbol].qty if symbol in ledger.positions else Decimal(0)
            delta = target - held
            if delta:
                (sells if delta < 0 else buys).append((symbol, abs(delta)))
        for side, batch in (("sell", sells), ("buy", buys)):
            for symbol, qty in batch:
                body = {"symbol": symbol, "qty": str(qty), "side": side, "type": "market",
                        "time_in_force": "day"}
                answer = ledger.post_order(body)
                (orders if answer.status == 200 else failed).append(
                    answer.body if answer.status == 200 else {**body, "reason": answer.body}
                )
            if self.session_at(self._now) is not None:
                ledger.fill_open()
        stamp = ts(self._now)
        done = all(ledger.find(o["id"]).data["status"] == "filled" for o in orders)
        return {
            "id": str(uuid.uuid4()),
            "account_id": ledger.account_id,
            "type": "full_rebalance",
            "amount": None,
            "portfolio_id": portfolio["id"],
            "weights": portfolio["weights"],
            "initiated_from": "system",
            "created_at": stamp,
            "updated_at": stamp,
            "completed_at": stamp if done else None,
            "canceled_at": None,
            "status": ("COMPLETED_SUCCESS" if not failed else "COMPLETED_ADJUSTED")
            if done else "IN_PROGRESS",
            "reason": None,
            "orders": [dict(ledger.find(o["id"]).data) for o in orders],
            "failed_orders": [],
            "skipped_orders": [
                {"symbol": f["symbol"], "side": f["side"], "notional": None, "currency": "USD",
                 "reason": "ORDER_FAILED", "reason_details": str(f["reason"])}
                for f in failed
            ],
        }


def _invalid(message: str) -> Response:
    return Response(422, {"code": INVALID, "message": message})


def _page(request: Request, field: str, items: list[dict[str, Any]]) -> Response:
    """A page of `items` under `field`, with next_page_token while more remain."""
    start = int(request.query.get("page_token") or 0)
    size = int(request.query.get("limit") or 100)
    page = items[start : start + size]
    token = str(start + size) if start + size < len(items) else None
    return Response(200, {field: [dict(i) for i in page], "next_page_token": token})


class _TokenBucket:
    """`per_second` tokens a second up to `burst`; take() returns 0 or the wait for one."""

    def __init__(self, per_second: float, burst: int) -> None:
        self.rate, self.burst = per_second, burst
        self.tokens = float(burst)
        self.updated = time.monotonic()
        self.lock = threading.Lock()

    def take(self) -> float:
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            if self.tokens >= 1:
                self.tokens -= 1
                return 0.0
            return (1 - self.tokens) / self.rate


def main(argv: list[str] | None = None) -> int:
    import argparse
    import contextlib
    import signal

    parser = argparse.ArgumentParser(description="the fake Broker API on 127.0.0.1")
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--cash", type=float, default=100_000)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ids", help="write the account ids here, one a line")
    parser.add_argument("--prices", default="SPY=500,AGG=100,IWM=200,BND=70,VNQ=90,QQQ=450,"
                        "ARKK=50,IEMG=55,XLK=230,SHY=82,VYM=120,BIL=91")
    parser.add_argument("--rate-limit", type=float, help="requests per second before 429s")
    parser.add_argument("--burst", type=int, help="requests at once before the rate limit "
                        "applies (default: one second's worth)")
    parser.add_argument("--fail-rate", type=float, default=0.0, help="share of requests answering 503")
    parser.add_argument("--fill-on-submit", type=float, default=0.0,
                        help="share of an order filled before the answer while a session is open")
    parser.add_argument("--failing-accounts", type=int, default=0,
                        help="the last N accounts (of --ids) answer 503 to every request")
    parser.add_argument("--record-times", action="store_true",
                        help="keep each request's time for GET /fake/stats")
    args = parser.parse_args(argv)
    fake = FakeBrokerAPI()
    fake.record_requests = False
    fake.record_times = args.record_times
    fake.fill_on_submit = args.fill_on_submit
    fake.prices = {k: float(v) for k, v in (item.split("=") for item in args.prices.split(","))}
    ids = [fake.open_account(cash=args.cash) for _ in range(args.accounts)]
    if args.failing_accounts:
        fake.failing_accounts = set(ids[-args.failing_accounts:])
    if args.rate_limit:
        fake.rate_limit(args.rate_limit, burst=args.burst or max(1, int(args.rate_limit)))
    if args.fail_rate:
        fake.fail_randomly(args.fail_rate)
    if args.ids:
        with open(args.ids, "w", encoding="utf-8") as handle:
            handle.write("\n".join(ids) + "\n")
    print(fake.start(args.port), flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with contextlib.suppress(KeyboardInterrupt):
        stop.wait()
    fake.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
