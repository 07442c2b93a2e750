"""Alpaca as a LiveBroker, over alpaca-py's TradingClient.

Every request has a timeout and idempotent ones are retried (bot.net). alpaca-py's own
retry (429/504, a fixed 3 s sleep, POST included) is switched off so an order POST is
never repeated blindly: after any failure of a submit the order is looked up by its
client_order_id; if it exists it is adopted, if it provably does not the submit is retried
within the policy's bound (tries, Retry-After and time budget), and only then BrokerError
is raised. When the lookup fails too,
the order is returned unconfirmed (status NEW, no broker id) and tracked by its
client_order_id: polling resolves it. Statuses are mapped in bot.broker.alpaca_orders.

An order replaced at Alpaca (by the user; the bot never replaces) is read together with
its replacements (`replaced_by`, possibly several in a row) as one order continued under
the bot's client_order_id, wherever the adapter reads an order: polls, lookups, listings
and the restart's reconciliation. A replacement Alpaca cannot give (404) leaves the order
outstanding with a message naming both ids, and is tried again at each read.

A `send_gate` may refuse an order before any try of its submit, retries included, and
again just before the request leaves, after any wait for a shared request budget: the
daemon refuses a buy once the session has closed, since a retry that reached Alpaca after
the close would be queued there and fill at the next open's prices.

A submit answered with fills (a liquid market order is often filled before the reply)
reports them at once through take_reports(), so the job that sent the order records them
before it ends; poll() reports them too if nobody took them.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

import numpy as np
import structlog
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, QueryOrderStatus, TimeInForce
from alpaca.trading.models import Order as AlpacaOrder
from alpaca.trading.requests import GetCalendarRequest, GetOrdersRequest, MarketOrderRequest
from pydantic import ValidationError

from bot.broker.alpaca_orders import (
    ALPACA_STATUS,
    ANSWER_ERRORS,
    QTY_DECIMALS,
    api_broker_error,
    api_error_parts,
    convert_order,
    convert_replaced,
    describe_answer_error,
    is_auth_failure,
    new_york_to_utc,
    parse_number,
    sdk_call,
    settled,
    to_utc,
    trading_refusal,
    transport_broker_error,
    validation_summary,
)
from bot.broker.base import AccountInfo, BrokerError, MarketClock, SendRefused, TradingSession
from bot.errors import BotError
from bot.net import (
    ALPACA_POLICY,
    RETRY_STATUSES,
    RetryPolicy,
    checked_before_sending,
    response_retry_after,
    take_over_sdk_retries,
)
from bot.secrets import PAPER_TRADING_URL, Credentials, load_credentials, load_endpoints
from bot.types import Fill, Order, OrderRequest, OrderStatus, Side

log = structlog.get_logger(__name__)

MAX_ORDERS = 500  # Alpaca's largest page for GET /v2/orders
UNCONFIRMED = "unconfirmed"  # status_message prefix of an order whose submit is in doubt
MAX_REPLACEMENTS = 50  # a longer chain of replacements is taken for a loop
#: how long an order in doubt may stay unknown to the venue before it counts as never
#: placed: its lookup by client_order_id may lag the submit that created it
UNCONFIRMED_GRACE = dt.timedelta(minutes=2)
#: Alpaca's 422 message when a client_order_id is taken: the order exists
DUPLICATE_ID = "client_order_id must be unique"


class SubmitUnconfirmedError(BrokerError):
    """A submit failed and the follow-up lookup failed too: the order may exist at the
    venue. submit() turns it into an unconfirmed order that poll() looks up by its
    client_order_id, so it is never re-sent blindly nor forgotten."""

    def __init__(self, client_order_id: str, message: str) -> None:
        self.client_order_id = client_order_id
        super().__init__(f"order {client_order_id}: {message}; its state at the venue is unknown")


def make_trading_client(
    credentials: Credentials, base_url: str, paper: bool, policy: RetryPolicy
) -> TradingClient:
    """A TradingClient whose session has our timeout/retry adapter and no SDK retry."""
    client = TradingClient(
        api_key=credentials.key_id,
        secret_key=credentials.secret,
        paper=paper,
        url_override=base_url,
    )
    # Without this a 429 on POST /orders is re-sent after 3 s by the SDK, outside our
    # lookup-before-retry rule.
    take_over_sdk_retries(client, policy, "Alpaca trading API")
    return client


@dataclass
class _Reported:
    """What poll() has reported of one order: filled quantity and its average price."""

    qty: float = 0.0
    avg: float | None = None


#: why an order must not be sent now, or None: asked before every try of a submit
SendGate = Callable[[OrderRequest], str | None]


class AlpacaBroker:
    """LiveBroker over Alpaca's trading API; market day orders only."""

    def __init__(
        self, client: TradingClient, *, paper: bool = True, policy: RetryPolicy | None = None
    ) -> None:
        self._client = client
        self.paper = paper
        self.policy = policy or ALPACA_POLICY
        self.send_gate: SendGate | None = None  # see the module's docstring
        self._requests: dict[str, OrderRequest] = {}
        self._tracked: dict[str, Order] = {}  # followed by poll() until final
        # Kept after an order is final, so one adopted again (a 422 on a re-sent client id)
        # never has its fills reported twice.
        self._reported: dict[str, _Reported] = {}
        # Updates known without asking the venue (fills in a submit reply), not yet taken.
        self._known: list[tuple[Order, Fill | None]] = []
        self._account: AccountInfo | None = None
        self._positions: dict[str, float] = {}
        self._values: dict[str, float] = {}  # market value per symbol, as Alpaca reports it
        # Replacement chains already logged (client_order_id, last id): once, not per poll.
        self._replacements_logged: set[tuple[str, str]] = set()

    @classmethod
    def connect(
        cls,
        credentials: Credentials,
        *,
        base_url: str = PAPER_TRADING_URL,
        paper: bool = True,
        policy: RetryPolicy | None = None,
    ) -> AlpacaBroker:
        policy = policy or ALPACA_POLICY
        return cls(
            make_trading_client(credentials, base_url, paper, policy), paper=paper, policy=policy
        )

    @classmethod
    def from_env(cls, *, live: bool = False, policy: RetryPolicy | None = None) -> AlpacaBroker:
        """Credentials and endpoint from the environment (bot.secrets); paper by default."""
        endpoints = load_endpoints(live=live)
        return cls.connect(
            load_credentials(), base_url=endpoints.trading_url, paper=endpoints.paper, policy=policy
        )

    def __repr__(self) -> str:
        return f"AlpacaBroker(url={self._client._base_url!s}, paper={self.paper})"

    # --- snapshots -------------------------------------------------------------------

    def refresh(self) -> None:
        account = self.account()
        positions = sdk_call("positions", self._client.get_all_positions)
        held: dict[str, float] = {}
        values: dict[str, float] = {}
        for p in positions:
            held[p.symbol] = held.get(p.symbol, 0.0) + parse_number(
                p.qty, f"positions[{p.symbol}].qty"
            )
            value = (math.nan if p.market_value is None
                     else parse_number(p.market_value, f"positions[{p.symbol}].market_value"))
            values[p.symbol] = values.get(p.symbol, 0.0) + value
        self._account, self._positions, self._values = account, held, values

    def account(self) -> AccountInfo:
        raw = sdk_call("account", self._client.get_account)
        info = AccountInfo(
            account_number=raw.account_number,
            equity=parse_number(raw.equity, "account.equity"),
            cash=parse_number(raw.cash, "account.cash"),
            buying_power=parse_number(raw.buying_power, "account.buying_power"),
            status=getattr(raw.status, "value", str(raw.status)),
            paper=self.paper,
            cannot_trade=trading_refusal(raw),
        )
        self._account = info
        return info

    def trading_refusal(self) -> str | None:
        return None if self._account is None else self._account.cannot_trade

    def cash(self) -> float:
        """Cash we may spend: the account's cash less what our open buys will still cost,
        and never more than its buying power. Alpaca opens margin accounts, whose buying
        power is 2-4x the cash and whose cash does not drop while a buy is open: without
        the deduction a second batch of buys would be paid for twice, on margin."""
        if self._account is None:
            self.refresh()
        assert self._account is not None
        return max(0.0, min(self._account.cash - self.open_buy_cost(), self._account.buying_power))

    def open_buy_cost(self) -> float:
        """What the tracked open buys still cost at the prices they were sized on (an
        order without a usable reference price counts nothing)."""
        return sum(
            max(o.request.quantity - o.filled_quantity, 0.0) * o.request.reference_price
            for o in self._tracked.values()
            if o.request.side is Side.BUY and not o.status.is_final
            and 0.0 < o.request.reference_price < math.inf
        )

    def cash_balance(self) -> float:
        """The account's cash, open buys' reservations not deducted (negative if it
        borrowed): Alpaca's equity is this plus the positions' market value."""
        if self._account is None:
            self.refresh()
        assert self._account is not None
        return self._account.cash

    def holdings(self, symbols: tuple[str, ...]) -> np.ndarray:
        if self._account is None:
            self.refresh()
        return np.array([self._positions.get(s, 0.0) for s in symbols], dtype=float)

    def positions_outside(self, symbols: tuple[str, ...]) -> dict[str, tuple[float, float]]:
        """Positions in funds not among `symbols` (a client moved to another profile, a
        fund dropped from the universe): (quantity, market value; NaN if Alpaca gave
        none) per symbol."""
        if self._account is None:
            self.refresh()
        known = set(symbols)
        return {s: (q, self._values.get(s, math.nan)) for s, q in self._positions.items()
                if s not in known and abs(q) > 1e-9}

    # --- orders ----------------------------------------------------------------------

    def open_order_count(self) -> int:
        """Tracked orders not yet final, unconfirmed ones included."""
        return sum(1 for o in self._tracked.values() if not o.status.is_final)

    def submit(self, request: OrderRequest, now: dt.datetime) -> Order:
        """Send a market day order. Raises only when the order provably does not exist at
        the venue; an order in doubt comes back unconfirmed and tracked."""
        qty = round(float(request.quantity), QTY_DECIMALS)
        if not math.isfinite(qty) or qty <= 0:
            return _rejected(
                request, now, f"local: quantity {request.quantity!r} is not positive at 9 decimals"
            )
        try:
            order_data = MarketOrderRequest(
                symbol=request.symbol,
                qty=qty,
                side=OrderSide(request.side.value),
                time_in_force=TimeInForce.DAY,
                client_order_id=request.client_order_id,
            )
        except ValidationError as exc:
            return _rejected(request, now, f"local: {validation_summary(exc)}")
        self._requests[request.client_order_id] = request
        raw: AlpacaOrder | None = None
        try:
            raw, order = self._submit_with_lookup(request, order_data, now)
        except SubmitUnconfirmedError as exc:
            order = _unconfirmed(request, now, exc)
        self._note_answer(order, raw)
        if order.status is OrderStatus.REJECTED:
            return order  # already logged as order_rejected
        log.info(
            "order_submitted",
            client_order_id=request.client_order_id,
            symbol=request.symbol,
            side=request.side.value,
            qty=qty,
            status=order.status.value,
            message=order.status_message,
        )
        return order

    def _note_answer(self, order: Order, raw: AlpacaOrder | None) -> None:
        """Follow a submitted (or adopted) order; fills its answer already shows are
        reported now (take_reports), from what this process reported of it before."""
        cid = order.request.client_order_id
        reported = self._reported.setdefault(cid, _Reported())
        fill = self._new_fill(reported, order, raw) if raw is not None else None
        if fill is not None:
            self._known.append((order, fill))
        if order.status.is_final and reported.qty >= order.filled_quantity - 1e-12:
            self._tracked.pop(cid, None)  # nothing left to report
            return
        self._follow(order)

    def take_reports(self) -> list[tuple[Order, Fill | None]]:
        """Updates known without asking the venue (fills in a submit reply) that nobody
        has taken yet; each is returned once (here or by poll())."""
        known, self._known = self._known, []
        return known

    def _submit_with_lookup(
        self, request: OrderRequest, data: MarketOrderRequest, now: dt.datetime
    ) -> tuple[AlpacaOrder | None, Order]:
        """The venue's answer to the order and ours read from it (raw None: rejected
        locally from the venue's refusal)."""
        cid = request.client_order_id
        policy = self.policy
        problem, retry_after, started, tries = "", None, policy.clock(), 0
        # An attempt answered 5xx or lost in transport may have created the order: from
        # then on a lookup that finds nothing proves nothing (it may lag the venue).
        in_doubt = False
        gate = self.send_gate
        last_check = None if gate is None else partial(_still_open, gate, request)
        for attempt in range(policy.attempts):
            if attempt:
                wait = policy.delay(attempt - 1, retry_after)
                refused = policy.refusal(started, wait, retry_after)
                if refused is not None:
                    problem += f"; no further try: {refused}"
                    break
                policy.sleep(wait)
            closed = gate(request) if gate is not None else None
            if closed is not None:
                _gate_refused(cid, closed, problem, tries)
            tries += 1
            try:
                if last_check is None:
                    raw = self._client.submit_order(data)
                else:  # asked again after the throttle: a token's wait may outlast the session
                    with checked_before_sending(last_check):
                        raw = self._client.submit_order(data)
            except _GateClosed as closing:
                _gate_refused(cid, closing.why, problem, tries - 1)
            except APIError as exc:
                status, code, message = api_error_parts(exc)
                if is_auth_failure(status, code):
                    raise BrokerError(
                        f"submit {cid}: HTTP {status}: {message} (check the API keys)"
                    ) from exc
                existing = self._lookup_after_error(request, f"HTTP {status}")
                if existing is not None:
                    return existing
                if status not in RETRY_STATUSES:
                    refusal = f"{status} {code if code is not None else '-'}: {message}"
                    if in_doubt or DUPLICATE_ID in message:
                        # Refused because an earlier attempt's order exists (its id is
                        # taken, or it holds the buying power): followed, not forgotten.
                        raise SubmitUnconfirmedError(
                            cid, f"refused ({refusal}) after {problem}; not found by its id yet") from exc
                    return None, _rejected(request, now, refusal)
                in_doubt = in_doubt or status >= 500
                problem, retry_after = f"HTTP {status} {message}", response_retry_after(exc.response)
                continue
            except ANSWER_ERRORS as exc:  # transport, bad JSON, bad model
                problem, retry_after, in_doubt = describe_answer_error(exc), None, True
                existing = self._lookup_after_error(request, problem)
                if existing is not None:
                    return existing
                continue
            try:
                return raw, convert_order(raw, request)
            except BrokerError as exc:
                raise SubmitUnconfirmedError(cid, f"accepted but unreadable: {exc}") from exc
        # Not found after every attempt: sent again later (a queued buy's next release)
        # under the same client_order_id, which the venue refuses if it exists after all.
        raise BrokerError(
            f"order {cid} not placed after {tries} attempts (last: {problem}); "
            "the venue confirms it does not exist"
        )

    def _lookup_after_error(
        self, request: OrderRequest, error: str
    ) -> tuple[AlpacaOrder, Order] | None:
        """The order as the venue has it after a failed submit (its answer and ours read
        from it); None if provably absent."""
        cid = request.client_order_id
        try:
            raw, order = self._read(self._client.get_order_by_client_id(cid), request)
        except APIError as exc:
            if exc.status_code == 404:
                log.warning("order_submit_failed_absent", client_order_id=cid, error=error)
                return None
            status, _code, message = api_error_parts(exc)
            raise SubmitUnconfirmedError(
                cid, f"submit failed ({error}), lookup HTTP {status} {message}"
            ) from exc
        except (*ANSWER_ERRORS, BrokerError) as exc:
            detail = str(exc) if isinstance(exc, BrokerError) else describe_answer_error(exc)
            raise SubmitUnconfirmedError(cid, f"submit failed ({error}), lookup: {detail}") from exc
        log.warning(
            "order_adopted_after_error", client_order_id=cid, error=error, status=order.status.value
        )
        if (
            raw.symbol != request.symbol
            or raw.qty is None
            or abs(parse_number(raw.qty, "order.qty") - round(request.quantity, QTY_DECIMALS))
            > 1e-9
        ):
            log.warning(
                "adopted_order_differs",
                client_order_id=cid,
                venue_symbol=raw.symbol,
                venue_qty=raw.qty,
            )
        return raw, order

    def find_order(self, client_order_id: str) -> Order | None:
        raw = self._find_raw(client_order_id, f"find order {client_order_id}")
        return None if raw is None else self._read(raw, self._requests.get(client_order_id))[1]

    def open_orders(self) -> list[Order]:
        query = GetOrdersRequest(status=QueryOrderStatus.OPEN, limit=MAX_ORDERS, nested=False)
        raws = sdk_call("open orders", self._client.get_orders, query)
        if len(raws) >= MAX_ORDERS:
            log.warning("open_orders_truncated", limit=MAX_ORDERS)
        return [self._read(r, self._requests.get(r.client_order_id))[1] for r in raws]

    def closed_orders(self, after: dt.datetime) -> list[Order]:
        """Orders submitted after `after` that are final at the venue (newest first): a
        restart finds here the orders that filled while the daemon was down."""
        query = GetOrdersRequest(
            status=QueryOrderStatus.CLOSED, after=after, limit=MAX_ORDERS, nested=False
        )
        raws = sdk_call("closed orders", self._client.get_orders, query)
        if len(raws) >= MAX_ORDERS:
            log.warning("closed_orders_truncated", limit=MAX_ORDERS, after=after.isoformat())
        return [self._read(r, self._requests.get(r.client_order_id))[1] for r in raws]

    def followed_orders(self) -> list[Order]:
        return [o for o in self._tracked.values() if not o.status.is_final]

    def track(self, order: Order, fills: tuple[float, float | None] | None = None) -> None:
        """Follow `order` from what the caller already recorded: `fills` is the quantity
        and average price of its recorded fills (default: its filled_quantity), which are
        not reported again; the rest of its filled quantity is, by the next poll. An order
        that is final with every fill recorded is not followed, only remembered (so a 422
        adopting it later reports nothing twice)."""
        self._requests[order.request.client_order_id] = order.request
        qty, avg = fills if fills is not None else (order.filled_quantity, order.average_price)
        self._follow(order, _Reported(qty, avg if qty > 0 else None))

    def _follow(self, order: Order, recorded: _Reported | None = None) -> None:
        """Track `order` in poll(), from the larger of what the caller recorded and what
        this process already reported for its client_order_id."""
        cid = order.request.client_order_id
        reported = self._reported.get(cid, _Reported())
        if recorded is not None and recorded.qty > reported.qty:
            reported = recorded
        self._reported[cid] = reported
        if order.status.is_final and reported.qty >= order.filled_quantity - 1e-12:
            return
        self._tracked[cid] = order

    def poll(self, now: dt.datetime) -> list[tuple[Order, Fill | None]]:
        # Fetch and read everything first: a failure then changes nothing, loses no report.
        fresh = {cid: self._latest(order, now) for cid, order in self._tracked.items()}
        events = self.take_reports()
        for cid, (raw, latest) in fresh.items():
            order = self._tracked[cid]
            before = (order.status, order.status_message)
            fill = self._new_fill(self._reported[cid], latest, raw)
            _copy_state(latest, order)
            if fill is not None or (order.status, order.status_message) != before:
                events.append((order, fill))
            if latest.status.is_final:
                del self._tracked[cid]
        return events

    def _latest(self, order: Order, now: dt.datetime) -> tuple[AlpacaOrder | None, Order]:
        """The venue's order and ours read from it. An unconfirmed order (no broker id yet)
        is looked up by client_order_id; if the venue still has none UNCONFIRMED_GRACE
        after the submit, it was never placed. An order the venue no longer knows by its
        id nor by its client_order_id is closed as vanished: one such order must not
        fail every poll (and every job after it) until a restart."""
        cid = order.request.client_order_id
        if not order.broker_order_id:
            raw = self._find_raw(cid, f"order {cid}")
            if raw is not None:
                return self._read(raw, order.request)
            if now - order.submitted_at < UNCONFIRMED_GRACE:
                return None, replace(order)  # the venue may lag: ask again later
            log.warning("order_unconfirmed_absent", client_order_id=cid)
            return None, Order(
                order.request, OrderStatus.REJECTED, order.submitted_at, None,
                status_message="not placed: the venue has no order with this client_order_id "
                "after an unconfirmed submit",
            )
        raw = sdk_call(f"order {cid}", self._order_or_none, order.broker_order_id)
        if raw is None:
            raw = self._find_raw(cid, f"order {cid}")
        if raw is None:
            log.error("order_vanished", client_order_id=cid, order_id=order.broker_order_id)
            return None, replace(
                order, status=OrderStatus.CANCELED,
                status_message="vanished: the broker no longer knows this order by its id "
                "nor by its client_order_id",
            )
        return self._read(raw, order.request)

    def _order_or_none(self, order_id: str) -> AlpacaOrder | None:
        """The venue's order by its id; None if it answers 404 (other failures raise)."""
        try:
            return self._client.get_order_by_id(order_id)
        except APIError as exc:
            if exc.status_code == 404:
                return None
            raise

    def _read(
        self, raw: AlpacaOrder, request: OrderRequest | None
    ) -> tuple[AlpacaOrder, Order]:
        """Ours for the venue's order, and the answer it was read from: for an order
        replaced at Alpaca, the last replacement's (see convert_replaced). A chain of an
        order we know (`request`) is logged once."""
        if raw.status.value != "replaced":
            return raw, convert_order(raw, request)
        chain, missing = self._replacements(raw)
        order = convert_replaced(chain, request, missing)
        cid, last = raw.client_order_id, missing or str(chain[-1].id)
        if request is not None and (cid, last) not in self._replacements_logged:
            self._replacements_logged.add((cid, last))
            ids = [str(r.id) for r in chain]
            if missing is None:
                log.warning("order_replaced_at_venue", client_order_id=cid, order_id=ids[0],
                            replaced_by=last, chain=ids, quantity=order.request.quantity)
            else:
                log.error("order_replacement_not_found", client_order_id=cid,
                          order_id=ids[-1], replaced_by=missing, chain=ids,
                          message=order.status_message)
        return chain[-1], order

    def _replacements(self, raw: AlpacaOrder) -> tuple[list[AlpacaOrder], str | None]:
        """`raw` and the orders that replaced it one after another, to the first one not
        replaced; with the id of a replacement Alpaca cannot give (404, or none named),
        before which the chain ends. Other failures raise, as any failed read does."""
        chain = [raw]
        while chain[-1].status.value == "replaced":
            if chain[-1].replaced_by is None:
                return chain, ""
            new_id = str(chain[-1].replaced_by)
            if len(chain) > MAX_REPLACEMENTS:
                raise BrokerError(
                    f"order {raw.client_order_id}: more than {MAX_REPLACEMENTS} replacements "
                    f"from {raw.id}"
                )
            what = f"order {raw.client_order_id}: replacement {new_id} of order {chain[-1].id}"
            try:
                chain.append(self._client.get_order_by_id(new_id))
            except APIError as exc:
                if exc.status_code == 404:
                    return chain, new_id
                raise api_broker_error(what, exc) from exc
            except ANSWER_ERRORS as exc:
                raise transport_broker_error(what, exc) from exc
        return chain, None

    def _new_fill(
        self, reported: _Reported, latest: Order, raw: AlpacaOrder | None
    ) -> Fill | None:
        """A Fill for the quantity filled since the last report, priced from the change
        in the average price (avg1*q1 - avg0*q0) / (q1 - q0)."""
        q0, q1 = reported.qty, latest.filled_quantity
        if q1 <= q0 + 1e-12:
            if q1 < q0 - 1e-9:
                log.warning(
                    "filled_quantity_decreased", client_order_id=latest.request.client_order_id
                )
            return None
        if raw is None:  # a vanished order: no answer to price the rest from
            log.error("fill_unpriced", client_order_id=latest.request.client_order_id,
                      filled=q1, reported=q0)
            return None
        avg1 = latest.average_price or 0.0  # convert_order requires it once filled_qty > 0
        avg0 = reported.avg
        qty = q1 - q0
        # Alpaca rounds the average to 9 decimals; the difference of two rounded products
        # carries that error, so the derived price is rounded to 6 decimals.
        price = avg1 if q0 <= 0 or avg0 is None else round((avg1 * q1 - avg0 * q0) / qty, 6)
        if not math.isfinite(price) or price <= 0:
            price = avg1
        reported.qty, reported.avg = q1, avg1
        when = (
            raw.filled_at
            if latest.status is OrderStatus.FILLED and raw.filled_at
            else raw.updated_at
        )
        req = latest.request
        # The cost against the price the order was sized on, signed: a buy filled above
        # it or a sell below it cost money, the other way round earned some (a gap at a
        # queued order's open either way). As an absolute value every good fill was a cost.
        if req.reference_price > 0:
            worse = price - req.reference_price if req.side is Side.BUY else req.reference_price - price
            slippage = worse * qty
        else:
            slippage = 0.0
        return Fill(
            req.client_order_id, req.symbol, req.side, qty, price, 0.0, slippage, to_utc(when)
        )

    def cancel(self, client_order_id: str) -> None:
        """Ask the venue to cancel; the resulting status arrives through poll(). An order
        already final (or already being canceled) is left alone; one replaced at Alpaca
        is canceled as its last replacement."""
        what = f"cancel {client_order_id}"
        raw = self._find_current(client_order_id, what)
        if raw is None:
            raise BrokerError(f"{what}: no such order at the venue")
        if settled(raw):
            return
        try:
            self._client.cancel_order_by_id(raw.id)
        except APIError as exc:
            # 422 "not cancelable": a retried DELETE that had worked, or a fill in between.
            again = (
                self._find_current(client_order_id, what) if exc.status_code in (404, 422)
                else None
            )
            if again is not None and settled(again):
                return
            raise api_broker_error(what, exc) from exc
        except ANSWER_ERRORS as exc:
            raise transport_broker_error(what, exc) from exc
        log.info("order_cancel_requested", client_order_id=client_order_id)

    def _find_current(self, client_order_id: str, what: str) -> AlpacaOrder | None:
        """The venue's order by our id, or the last order that replaced it."""
        raw = self._find_raw(client_order_id, what)
        if raw is None or raw.status.value != "replaced":
            return raw
        chain, missing = self._replacements(raw)
        if missing is not None:
            raise BrokerError(f"{what}: order {chain[-1].id} was replaced at Alpaca by "
                              f"{missing or 'an order it does not name'}, which it does not know")
        return chain[-1]

    def _find_raw(self, client_order_id: str, what: str) -> AlpacaOrder | None:
        try:
            return self._client.get_order_by_client_id(client_order_id)
        except APIError as exc:
            if exc.status_code == 404:
                return None
            raise api_broker_error(what, exc) from exc
        except ANSWER_ERRORS as exc:
            raise transport_broker_error(what, exc) from exc

    def cancel_all(self) -> int:
        """Cancel every open order at the venue (shutdown, kill switch); returns how many
        cancel requests the venue accepted."""
        answers = sdk_call("cancel all", self._client.cancel_orders)
        return sum(1 for a in answers if 200 <= a.status < 300)

    # --- clock and calendar ----------------------------------------------------------

    def clock(self) -> MarketClock:
        raw = sdk_call("clock", self._client.get_clock)
        return MarketClock(
            to_utc(raw.timestamp), bool(raw.is_open), to_utc(raw.next_open), to_utc(raw.next_close)
        )

    def asset_problems(self, symbols: tuple[str, ...], fractional: bool) -> list[str]:
        """What would stop the bot trading `symbols` here: an asset Alpaca does not know
        or does not trade, or (when the config sends fractional quantities) one it trades
        in whole shares only, whose every fractional order it would reject."""
        problems = []
        for symbol in symbols:
            asset = sdk_call(f"asset {symbol}", self._client.get_asset, symbol)
            if not asset.tradable:
                problems.append(f"{symbol} is not tradable at Alpaca")
            elif fractional and not asset.fractionable:
                problems.append(f"{symbol} is not fractionable at Alpaca (whole shares only)")
        return problems

    def require_tradable(self, symbols: tuple[str, ...], fractional: bool) -> None:
        """BotError naming what asset_problems finds, and the setting that avoids a
        whole-share asset's rejections: the daemon refuses to start, the platform to
        decide the profile."""
        problems = self.asset_problems(symbols, fractional)
        if problems:
            hint = ("; set rebalance.fractional = false to trade whole shares"
                    if any("fractionable" in p for p in problems) else "")
            raise BotError(f"cannot trade the universe: {'; '.join(problems)}{hint}")

    def calendar(self, start: dt.date, end: dt.date) -> list[TradingSession]:
        """Sessions with their UTC open and close; Alpaca sends New York wall times, so
        early closes (13:00) and DST are converted per day."""
        days = sdk_call(
            "calendar", self._client.get_calendar, GetCalendarRequest(start=start, end=end)
        )
        return [
            TradingSession(d.date, new_york_to_utc(d.open), new_york_to_utc(d.close))
            for d in sorted(days, key=lambda d: d.date)
        ]

    # --- helpers ---------------------------------------------------------------------



