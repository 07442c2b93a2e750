"""Reading Alpaca's orders and errors into the bot's types.

Status mapping (Alpaca -> OrderStatus), "by fill" meaning NEW when nothing is filled,
PARTIALLY_FILLED when part is and FILLED when all is:

    new                                              -> NEW
    accepted, pending_new, accepted_for_bidding,
    pending_review, held, suspended                  -> ACCEPTED (by fill if partly filled)
    partially_filled                                 -> PARTIALLY_FILLED
    filled                                           -> FILLED
    done_for_day, calculated, stopped,
    pending_cancel, pending_replace                  -> by fill (still working, not final)
    replaced                                         -> by fill, then followed (below)
    canceled                                         -> CANCELED
    expired                                          -> EXPIRED
    rejected                                         -> REJECTED

When the Alpaca status differs from ours, status_message says "alpaca status: <raw>".

`replaced`: the bot never replaces an order, but a user can (dashboard, or PATCH
/v2/orders/{id}: a new qty, a limit price), and so can Alpaca after a corporate action.
Alpaca then closes the order with `replaced_by` naming a new order (its own id and
client_order_id, `replaces` naming the old one). That new order is the bot's order
continued: reading it as canceled would lose its fills and free the bot to send the trade
again. bot.broker.alpaca follows `replaced_by` to the last order of the chain and
convert_replaced() reads the chain as one order under the bot's client_order_id.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import requests
from alpaca.common.exceptions import APIError
from alpaca.trading.models import Order as AlpacaOrder
from pydantic import ValidationError

from bot.broker.base import BrokerError
from bot.net import describe_error
from bot.types import Order, OrderRequest, OrderStatus, Side

T = TypeVar("T")

NEW_YORK = ZoneInfo("America/New_York")
# What a failed call can raise besides APIError: transport errors, bad JSON, and whatever
# the SDK's parsing raises on an answer of an unexpected shape.
#: the account flags with which Alpaca refuses every order ("If true, the account is
#: not allowed to place orders", its account reference)
BLOCK_FLAGS = ("trading_blocked", "account_blocked", "trade_suspended_by_user")


def trading_refusal(raw: Any) -> str | None:
    """Why Alpaca refuses the account's orders now, from its account answer: a block
    flag, or a status other than ACTIVE (ACCOUNT_UPDATED while details are reviewed,
    ACCOUNT_CLOSED, DISABLED...); None when it may trade. Each order was sent and refused
    one by one, and nothing said why."""
    flags = [flag for flag in BLOCK_FLAGS if getattr(raw, flag, None)]
    if flags:
        return f"Alpaca reports {', '.join(flags)} for the account"
    status = getattr(raw, "status", None)
    status = getattr(status, "value", status)
    if status is not None and str(status).upper() != "ACTIVE":
        return f"the account's status is {status}, not ACTIVE"
    return None


ANSWER_ERRORS = (requests.RequestException, ValueError, TypeError, KeyError, AttributeError)
ALPACA_STATUS = "alpaca status: "  # the start of a message naming a status ours maps from
QTY_DECIMALS = 9  # Alpaca accepts quantities to 9 decimal places

_FIXED: Mapping[str, OrderStatus] = {
    "new": OrderStatus.NEW,
    "partially_filled": OrderStatus.PARTIALLY_FILLED,
    "filled": OrderStatus.FILLED,
    "canceled": OrderStatus.CANCELED,
    "expired": OrderStatus.EXPIRED,
    "rejected": OrderStatus.REJECTED,
}
_NOT_ROUTED = {
    "accepted",
    "pending_new",
    "accepted_for_bidding",
    "pending_review",
    "held",
    "suspended",
}


def map_status(alpaca_status: str, filled: float, quantity: float | None) -> OrderStatus:
    """Our status for an Alpaca status (see the module docstring for the table)."""
    if alpaca_status in _FIXED:
        return _FIXED[alpaca_status]
    if filled > 0 and quantity is not None and filled >= quantity - 1e-9:
        return OrderStatus.FILLED
    if filled > 0:
        return OrderStatus.PARTIALLY_FILLED
    return OrderStatus.ACCEPTED if alpaca_status in _NOT_ROUTED else OrderStatus.NEW


def convert_order(raw: AlpacaOrder, request: OrderRequest | None) -> Order:
    """Our Order for the venue's; an order we did not send gets a request rebuilt
    from the venue's fields (reason 'adopted from venue')."""
    status_raw = raw.status.value
    quantity = parse_number(raw.qty, "order.qty") if raw.qty is not None else None
    filled = parse_number(raw.filled_qty, "order.filled_qty") if raw.filled_qty is not None else 0.0
    avg = None
    if filled > 0:
        avg = parse_number(raw.filled_avg_price, "order.filled_avg_price")
    request = request or request_from_venue(raw, quantity, avg)
    status = map_status(status_raw, filled, quantity)
    message = None if status_raw == status.value else f"{ALPACA_STATUS}{status_raw}"
    return Order(request, status, to_utc(raw.submitted_at), str(raw.id), filled, avg, message)


