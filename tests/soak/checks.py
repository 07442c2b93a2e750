"""The soak's invariants: what the venue did against what the trade log says.

Read from the fake venue (its orders, fills and positions are the truth) and from the
trade-log database directly (all runs: every restart starts a new run), as exact
decimals. All counts are targets of zero."""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

import sqlalchemy as sa

from bot.broker.sequenced import QUEUED_MESSAGES
from bot.store.tradelog import EQUITY, FILLS, INCIDENTS, ORDERS, POSITIONS, RISK_EVENTS
from tests.fakes.alpaca_server import FakeAlpaca

FINAL = {"filled", "canceled", "expired", "rejected"}
VENUE_FINAL = {"filled", "canceled", "expired", "rejected", "replaced"}
TOLERANCE = Decimal("0.000000001")


@dataclass
class Ledger:
    """The trade log of one strategy instance, every run."""

    orders: dict[str, dict] = field(default_factory=dict)  # client_order_id -> row
    fills: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    equity: dict[dt.date, Decimal] = field(default_factory=dict)  # the latest row per day
    snapshots: dict[dt.date, dict[str, Decimal]] = field(default_factory=dict)  # the latest
    defensive_entries: list[tuple[dt.date, dict]] = field(default_factory=list)
    job_failures: list[tuple[dt.datetime, str, str]] = field(default_factory=list)


def read_ledger(engine: sa.Engine, prefix: str) -> Ledger:
    ledger = Ledger()
    o, f = ORDERS, FILLS
    mine = o.c.client_order_id.startswith(f"{prefix}-", autoescape=True)
    with engine.connect() as conn:
        columns = (o.c.client_order_id, o.c.symbol, o.c.side, o.c.status, o.c.status_message,
                   o.c.broker_order_id, o.c.filled_quantity)
        for row in conn.execute(sa.select(*columns).where(mine)).mappings():
            ledger.orders[row["client_order_id"]] = dict(row)
        fills = sa.select(f.c.client_order_id, f.c.quantity).where(
            f.c.client_order_id.startswith(f"{prefix}-", autoescape=True))
        for cid, quantity in conn.execute(fills):
            ledger.fills[cid] += quantity
        rows = sa.select(EQUITY.c.day, EQUITY.c.equity).order_by(EQUITY.c.id)
        ledger.equity.update((day, equity) for day, equity in conn.execute(rows))
        snaps = sa.select(POSITIONS.c.run_id, POSITIONS.c.day, POSITIONS.c.symbol,
                          POSITIONS.c.quantity).order_by(POSITIONS.c.run_id, POSITIONS.c.id)
        latest_run: dict[dt.date, int] = {}
        for run_id, day, symbol, quantity in conn.execute(snaps):
            if latest_run.get(day) != run_id:  # a later run's snapshot of the day replaces it
                latest_run[day] = run_id
                ledger.snapshots[day] = {}
            ledger.snapshots[day][symbol] = quantity
        entered = sa.select(RISK_EVENTS.c.day, RISK_EVENTS.c.inputs).where(
            RISK_EVENTS.c.rule == "drawdown", RISK_EVENTS.c.action == "entered defensive mode")
        ledger.defensive_entries.extend((day, inputs) for day, inputs in conn.execute(entered))
        failures = sa.select(INCIDENTS.c.at, INCIDENTS.c.kind, INCIDENTS.c.message).where(
            INCIDENTS.c.kind.startswith("job:")).order_by(INCIDENTS.c.at, INCIDENTS.c.id)
        ledger.job_failures.extend(tuple(r) for r in conn.execute(failures))
    return ledger


def _dec(value) -> Decimal:
    return Decimal(str(value)) if value is not None else Decimal(0)


@dataclass
class Invariants:
    """Differences between the venue and the trade log; every count should be zero."""

    duplicate_ids: list[str] = field(default_factory=list)
    missing_from_log: list[str] = field(default_factory=list)
    fill_differences: list[str] = field(default_factory=list)  # per order
    symbol_differences: list[str] = field(default_factory=list)  # filled quantity per symbol
    position_differences: list[str] = field(default_factory=list)
    status_differences: list[str] = field(default_factory=list)  # final at both, not the same
    left_open: list[str] = field(default_factory=list)
    queued: list[str] = field(default_factory=list)  # buys waiting for the next session: fine

    COUNTED = ("duplicate_ids", "missing_from_log", "fill_differences", "symbol_differences",
               "position_differences", "status_differences", "left_open")

    @property
    def clean(self) -> bool:
        return not any(getattr(self, name) for name in self.COUNTED)

    def problems(self) -> list[str]:
        return [f"{name}: {item}" for name in self.COUNTED for item in getattr(self, name)]


