"""One Alpaca account's book in the fakes: cash, positions, orders, and the rules Alpaca
applies to them (validation, buying power, fills, routing at the open, expiry at the
close). The trading-API fake holds one; the Broker-API fake one per client account.

JSON as Alpaca sends it: money and quantities are strings, ids are UUIDs, timestamps are
RFC 3339 with Z, enums spelled as Alpaca spells them.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from tests.fakes import Request, Response

NEW_YORK = ZoneInfo("America/New_York")
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
# Alpaca refuses to replace an order in these open statuses (PATCH /v2/orders/{id})
NOT_REPLACEABLE = {"accepted", "pending_new", "pending_cancel", "pending_replace"}
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


def money(value: Decimal) -> str:
    return text(value.quantize(Decimal("0.01")))


def asset_id(symbol: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"asset:{symbol}"))


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


class VenueClock:
    """The venue's clock and trading sessions, and the clock and calendar endpoints (a
    mixin of the fakes; the subclass sets `_now` and `sessions`)."""

    _now: dt.datetime
    sessions: list[FakeSession]

    @property
    def now(self) -> dt.datetime:
        return self._now

    def session_at(self, when: dt.datetime) -> FakeSession | None:
        return next((s for s in self.sessions if s.open_utc <= when < s.close_utc), None)

    def next_session(self, when: dt.datetime) -> FakeSession | None:
        return next(
            (s for s in sorted(self.sessions, key=lambda s: s.day) if s.open_utc > when), None
        )

    # --- clock and calendar ----------------------------------------------------------

    def _get_clock(self, request: Request) -> Response:
        current = self.session_at(self._now)
        upcoming = self.next_session(self._now)
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


class Market(Protocol):
    """What a ledger needs from its venue: prices, the clock and the sessions."""

    prices: dict[str, float]
    not_fractionable: set[str]  # assets traded in whole shares only
    not_tradable: set[str]

    @property
    def now(self) -> dt.datetime: ...

    def session_at(self, when: dt.datetime) -> FakeSession | None: ...

    def next_session(self, when: dt.datetime) -> FakeSession | None: ...


def asset_answer(venue: Market, symbol: str) -> Response:
    """GET /v2/assets/{symbol} (Trading API) or /v1/assets/{symbol} (Broker API): the
    fields alpaca-py's Asset requires; any symbol with a price is an ETF on Arca, others
    are 404 as at Alpaca."""
    if symbol not in venue.prices:
        return Response(404, {"code": 40410000, "message": "asset not found"})
    tradable = symbol not in venue.not_tradable
    return Response(200, {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"asset/{symbol}")), "class": "us_equity",
        "exchange": "ARCA", "symbol": symbol, "name": f"{symbol} ETF",
        "status": "active" if tradable else "inactive", "tradable": tradable,
        "marginable": True, "shortable": False, "easy_to_borrow": False,
        "fractionable": symbol not in venue.not_fractionable, "attributes": [],
    })


@dataclass
class FakeOrder:
    data: dict[str, Any]
    qty: Decimal
    filled: Decimal = Decimal(0)
    cost: Decimal = Decimal(0)  # sum of fill qty x price
    expires: dt.datetime | None = None
    starts: dt.datetime | None = None


@dataclass
class FakePosition:
    qty: Decimal
    cost: Decimal
    asset_id: str = field(default_factory=lambda: str(uuid.uuid4()))


def not_found(message: str = "order not found") -> Response:
    return Response(404, {"code": NOT_FOUND, "message": message})


class Ledger:
    """One account at the venue. Callers hold the venue's lock."""

    def __init__(
        self, market: Market, *, cash: float | Decimal, account_id: str, account_number: str
    ) -> None:
        self.market = market
        self.account_id = account_id
        self.account_number = account_number
        self.cash = dec(cash)
        self.positions: dict[str, FakePosition] = {}
        self.orders: list[FakeOrder] = []
        self._by_ref: dict[str, FakeOrder] = {}  # id and client_order_id -> order
        self.account_patch: dict[str, Any] = {}  # merged into the account JSON (None deletes)
        self.cancel_leaves_pending = False  # DELETE answers but the order stays pending_cancel
        self.fill_on_submit = 0.0  # share of a POSTed order filled before the answer
        self.refused_duplicates: list[str] = []  # client_order_ids POSTed again (422)
        # A market buy is valued this share above its price when buying power is checked
        # and reserved (Alpaca's older docs: 2.5-4%; its current ones: the ask).
        self.market_buy_collar = Decimal(0)

    # --- test control ----------------------------------------------------------------

    def hold(self, symbol: str, qty: float, avg_price: float) -> None:
        """Start with a position (bought before the test)."""
        self.positions[symbol] = FakePosition(dec(qty), dec(qty) * dec(avg_price))

    def find(self, ref: str) -> FakeOrder:
        """An order by its id or client_order_id (KeyError if none)."""
        return self._by_ref[ref]

    def fill(self, ref: str, qty: float | Decimal | None = None, price: float | None = None) -> None:
        """Execute `qty` (default: the rest) at `price` (default: the market's price)."""
        order = self.find(ref)
        status = order.data["status"]
        if status not in ROUTED:
            raise AssertionError(f"order {ref} is {status}: only routed orders fill")
        symbol = order.data["symbol"]
        amount = order.qty - order.filled if qty is None else dec(qty)
        px = dec(price if price is not None else self.market.prices[symbol])
        if amount <= 0 or order.filled + amount > order.qty:
            raise AssertionError(f"cannot fill {amount} of {order.qty} ({order.filled} filled)")
        order.filled += amount
        order.cost += amount * px
        self._book(symbol, order.data["side"], amount, px)
        avg = order.cost / order.filled
        order.data["filled_qty"] = text(order.filled)
        order.data["filled_avg_price"] = text(avg.quantize(Decimal("0.000000001")))
        done = order.filled == order.qty
        self.set(order, "filled" if done else "partially_filled", "filled_at" if done else None)

    def fill_open(self) -> int:
        """Fill every routed order at the market's prices, sells first; returns how many."""
        routed = [o for o in self.orders if o.data["status"] in ROUTED]
        for order in sorted(routed, key=lambda o: o.data["side"] != "sell"):
            self.fill(order.data["id"])
        return len(routed)

    def set(self, order: FakeOrder, status: str, stamp: str | None = None) -> None:
        order.data["status"] = status
        order.data["updated_at"] = ts(self.market.now)
        if stamp:
            order.data[stamp] = ts(self.market.now)

    def advance(self, now: dt.datetime) -> None:
        """The clock moved to `now`: route waiting orders at an open, expire day orders
        at their session's close."""
        for order in self.orders:
            status = order.data["status"]
            if status not in OPEN_STATUSES:
                continue
            if order.expires is not None and now >= order.expires:
                self.set(order, "expired", "expired_at")
            elif status == "accepted" and order.starts is not None and now >= order.starts:
                self.set(order, "new")

    def _book(self, symbol: str, side: str, qty: Decimal, price: Decimal) -> None:
        position = self.positions.setdefault(symbol, FakePosition(Decimal(0), Decimal(0)))
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

    def market_value(self) -> Decimal:
        prices = self.market.prices
        return sum((p.qty * dec(prices[s]) for s, p in self.positions.items()), Decimal(0))

    def buying_power(self) -> Decimal:
        """Cash less what open buy orders reserve (a cash account: multiplier 1)."""
        reserved = sum(
            (
                self.buy_cost(o.data["symbol"], o.qty - o.filled)
                for o in self.orders
                if o.data["side"] == "buy" and o.data["status"] in OPEN_STATUSES
            ),
            Decimal(0),
        )
        return self.cash - reserved

    def buy_cost(self, symbol: str, qty: Decimal) -> Decimal:
        """What a market buy of `qty` counts against buying power."""
        return qty * dec(self.market.prices[symbol]) * (1 + self.market_buy_collar)

    def account_json(self) -> dict[str, Any]:
        equity = self.cash + self.market_value()
        power = money(self.buying_power())
        body: dict[str, Any] = {
            "id": self.account_id,
            "account_number": self.account_number,
            "status": "ACTIVE",
            "crypto_status": "ACTIVE",
            "currency": "USD",
            "buying_power": power,
            "regt_buying_power": power,
            "daytrading_buying_power": "0",
            "non_marginable_buying_power": power,
            "options_buying_power": power,
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
            "long_market_value": money(self.market_value()),
            "short_market_value": "0",
            "position_market_value": money(self.market_value()),
            "initial_margin": "0",
            "maintenance_margin": "0",
            "last_maintenance_margin": "0",
            "sma": "0",
            "daytrade_count": 0,
            "balance_asof": self.market.now.date().isoformat(),
            "options_approved_level": 0,
            "options_trading_level": 0,
        }
        for key, value in self.account_patch.items():
            if value is None:
                body.pop(key, None)
            else:
                body[key] = value
        return body

    def positions_json(self) -> list[dict[str, Any]]:
        out = []
        for symbol, p in sorted(self.positions.items()):
            price = dec(self.market.prices[symbol])
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
                    "market_value": money(value),
                    "cost_basis": money(p.cost),
                    "unrealized_pl": money(value - p.cost),
                    "unrealized_plpc": "0",
                    "unrealized_intraday_pl": "0",
                    "unrealized_intraday_plpc": "0",
                    "current_price": text(price),
                    "lastday_price": text(price),
                    "change_today": "0",
                }
            )
        return out

    # --- orders ----------------------------------------------------------------------

    def post_order(self, body: dict[str, Any]) -> Response:
        problem = self.validate(body)
        if problem is not None:
            return problem
        now = self.market.now
        session = self.market.session_at(now)
        routed_session = session or self.market.next_session(now)
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
            "asset_id": asset_id(symbol),
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
        order = FakeOrder(
            data,
            qty,
            expires=routed_session.close_utc if routed_session else None,
            starts=routed_session.open_utc if routed_session else None,
        )
        self.orders.append(order)
        self._by_ref[data["id"]] = order
        self._by_ref[data["client_order_id"]] = order
        if session is not None and self.fill_on_submit > 0:
            now_filled = (qty * dec(self.fill_on_submit)).quantize(Decimal("0.000000001"))
            if now_filled > 0:
                self.fill(data["id"], min(now_filled, qty))
        return Response(200, dict(order.data))

    def validate(self, body: dict[str, Any]) -> Response | None:
        def invalid(message: str) -> Response:
            return Response(422, {"code": INVALID, "message": message})

        blocked = any(self.account_patch.get(flag) for flag in
                      ("trading_blocked", "account_blocked", "trade_suspended_by_user"))
        if blocked or self.account_patch.get("status", "ACTIVE") != "ACTIVE":
            return Response(403, {"code": 40310000, "message": "account is not authorized to trade"})

        for key in ("symbol", "side", "type", "time_in_force"):
            if not body.get(key):
                return invalid(f"{key} is required")
        if body.get("qty") is None:
            return invalid("qty or notional is required")
        cid = body.get("client_order_id")
        if cid and cid in self._by_ref:
            self.refused_duplicates.append(cid)
            return invalid("client_order_id must be unique")
        if cid and len(cid) > 128:
            return invalid("client_order_id must be at most 128 characters")
        symbol = body["symbol"]
        prices = self.market.prices
        if symbol not in prices:
            return invalid(f'asset "{symbol}" not found')
        if symbol in self.market.not_tradable:  # Alpaca refuses an inactive asset's orders
            return invalid(f'asset "{symbol}" is not tradable')
        qty = dec(body["qty"])
        if qty <= 0:
            return invalid("qty must be > 0")
        if -qty.as_tuple().exponent > 9:  # type: ignore[operator]
            return invalid("qty must have at most 9 decimal places")
        if qty != qty.to_integral_value() and symbol in self.market.not_fractionable:
            return invalid(f'asset "{symbol}" is not fractionable')
        if qty != qty.to_integral_value() and (
            body["type"] != "market" or body["time_in_force"] != "day"
        ):
            return invalid("fractional orders must be DAY orders")
        if body["side"] == "buy" and self.buy_cost(symbol, qty) > self.buying_power():
            return Response(403, {  # Alpaca's answer carries both figures
                "code": INSUFFICIENT, "message": "insufficient buying power",
                "buying_power": money(self.buying_power()),
                "cost_basis": money(self.buy_cost(symbol, qty)),
            })
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

    def list_orders(self, query: dict[str, str]) -> Response:
        status = query.get("status", "open")
        limit = min(int(query.get("limit", 50)), 500)
        symbols = set(filter(None, query.get("symbols", "").split(",")))
        after, until = instant(query.get("after")), instant(query.get("until"))

        def wanted(o: FakeOrder) -> bool:
            is_open = o.data["status"] in OPEN_STATUSES
            by_status = status == "all" or (status == "open") == is_open
            submitted = instant(o.data["submitted_at"])
            assert submitted is not None
            in_time = (after is None or submitted > after) and (until is None or submitted <= until)
            return by_status and in_time and (not symbols or o.data["symbol"] in symbols)

        chosen = [o for o in self.orders if wanted(o)]
        if query.get("direction", "desc") == "desc":
            chosen.reverse()
        return Response(200, [dict(o.data) for o in chosen[:limit]])

    def get_by_client_id(self, cid: str) -> Response:
        order = self._by_ref.get(cid)
        if order is None or order.data["client_order_id"] != cid:
            return not_found(f"order not found for {cid}")
        return Response(200, dict(order.data))

    def get_order(self, order_id: str) -> Response:
        order = self._by_ref.get(order_id)
        if order is None:
            return not_found()
        return Response(200, dict(order.data))

    def replace_order(self, order_id: str, body: dict[str, Any]) -> Response:
        """PATCH /v2/orders/{id} as Alpaca does it: the order becomes `replaced` (keeping
        the fills it had) with `replaced_by` naming a new order, which has its own id and
        client_order_id, `replaces` naming the old one, nothing filled, and the old one's
        fields but those the body changes (qty, limit_price, stop_price, time_in_force).
        Refused as Alpaca's reference refuses them: a quantity change of a fractional
        order or to a fractional quantity ("You can only patch full shares"), and a price
        a market order does not have."""
        old = self._by_ref.get(order_id)
        if old is None:
            return not_found()
        status = old.data["status"]
        if status not in OPEN_STATUSES or status in NOT_REPLACEABLE:
            return Response(422, {"code": INVALID, "message": f"order is {status}: not replaceable"})
        refused = _unreplaceable(old, body)
        if refused is not None:
            return Response(422, {"code": INVALID, "message": refused})
        cid = body.get("client_order_id") or str(uuid.uuid4())
        if cid in self._by_ref:
            return Response(422, {"code": INVALID, "message": "client_order_id must be unique"})
        now = ts(self.market.now)
        qty = dec(body["qty"]) if body.get("qty") is not None else old.qty
        data = dict(old.data) | {
            "id": str(uuid.uuid4()), "client_order_id": cid, "created_at": now,
            "updated_at": now, "submitted_at": now, "filled_at": None, "qty": text(qty),
            "filled_qty": "0", "filled_avg_price": None, "replaces": old.data["id"],
            "replaced_by": None, "replaced_at": None,
            "status": "new" if self.market.session_at(self.market.now) else "accepted",
        }
        for key in ("limit_price", "stop_price", "time_in_force"):
            if body.get(key) is not None:
                data[key] = str(body[key])
        if data["limit_price"] is not None:
            data["type"] = data["order_type"] = "limit"
        new = FakeOrder(data, qty, expires=old.expires, starts=old.starts)
        self.orders.append(new)
        self._by_ref[data["id"]] = self._by_ref[cid] = new
        self.set(old, "replaced", "replaced_at")
        old.data["replaced_by"] = data["id"]
        return Response(200, dict(data))

    def forget(self, ref: str) -> None:
        """Alpaca no longer knows the order: every lookup of it answers 404."""
        order = self.find(ref)
        self.orders.remove(order)
        for key in (order.data["id"], order.data["client_order_id"]):
            self._by_ref.pop(key, None)

    def cancel_order(self, order_id: str) -> Response:
        order = self._by_ref.get(order_id)
        if order is None:
            return not_found()
        if order.data["status"] not in OPEN_STATUSES:
            message = f'order is already in "{order.data["status"]}" state'
            return Response(422, {"code": NOT_CANCELABLE, "message": message})
        if self.cancel_leaves_pending:
            self.set(order, "pending_cancel")
        else:
            self.set(order, "canceled", "canceled_at")
        return Response(204)

    def cancel_all(self) -> Response:
        out = []
        for order in self.orders:
            if order.data["status"] in OPEN_STATUSES:
                self.set(order, "canceled", "canceled_at")
                out.append({"id": order.data["id"], "status": 200, "body": dict(order.data)})
        return Response(207, out)


def instant(value: str | None) -> dt.datetime | None:
    """An RFC 3339 instant or a date (alpaca-py sends naive UTC ISO strings + Z or not)."""
    if not value:
        return None
    if len(value) == 10:
        return dt.datetime.combine(dt.date.fromisoformat(value), dt.time(0), NEW_YORK)
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _unreplaceable(old: FakeOrder, body: dict[str, Any]) -> str | None:
    """Why Alpaca refuses this replacement of `old`, or None. Its reference for PATCH
    /v2/orders/{id}: "You can only patch full shares for now. Qty of equity fractional/
    notional orders are not allowed to change"; limit_price and stop_price are for the
    order types that have them."""
    qty = body.get("qty")
    whole = old.qty == old.qty.to_integral_value()
    if qty is not None and not (whole and dec(qty) == dec(qty).to_integral_value()):
        return "qty of a fractional order cannot be changed; only whole shares can be patched"
    if old.data.get("type") == "market":
        for key in ("limit_price", "stop_price"):
            if body.get(key) is not None:
                return f"{key} cannot be set on a market order"
    return None
