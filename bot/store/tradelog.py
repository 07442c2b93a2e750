"""The trade log: buffered writes of every decision, order and fill.

Backtests record once per simulated day, so recording only appends plain tuples (in
the column order below) to memory; `flush()` writes them in one transaction, one bulk
executemany per table. The live daemon uses the same object and flushes after every
job. Not thread-safe: record and flush from one thread (the scheduler runs one job at
a time).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import signal
import threading
import time
from array import array
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bot.errors import BotError, ExecutionStopped
from bot.logs import get_logger
from bot.store.bulk import PreparedRows, insert_prepared, prepare_rows
from bot.store.engines import reader_engine, writer_engine
from bot.store.heartbeat import Heartbeat, needs_heartbeat, now_value
from bot.store.holder import this_process
from bot.store.lookup import rows_where_in
from bot.store.models import METADATA, RUN_MODES, to_decimal, to_plain
from bot.store.readers import TradeLogReaders, lazy_pandas
from bot.store.schema import MIGRATIONS, check_current, ensure_current
from bot.store.upsert import upsert
from bot.types import (
    EquityPoint,
    Fill,
    Order,
    OrderStatus,
    Regime,
    RegimeDecision,
    RiskEvent,
    Side,
    TargetRow,
)

if TYPE_CHECKING:  # imported where frames are built: inspection commands need no pandas
    pass

log = get_logger(__name__)  # lazy: `bot orders` opens a log and never logs

_T = METADATA.tables
RUNS, REGIMES, TARGETS = _T["runs"], _T["regime_decisions"], _T["targets"]
RISK_EVENTS, ORDERS, ORDER_EVENTS = _T["risk_events"], _T["orders"], _T["order_events"]
FILLS, EQUITY, POSITIONS, INCIDENTS = _T["fills"], _T["equity"], _T["positions"], _T["incidents"]
STRATEGY_STATE, MACRO = _T["strategy_state"], _T["macro_observations"]


class _StatusTexts(dict[str, str]):
    """Stored text of each status, by a subscript: a backtest records one for every
    order twice, and a helper function's call costs more than the lookup. A value that
    is no status still fails through OrderStatus() with the enum's own message."""

    def __missing__(self, status: str) -> str:
        return OrderStatus(status).value


# Stored text of each status, side and regime. A dict lookup, because OrderStatus(x).value
# costs ~0.75 us.
_STATUS_TEXT = _StatusTexts({s: s.value for s in OrderStatus})
_SIDE_TEXT: dict[str, str] = {s: s.value for s in Side}
_REGIME_TEXT: dict[Regime | None, str | None] = {None: None, **{r: r.value for r in Regime}}


# The buffers' rows: tuples (a list for an order, whose status may change before the
# flush) of these columns, in this order. Plain tuples take a third of the memory of
# dicts and go to the database as they are (bot.store.bulk).
ORDER_COLUMNS = (
    "run_id", "account_id", "client_order_id", "broker_order_id", "rebalance_id", "symbol",
    "side", "quantity", "notional", "reference_price", "reason", "status", "status_message",
    "filled_quantity", "average_price", "submitted_at", "updated_at",
)
_ORDER_INDEX = {name: i for i, name in enumerate(ORDER_COLUMNS)}
_STATUS, _UPDATED_AT = _ORDER_INDEX["status"], _ORDER_INDEX["updated_at"]
_STATUS_MESSAGE, _FILLED_QUANTITY = _ORDER_INDEX["status_message"], _ORDER_INDEX["filled_quantity"]
_AVERAGE_PRICE, _BROKER_ORDER_ID = _ORDER_INDEX["average_price"], _ORDER_INDEX["broker_order_id"]
# Buffered by client_order_id; written with the order's id in its place.
EVENT_COLUMNS = ("client_order_id", "status", "at", "message", "filled_quantity")
FILL_COLUMNS = (
    "run_id", "account_id", "client_order_id", "symbol", "side", "quantity", "price",
    "commission", "slippage_cost", "filled_at",
)
REGIME_COLUMNS = (
    "run_id", "day", "regime", "vix", "vix_date", "spread", "spread_date", "uncertainty",
    "uncertainty_date", "warning", "decided_rules", "kept_rules", "stale_inputs",
)
TARGET_COLUMNS = (
    "run_id", "day", "rebalance_id", "symbol", "baseline", "overlay", "final", "stop_price",
    "reasons", "trigger",
)
RISK_EVENT_COLUMNS = ("run_id", "day", "rule", "symbol", "action", "inputs")
EQUITY_COLUMNS = (
    "run_id", "account_id", "day", "equity", "cash", "positions_value", "drawdown", "regime",
)
# Buffered without market_value, which the flush computes exactly.
POSITION_COLUMNS = ("run_id", "account_id", "day", "symbol", "quantity", "price")

# What a re-recorded order may change on the row an earlier process wrote.
_ADOPTED_COLUMNS = (
    "broker_order_id", "status", "status_message", "filled_quantity", "average_price", "updated_at",
)


def dialect_key(dialect: sa.Dialect) -> str:
    """The backend and driver whose conversions a PreparedRecords holds."""
    return f"{dialect.name}+{dialect.driver}"