def check(
    venue: FakeAlpaca,
    ledger: Ledger,
    prefix: str,
    holdings_at_start: dict[str, float],
    *,
    after_close: bool,
    snapshot_day: dt.date | None = None,
) -> Invariants:
    """The invariants now. `after_close`: no order may still work at the venue;
    `snapshot_day`: the positions snapshot of that day must be the venue's positions."""
    out = Invariants()
    with venue.lock:
        orders = [dict(o.data) for o in venue.orders]
        positions = {s: p.qty for s, p in venue.positions.items()}
    mine = [o for o in orders if o["client_order_id"].startswith(f"{prefix}-")]
    counts = Counter(o["client_order_id"] for o in orders)
    out.duplicate_ids = sorted(cid for cid, n in counts.items() if n > 1)
    at_venue = {o["client_order_id"]: o for o in mine}

    venue_by_symbol: dict[str, Decimal] = defaultdict(Decimal)
    log_by_symbol: dict[str, Decimal] = defaultdict(Decimal)
    for cid, o in at_venue.items():
        filled = _dec(o["filled_qty"])
        sign = 1 if o["side"] == "buy" else -1
        venue_by_symbol[o["symbol"]] += sign * filled
        row = ledger.orders.get(cid)
        if row is None:
            out.missing_from_log.append(f"{cid} ({o['status']}, filled {filled})")
            continue
        recorded = ledger.fills.get(cid, Decimal(0))
        if abs(recorded - filled) > TOLERANCE:
            out.fill_differences.append(f"{cid}: venue filled {filled}, fills recorded {recorded}")
        elif abs(_dec(row["filled_quantity"]) - filled) > TOLERANCE:
            out.fill_differences.append(
                f"{cid}: venue filled {filled}, orders.filled_quantity {row['filled_quantity']}")
        venue_final = o["status"] in VENUE_FINAL
        if row["status"] in FINAL and venue_final and row["status"] != _ours(o["status"]):
            out.status_differences.append(f"{cid}: log {row['status']}, venue {o['status']}")
        elif row["status"] not in FINAL and venue_final:
            out.left_open.append(f"{cid}: log {row['status']}, venue {o['status']}")
        elif after_close and not venue_final:
            out.left_open.append(f"{cid}: still {o['status']} at the venue after the close")
    for cid, row in ledger.orders.items():
        sign = 1 if row["side"] == "buy" else -1
        log_by_symbol[row["symbol"]] += sign * ledger.fills.get(cid, Decimal(0))
        if cid in at_venue:
            continue
        if ledger.fills.get(cid, Decimal(0)) > 0:
            out.fill_differences.append(f"{cid}: fills recorded, no such order at the venue")
        if row["status"] in FINAL:
            continue
        if row["status"] == "new" and row["broker_order_id"] is None and (
            row["status_message"] in QUEUED_MESSAGES
        ):
            out.queued.append(cid)
        else:
            out.left_open.append(f"{cid}: log {row['status']}, unknown to the venue")
    for symbol in sorted(set(venue_by_symbol) | set(log_by_symbol)):
        if abs(venue_by_symbol[symbol] - log_by_symbol[symbol]) > TOLERANCE:
            out.symbol_differences.append(
                f"{symbol}: venue {venue_by_symbol[symbol]}, log {log_by_symbol[symbol]}")
    for symbol in sorted(set(positions) | set(holdings_at_start) | set(log_by_symbol)):
        implied = _dec(holdings_at_start.get(symbol, 0.0)) + log_by_symbol[symbol]
        held = positions.get(symbol, Decimal(0))
        if abs(implied - held) > TOLERANCE:
            out.position_differences.append(f"{symbol}: venue holds {held}, log implies {implied}")
    snapshot = ledger.snapshots.get(snapshot_day) if snapshot_day is not None else None
    for symbol, quantity in (snapshot or {}).items():
        held = positions.get(symbol, Decimal(0))
        if abs(quantity - held) > TOLERANCE:
            out.position_differences.append(
                f"{symbol}: venue holds {held}, the {snapshot_day} snapshot says {quantity}")
    return out


def _ours(venue_status: str) -> str:
    return "canceled" if venue_status == "replaced" else venue_status
