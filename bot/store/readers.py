"""Reading the trade log back: committed rows only, numbers as float for analysis.

Frames (pandas, imported only when one is built) for reports and the dashboard, and
`recorded_orders` as domain objects for reconciliation. A base of `TradeLog`, kept apart
from recording and writing, which are the engine's hot path.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

import sqlalchemy as sa

from bot.store.models import METADATA
from bot.types import Order, OrderRequest, OrderStatus, Side

if TYPE_CHECKING:  # imported where frames are built: inspection commands need no pandas
    import pandas as pd

_T = METADATA.tables
RUNS, REGIMES, TARGETS = _T["runs"], _T["regime_decisions"], _T["targets"]
RISK_EVENTS, ORDERS, FILLS = _T["risk_events"], _T["orders"], _T["fills"]
EQUITY, POSITIONS, INCIDENTS = _T["equity"], _T["positions"], _T["incidents"]


@dataclass(frozen=True)
class RecordedOrder:
    """An order as the trade log has it (read without pandas, so a NULL stays None), with
    what its recorded fills add up to: reconciliation compares both with the venue."""

    run_id: int
    mode: str  # the mode of the run that sent it
    order: Order
    fills_quantity: float  # sum of its fills' quantities
    fills_average: float | None  # their quantity-weighted price; None without fills


def lazy_pandas() -> Any:
    """pandas, imported on first use: commands that only list rows never pay for it."""
    import pandas

    return pandas


class TradeLogReaders:
    """The readers of `TradeLog`; `engine` is its SQLAlchemy engine."""

    engine: sa.Engine

    def _frame(
        self,
        stmt: sa.Select[Any],
        *,
        floats: Sequence[str] = (),
        dates: Sequence[str] = (),
        times: Sequence[str] = (),
    ) -> pd.DataFrame:
        pd = lazy_pandas()
        with self.engine.connect() as conn:
            result = conn.execute(stmt)
            frame = pd.DataFrame(result.all(), columns=list(result.keys()))
        for column in floats:
            frame[column] = frame[column].astype("float64")
        for column in dates:
            frame[column] = pd.to_datetime(frame[column])
        for column in times:
            frame[column] = pd.to_datetime(frame[column], utc=True)
        return frame

    def load_equity(self, run_id: int, account: int | None | Literal["all"] = "all") -> pd.DataFrame:
        """Index `day` (DatetimeIndex); columns equity, cash, positions_value, drawdown, regime.
        Of every account, or of one (None: the rows without an account); a run of several
        accounts has one row per account and day, so read one of them for a curve."""
        t = EQUITY
        stmt = (
            sa.select(t.c.day, t.c.equity, t.c.cash, t.c.positions_value, t.c.drawdown, t.c.regime)
            .where(t.c.run_id == int(run_id))
            .order_by(t.c.day)
        )
        if account != "all":
            stmt = stmt.where(t.c.account_id.is_not_distinct_from(account))
        frame = self._frame(
            stmt, floats=("equity", "cash", "positions_value", "drawdown"), dates=("day",)
        )
        return frame.set_index("day")

    def load_fills(self, run_id: int, account: int | None | Literal["all"] = "all") -> pd.DataFrame:
        """Fills of the run: of every account, or of one (None: the rows without an account)."""
        t = FILLS
        stmt = (
            sa.select(
                t.c.filled_at,
                t.c.symbol,
                t.c.side,
                t.c.quantity,
                t.c.price,
                t.c.commission,
                t.c.slippage_cost,
                t.c.client_order_id,
            )
            .where(t.c.run_id == int(run_id))
            .order_by(t.c.filled_at, t.c.id)
        )
        if account != "all":
            stmt = stmt.where(t.c.account_id.is_not_distinct_from(account))
        money = ("quantity", "price", "commission", "slippage_cost")
        return self._frame(stmt, floats=money, times=("filled_at",))

    def load_orders(self, run_id: int | None = None, status: str | None = None) -> pd.DataFrame:
        """Orders of one run or all runs, optionally with one status (e.g. open ones to reconcile)."""
        t = ORDERS
        stmt = sa.select(*(c for c in t.c if c.name != "id")).order_by(t.c.submitted_at, t.c.id)
        if run_id is not None:
            stmt = stmt.where(t.c.run_id == int(run_id))
        if status is not None:
            stmt = stmt.where(t.c.status == OrderStatus(status).value)
        money = ("quantity", "notional", "reference_price", "filled_quantity", "average_price")
        return self._frame(stmt, floats=money, times=("submitted_at", "updated_at"))

    def recorded_orders(self, prefix: str) -> list[RecordedOrder]:
        """Every order whose client_order_id starts with `prefix` + "-" (one strategy
        instance's), oldest first, as domain objects with their fills' totals.

        Read with SQLAlchemy, not through a DataFrame: pandas turns a NULL text column
        into NaN (a float), and a NaN status_message or broker id in an Order wedged every
        job after a restart."""
        o, f, r = ORDERS, FILLS, RUNS
        mine = o.c.client_order_id.startswith(f"{prefix}-", autoescape=True)
        orders = sa.select(o, r.c.mode).join(r, r.c.id == o.c.run_id).where(mine)
        fills = sa.select(f.c.order_id, f.c.quantity, f.c.price).join(
            o, o.c.id == f.c.order_id
        ).where(mine)
        with self.engine.connect() as conn:
            rows = conn.execute(orders.order_by(o.c.submitted_at, o.c.id)).all()
            totals: dict[int, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
            for order_id, quantity, price in conn.execute(fills):
                totals[order_id][0] += quantity
                totals[order_id][1] += quantity * price
        out = []
        for row in rows:
            quantity, value = totals.get(row.id, (Decimal(0), Decimal(0)))
            request = OrderRequest(
                row.client_order_id, row.rebalance_id, row.symbol, Side(row.side),
                float(row.quantity), row.reason, float(row.reference_price),
            )
            order = Order(
                request,
                OrderStatus(row.status),
                row.submitted_at,
                row.broker_order_id,
                float(row.filled_quantity),
                None if row.average_price is None else float(row.average_price),
                row.status_message,
            )
            average = float(value / quantity) if quantity > 0 else None
            out.append(RecordedOrder(int(row.run_id), row.mode, order, float(quantity), average))
        return out

    def load_regimes(self, run_id: int) -> pd.DataFrame:
        t = REGIMES
        stmt = (
            sa.select(*(c for c in t.c if c.name not in ("id", "run_id")))
            .where(t.c.run_id == int(run_id))
            .order_by(t.c.day, t.c.id)
        )
        return self._frame(
            stmt,
            floats=("vix", "spread", "uncertainty"),
            dates=("day", "vix_date", "spread_date", "uncertainty_date"),
        )

    def load_targets(self, run_id: int) -> pd.DataFrame:
        t = TARGETS
        stmt = (
            sa.select(*(c for c in t.c if c.name not in ("id", "run_id")))
            .where(t.c.run_id == int(run_id))
            .order_by(t.c.day, t.c.id)
        )
        return self._frame(
            stmt, floats=("baseline", "overlay", "final", "stop_price"), dates=("day",)
        )

    def load_risk_events(self, run_id: int) -> pd.DataFrame:
        t = RISK_EVENTS
        stmt = (
            sa.select(t.c.day, t.c.rule, t.c.symbol, t.c.action, t.c.inputs)
            .where(t.c.run_id == int(run_id))
            .order_by(t.c.day, t.c.id)
        )
        return self._frame(stmt, dates=("day",))

    def load_positions(self, run_id: int, account: int | None | Literal["all"] = "all") -> pd.DataFrame:
        """Snapshots of the run: of every account, or of one (None: the rows without an
        account, as the single-account daemon records them)."""
        t = POSITIONS
        stmt = (
            sa.select(t.c.day, t.c.symbol, t.c.quantity, t.c.price, t.c.market_value)
            .where(t.c.run_id == int(run_id))
            .order_by(t.c.day, t.c.id)
        )
        if account != "all":
            stmt = stmt.where(t.c.account_id.is_not_distinct_from(account))
        return self._frame(stmt, floats=("quantity", "price", "market_value"), dates=("day",))

    def load_incidents(self, run_id: int | None = None) -> pd.DataFrame:
        t = INCIDENTS
        stmt = sa.select(t.c.at, t.c.run_id, t.c.kind, t.c.message, t.c.context).order_by(
            t.c.at, t.c.id
        )
        if run_id is not None:
            stmt = stmt.where(t.c.run_id == int(run_id))
        return self._frame(stmt, times=("at",))

    def runs(self) -> pd.DataFrame:
        stmt = sa.select(*RUNS.c).order_by(RUNS.c.id)
        return self._frame(stmt, times=("started_at", "finished_at"))