@dataclass(frozen=True)
class PreparedRecords:
    """A log's buffered rows converted for one dialect (TradeLog.prepare): a flush given
    it only runs the INSERTs. Order ids are not in it; the flush learns them in its
    transaction. `sizes` are the buffers' lengths when it was made: a record since then
    (every change adds a row somewhere) makes it stale, and the flush prepares again."""

    dialect: str
    sizes: tuple[int, ...]
    orders: PreparedRows
    events: PreparedRows  # without their order id, as the event buffer
    fills: PreparedRows  # likewise
    others: tuple[PreparedRows, ...]  # regimes, targets, risk events, equity, positions


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block ends, then deliver them. Between a commit
    and forgetting the buffer, an interrupt would leave the rows buffered and the next
    flush (the shutdown's) would write them a second time. Python runs signal handlers
    in the main thread only, so only there can (and need) they be held."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda signum, _frame: caught.append(signum))
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            if handler is not None:  # None: installed outside Python, cannot be restored
                signal.signal(sig, handler)
        for sig in caught:
            signal.raise_signal(sig)


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__


def _rule_list(outcomes: dict[str, bool], rules: Sequence[str]) -> str | None:
    """Rules with their outcome, "uncertainty=no, transition=yes"; None for none."""
    return ", ".join(f"{r}={'yes' if outcomes.get(r) else 'no'}" for r in rules) or None


def _check_aware(value: dt.datetime, column: str) -> None:
    """Refuse naive timestamps at the call site, naming the column, not at flush time.
    UTC itself (nearly every call) is settled by one identity test."""
    if value.tzinfo is dt.UTC:
        return
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"{column}: naive datetime {value.isoformat()}; pass a timezone-aware datetime (UTC)"
        )


def _resumed_incident(run_id: int, at: dt.datetime, message: str) -> sa.Executable:
    """An INSERT of a `resumed` incident, made only if the run has an `abandoned` one and
    no `resumed` one yet. Run after the run's end is written: a judge that marked it
    abandoned before then has committed its incident, one that comes later finds the
    run ended and marks nothing."""
    def has(kind: str) -> sa.Exists:
        return sa.exists().where((INCIDENTS.c.run_id == run_id) & (INCIDENTS.c.kind == kind))

    values = sa.select(
        sa.literal(run_id), sa.literal(at, INCIDENTS.c.at.type), sa.literal("resumed"),
        sa.literal(message),
    ).where(has("abandoned") & ~has("resumed"))
    return sa.insert(INCIDENTS).from_select(["run_id", "at", "kind", "message"], values)


class ClaimTaken(ExecutionStopped):
    """A flush's `claim` inserted no row: another process made that record first. Nothing
    was written and the buffer is kept (for the caller to drop)."""


