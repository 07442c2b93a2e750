"""The text of each notification: short, plain, readable on a phone lock screen.

Pure functions from the daemon's records to (title, body); no I/O, so they are tested
on their own and the sender never formats anything.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from bot.types import EquityPoint, Fill, RiskEvent

MAX_LINES = 20  # longer lists end with "... and N more"


def _capped(lines: list[str]) -> str:
    if len(lines) <= MAX_LINES:
        return "\n".join(lines)
    return "\n".join([*lines[:MAX_LINES], f"... and {len(lines) - MAX_LINES} more"])


def _quantity(value: float) -> str:
    return f"{value:,.6f}".rstrip("0").rstrip(".")


def trades(fills: Sequence[Fill]) -> tuple[str, str]:
    """One message for the fills one poll found."""
    total = sum(f.quantity * f.price for f in fills)
    title = f"{len(fills)} fill{'s' if len(fills) != 1 else ''} ({total:,.2f})"
    lines = [
        f"{f.side.value.upper()} {_quantity(f.quantity)} {f.symbol} @ {f.price:,.4f} "
        f"= {f.quantity * f.price:,.2f} ({f.filled_at:%Y-%m-%d %H:%M} UTC)"
        for f in fills
    ]
    return title, _capped(lines)


def risk(day: dt.date, events: Sequence[RiskEvent]) -> tuple[str, str]:
    """The risk rules that fired in one decision."""
    rules = ", ".join(dict.fromkeys(e.rule for e in events))
    lines = [f"{e.rule}{f' {e.symbol}' if e.symbol else ''}: {e.action}" for e in events]
    return f"risk rules on {day}: {rules}", _capped(lines)


def failed_job(job: str, at: dt.datetime, error: str) -> tuple[str, str]:
    """A job that failed; the daemon carries on and retries at the job's next time."""
    return (
        f"job '{job}' failed",
        f"{error}\nat {at:%Y-%m-%d %H:%M} UTC; the daemon carries on (see `bot incidents`).",
    )


def daily(
    point: EquityPoint, previous: float | None, fills_today: int, open_orders: int
) -> tuple[str, str]:
    """The day's close: equity, change, drawdown, regime, activity."""
    change = (
        f" ({point.equity / previous - 1.0:+.2%} on the day)" if previous and previous > 0 else ""
    )
    invested = point.positions_value / point.equity if point.equity else 0.0
    regime = getattr(point.regime, "value", point.regime) or "not decided yet"
    lines = [
        f"equity {point.equity:,.2f}{change}",
        f"drawdown {point.drawdown:.2%} below the peak",
        f"invested {invested:.1%}, cash {point.cash:,.2f}",
        f"regime {regime}",
        f"fills today {fills_today}, open orders {open_orders}",
    ]
    return f"close {point.day}: {point.equity:,.2f}{change}", "\n".join(lines)