def convert_replaced(
    chain: Sequence[AlpacaOrder], request: OrderRequest | None, missing: str | None = None
) -> Order:
    """Our order for one replaced at Alpaca: `chain` is the order sent, then each order
    that replaced the one before it. It stays one order (our client_order_id, the first
    broker id) with the last order's status and quantity; a replaced order keeps the fills
    it had, so the chain's fills add up. `missing`: a replacement Alpaca cannot give (the
    chain ends before it): the order stays outstanding as it was, so nothing is re-sent."""
    first, last = chain[0], chain[-1]
    links = [convert_order(raw, request) for raw in chain]
    filled = sum(link.filled_quantity for link in links)
    cost = sum(link.filled_quantity * (link.average_price or 0.0) for link in links)
    avg = cost / filled if filled > 0 else None
    ids = " -> ".join(str(raw.id) for raw in chain)
    quantity = request.quantity if request is not None else links[0].request.quantity
    if missing is None:
        if last.qty is not None:
            quantity = filled - links[-1].filled_quantity + parse_number(last.qty, "order.qty")
        note = (f"replaced at Alpaca, not by the bot (by the user or a corporate action): "
                f"order {ids}; followed as this order, quantity {quantity:g}")
    else:
        by = f"order {missing}, which Alpaca does not know (404)" if missing else (
            "an order Alpaca does not name")
        note = (f"replaced at Alpaca by {by}; after order {ids}: kept outstanding and never "
                "sent again; check the order at Alpaca")
    request = (request or links[0].request)._replace(quantity=quantity)
    status = map_status(last.status.value, filled, quantity)
    if status is OrderStatus.NEW and filled > 0:  # the fills are on an earlier order
        status = OrderStatus.PARTIALLY_FILLED
    if missing is None and last.status.value != status.value:
        note += f"; alpaca status: {last.status.value}"
    return Order(request, status, to_utc(first.submitted_at), str(first.id), filled, avg, note)


def settled(raw: AlpacaOrder) -> bool:
    """Nothing left to cancel: final, or a cancel already under way."""
    final = convert_order(raw, None).status.is_final
    return final or raw.status.value == "pending_cancel"


def request_from_venue(raw: AlpacaOrder, quantity: float | None, avg: float | None) -> OrderRequest:
    """Rebuild our request for an order found at the venue (after a restart): the
    rebalance id is the client_order_id without the planner's '-<SYMBOL>-<side>'."""
    symbol = raw.symbol or ""
    side = Side(raw.side.value) if raw.side is not None else Side.BUY
    cid = raw.client_order_id
    suffix = f"-{symbol}-{side.value}"
    rebalance_id = cid[: -len(suffix)] if cid.endswith(suffix) and len(cid) > len(suffix) else cid
    return OrderRequest(
        cid, rebalance_id, symbol, side, quantity or 0.0, "adopted from venue", avg or 0.0
    )


def parse_number(value: object, field: str) -> float:
    """A money or quantity field (Alpaca sends strings); missing, empty, non-numeric or
    non-finite raises BrokerError naming the field."""
    if isinstance(value, bool) or value is None or (isinstance(value, str) and not value.strip()):
        raise BrokerError(f"{field} is missing")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise BrokerError(f"{field} is not a number: {str(value)[:40]!r}") from None
    if not math.isfinite(number):
        raise BrokerError(f"{field} is not finite: {str(value)[:40]!r}")
    return number


def api_error_parts(exc: APIError) -> tuple[int | None, int | None, str]:
    """HTTP status, Alpaca error code and message of an APIError (body may not be JSON)."""
    text = str(exc)
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict):
        code = body.get("code")
        message = str(body.get("message", ""))
        if "cost_basis" in body and "buying_power" in body:  # a refused buy: what the venue counted
            message += f" (cost basis {body['cost_basis']}, buying power {body['buying_power']})"
        return exc.status_code, code if isinstance(code, int) else None, message
    return exc.status_code, None, text.strip()[:200]


def is_auth_failure(status: int | None, code: int | None) -> bool:
    """401, or a 403 without an Alpaca error code (bad keys), as opposed to a 403 order
    rejection such as 40310000 insufficient buying power."""
    return status == 401 or (status == 403 and code is None)


def api_broker_error(what: str, exc: APIError) -> BrokerError:
    status, code, message = api_error_parts(exc)
    hint = " (check the API keys)" if is_auth_failure(status, code) else ""
    return BrokerError(
        f"{what}: HTTP {status} {code if code is not None else '-'}: {message}{hint}"
    )


def transport_broker_error(what: str, exc: Exception) -> BrokerError:
    return BrokerError(f"{what}: {describe_answer_error(exc)}")


def sdk_call(what: str, fn: Callable[..., T], *args: Any) -> T:
    """Run one alpaca-py call; every failure becomes a BrokerError naming `what`
    (the venue's code and message, a transport error by type, or a malformed answer)."""
    try:
        return fn(*args)
    except APIError as exc:
        raise api_broker_error(what, exc) from exc
    except ValidationError as exc:
        raise BrokerError(f"{what}: malformed answer: {validation_summary(exc)}") from None
    except ANSWER_ERRORS as exc:
        raise transport_broker_error(what, exc) from exc


def describe_answer_error(exc: Exception) -> str:
    """Transport errors by type; anything else as a malformed answer with its reason
    (pydantic errors by field, never with the input values)."""
    if isinstance(exc, requests.RequestException):
        return describe_error(exc)
    if isinstance(exc, ValidationError):
        return f"malformed answer: {validation_summary(exc)}"
    reason = (str(exc).splitlines() or [""])[0][:160]
    return f"malformed answer ({type(exc).__name__}: {reason})"


def validation_summary(exc: ValidationError) -> str:
    """The failing fields and reasons of a pydantic error, without the input values."""
    parts = [
        f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()[:3]
    ]
    return "; ".join(parts)


def to_utc(value: dt.datetime) -> dt.datetime:
    """Aware UTC; a naive venue timestamp is taken as UTC."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def new_york_to_utc(value: dt.datetime) -> dt.datetime:
    """alpaca-py's Calendar gives naive New York wall times; convert them to UTC."""
    return value.replace(tzinfo=NEW_YORK).astimezone(dt.UTC)