class TradeLog(TradeLogReaders):
    """Records one run at a time (`run_id`); reads any run. Orders, equity and positions
    are tagged with `account_id` (a client account of the registry; None for the
    single-account daemon) as it is when they are recorded; a fill always takes its
    order's account."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.run_id: int | None = None
        self.account_id: int | None = None
        self._order_accounts: dict[str, int | None] = {}  # client_order_id -> account_id
        self._owns_engine = False
        self._heartbeat: Heartbeat | None = None  # while a run of this process is open
        # Rows not yet written, in the *_COLUMNS order above.
        self._orders: dict[str, list[Any]] = {}  # client_order_id -> ORDER_COLUMNS row
        self._order_ids: dict[str, int] = {}  # client_order_id -> orders.id, already written
        self._updates: dict[str, dict[str, Any]] = {}  # changes to written orders
        self._events: list[tuple[Any, ...]] = []
        # (run_id, account_id, Fill): the Fill a backtest's result keeps anyway, not a
        # copy of its fields (rows made at flush by _fill_rows)
        self._fills: list[tuple[int, int | None, Fill]] = []
        self._regimes: list[tuple[Any, ...]] = []
        self._targets: list[tuple[Any, ...]] = []
        self._risk_events: list[tuple[Any, ...]] = []
        self._equity: list[tuple[Any, ...]] = []
        # One snapshot a row: (run_id, account_id, day, symbols, quantities, prices), the
        # numbers as doubles, not a float object each (rows made by _position_rows)
        self._positions: list[tuple[int, int | None, dt.date, tuple[str, ...], array, array]] = []
        self._states: dict[str, dict[str, Any]] = {}  # instance -> strategy_state row

    @classmethod
    def open(cls, url: str, *, migrations: Path = MIGRATIONS) -> TradeLog:
        """Connect to `url` for recording. An empty database gets the schema (so a first
        backtest just works); one at another revision raises SchemaOutdated, which says
        to run `bot db upgrade`. `migrations` is for tests that add revisions."""
        return cls._checked(writer_engine(url), lambda e: ensure_current(e, url, migrations))

    @classmethod
    def open_readonly(cls, url: str, *, migrations: Path = MIGRATIONS) -> TradeLog:
        """Connect for reading only (inspection, the dashboard): the database refuses writes,
        a missing SQLite file is an error, and the schema must be current."""
        return cls._checked(reader_engine(url), lambda e: check_current(e, url, migrations))

    @classmethod
    def _checked(cls, engine: sa.Engine, check: Callable[[sa.Engine], object]) -> TradeLog:
        """A log owning `engine` once `check` (the schema test) passes; else no leak."""
        try:
            check(engine)
        except BaseException:
            engine.dispose()
            raise
        tradelog = cls(engine)
        tradelog._owns_engine = True
        return tradelog

    @contextlib.contextmanager
    def recording_for(self, account_id: int | None) -> Iterator[TradeLog]:
        """Tag what is recorded inside the block with `account_id` (accounts.id); the
        previous account is restored after it."""
        previous, self.account_id = self.account_id, account_id
        try:
            yield self
        finally:
            self.account_id = previous

    @contextlib.contextmanager
    def dropped_on_error(self) -> Iterator[TradeLog]:
        """Records buffered inside the block are dropped if it raises, those buffered before
        it are kept as they were: a step that fails half-way (one profile of a platform
        decision) leaves none of its records to be written with the others'."""
        lists = (self._events, self._fills, self._regimes, self._targets, self._risk_events,
                 self._equity, self._positions)
        sizes = [len(buffer) for buffer in lists]
        orders = {cid: list(row) for cid, row in self._orders.items()}
        updates = {cid: dict(change) for cid, change in self._updates.items()}
        states = dict(self._states)
        try:
            yield self
        except BaseException:
            for buffer, size in zip(lists, sizes, strict=True):
                del buffer[size:]
            self._orders, self._updates, self._states = orders, updates, states
            raise

    # -- runs -------------------------------------------------------------------------

    def start_run(
        self,
        *,
        mode: str,
        strategy: str,
        config_hash: str,
        config: dict[str, Any],
        code_version: str,
        data_source: str,
        synthetic: bool,
        started_at: dt.datetime,
        holder: str | None = None,
    ) -> int:
        """Write the run row now, so even a run that crashes at once is on record.
        `holder`: the process that will end it (bot.store.holder), if one does; its
        heartbeat then marks the run alive until finish_run (bot.store.heartbeat)."""
        if mode not in RUN_MODES:
            raise ValueError(f"runs.mode: {mode!r} is not one of {', '.join(RUN_MODES)}")
        _check_aware(started_at, "runs.started_at")
        row = {
            "mode": mode,
            "strategy": strategy,
            "config_hash": config_hash,
            "config": config,
            "code_version": code_version,
            "data_source": data_source,
            "synthetic": synthetic,
            "started_at": started_at,
            "status": "running",
            "holder": holder,
        }
        insert = sa.insert(RUNS).returning(RUNS.c.id)
        if holder is not None:  # its first beat
            insert = insert.values(heartbeat_at=now_value(self.engine.dialect.name))
        with self.engine.begin() as conn:
            self.run_id = conn.execute(insert, row).scalar_one()
        # Beat for this process's own run, where other processes can see it.
        if holder is not None and holder == this_process() and needs_heartbeat(self.engine):
            self._stop_heartbeat()
            self._heartbeat = Heartbeat(self.engine, holder).start()
        return self.run_id

    def _stop_heartbeat(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.stop()
            self._heartbeat = None

    def finish_run(
        self,
        status: str,
        finished_at: dt.datetime,
        summary: dict[str, Any] | None = None,
        *,
        prepared: PreparedRecords | None = None,
    ) -> None:
        """Flush and mark the run finished in the same transaction (`prepared`: as flush).

        A failed run is marked failed even when its records cannot be written (they went
        to an incident, or the database refused them): a run must never stay 'running'."""
        if status not in ("finished", "failed"):
            raise ValueError(f"runs.status: {status!r} is not 'finished' or 'failed'")
        _check_aware(finished_at, "runs.finished_at")
        run_id = self._require_run()
        end = {"status": status, "finished_at": finished_at, "summary": summary}
        statement = sa.update(RUNS).where(RUNS.c.id == run_id).values(end)
        # Closed meanwhile as abandoned (this process was suspended or cut off from the
        # database for longer than the heartbeat's lease): its true end is recorded, and
        # an incident says so next to the `abandoned` one.
        resumed = _resumed_incident(
            run_id, finished_at,
            f"run {run_id} was closed as abandoned while its process still ran (suspended "
            f"or cut off from the database for longer than the heartbeat's lease); it "
            f"then ended {status}",
        )
        try:
            self._write(statement, resumed, prepared=prepared)
        except Exception:
            if status != "failed":
                raise
            with self.engine.begin() as conn:
                conn.execute(statement)
                conn.execute(resumed)
            raise
        finally:
            self._stop_heartbeat()  # a beat never touches an ended run: stop it after

    # -- recording (memory only) ------------------------------------------------------

    def _require_run(self) -> int:
        """The run's id, or the error for recording before a run started (the recorders
        called for every order and day read `self.run_id` first, and call this only
        when it is None: a call each was a measurable part of a backtest)."""
        if self.run_id is None:
            raise RuntimeError("no run: call start_run() before recording")
        return self.run_id

    def regime(self, d: RegimeDecision) -> None:
        self._regimes.append((
            self._require_run(), d.day, d.regime.value, d.vix, d.vix_date, d.spread,
            d.spread_date, d.uncertainty, d.uncertainty_date, d.warning,
            _rule_list(d.outcomes, d.decided), _rule_list(d.outcomes, d.kept),
            ", ".join(d.stale) or None,
        ))

    def targets(
        self, day: dt.date, rebalance_id: str, rows: Sequence[TargetRow], trigger: str
    ) -> None:
        run_id = self._require_run()
        self._targets.extend(
            (run_id, day, rebalance_id, r.symbol, r.baseline, r.overlay, r.final, r.stop_price,
             r.reasons, trigger)
            for r in rows
        )

    def risk_event(self, e: RiskEvent) -> None:
        self._risk_events.append((self._require_run(), e.day, e.rule, e.symbol, e.action, e.inputs))

    def order(self, o: Order, *, notional: float | Decimal | None = None) -> None:
        """Record a new order and its first status event.

        A client_order_id recorded before (by this process or an earlier one) is the same
        order, adopted again: a decision re-run after a restart meets its own order at the
        venue (422, looked up, returned as it is there). Its new state is recorded as a
        status change of the one row, never a second row and never an error.

        `notional` is the dollar amount of an order sent by value; its quantity is then the
        estimate at the reference price."""
        run_id = self.run_id if self.run_id is not None else self._require_run()
        # unpacked once: each field read by name is a descriptor call (a backtest's orders)
        cid, rebalance_id, symbol, side, quantity, reason, reference_price = o.request
        if o.submitted_at.tzinfo is not dt.UTC:
            _check_aware(o.submitted_at, "orders.submitted_at")
        if cid in self._orders or cid in self._order_ids:
            log.warning("tradelog.order_recorded_again", client_order_id=cid,
                        status=_STATUS_TEXT[o.status])
            self.order_status(
                cid, o.status, o.submitted_at, message=o.status_message,
                filled_quantity=o.filled_quantity, average_price=o.average_price,
                broker_order_id=o.broker_order_id,
            )
            return
        status = _STATUS_TEXT[o.status]
        self._order_accounts[cid] = self.account_id
        self._orders[cid] = [
            run_id, self.account_id, cid, o.broker_order_id, rebalance_id, symbol,
            _SIDE_TEXT[side], quantity, notional, reference_price, reason,
            status, o.status_message, o.filled_quantity, o.average_price, o.submitted_at,
            o.submitted_at,
        ]
        self._events.append((cid, status, o.submitted_at, o.status_message, o.filled_quantity))

    def order_status(
        self,
        client_order_id: str,
        status: OrderStatus,
        at: dt.datetime,
        *,
        message: str | None = None,
        filled_quantity: float | None = None,
        average_price: float | None = None,
        broker_order_id: str | None = None,
    ) -> None:
        """Record a status change; fields left None keep their previous value on the order."""
        self._status_change(
            client_order_id, status, at, message, filled_quantity, average_price, broker_order_id
        )

    def execution(self, order: Order, fill: Fill | None, at: dt.datetime) -> None:
        """Record an order's new state and its fill, whichever venue produced them (one
        call with positional fields: a backtest records one for every order). The change
        is dated at the fill's time, or without a fill at `at`, when it was seen (a
        cancel polled after a partial fill is later than both the submit and the fill)."""
        cid = order.request.client_order_id
        self._status_change(
            cid, order.status, at if fill is None else fill.filled_at, order.status_message,
            order.filled_quantity, order.average_price, order.broker_order_id,
        )
        if fill is not None:  # its time was checked just above, as the change's
            self._buffer_fill(fill)

    def _status_change(
        self,
        client_order_id: str,
        status: OrderStatus,
        at: dt.datetime,
        message: str | None,
        filled_quantity: float | None,
        average_price: float | None,
        broker_order_id: str | None,
    ) -> None:
        if at.tzinfo is not dt.UTC:
            _check_aware(at, "order_events.at")
        status_value = _STATUS_TEXT[status]
        buffered = self._orders.get(client_order_id)
        if buffered is not None:  # not yet written (every backtest order): set in place
            buffered[_STATUS], buffered[_UPDATED_AT] = status_value, at
            if message is not None:
                buffered[_STATUS_MESSAGE] = message
            if filled_quantity is not None:
                buffered[_FILLED_QUANTITY] = filled_quantity
            if average_price is not None:
                buffered[_AVERAGE_PRICE] = average_price
            if broker_order_id is not None:
                buffered[_BROKER_ORDER_ID] = broker_order_id
            self._events.append((client_order_id, status_value, at, message, filled_quantity))
            return
        changes: dict[str, Any] = {"status": status_value, "updated_at": at}
        if message is not None:
            changes["status_message"] = message
        if filled_quantity is not None:
            changes["filled_quantity"] = filled_quantity
        if average_price is not None:
            changes["average_price"] = average_price
        if broker_order_id is not None:
            changes["broker_order_id"] = broker_order_id
        pending = self._updates.get(client_order_id)
        if pending is None:
            pending = {"id": self._written_order_id(client_order_id)}
            self._updates[client_order_id] = pending
        pending.update(changes)
        self._events.append((client_order_id, status_value, at, message, filled_quantity))

    def fill(self, f: Fill) -> None:
        if f.filled_at.tzinfo is not dt.UTC:
            _check_aware(f.filled_at, "fills.filled_at")
        self._buffer_fill(f)

    def _buffer_fill(self, f: Fill) -> None:
        """Buffer `f` with its order's run and account (its time already checked)."""
        run_id = self.run_id if self.run_id is not None else self._require_run()
        cid = f.client_order_id
        if cid not in self._order_accounts:
            self._written_order_id(cid)  # an order an earlier process recorded, or an error
        self._fills.append((run_id, self._order_accounts[cid], f))

    def _fill_rows(self) -> Iterator[tuple[Any, ...]]:
        """The buffered fills as FILL_COLUMNS rows."""
        for run_id, account, f in self._fills:
            yield (run_id, account, f.client_order_id, f.symbol, _SIDE_TEXT[f.side], f.quantity,
                   f.price, f.commission, f.slippage_cost, f.filled_at)

    def equity(self, p: EquityPoint) -> None:
        # unpacked: each field read by name is a descriptor call, six a day
        day, equity, cash, positions_value, drawdown, regime = p
        self._equity.append((
            self.run_id if self.run_id is not None else self._require_run(), self.account_id,
            day, equity, cash, positions_value, drawdown,
            _REGIME_TEXT[regime],  # `.value` is a descriptor call each day
        ))

    def positions(self, day: dt.date, holdings: Mapping[str, tuple[float, float]]) -> None:
        """Snapshot holdings (symbol -> (quantity, price), floats); market value is computed
        exactly at flush."""
        values = holdings.values()
        self.snapshot(day, tuple(holdings), [q for q, _ in values], [p for _, p in values])

    def snapshot(
        self, day: dt.date, symbols: tuple[str, ...], quantities: Sequence[float],
        prices: Sequence[float],
    ) -> None:
        """`positions` as parallel sequences (the engine's arrays as lists, no mapping)."""
        run_id, account = self._require_run(), self.account_id
        if not symbols:
            return
        if len(quantities) != len(symbols) or len(prices) != len(symbols):
            raise ValueError(
                f"positions: {len(symbols)} symbols, {len(quantities)} quantities, "
                f"{len(prices)} prices"
            )
        if self._positions and self._positions[-1][3] == symbols:
            symbols = self._positions[-1][3]  # the same universe as the day before: shared
        self._positions.append(
            (run_id, account, day, symbols, array("d", quantities), array("d", prices))
        )

    def _position_rows(self) -> Iterator[tuple[Any, ...]]:
        """The buffered snapshots as POSITION_COLUMNS rows, one per symbol."""
        for run_id, account, day, symbols, quantities, prices in self._positions:
            for symbol, q, p in zip(symbols, quantities, prices, strict=True):
                yield run_id, account, day, symbol, q, p

    def incident(
        self, at: dt.datetime, kind: str, message: str, context: dict[str, Any] | None = None
    ) -> None:
        """Write an incident now, outside the buffer: errors must survive a crash that follows."""
        _check_aware(at, "incidents.at")
        row = {
            "run_id": self.run_id,
            "at": at,
            "kind": kind,
            "message": message,
            "context": context,
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(sa.insert(INCIDENTS), row)
        except Exception:
            log.exception(
                "tradelog.incident_not_stored", **{k: v for k, v in row.items() if k != "at"}
            )
            raise

    def save_state(self, instance: str, mode: str, state: dict[str, Any], at: dt.datetime) -> None:
        """Buffer a strategy instance's state; the next flush writes it in the same transaction
        as the records, so after a crash state and records always agree. Latest call wins."""
        if mode not in RUN_MODES:
            raise ValueError(f"strategy_state.mode: {mode!r} is not one of {', '.join(RUN_MODES)}")
        _check_aware(at, "strategy_state.updated_at")
        # Converted now, so a later change to the caller's dict cannot alter what is written.
        row = {"instance": instance, "mode": mode, "updated_at": at, "state": to_plain(state)}
        self._states[instance] = row

    def load_state(self, instance: str, mode: str) -> dict[str, Any] | None:
        """The state of `instance` as the next flush leaves it: the one saved since the
        last commit if any (a commit that failed keeps it buffered, and the job after it
        must go on from it, not from the older committed row it would then save over:
        the rebalance it records would be sent again), else the committed one, else None.

        An instance that saved state in another mode is an error: a live daemon must not
        resume from a paper account's state (or overwrite it)."""
        buffered = self._states.get(instance)
        if buffered is not None and buffered["mode"] == mode:
            return buffered["state"]
        t = STRATEGY_STATE
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t.c.mode, t.c.state).where(t.c.instance == instance)).first()
        if row is None:
            return None
        if row.mode != mode:
            raise BotError(
                f"strategy_state: instance {instance!r} holds {row.mode} state, not {mode}; "
                "give each mode its own instance name"
            )
        return row.state

    def save_macro(
        self,
        series: str,
        dates: Sequence[dt.date],
        values: Sequence[float],
        fetched_at: dt.datetime,
        covers: tuple[dt.date, dt.date] | None = None,
    ) -> tuple[list[dt.date], list[float]]:
        """Cache macro observations now (not buffered): new days are inserted, days whose
        value changed (revisions) are updated, unchanged ones are not written at all (the
        daemon hands over a year or more of downloaded history on every job). `covers`:
        the first and last day the download answered; a stored day in that span that is
        not given was withdrawn by the source (FRED answers "." or omits it) and is
        deleted, with a warning, so a value FRED took back is not read for ever. Returns
        the series as stored now from the first given day on, oldest first: what
        load_macro(series, since=that day) would read back."""
        if len(dates) != len(values):
            raise ValueError(f"save_macro({series!r}): {len(dates)} dates but {len(values)} values")
        _check_aware(fetched_at, "macro_observations.fetched_at")
        given: dict[dt.date, float] = {}
        for day, value in zip(dates, values, strict=True):
            number = float(value)
            if not math.isfinite(number):
                raise ValueError(f"macro_observations {series} {day}: value {value!r} is not finite")
            given[day if type(day) is dt.date else lazy_pandas().Timestamp(day).date()] = number
        # Only the given span is compared: the stored decades before it are not read.
        since = min([*given, *(covers[:1] if covers else ())], default=None)
        stored = dict(zip(*self.load_macro(series, since=since), strict=True))
        rows = [
            {"series": series, "day": day, "value": number, "fetched_at": fetched_at}
            for day, number in given.items()
            if stored.get(day) != number
        ]
        withdrawn = _withdrawn_days(stored, given, covers)
        if rows or withdrawn:
            with self.engine.begin() as conn:
                if rows:
                    upsert(conn, MACRO, rows, ("series", "day"), only_if_changed=("value",))
                _delete_macro_days(conn, series, withdrawn)
            stored.update((row["day"], row["value"]) for row in rows)
        for day in withdrawn:
            del stored[day]
        if withdrawn:
            log.warning("macro observations withdrawn by the source; deleted", series=series,
                        days=len(withdrawn), first=str(withdrawn[0]), last=str(withdrawn[-1]))
        days = sorted(stored)
        return days, [stored[day] for day in days]

    def load_macro(
        self, series: str, since: dt.date | None = None
    ) -> tuple[list[dt.date], list[float]]:
        """Cached observations of `series` (on or after `since`, if given), oldest first."""
        t = MACRO
        stmt = sa.select(t.c.day, t.c.value).where(t.c.series == series).order_by(t.c.day)
        if since is not None:
            stmt = stmt.where(t.c.day >= since)
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [r.day for r in rows], [float(r.value) for r in rows]

    def last_macro_day(self, series: str) -> dt.date | None:
        """The newest stored observation's day of `series` (None: nothing stored)."""
        stmt = sa.select(sa.func.max(MACRO.c.day)).where(MACRO.c.series == series)
        with self.engine.connect() as conn:
            day = conn.execute(stmt).scalar()
        return day  # max() keeps the column type: a date on every backend

    def knows_order(self, client_order_id: str) -> bool:
        """Whether an order with this id was recorded, by this process (buffered or
        written) or an earlier one."""
        if client_order_id in self._orders:
            return True
        try:
            self._written_order_id(client_order_id)
        except ValueError:
            return False
        return True

    def _written_order_id(self, client_order_id: str) -> int:
        """Id of an order already in the database (maybe from an earlier process), else raise."""
        order_id = self._order_ids.get(client_order_id)
        if order_id is None:
            query = sa.select(ORDERS.c.id, ORDERS.c.account_id).where(
                ORDERS.c.client_order_id == client_order_id
            )
            with self.engine.connect() as conn:
                row = conn.execute(query).first()
            if row is None:
                raise ValueError(
                    f"unknown client_order_id {client_order_id!r}: record it with order() first"
                )
            order_id = row.id
            self._order_ids[client_order_id] = order_id
            self._order_accounts[client_order_id] = row.account_id
        return order_id

    # -- writing ----------------------------------------------------------------------

    def flush(self, *also: sa.Executable, prepared: PreparedRecords | None = None,
              claim: sa.Executable | None = None) -> None:
        """Write everything buffered in one transaction; on failure nothing is written and
        the buffer is kept, so a later flush retries it. `also`: statements committed in
        the same transaction (a platform task's state with the records it made);
        `prepared`: this buffer already converted (prepare), else converted here.
        `claim`: an INSERT ... ON CONFLICT ... RETURNING run first (a platform batch's
        day, bot.platform.store.claim_day); if it returns no row, another process wrote
        it first and ClaimTaken is raised with nothing written."""
        self._write(*also, prepared=prepared, claim=claim)

    def _sizes(self) -> tuple[int, ...]:
        return (
            len(self._orders), len(self._events), len(self._fills), len(self._regimes),
            len(self._targets), len(self._risk_events), len(self._equity), len(self._positions),
        )

    def prepare(self, dialect: sa.Dialect) -> PreparedRecords:
        """The buffered rows converted as `dialect` binds them, the buffer left as it is.
        A flush does this before its transaction opens, so the database is held only for
        the INSERTs; a sweep worker does it for the main process that writes its run."""
        positions = [(*p, to_decimal(p[4]) * to_decimal(p[5])) for p in self._position_rows()]
        others = (
            (REGIMES, REGIME_COLUMNS, self._regimes),
            (TARGETS, TARGET_COLUMNS, self._targets),
            (RISK_EVENTS, RISK_EVENT_COLUMNS, self._risk_events),
            (EQUITY, EQUITY_COLUMNS, self._equity),
            (POSITIONS, (*POSITION_COLUMNS, "market_value"), positions),
        )
        return PreparedRecords(
            dialect=dialect_key(dialect),
            sizes=self._sizes(),
            orders=prepare_rows(dialect, ORDERS, ORDER_COLUMNS, list(self._orders.values())),
            events=prepare_rows(dialect, ORDER_EVENTS, EVENT_COLUMNS[1:],
                                [e[1:] for e in self._events]),
            fills=prepare_rows(dialect, FILLS, FILL_COLUMNS, list(self._fill_rows())),
            others=tuple(prepare_rows(dialect, t, columns, rows) for t, columns, rows in others),
        )

    def _current(self, prepared: PreparedRecords | None) -> PreparedRecords:
        """`prepared` if it is this buffer's, for this engine; else the buffer prepared now."""
        dialect = self.engine.dialect
        if prepared is not None and prepared.dialect == dialect_key(dialect) and (
            prepared.sizes == self._sizes()
        ):
            return prepared
        return self.prepare(dialect)

    def _pending(self) -> bool:
        return bool(any(self._sizes()) or self._updates or self._states)

    def _write(
        self, *final_statements: sa.Executable, prepared: PreparedRecords | None = None,
        claim: sa.Executable | None = None,
    ) -> None:
        if not self._pending() and not final_statements and claim is None:
            return
        started = time.perf_counter()
        prepared = self._current(prepared)  # before the transaction: no lock held for it
        with _signals_deferred():
            try:
                with self.engine.begin() as conn:
                    if claim is not None and conn.execute(claim).first() is None:
                        raise ClaimTaken("the record this flush claims was written first "
                                         "by another process; nothing was written")
                    new_ids, counts = self._write_buffers(conn, prepared)
                    for statement in final_statements:
                        conn.execute(statement)
            except (sa.exc.IntegrityError, sa.exc.DataError) as error:
                # The database refuses these rows themselves (not a lost connection):
                # retrying would fail the same way and block every later record behind them.
                self._quarantine(error, prepared,
                                 state_alone=not final_statements and claim is None)
                raise
            # Only now, after commit, forget the buffer: a failed transaction leaves it intact.
            self._order_ids.update(new_ids)
            self._clear_buffers()
        if any(counts.values()):
            seconds = round(time.perf_counter() - started, 4)
            log.debug("tradelog.flush", run_id=self.run_id, seconds=seconds, **counts)

    def _quarantine(self, error: Exception, prepared: PreparedRecords, *, state_alone: bool) -> None:
        """Keep rows the database rejected in an incident (nothing is lost, an operator can
        replay them) and clear the buffer so the records after them can be written. The
        order records go in first on their own if the database takes them, so the orders'
        later fills can still be recorded, and with them the strategy state (`state_alone`:
        the daemon's flush, whose orders are out); a flush that commits statements or a
        claim with its records (a platform task's phase) keeps its state with them, since
        the state without the phase would make the retried task skip its plan."""
        if self._save_order_records(prepared) and state_alone:
            self._save_states()

        def named(columns: tuple[str, ...], rows: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
            return [dict(zip(columns, row, strict=True)) for row in rows]

        rejected = {
            "orders": named(ORDER_COLUMNS, self._orders.values()),
            "order_updates": list(self._updates.values()),
            "order_events": named(EVENT_COLUMNS, self._events),
            "fills": named(FILL_COLUMNS, self._fill_rows()),
            "regime_decisions": named(REGIME_COLUMNS, self._regimes),
            "targets": named(TARGET_COLUMNS, self._targets),
            "risk_events": named(RISK_EVENT_COLUMNS, self._risk_events),
            "equity": named(EQUITY_COLUMNS, self._equity),
            "positions": [list(p) for p in self._position_rows()],
            "strategy_state": list(self._states.values()),
        }
        message = f"trade-log rows rejected by the database, kept here: {_first_line(error)}"
        self.incident(dt.datetime.now(dt.UTC), "tradelog_rejected", message, rejected)
        self._clear_buffers()

    def _save_order_records(self, prepared: PreparedRecords) -> bool:
        """Write the orders, their events and fills alone, in their own transaction: their
        later status changes and fills need the rows. False if refused too."""
        try:
            with self.engine.begin() as conn:
                new_ids, _ = self._write_order_records(conn, prepared)
        except (sa.exc.IntegrityError, sa.exc.DataError):
            return False
        self._order_ids.update(new_ids)
        self._orders.clear()
        self._updates.clear()
        self._events.clear()
        self._fills.clear()
        return True

    def _save_states(self) -> bool:
        """Write the strategy state alone, after the orders: a state lost with rejected rows
        sent the job after it back to the older committed one, and the rebalance whose
        orders were just saved was due again. False if refused too (it is then kept in
        the incident with the rest)."""
        if not self._states:
            return True
        try:
            with self.engine.begin() as conn:
                upsert(conn, STRATEGY_STATE, list(self._states.values()), ("instance",))
        except (sa.exc.IntegrityError, sa.exc.DataError):
            return False
        self._states.clear()
        return True

    def _clear_buffers(self) -> None:
        self._orders.clear()
        self._updates.clear()
        self._states.clear()
        for buffer in (
            self._events,
            self._fills,
            self._regimes,
            self._targets,
            self._risk_events,
            self._equity,
            self._positions,
        ):
            buffer.clear()

    def _write_buffers(
        self, conn: Connection, prepared: PreparedRecords
    ) -> tuple[dict[str, int], dict[str, int]]:
        """Insert in dependency order: orders, their updates and events, fills, the rest."""
        new_ids, counts = self._write_order_records(conn, prepared)
        counts.update(self._write_other_records(conn, prepared))
        return new_ids, counts

    def _write_order_records(
        self, conn: Connection, prepared: PreparedRecords
    ) -> tuple[dict[str, int], dict[str, int]]:
        """Orders, their status changes and events, and fills; returns the new order ids."""
        # An order recorded by an earlier process (a decision re-run after a restart, its
        # order adopted from the venue) is updated, not inserted a second time.
        new_ids = self._recorded_order_ids(conn, list(self._orders))
        updates = dict(self._updates)
        for cid, oid in new_ids.items():
            row = self._orders[cid]
            adopted = ((k, row[_ORDER_INDEX[k]]) for k in _ADOPTED_COLUMNS)
            updates[cid] = {"id": oid, **{k: v for k, v in adopted if v is not None}}
            log.warning("tradelog.order_already_recorded", client_order_id=cid, order_id=oid)
        fresh = [i for i, cid in enumerate(self._orders) if cid not in new_ids]
        if fresh:
            # Inserted in bulk, then their ids read back: new ids only grow, so they are
            # above today's highest, where client_order_id tells ours from another writer's.
            # (Looked up by client_order_id instead, PostgreSQL scans the table per batch:
            # its statistics do not know yet about the rows just inserted.)
            highest = conn.execute(sa.select(sa.func.max(ORDERS.c.id))).scalar_one()
            some_adopted = len(fresh) < len(self._orders)
            insert_prepared(conn, ORDERS, prepared.orders, keep=fresh if some_adopted else None)
            ours = set(self._orders).difference(new_ids)
            above = sa.select(ORDERS.c.client_order_id, ORDERS.c.id).where(
                ORDERS.c.id > (highest or 0)
            )
            found = {cid: oid for cid, oid in conn.execute(above) if cid in ours}
            if len(found) != len(ours):  # cannot happen while ids grow; never guess an id
                raise RuntimeError(f"{len(ours) - len(found)} inserted orders not found by id")
            new_ids |= found
        self._write_updates(conn, updates)

        def order_id(cid: str) -> int:
            return new_ids[cid] if cid in new_ids else self._order_ids[cid]

        event_orders = [order_id(e[0]) for e in self._events]
        fill_orders = [order_id(f.client_order_id) for _, _, f in self._fills]
        insert_prepared(conn, ORDER_EVENTS, prepared.events, before=("order_id", event_orders))
        insert_prepared(conn, FILLS, prepared.fills, before=("order_id", fill_orders))
        counts = {
            "orders": len(self._orders),
            "order_updates": len(self._updates),
            "order_events": len(event_orders),
            "fills": len(fill_orders),
        }
        return new_ids, counts

    def _write_other_records(self, conn: Connection, prepared: PreparedRecords) -> dict[str, int]:
        """Decisions, equity, positions and strategy state."""
        for rows in prepared.others:
            insert_prepared(conn, METADATA.tables[rows.table], rows)
        if self._states:
            upsert(conn, STRATEGY_STATE, list(self._states.values()), ("instance",))
        counts = {rows.table: rows.count for rows in prepared.others}
        counts["strategy_state"] = len(self._states)
        return counts

    def _recorded_order_ids(self, conn: Connection, client_order_ids: list[str]) -> dict[str, int]:
        """Those of `client_order_ids` already in the database, with their ids."""
        column = ORDERS.c.client_order_id
        query = sa.select(column, ORDERS.c.id)
        return {cid: oid for cid, oid in rows_where_in(conn, query, column, client_order_ids)}

    def _write_updates(self, conn: Connection, updates: dict[str, dict[str, Any]]) -> None:
        """UPDATE already-written orders, one executemany per set of changed columns."""
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
        for changes in updates.values():
            columns = tuple(sorted(k for k in changes if k != "id"))
            groups[columns].append({f"new_{k}": v for k, v in changes.items()})
        for columns, params in groups.items():
            stmt = (
                sa.update(ORDERS)
                .where(ORDERS.c.id == sa.bindparam("new_id"))
                .values({c: sa.bindparam(f"new_{c}") for c in columns})
            )
            conn.execute(stmt, params)

    def discard(self) -> None:
        """Drop everything buffered and release the engine: for scratch runs (reference
        portfolios, benchmarks) whose records nobody will read."""
        self._clear_buffers()
        if self._owns_engine:
            self.engine.dispose()

    def close(self) -> None:
        """Flush what is left, then release the engine if this log created it."""
        self._stop_heartbeat()
        try:
            self.flush()
        finally:
            if self._owns_engine:
                self.engine.dispose()


def _withdrawn_days(
    stored: Mapping[dt.date, float], given: Mapping[dt.date, float],
    covers: tuple[dt.date, dt.date] | None,
) -> list[dt.date]:
    """Stored days inside the span a download covers that it gave no value for, oldest
    first: the source withdrew them (none without a known span)."""
    if covers is None:
        return []
    first, last = covers
    return sorted(day for day in stored if first <= day <= last and day not in given)


#: days deleted per statement (SQLite's bound parameters are limited)
_DELETE_CHUNK = 500


def _delete_macro_days(conn: Connection, series: str, days: list[dt.date]) -> None:
    """Delete the observations of `series` on `days`."""
    for i in range(0, len(days), _DELETE_CHUNK):
        chunk = days[i:i + _DELETE_CHUNK]
        conn.execute(sa.delete(MACRO).where(MACRO.c.series == series, MACRO.c.day.in_(chunk)))
