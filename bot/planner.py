"""From targets and holdings to orders: when to rebalance and what to send.

The rebalance is due every `every_days` trading days counted from the last one, or as
soon as any weight drifts more than `drift` from its target, and never while orders are
outstanding (a second set of orders on top of unfilled ones double-trades). Orders below
the minimum size are dropped; sells come before buys so buys are funded by the sells.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from bot.config import RebalanceSettings
from bot.types import OrderRequest, Side, new_record


class RebalanceCheck(NamedTuple):
    """Whether a rebalance is due and why (made every trading day: a tuple)."""

    due: bool
    reason: str


def current_weights(shares: np.ndarray, prices: np.ndarray, equity: float) -> np.ndarray:
    """Weights held now; `prices` must be finite (unlisted assets valued at 0)."""
    if equity <= 0:
        return np.zeros_like(shares)
    return shares * prices / equity


def rebalance_due(
    days_since_last: int | None,
    weights_now: Callable[[], np.ndarray],
    targets: np.ndarray | None,
    open_orders: int,
    cfg: RebalanceSettings,
    forced: str | None = None,
    week_ends_today: bool = False,
    drift_check: bool = True,
) -> RebalanceCheck:
    """Decide whether today is a rebalance day, and say why (or why not).

    `weights_now` is called only when the drift test is needed: most days the period
    decides, and valuing the book costs more than the rest of the check. `drift_check`
    False skips it (a lagged decision is still waiting to be executed)."""
    if open_orders > 0:
        return RebalanceCheck(False, f"skipped: {open_orders} order(s) outstanding")
    if forced:
        return RebalanceCheck(True, forced)
    if days_since_last is None or targets is None:
        if cfg.schedule == "weekly" and not week_ends_today:
            return RebalanceCheck(False, "weekly: waiting for the first week's last day")
        return RebalanceCheck(True, "initial allocation")
    if cfg.schedule == "weekly":
        if week_ends_today and days_since_last > 0:
            return RebalanceCheck(True, "weekly: last trading day of the week")
    elif days_since_last >= cfg.every_days:
        return RebalanceCheck(True, f"period: {days_since_last} trading days since last")
    limit = cfg.drift  # read once: a pydantic field read costs more than the test
    if drift_check and limit is not None and limit > 0:
        drift = max_abs_difference(weights_now(), targets)
        if drift > limit + 1e-12:  # 0.55 - 0.50 is 0.05000000000000004 in floats
            return RebalanceCheck(True, f"drift {drift:.2%} > {limit:.0%}")
    return _NOT_DUE


_NOT_DUE = RebalanceCheck(False, "not due")  # most days' answer, made once


def max_abs_difference(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b|, NaN if any difference is NaN: np.max(np.abs(a - b)) in plain floats
    (the drift test runs every day; numpy's reduction costs more than the arithmetic)."""
    diffs = [abs(x - y) for x, y in zip(a.tolist(), b.tolist(), strict=True)]
    return math.nan if any(d != d for d in diffs) else max(diffs)


_SELL, _BUY = Side.SELL, Side.BUY  # module constants: read for every planned order


def client_order_id(rebalance_id: str, symbol: str, side: Side) -> str:
    """Deterministic id: the same decision always maps to the same broker order, so a
    retry or a restart can find an order instead of sending it twice."""
    # `_value_`, the member's own attribute: `.value` goes through the enum's descriptor,
    # a Python call for each of a backtest's orders.
    return f"{rebalance_id}-{symbol}-{side._value_}"


def below_minimum_trade(qty: float, price: float, min_shares: float, min_notional: float) -> bool:
    """A trade too small to send: nothing (below 1e-9 shares), or under min_trade_shares
    or min_trade_notional at `price`."""
    return qty <= 1e-9 or qty < min_shares or qty * price < min_notional


def plan_orders(
    rebalance_id: str,
    symbols: tuple[str, ...],
    targets: np.ndarray,
    shares: np.ndarray,
    prices: np.ndarray,
    equity: float,
    cfg: RebalanceSettings,
    reason: str,
) -> list[OrderRequest]:
    """Orders that move `shares` to `targets` (weights of `equity`), sells first.

    Whole-share mode rounds each target down, so the plan never needs more cash than the
    portfolio has at the sizing prices. A trade is sent only if it reaches both
    min_trade_shares and min_trade_notional.
    """
    sells: list[OrderRequest] = []
    buys: list[OrderRequest] = []
    fractional, min_shares, min_notional = cfg.fractional, cfg.min_trade_shares, cfg.min_trade_notional
    # Python floats (the same values): indexing numpy arrays element by element costs more
    # than the arithmetic done with the elements.
    rows = zip(symbols, prices.tolist(), targets.tolist(), shares.tolist(), strict=True)
    for symbol, price, weight, held in rows:
        if not math.isfinite(price) or price <= 0:
            continue
        target = weight * equity / price
        if not fractional:
            target = math.floor(target + 1e-9)
        delta = target - held
        if not fractional:
            delta = round(delta)
            if delta < 0:  # never sell more whole shares than are held (10.6 held, target
                # 0: round(-10.6) sold 11, a short or a refusal at the venue)
                delta = max(delta, -math.floor(held + 1e-6))
        elif delta < -held:  # nor more than is held: a sale never opens a short
            delta = -max(held, 0.0)
        qty = abs(delta)
        if below_minimum_trade(qty, price, min_shares, min_notional):
            continue
        side = _SELL if delta < 0 else _BUY
        order = new_record(OrderRequest, (
            client_order_id(rebalance_id, symbol, side), rebalance_id, symbol, side, qty,
            reason, price,
        ))
        (sells if side is _SELL else buys).append(order)
    return sells + buys


def plan_exit(
    rebalance_id: str, symbol: str, quantity: float, price: float, reason: str
) -> OrderRequest:
    """Sell a whole position (stop-loss exit)."""
    return OrderRequest(
        client_order_id(rebalance_id, symbol, Side.SELL),
        rebalance_id,
        symbol,
        Side.SELL,
        quantity,
        reason,
        price,
    )
