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
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from tests.fakes import FakeServer, Fault, Request, Response

__all__ = ["FakeAlpaca", "FakeSession", "DailyBar", "Fault", "KEY_ID", "SECRET"]

NEW_YORK = ZoneInfo("America/New_York")
KEY_ID = "fake-key-id-for-tests"
SECRET = "fake-secret-Zq8vN2xR7tLw4mKp9sBd"
OPEN_STATUSES = {
    "new",
    "partially_filled",
    "done_for_day",
    "accepted",
    "pending_new",
    "accepted_for_bidding",
    "pending_cancel",
    "pending_replace",
    "held",
    "stopped",
    "suspended",
    "calculated",
}
ROUTED = {"new", "partially_filled"}
INSUFFICIENT = 40310000
INVALID = 40010001
NOT_FOUND = 40410000
NOT_CANCELABLE = 42210000


def ts(when: dt.datetime) -> str:
    """RFC 3339 in UTC with Z, microseconds, as Alpaca stamps orders."""
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def dec(value: float | str | Decimal) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


def text(value: Decimal) -> str:
    """A decimal as Alpaca writes it: plain digits, no exponent, no trailing zeros."""
    out = format(value.normalize(), "f")
    return out if out not in ("-0",) else "0"


@dataclass(frozen=True)
class FakeSession:
    """One trading day in New York wall time; close '13:00' is an early close."""

    day: dt.date
    open: str = "09:30"
    close: str = "16:00"

    def at(self, hhmm: str) -> dt.datetime:
        hour, minute = map(int, hhmm.split(":"))
        return dt.datetime.combine(self.day, dt.time(hour, minute), NEW_YORK).astimezone(dt.UTC)

    @property
    def open_utc(self) -> dt.datetime:
        return self.at(self.open)

    @property
    def close_utc(self) -> dt.datetime:
        return self.at(self.close)


def thanksgiving_week() -> list[FakeSession]:
    """Nov 25 - Dec 3 2024: Thanksgiving (28th) closed, the 29th closes at 13:00."""
    days = [25, 26, 27, 29]
    sessions = [
        FakeSession(dt.date(2024, 11, d), close="13:00" if d == 29 else "16:00") for d in days
    ]
    return sessions + [FakeSession(dt.date(2024, 12, 2)), FakeSession(dt.date(2024, 12, 3))]


@dataclass(frozen=True)
class DailyBar:
    day: dt.date
    open: float
    high: float
    low: float
    close: float
    volume: int = 1_000_000


@dataclass
class _Order:
    data: dict[str, Any]
    qty: Decimal
    filled: Decimal = Decimal(0)
    cost: Decimal = Decimal(0)  # sum of fill qty x price
    expires: dt.datetime | None = None
    starts: dt.datetime | None = None


@dataclass
class _Position:
    qty: Decimal
    cost: Decimal
    asset_id: str = field(default_factory=lambda: str(uuid.uuid4()))


