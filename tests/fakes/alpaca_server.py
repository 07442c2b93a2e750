"""A fake Alpaca (trading API and market-data API) that the real alpaca-py clients talk to.

JSON as Alpaca sends it: money and quantities are strings, ids are UUIDs, timestamps are
RFC 3339 with Z (the clock in New York offsets), enums spelled as Alpaca spells them.
Both APIs are served on one port (their paths do not collide), so a test points the
trading client and the data client at the same `fake.url`.

Test control:
    fake.set_now(t)             move the clock: orders accepted while closed are routed
                                ('new') at the next open; unfilled day orders expire at the
                                close of their session
    fake.sessions = [...]       the calendar (FakeSession); a missing weekday is a holiday
    fake.fill(ref, qty, price)  fill part (qty) or the rest (qty=None) of a routed order
    fake.fill_on_submit = f     a market order POSTed during a session is answered with the
                                share f of it already filled (1.0: status 'filled', as
                                Alpaca often answers a liquid market order; 0.4: partially)
    fake.set_status(ref, s)     force any Alpaca status ('rejected', 'canceled', ...)
    fake.replace(ref, qty=..., limit_price=...)   replace an order as a user does (PATCH
                                /v2/orders/{id}, also served): returns the new order's id
    fake.forget(ref)            the venue no longer knows an order (404 on every lookup)
    fake.refused_duplicates     client_order_ids POSTed while an order with the id existed
    fake.inject(method, route, Fault...)   scripted faults (see tests.fakes.Fault)
    fake.prices, fake.hold(sym, qty, avg), fake.cash   the venue's market and account
`ref` is an order's id or client_order_id.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from tests.fakes import FakeServer, Fault, Request, Response
from tests.fakes.alpaca_ledger import (
    INVALID,
    NEW_YORK,
    FakeSession,
    Ledger,
    VenueClock,
    asset_answer,
    instant,
    thanksgiving_week,
    ts,
)

__all__ = ["FakeAlpaca", "FakeSession", "DailyBar", "Fault", "KEY_ID", "SECRET"]

KEY_ID = "fake-key-id-for-tests"
SECRET = "fake-secret-Zq8vN2xR7tLw4mKp9sBd"


@dataclass(frozen=True)
class DailyBar:
    day: dt.date
    open: float
    high: float
    low: float
    close: float
    volume: int = 1_000_000


class FakeAlpaca(FakeServer, VenueClock):
    def __init__(
        self,
        *,
        cash: float = 100_000,
        now: dt.datetime | None = None,
        sessions: list[FakeSession] | None = None,
    ) -> None:
        super().__init__()
        self.key_id, self.secret = KEY_ID, SECRET
        self.prices: dict[str, float] = {}
        self.sessions = sessions if sessions is not None else thanksgiving_week()
        self._now = now or dt.datetime(2024, 11, 27, 15, 0, tzinfo=dt.UTC)  # Wed 10:00 New York
        # The one account's book; its orders, positions and cash are this venue's.
        self.ledger = Ledger(
            self, cash=cash, account_id=str(uuid.uuid4()), account_number="PA3FAKE00001"
        )
        self.daily_bars: dict[str, list[DailyBar]] = {}
        self.splits: dict[str, list[tuple[dt.date, float]]] = {}  # (first day after, ratio)
        self.bars_page_size = 10_000
        self.latest_trades: dict[str, float] = {}
        self.latest_bars: dict[str, float] = {}
        # when a symbol's latest trade / minute bar happened (default: the fake's now)
        self.trade_times: dict[str, dt.datetime] = {}
        self.bar_times: dict[str, dt.datetime] = {}
        self.sip_allowed = False
        self.not_fractionable: set[str] = set()  # assets Alpaca trades in whole shares only
        self.not_tradable: set[str] = set()
        self._routes_setup()

    def _routes_setup(self) -> None:
        r = self.route
        r("GET", "/v2/account", self._get_account)
        r("GET", "/v2/positions", self._get_positions)
        r("POST", "/v2/orders", self._post_order)
        r("GET", "/v2/orders", self._list_orders)
        r("DELETE", "/v2/orders", self._cancel_all)
        r("GET", "/v2/orders:by_client_order_id", self._get_by_client_id)
        r("GET", "/v2/orders/{order_id}", self._get_order)
        r("DELETE", "/v2/orders/{order_id}", self._cancel_order)
        r("PATCH", "/v2/orders/{order_id}", self._replace_order)
        r("GET", "/v2/assets/{symbol}", self._get_asset)
        r("GET", "/v2/clock", self._get_clock)
        r("GET", "/v2/calendar", self._get_calendar)
        r("GET", "/v2/stocks/bars", self._get_bars)
        r("GET", "/v2/stocks/trades/latest", self._latest_trades)
        r("GET", "/v2/stocks/bars/latest", self._latest_bars)

    def authorize(self, request: Request) -> Response | None:
        key = request.headers.get("APCA-API-KEY-ID")
        secret = request.headers.get("APCA-API-SECRET-KEY")
        if not key or not secret:
            return Response(401, {"code": 40110000, "message": "request is not authorized"})
        if key != self.key_id or secret != self.secret:
            return Response(403, {"message": "forbidden."})
        return None

    # --- clock control ---------------------------------------------------------------

    def set_now(self, when: dt.datetime) -> None:
        """Move the clock; routes waiting orders at an open, expires day orders at a close."""
        with self.lock:
            self._now = when.astimezone(dt.UTC)
            self.ledger.advance(self._now)

    # --- the account's book (see tests.fakes.alpaca_ledger.Ledger) -------------------

    cash = property(lambda self: self.ledger.cash, lambda self, v: setattr(self.ledger, "cash", v))
    positions = property(lambda self: self.ledger.positions)
    orders = property(lambda self: self.ledger.orders)
    account_id = property(lambda self: self.ledger.account_id)
    account_number = property(lambda self: self.ledger.account_number)
    account_patch = property(
        lambda self: self.ledger.account_patch,
        lambda self, v: setattr(self.ledger, "account_patch", v),
    )
    refused_duplicates = property(lambda self: self.ledger.refused_duplicates)
    market_buy_collar = property(  # a market buy's valuation above its price
        lambda self: self.ledger.market_buy_collar,
        lambda self, v: setattr(self.ledger, "market_buy_collar", Decimal(str(v))),
    )
    fill_on_submit = property(  # share of a POSTed order filled before the answer
        lambda self: self.ledger.fill_on_submit,
        lambda self, v: setattr(self.ledger, "fill_on_submit", v),
    )
    cancel_leaves_pending = property(
        lambda self: self.ledger.cancel_leaves_pending,
        lambda self, v: setattr(self.ledger, "cancel_leaves_pending", v),
    )

    def hold(self, symbol: str, qty: float, avg_price: float) -> None:
        """Start with a position (bought before the test)."""
        with self.lock:
            self.ledger.hold(symbol, qty, avg_price)

    def order(self, ref: str) -> dict[str, Any]:
        """The order's JSON as the venue would send it now."""
        with self.lock:
            return dict(self.ledger.find(ref).data)

    def fill(self, ref: str, qty: float | None = None, price: float | None = None) -> None:
        """Execute `qty` (default: the rest) at `price` (default: prices[symbol])."""
        with self.lock:
            self.ledger.fill(ref, qty, price)

    def fill_open(self) -> None:
        """Fill every routed order at the current prices, sells first."""
        with self.lock:
            self.ledger.fill_open()

    def set_status(self, ref: str, status: str) -> None:
        stamp = {"canceled": "canceled_at", "expired": "expired_at", "rejected": "failed_at"}
        with self.lock:
            self.ledger.set(self.ledger.find(ref), status, stamp.get(status))

    def replace(self, ref: str, **changes: Any) -> str:
        """Replace an order as a user does at Alpaca (qty, limit_price, client_order_id,
        ...); returns the new order's id."""
        with self.lock:
            answer = self.ledger.replace_order(self.ledger.find(ref).data["id"], changes)
        if answer.status != 200:
            raise AssertionError(f"replace {ref}: {answer.body}")
        return answer.body["id"]

    def forget(self, ref: str) -> None:
        with self.lock:
            self.ledger.forget(ref)

    def order_count(self) -> int:
        with self.lock:
            return len(self.ledger.orders)

    def buying_power(self) -> Decimal:
        return self.ledger.buying_power()

    def _get_account(self, request: Request) -> Response:
        return Response(200, self.ledger.account_json())

    def _get_positions(self, request: Request) -> Response:
        return Response(200, self.ledger.positions_json())

    def _post_order(self, request: Request) -> Response:
        return self.ledger.post_order(request.body if isinstance(request.body, dict) else {})

    def _list_orders(self, request: Request) -> Response:
        return self.ledger.list_orders(request.query)

    def _get_by_client_id(self, request: Request) -> Response:
        return self.ledger.get_by_client_id(request.query.get("client_order_id", ""))

    def _get_asset(self, request: Request, symbol: str) -> Response:
        return asset_answer(self, symbol)

    def _get_order(self, request: Request, order_id: str) -> Response:
        return self.ledger.get_order(order_id)

    def _replace_order(self, request: Request, order_id: str) -> Response:
        return self.ledger.replace_order(
            order_id, request.body if isinstance(request.body, dict) else {}
        )

    def _cancel_order(self, request: Request, order_id: str) -> Response:
        return self.ledger.cancel_order(order_id)

    def _cancel_all(self, request: Request) -> Response:
        return self.ledger.cancel_all()

    # --- market data -----------------------------------------------------------------

    def _feed_denied(self, request: Request, *, latest: bool = False) -> Response | None:
        """Alpaca's rule for a free key (sip_allowed False): SIP data of the last 15
        minutes needs a paid plan. A latest trade or bar always is; bars are when their
        `end` is missing or less than 15 minutes before now."""
        if request.query.get("feed", "sip") != "sip" or self.sip_allowed:
            return None
        end = request.query.get("end")
        recent = latest or end is None or instant(end) > self._now - dt.timedelta(minutes=15)
        if recent:
            return Response(
                403, {"message": "subscription does not permit querying recent SIP data"}
            )
        return None

    def _get_bars(self, request: Request) -> Response:
        denied = self._feed_denied(request)
        if denied:
            return denied
        q = request.query
        if q.get("timeframe") != "1Day":
            return Response(422, {"code": INVALID, "message": "this fake serves 1Day bars only"})
        first, last = bar_days(instant(q.get("start")), instant(q.get("end")))
        adjust = q.get("adjustment", "raw")
        items: list[tuple[str, dict[str, Any]]] = []
        for symbol in sorted(filter(None, q.get("symbols", "").split(","))):
            for bar in self.daily_bars.get(symbol, []):
                # Compared by day (years of bars per symbol): only the answer's are stamped.
                if first <= bar.day <= last:
                    stamp = dt.datetime.combine(bar.day, dt.time(0), NEW_YORK)
                    items.append((symbol, self._bar_json(symbol, bar, stamp, adjust)))
        offset = int(base64.b64decode(q["page_token"]).decode()) if q.get("page_token") else 0
        size = min(int(q.get("limit") or 1000), self.bars_page_size)
        page = items[offset : offset + size]
        grouped: dict[str, list[dict[str, Any]]] = {}
        for symbol, bar in page:
            grouped.setdefault(symbol, []).append(bar)
        more = offset + size < len(items)
        token = base64.b64encode(str(offset + size).encode()).decode() if more else None
        return Response(200, {"bars": grouped, "next_page_token": token})

    def _bar_json(
        self, symbol: str, bar: DailyBar, stamp: dt.datetime, adjust: str
    ) -> dict[str, Any]:
        factor = 1.0
        if adjust in ("split", "all"):
            for first_day, ratio in self.splits.get(symbol, []):
                if bar.day < first_day:
                    factor /= ratio
        o, h, low, c = (
            v * factor if isinstance(v, float) and math.isfinite(v) else v
            for v in (bar.open, bar.high, bar.low, bar.close)
        )
        return {
            "t": stamp.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "o": o,
            "h": h,
            "l": low,
            "c": c,
            "v": round(bar.volume / factor),
            "n": 1000,
            "vw": c,
        }

    def _latest_trades(self, request: Request) -> Response:
        denied = self._feed_denied(request, latest=True)
        if denied:
            return denied
        symbols = [
            s for s in request.query.get("symbols", "").split(",") if s in self.latest_trades
        ]
        stamp = ts(self._now)
        return Response(
            200,
            {
                "trades": {
                    s: {
                        "t": ts(self.trade_times[s]) if s in self.trade_times else stamp,
                        "x": "V",
                        "p": self.latest_trades[s],
                        "s": 100,
                        "c": ["@"],
                        "i": 52983525029461,
                        "z": "B",
                    }
                    for s in symbols
                }
            },
        )

    def _latest_bars(self, request: Request) -> Response:
        denied = self._feed_denied(request, latest=True)
        if denied:
            return denied
        symbols = [s for s in request.query.get("symbols", "").split(",") if s in self.latest_bars]
        stamp = self._now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:00Z")
        return Response(
            200,
            {
                "bars": {
                    s: {"t": self.bar_times[s].astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:00Z")
                        if s in self.bar_times else stamp,
                        "o": p, "h": p, "l": p, "c": p, "v": 100, "n": 3, "vw": p}
                    for s in symbols
                    for p in [self.latest_bars[s]]
                }
            },
        )


def bar_days(start: dt.datetime | None, end: dt.datetime | None) -> tuple[dt.date, dt.date]:
    """The first and last day whose daily bar (stamped at midnight New York) lies in
    [start, end]; open ends are dt.date.min and dt.date.max."""
    first, last = dt.date.min, dt.date.max
    if start is not None:
        local = start.astimezone(NEW_YORK)
        first = local.date() + dt.timedelta(days=0 if local.time() == dt.time(0) else 1)
    if end is not None:
        last = end.astimezone(NEW_YORK).date()
    return first, last