def _copy_state(source: Order, target: Order) -> None:
    target.request = source.request  # the same, but its quantity after a replacement
    target.status = source.status
    target.broker_order_id = source.broker_order_id
    target.filled_quantity = source.filled_quantity
    target.average_price = source.average_price
    if source.status_message is not None:
        target.status_message = source.status_message
    elif (target.status_message or "").startswith((UNCONFIRMED, ALPACA_STATUS)):
        # Confirmed now, or Alpaca's status maps onto ours again (`pending_new` then
        # filled): clear the stale note with "" (the trade log keeps a message it is
        # given None for). Our other messages ("sent after the sells filled", "adopted
        # ...") stay: the venue saying nothing is not a change to report.
        target.status_message = ""


class _GateClosed(Exception):
    """The send gate refused a submit just before its request left (not an HTTP error)."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


def _still_open(gate: SendGate, request: OrderRequest) -> None:
    closed = gate(request)
    if closed is not None:
        raise _GateClosed(closed)


def _gate_refused(cid: str, why: str, problem: str, tries: int) -> None:
    """Stop a submit the send gate refuses, as one whose tries ran out: each try's order
    was looked up absent, and one that exists after all is refused by its client_order_id
    when sent again (and then adopted)."""
    log.warning("order_not_sent", client_order_id=cid, reason=why, tries=tries)
    after = f" after {tries} attempts (last: {problem})" if tries else ""
    raise SendRefused(f"order {cid} not sent{after}: {why}")


def _unconfirmed(request: OrderRequest, now: dt.datetime, exc: SubmitUnconfirmedError) -> Order:
    """The order as far as we know after a submit in doubt: outstanding, no broker id,
    to be looked up by its client_order_id (never re-sent blindly)."""
    log.warning("order_unconfirmed", client_order_id=request.client_order_id, error=str(exc))
    return Order(request, OrderStatus.NEW, now, None, status_message=f"{UNCONFIRMED}: {exc}")


def _rejected(request: OrderRequest, now: dt.datetime, message: str) -> Order:
    log.warning("order_rejected", client_order_id=request.client_order_id, message=message)
    return Order(request, OrderStatus.REJECTED, now, None, status_message=message)