class FakeAlpaca(FakeServer):
    def __init__(
        self,
        *,
        cash: float = 100_000,
        now: dt.datetime | None = None,
        sessions: list[FakeSession] | None = None,
    ) -> None:
        super().__init__()
        self.key_id, self.secret = KEY_ID, SECRET
        self.account_id = str(uuid.uuid4())
        self.account_number = "PA3FAKE00001"
        self.cash = dec(cash)
        self.prices: dict[str, float] = {}
        self.positions: dict[str, _Position] = {}
        self.orders: list[_Order] = []
        self.sessions = sessions if sessions is not None else thanksgiving_week()
        self._now = now or dt.datetime(2024, 11, 27, 15, 0, tzinfo=dt.UTC)  # Wed 10:00 New York
        self.account_patch: dict[str, Any] = {}  # merged into GET /v2/account (None deletes)
        self.cancel_leaves_pending = False  # DELETE answers but the order stays pending_cancel
        self.daily_bars: dict[str, list[DailyBar]] = {}
        self.splits: dict[str, list[tuple[dt.date, float]]] = {}  # (first day after, ratio)
        self.bars_page_size = 10_000
        self.latest_trades: dict[str, float] = {}
        self.latest_bars: dict[str, float] = {}
        self.sip_allowed = False
        self.fill_on_submit = 0.0  # share of a POSTed order filled before the answer
        self.refused_duplicates: list[str] = []  # client_order_ids POSTed again (422)
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

    @property
    def now(self) -> dt.datetime:
        return self._now

    def set_now(self, when: dt.datetime) -> None:
        """Move the clock; routes waiting orders at an open, expires day orders at a close."""
        with self.lock:
            self._now = when.astimezone(dt.UTC)
            for order in self.orders:
                status = order.data["status"]
                if status not in OPEN_STATUSES:
                    continue
                if order.expires is not None and self._now >= order.expires:
                    self._set(order, "expired", "expired_at")
                elif (
                    status == "accepted" and order.starts is not None and self._now >= order.starts
                ):
                    self._set(order, "new")

    def session_at(self, when: dt.datetime) -> FakeSession | None:
        return next((s for s in self.sessions if s.open_utc <= when < s.close_utc), None)

    def _next_session(self, when: dt.datetime) -> FakeSession | None:
        return next(
            (s for s in sorted(self.sessions, key=lambda s: s.day) if s.open_utc > when), None
        )

    # --- order control ---------------------------------------------------------------

    def hold(self, symbol: str, qty: float, avg_price: float) -> None:
        """Start with a position (bought before the test)."""
        with self.lock:
            self.positions[symbol] = _Position(dec(qty), dec(qty) * dec(avg_price))

    def order(self, ref: str) -> dict[str, Any]:
        """The order's JSON as the venue would send it now."""
        with self.lock:
            return dict(self._find(ref).data)

    def fill(self, ref: str, qty: float | None = None, price: float | None = None) -> None:
        """Execute `qty` (default: the rest) at `price` (default: prices[symbol])."""
        with self.lock:
            order = self._find(ref)
            status = order.data["status"]
            if status not in ROUTED:
                raise AssertionError(f"order {ref} is {status}: only routed orders fill")
            symbol = order.data["symbol"]
            amount = order.qty - order.filled if qty is None else dec(qty)
            px = dec(price if price is not None else self.prices[symbol])
            if amount <= 0 or order.filled + amount > order.qty:
                raise AssertionError(f"cannot fill {amount} of {order.qty} ({order.filled} filled)")
            order.filled += amount
            order.cost += amount * px
            self._book(symbol, order.data["side"], amount, px)
            avg = order.cost / order.filled
            order.data["filled_qty"] = text(order.filled)
            order.data["filled_avg_price"] = text(avg.quantize(Decimal("0.000000001")))
            done = order.filled == order.qty
            self._set(
                order, "filled" if done else "partially_filled", "filled_at" if done else None
            )

    def fill_open(self) -> None:
        """Fill every routed order at the current prices, sells first."""
        with self.lock:
            routed = [o for o in self.orders if o.data["status"] in ROUTED]
            for order in sorted(routed, key=lambda o: o.data["side"] != "sell"):
                self.fill(order.data["id"])

    def set_status(self, ref: str, status: str) -> None:
        stamp = {"canceled": "canceled_at", "expired": "expired_at", "rejected": "failed_at"}
        with self.lock:
            order = self._find(ref)
            self._set(order, status, stamp.get(status))

    def order_count(self) -> int:
        with self.lock:
            return len(self.orders)

    def _find(self, ref: str) -> _Order:
        for order in self.orders:
            if ref in (order.data["id"], order.data["client_order_id"]):
                return order
        raise KeyError(ref)

    def _set(self, order: _Order, status: str, stamp: str | None = None) -> None:
        order.data["status"] = status
        order.data["updated_at"] = ts(self._now)
        if stamp:
            order.data[stamp] = ts(self._now)

    def _book(self, symbol: str, side: str, qty: Decimal, price: Decimal) -> None:
        position = self.positions.setdefault(symbol, _Position(Decimal(0), Decimal(0)))
        if side == "buy":
            self.cash -= qty * price
            position.qty += qty
            position.cost += qty * price
        else:
            self.cash += qty * price
            position.cost -= position.cost * qty / position.qty
            position.qty -= qty
        if position.qty == 0:
            del self.positions[symbol]

    # --- account and positions -------------------------------------------------------

    def _market_value(self) -> Decimal:
        return sum((p.qty * dec(self.prices[s]) for s, p in self.positions.items()), Decimal(0))

    def buying_power(self) -> Decimal:
        """Cash less what open buy orders reserve (a cash account: multiplier 1)."""
        reserved = sum(
            (
                (o.qty - o.filled) * dec(self.prices[o.data["symbol"]])
                for o in self.orders
                if o.data["side"] == "buy" and o.data["status"] in OPEN_STATUSES
            ),
            Decimal(0),
        )
        return self.cash - reserved

    def _get_account(self, request: Request) -> Response:
        equity = self.cash + self._market_value()
        money = lambda v: text(v.quantize(Decimal("0.01")))  # noqa: E731
        body: dict[str, Any] = {
            "id": self.account_id,
            "account_number": self.account_number,
            "status": "ACTIVE",
            "crypto_status": "ACTIVE",
            "currency": "USD",
            "buying_power": money(self.buying_power()),
            "regt_buying_power": money(self.buying_power()),
            "daytrading_buying_power": "0",
            "non_marginable_buying_power": money(self.buying_power()),
            "options_buying_power": money(self.buying_power()),
            "cash": money(self.cash),
            "accrued_fees": "0",
            "pending_transfer_in": "0",
            "portfolio_value": money(equity),
            "pattern_day_trader": False,
            "trading_blocked": False,
            "transfers_blocked": False,
            "account_blocked": False,
            "created_at": "2024-01-02T15:00:00.000000Z",
            "trade_suspended_by_user": False,
            "multiplier": "1",
            "shorting_enabled": False,
            "equity": money(equity),
            "last_equity": money(equity),
            "long_market_value": money(self._market_value()),
            "short_market_value": "0",
            "position_market_value": money(self._market_value()),
            "initial_margin": "0",
            "maintenance_margin": "0",
            "last_maintenance_margin": "0",
            "sma": "0",
            "daytrade_count": 0,
            "balance_asof": self._now.date().isoformat(),
            "options_approved_level": 0,
            "options_trading_level": 0,
        }
        for key, value in self.account_patch.items():
            if value is None:
                body.pop(key, None)
            else:
                body[key] = value
        return Response(200, body)

    def _get_positions(self, request: Request) -> Response:
        out = []
        for symbol, p in sorted(self.positions.items()):
            price = dec(self.prices[symbol])
            value = p.qty * price
            out.append(
                {
                    "asset_id": p.asset_id,
                    "symbol": symbol,
                    "exchange": "ARCA",
                    "asset_class": "us_equity",
                    "asset_marginable": True,
                    "qty": text(p.qty),
                    "qty_available": text(p.qty),
                    "avg_entry_price": text((p.cost / p.qty).quantize(Decimal("0.0001"))),
                    "side": "long",
                    "market_value": text(value.quantize(Decimal("0.01"))),
                    "cost_basis": text(p.cost.quantize(Decimal("0.01"))),
                    "unrealized_pl": text((value - p.cost).quantize(Decimal("0.01"))),
                    "unrealized_plpc": "0",
                    "unrealized_intraday_pl": "0",
                    "unrealized_intraday_plpc": "0",
                    "current_price": text(price),
                    "lastday_price": text(price),
                    "change_today": "0",
                }
            )
        return Response(200, out)

    # --- orders ----------------------------------------------------------------------

    def _post_order(self, request: Request) -> Response:
        body = request.body if isinstance(request.body, dict) else {}
        problem = self._validate(body)
        if problem is not None:
            return problem
        now = self._now
        session = self.session_at(now)
        routed_session = session or self._next_session(now)
        symbol, qty = body["symbol"], dec(body["qty"])
        data = {
            "id": str(uuid.uuid4()),
            "client_order_id": body.get("client_order_id") or str(uuid.uuid4()),
            "created_at": ts(now),
            "updated_at": ts(now),
            "submitted_at": ts(now),
            "filled_at": None,
            "expired_at": None,
            "canceled_at": None,
            "failed_at": None,
            "replaced_at": None,
            "replaced_by": None,
            "replaces": None,
            "asset_id": self._asset_id(symbol),
            "symbol": symbol,
            "asset_class": "us_equity",
            "notional": None,
            "qty": text(qty),
            "filled_qty": "0",
            "filled_avg_price": None,
            "order_class": "simple",
            "order_type": "market",
            "type": "market",
            "side": body["side"],
            "position_intent": "buy_to_open" if body["side"] == "buy" else "sell_to_close",
            "time_in_force": body["time_in_force"],
            "limit_price": None,
            "stop_price": None,
            "status": "new" if session else "accepted",
            "extended_hours": False,
            "legs": None,
            "trail_percent": None,
            "trail_price": None,
            "hwm": None,
            "subtag": None,
            "source": None,
            "expires_at": ts(routed_session.close_utc) if routed_session else None,
        }
        order = _Order(
            data,
            qty,
            expires=routed_session.close_utc if routed_session else None,
            starts=routed_session.open_utc if routed_session else None,
        )
        self.orders.append(order)
        if session is not None and self.fill_on_submit > 0:
            now_filled = (qty * dec(self.fill_on_submit)).quantize(Decimal("0.000000001"))
            if now_filled > 0:
                self.fill(data["id"], float(min(now_filled, qty)))
        return Response(200, dict(order.data))

    def _validate(self, body: dict[str, Any]) -> Response | None:
        def invalid(message: str) -> Response:
            return Response(422, {"code": INVALID, "message": message})

        for key in ("symbol", "side", "type", "time_in_force"):
            if not body.get(key):
                return invalid(f"{key} is required")
        if body.get("qty") is None:
            return invalid("qty or notional is required")
        cid = body.get("client_order_id")
        if cid and any(o.data["client_order_id"] == cid for o in self.orders):
            self.refused_duplicates.append(cid)
            return invalid("client_order_id must be unique")
        if cid and len(cid) > 128:
            return invalid("client_order_id must be at most 128 characters")
        symbol = body["symbol"]
        if symbol not in self.prices:
            return invalid(f'asset "{symbol}" not found')
        qty = dec(body["qty"])
        if qty <= 0:
            return invalid("qty must be > 0")
        if -qty.as_tuple().exponent > 9:  # type: ignore[operator]
            return invalid("qty must have at most 9 decimal places")
        if qty != qty.to_integral_value() and (
            body["type"] != "market" or body["time_in_force"] != "day"
        ):
            return invalid("fractional orders must be DAY orders")
        if body["side"] == "buy" and qty * dec(self.prices[symbol]) > self.buying_power():
            return Response(403, {"code": INSUFFICIENT, "message": "insufficient buying power"})
        if body["side"] == "sell":
            held = self.positions[symbol].qty if symbol in self.positions else Decimal(0)
            selling = sum(
                (
                    o.qty - o.filled
                    for o in self.orders
                    if o.data["symbol"] == symbol
                    and o.data["side"] == "sell"
                    and o.data["status"] in OPEN_STATUSES
                ),
                Decimal(0),
            )
            available = held - selling
            if qty > available:
                message = f"insufficient qty available for order (requested: {text(qty)}, available: {text(available)})"
                return Response(403, {"code": INSUFFICIENT, "message": message})
        return None

    def _asset_id(self, symbol: str) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"asset:{symbol}"))

    def _list_orders(self, request: Request) -> Response:
        status = request.query.get("status", "open")
        limit = min(int(request.query.get("limit", 50)), 500)
        symbols = set(filter(None, request.query.get("symbols", "").split(",")))

        after, until = _instant(request.query.get("after")), _instant(request.query.get("until"))

        def wanted(o: _Order) -> bool:
            is_open = o.data["status"] in OPEN_STATUSES
            by_status = status == "all" or (status == "open") == is_open
            submitted = _instant(o.data["submitted_at"])
            assert submitted is not None
            in_time = (after is None or submitted > after) and (until is None or submitted <= until)
            return by_status and in_time and (not symbols or o.data["symbol"] in symbols)

        chosen = [o for o in self.orders if wanted(o)]
        if request.query.get("direction", "desc") == "desc":
            chosen.reverse()
        return Response(200, [dict(o.data) for o in chosen[:limit]])

    def _get_by_client_id(self, request: Request) -> Response:
        cid = request.query.get("client_order_id", "")
        for order in self.orders:
            if order.data["client_order_id"] == cid:
                return Response(200, dict(order.data))
        return Response(404, {"code": NOT_FOUND, "message": f"order not found for {cid}"})

    def _get_order(self, request: Request, order_id: str) -> Response:
        try:
            return Response(200, self.order(order_id))
        except KeyError:
            return Response(404, {"code": NOT_FOUND, "message": "order not found"})

    def _cancel_order(self, request: Request, order_id: str) -> Response:
        try:
            order = self._find(order_id)
        except KeyError:
            return Response(404, {"code": NOT_FOUND, "message": "order not found"})
        if order.data["status"] not in OPEN_STATUSES:
            message = f'order is already in "{order.data["status"]}" state'
            return Response(422, {"code": NOT_CANCELABLE, "message": message})
        if self.cancel_leaves_pending:
            self._set(order, "pending_cancel")
        else:
            self._set(order, "canceled", "canceled_at")
        return Response(204)

    def _cancel_all(self, request: Request) -> Response:
        out = []
        for order in self.orders:
            if order.data["status"] in OPEN_STATUSES:
                self._set(order, "canceled", "canceled_at")
                out.append({"id": order.data["id"], "status": 200, "body": dict(order.data)})
        return Response(207, out)

    # --- clock and calendar ----------------------------------------------------------

    def _get_clock(self, request: Request) -> Response:
        current = self.session_at(self._now)
        upcoming = self._next_session(self._now)
        local = lambda t: t.astimezone(NEW_YORK).isoformat(timespec="microseconds")  # noqa: E731
        body = {
            "timestamp": local(self._now),
            "is_open": current is not None,
            "next_open": local(upcoming.open_utc) if upcoming else None,
            "next_close": local((current or upcoming).close_utc) if (current or upcoming) else None,
        }
        return Response(200, body)

    def _get_calendar(self, request: Request) -> Response:
        start = dt.date.fromisoformat(request.query.get("start", "1970-01-01"))
        end = dt.date.fromisoformat(request.query.get("end", "2029-12-31"))
        days = sorted((s for s in self.sessions if start <= s.day <= end), key=lambda s: s.day)
        return Response(
            200,
            [
                {
                    "date": s.day.isoformat(),
                    "open": s.open,
                    "close": s.close,
                    "session_open": "0400",
                    "session_close": "2000",
                    "settlement_date": (s.day + dt.timedelta(days=1)).isoformat(),
                }
                for s in days
            ],
        )

    # --- market data -----------------------------------------------------------------

    def _feed_denied(self, request: Request) -> Response | None:
        if request.query.get("feed", "sip") == "sip" and not self.sip_allowed:
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
        start, end = _instant(q.get("start")), _instant(q.get("end"))
        adjust = q.get("adjustment", "raw")
        items: list[tuple[str, dict[str, Any]]] = []
        for symbol in sorted(filter(None, q.get("symbols", "").split(","))):
            for bar in self.daily_bars.get(symbol, []):
                stamp = dt.datetime.combine(bar.day, dt.time(0), NEW_YORK)
                if (start and stamp < start) or (end and stamp > end):
                    continue
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
        denied = self._feed_denied(request)
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
                        "t": stamp,
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
        denied = self._feed_denied(request)
        if denied:
            return denied
        symbols = [s for s in request.query.get("symbols", "").split(",") if s in self.latest_bars]
        stamp = self._now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:00Z")
        return Response(
            200,
            {
                "bars": {
                    s: {"t": stamp, "o": p, "h": p, "l": p, "c": p, "v": 100, "n": 3, "vw": p}
                    for s in symbols
                    for p in [self.latest_bars[s]]
                }
            },
        )


def _instant(value: str | None) -> dt.datetime | None:
    """An RFC 3339 instant or a date (alpaca-py sends naive UTC ISO strings + Z or not)."""
    if not value:
        return None
    if len(value) == 10:
        return dt.datetime.combine(dt.date.fromisoformat(value), dt.time(0), NEW_YORK)
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
