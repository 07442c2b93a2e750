"""Trade log round trips on SQLite and PostgreSQL: the live daemon relies on both."""

from __future__ import annotations

import datetime as dt
import getpass
import os
import uuid
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from bot.errors import BotError
from bot.store import TradeLog
from bot.store.models import (
    FILLS,
    MACRO_OBSERVATIONS,
    ORDER_EVENTS,
    ORDERS,
    POSITIONS,
)
from bot.types import (
    EquityPoint,
    Fill,
    Order,
    OrderRequest,
    OrderStatus,
    Regime,
    RegimeDecision,
    RiskEvent,
    Side,
    TargetRow,
)

T0 = dt.datetime(2024, 3, 4, 21, 0, tzinfo=dt.UTC)
DAY = dt.date(2024, 3, 4)
CEST = dt.timezone(dt.timedelta(hours=2))

# --- backends -------------------------------------------------------------------------


def _pg_unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"PostgreSQL is required when CI=true: {reason}")
    pytest.skip(reason)


def throwaway_pg_database() -> Iterator[str]:
    """A fresh database for the session, created through the `test` database, dropped after.

    A plain generator, so other test modules can make the same fixtures from it."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _pg_unavailable("psycopg is not installed (pip install 'psycopg[binary]')")
    errors = []
    for user in dict.fromkeys(["postgres", getpass.getuser()]):
        admin_url = f"postgresql+psycopg://{user}@127.0.0.1:5432/test"
        admin = sa.create_engine(
            admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
        )
        try:
            with admin.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except sa.exc.OperationalError as exc:
            errors.append(f"{user}: {' '.join(str(exc.orig).split())}")
            admin.dispose()
            continue
        name = f"bot_test_store_{uuid.uuid4().hex[:12]}"
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
        return
    _pg_unavailable("PostgreSQL unreachable at 127.0.0.1:5432/test: " + "; ".join(errors))


def backend_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """A SQLite file or the session's PostgreSQL database (emptied afterwards), by request.param."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'nested' / 'trades.sqlite'}"
        return
    pg_url = request.getfixturevalue("pg_database_url")
    yield pg_url
    reset_pg(pg_url)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    yield from backend_url(request, tmp_path)


def reset_pg(pg_url: str) -> None:
    """Empty the session's database (tables and alembic_version) for the next test."""
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture
def tlog(url: str) -> Iterator[TradeLog]:
    log = TradeLog.open(url)
    yield log
    log.close()


def is_sqlite(log: TradeLog) -> bool:
    return log.engine.dialect.name == "sqlite"


def stored(log: TradeLog, x: float) -> Decimal:
    """What the database keeps for float `x`: exact on SQLite, NUMERIC(28, 10) on PostgreSQL."""
    d = Decimal(repr(x))
    return d if is_sqlite(log) else d.quantize(Decimal("1e-10"), rounding=ROUND_HALF_UP)


# --- builders -------------------------------------------------------------------------


def start(log: TradeLog, **overrides) -> int:
    kwargs = {
        "mode": "backtest",
        "strategy": "risk_parity",
        "config_hash": "abc123",
        "config": {"universe": ["SPY", "TLT"], "lookback": 63},
        "code_version": "0.1.0+g1234",
        "data_source": "synthetic:seed=7",
        "synthetic": True,
        "started_at": T0,
    }
    kwargs.update(overrides)
    return log.start_run(**kwargs)


def make_order(cid: str, *, quantity: float = 10.0, at: dt.datetime = T0, symbol="SPY") -> Order:
    request = OrderRequest(cid, "rb-2024-03-04", symbol, Side.BUY, quantity, "rebalance", 512.25)
    return Order(request, OrderStatus.NEW, at)


def make_fill(cid: str, *, price: float = 512.3, at: dt.datetime = T0, symbol="SPY") -> Fill:
    return Fill(cid, symbol, Side.BUY, 10.0, price, 0.0, 0.5, at)


def equity_point(day: dt.date = DAY, regime: Regime | None = Regime.GROWTH) -> EquityPoint:
    return EquityPoint(day, 100_000.0, 2_500.5, 97_499.5, -0.0125, regime)


def select_all(log: TradeLog, stmt) -> list:
    with log.engine.connect() as conn:
        return conn.execute(stmt).all()


def count(log: TradeLog, table: str) -> int:
    with log.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(sa.table(table))).scalar_one()


# --- tests ----------------------------------------------------------------------------


def test_round_trip_every_record_type(tlog: TradeLog) -> None:
    config = {"universe": ["SPY", "TLT"], "lookback": 63, "start": dt.date(2005, 1, 3)}
    run_id = start(tlog, config=config)
    regime = RegimeDecision(
        DAY, Regime.UNCERTAINTY, 31.5, DAY, -0.25, DAY, None, None, "EPU stale",
        outcomes={"uncertainty": True, "transition": False}, decided=(), kept=("uncertainty",),
        stale=("VIX", "USEPUINDXD"),
    )
    tlog.regime(regime)
    rows = [
        TargetRow("SPY", 0.6, 0.5, 0.45, 498.125, ("risk parity", "vix overlay")),
        TargetRow("TLT", 0.4, 0.5, 0.55, None, ()),
    ]
    tlog.targets(DAY, "rb-2024-03-04", rows, "weekly")
    inputs = {"drawdown": -0.21, "limit": np.float64(-0.2), "days": np.int64(3), "on": DAY}
    tlog.risk_event(RiskEvent(DAY, "max_drawdown", "flatten", inputs, "SPY"))
    tlog.risk_event(RiskEvent(DAY, "vol_target", "skipped", {"vol": float("nan")}))
    tlog.order(make_order("o-1", quantity=0.1 + 0.2, at=T0.astimezone(CEST)))
    tlog.fill(make_fill("o-1", price=0.1 + 0.2))
    tlog.equity(equity_point())
    tlog.equity(equity_point(DAY + dt.timedelta(days=1), None))
    tlog.positions(DAY, {"SPY": (10.5, 0.1 + 0.2), "TLT": (3, 91.5)})
    tlog.incident(T0, "data_gap", "VIX missing", {"series": "VIX", "day": DAY})
    tlog.finish_run("finished", T0 + dt.timedelta(hours=1), {"cagr": 0.071, "trades": 1})

    run = tlog.runs().set_index("id").loc[run_id]
    assert run["mode"] == "backtest" and run["status"] == "finished"
    assert run["config"] == {"universe": ["SPY", "TLT"], "lookback": 63, "start": "2005-01-03"}
    assert run["summary"] == {"cagr": 0.071, "trades": 1}
    assert bool(run["synthetic"]) is True
    assert run["started_at"] == T0 and run["finished_at"] == T0 + dt.timedelta(hours=1)

    regimes = tlog.load_regimes(run_id)
    assert regimes.to_dict("records") == [
        {
            "day": pd.Timestamp(DAY),
            "regime": "UNCERTAINTY",
            "vix": 31.5,
            "vix_date": pd.Timestamp(DAY),
            "spread": -0.25,
            "spread_date": pd.Timestamp(DAY),
            "uncertainty": pytest.approx(np.nan, nan_ok=True),
            "uncertainty_date": pd.NaT,
            "warning": "EPU stale",
            "decided_rules": None,
            "kept_rules": "uncertainty=yes",
            "stale_inputs": "VIX, USEPUINDXD",
        }
    ]

    targets = tlog.load_targets(run_id)
    assert targets["symbol"].tolist() == ["SPY", "TLT"]
    assert targets[["baseline", "overlay", "final"]].values.tolist() == [
        [0.6, 0.5, 0.45],
        [0.4, 0.5, 0.55],
    ]
    assert targets["stop_price"].iloc[0] == 498.125 and np.isnan(targets["stop_price"].iloc[1])
    assert targets["reasons"].tolist() == [["risk parity", "vix overlay"], []]
    assert set(targets["trigger"]) == {"weekly"} and set(targets["rebalance_id"]) == {
        "rb-2024-03-04"
    }

    risk = tlog.load_risk_events(run_id)
    assert risk[["rule", "action"]].values.tolist() == [
        ["max_drawdown", "flatten"],
        ["vol_target", "skipped"],
    ]
    assert risk["symbol"].iloc[0] == "SPY" and pd.isna(risk["symbol"].iloc[1])
    assert risk["inputs"].iloc[0] == {
        "drawdown": -0.21,
        "limit": -0.2,
        "days": 3,
        "on": "2024-03-04",
    }
    assert risk["inputs"].iloc[1] == {"vol": "nan"}

    (order,) = select_all(tlog, sa.select(ORDERS))
    assert order.quantity == stored(tlog, 0.1 + 0.2)
    assert order.reference_price == Decimal("512.25")
    assert order.filled_quantity == Decimal(0) and order.average_price is None
    assert (order.side, order.status, order.run_id) == ("buy", "new", run_id)
    assert order.submitted_at == T0 and order.submitted_at.tzinfo is dt.UTC

    (fill,) = select_all(tlog, sa.select(FILLS))
    assert fill.price == stored(tlog, 0.1 + 0.2)
    if is_sqlite(tlog):  # TEXT keeps every digit of the float's repr, no float rounding
        assert fill.price == Decimal("0.30000000000000004")
    assert (fill.quantity, fill.commission, fill.slippage_cost) == (10, 0, Decimal("0.5"))
    assert fill.order_id == order.id and fill.client_order_id == "o-1"

    positions = select_all(tlog, sa.select(POSITIONS).order_by(POSITIONS.c.id))
    assert [(p.symbol, p.quantity, p.price) for p in positions] == [
        ("SPY", Decimal("10.5"), stored(tlog, 0.1 + 0.2)),
        ("TLT", Decimal(3), Decimal("91.5")),
    ]
    exact_value = Decimal("10.5") * Decimal("0.30000000000000004")
    assert positions[0].market_value == (
        exact_value if is_sqlite(tlog) else exact_value.quantize(Decimal("1e-10"))
    )
    assert tlog.load_positions(run_id)["market_value"].tolist() == [
        float(positions[0].market_value),
        274.5,
    ]

    equity = tlog.load_equity(run_id)
    assert equity.index.tolist() == [pd.Timestamp(DAY), pd.Timestamp(DAY + dt.timedelta(days=1))]
    assert equity.iloc[0][["equity", "cash", "positions_value", "drawdown"]].tolist() == [
        100_000.0,
        2_500.5,
        97_499.5,
        -0.0125,
    ]
    assert equity["regime"].iloc[0] == "GROWTH" and pd.isna(equity["regime"].iloc[1])

    incidents = tlog.load_incidents(run_id)
    assert incidents[["kind", "message"]].values.tolist() == [["data_gap", "VIX missing"]]
    assert incidents["context"].iloc[0] == {"series": "VIX", "day": "2024-03-04"}


def test_sqlite_pragmas_and_parent_dir(tmp_path) -> None:
    path = tmp_path / "a" / "b" / "trades.sqlite"
    log = TradeLog.open(f"sqlite:///{path}")
    try:
        assert path.parent.is_dir()
        with log.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000
    finally:
        log.close()


def test_foreign_keys_enforced(tlog: TradeLog) -> None:
    run_id = start(tlog)
    row = {
        "run_id": run_id,
        "order_id": 999_999,
        "client_order_id": "ghost",
        "symbol": "SPY",
        "side": "buy",
        "quantity": 1,
        "price": 1,
        "commission": 0,
        "slippage_cost": 0,
        "filled_at": T0,
    }
    with pytest.raises(sa.exc.IntegrityError), tlog.engine.begin() as conn:
        conn.execute(sa.insert(FILLS), row)


def test_unique_client_order_id(url: str, tlog: TradeLog) -> None:
    """An order recorded again (adopted after a restart re-decided its day) is the same
    order: its new state updates the one row, whether still buffered or written."""
    start(tlog)
    tlog.order(make_order("dup"))
    again = make_order("dup")
    again.status, again.broker_order_id = OrderStatus.ACCEPTED, "b-dup"
    tlog.order(again)  # still buffered
    tlog.flush()
    assert count(tlog, "orders") == 1
    filled = make_order("dup", quantity=3.0)  # another plan's quantity, the same order
    filled.status, filled.filled_quantity, filled.average_price = OrderStatus.FILLED, 10.0, 512.5
    tlog.order(filled)  # already written
    tlog.flush()
    [row] = tlog.load_orders().itertuples()
    assert (row.status, row.broker_order_id, row.quantity, row.filled_quantity) == (
        "filled", "b-dup", 10.0, 10.0
    )
    assert count(tlog, "order_events") == 3

    other = TradeLog.open(url)  # another process knows nothing of "dup": still one row
    try:
        start(other)
        other.order(make_order("dup"))
        other.flush()
        assert count(tlog, "orders") == 1
    finally:
        other.engine.dispose()


def test_status_updates_on_buffered_and_flushed_orders(url: str, tlog: TradeLog) -> None:
    run_id = start(tlog)
    tlog.order(make_order("o-1", quantity=10))
    tlog.order_status(
        "o-1", OrderStatus.ACCEPTED, T0 + dt.timedelta(seconds=1), broker_order_id="b-1"
    )
    tlog.flush()
    tlog.order_status(
        "o-1",
        OrderStatus.PARTIALLY_FILLED,
        T0 + dt.timedelta(seconds=2),
        filled_quantity=4,
        average_price=512.5,
    )
    tlog.order_status(
        "o-1",
        OrderStatus.FILLED,
        T0 + dt.timedelta(seconds=3),
        message="done",
        filled_quantity=10,
        average_price=512.40000000000003,
    )
    assert tlog.load_orders(run_id)["status"].tolist() == ["accepted"]  # readers see commits only
    tlog.flush()

    (order,) = select_all(tlog, sa.select(ORDERS))
    assert (order.status, order.broker_order_id, order.status_message) == ("filled", "b-1", "done")
    assert order.filled_quantity == Decimal(10)
    assert order.average_price == stored(tlog, 512.40000000000003)
    assert order.updated_at == T0 + dt.timedelta(seconds=3)
    assert order.submitted_at == T0

    events = select_all(tlog, sa.select(ORDER_EVENTS).order_by(ORDER_EVENTS.c.id))
    assert [(e.order_id, e.status, e.at, e.message, e.filled_quantity) for e in events] == [
        (order.id, "new", T0, None, Decimal(0)),
        (order.id, "accepted", T0 + dt.timedelta(seconds=1), None, None),
        (order.id, "partially_filled", T0 + dt.timedelta(seconds=2), None, Decimal(4)),
        (order.id, "filled", T0 + dt.timedelta(seconds=3), "done", Decimal(10)),
    ]
    assert len(tlog.load_orders(status="filled")) == 1
    assert tlog.load_orders(status=OrderStatus.ACCEPTED).empty

    with pytest.raises(ValueError, match="unknown client_order_id 'nope'"):
        tlog.order_status("nope", OrderStatus.CANCELED, T0)
    with pytest.raises(ValueError, match="unknown client_order_id 'nope'"):
        tlog.fill(make_fill("nope"))

    # After a restart, a new process updates and fills an order it finds in the database.
    tlog.order(make_order("o-2", symbol="TLT"))
    tlog.finish_run("failed", T0 + dt.timedelta(minutes=1))
    restarted = TradeLog.open(url)
    try:
        run_2 = start(restarted, mode="live", synthetic=False)
        later = T0 + dt.timedelta(days=1)
        restarted.order_status("o-2", OrderStatus.CANCELED, later, message="expired overnight")
        restarted.fill(make_fill("o-1", at=later))
        restarted.flush()
        orders = restarted.load_orders().set_index("client_order_id")
        assert orders.loc["o-2", "status"] == "canceled"
        assert orders.loc["o-2", "status_message"] == "expired overnight"
        assert orders.loc["o-2", "run_id"] == run_id  # stays with the run that placed it
        assert restarted.load_fills(run_2)["client_order_id"].tolist() == ["o-1"]
    finally:
        restarted.close()


def test_timestamps_are_aware_utc_and_naive_ones_are_refused(tlog: TradeLog) -> None:
    naive = dt.datetime(2024, 3, 4, 21, 0)
    with pytest.raises(ValueError, match="runs.started_at: naive datetime"):
        start(tlog, started_at=naive)
    run_id = start(tlog, started_at=T0.astimezone(CEST))
    with pytest.raises(ValueError, match="orders.submitted_at: naive datetime"):
        tlog.order(make_order("o-1", at=naive))
    tlog.order(make_order("o-1", at=T0.astimezone(CEST)))
    with pytest.raises(ValueError, match="order_events.at: naive datetime"):
        tlog.order_status("o-1", OrderStatus.FILLED, naive)
    with pytest.raises(ValueError, match="fills.filled_at: naive datetime"):
        tlog.fill(make_fill("o-1", at=naive))
    with pytest.raises(ValueError, match="incidents.at: naive datetime"):
        tlog.incident(naive, "x", "y")
    with pytest.raises(ValueError, match="runs.finished_at: naive datetime"):
        tlog.finish_run("finished", naive)
    tlog.fill(make_fill("o-1", at=T0.astimezone(CEST)))
    tlog.flush()

    (order,) = select_all(tlog, sa.select(ORDERS))
    assert order.submitted_at == T0 and order.submitted_at.tzinfo is dt.UTC
    assert order.submitted_at.hour == 21  # stored as UTC, not as the caller's wall time
    fills = tlog.load_fills(run_id)
    assert str(fills["filled_at"].dt.tz) == "UTC"
    assert fills["filled_at"].iloc[0] == pd.Timestamp(T0)
    assert tlog.runs()["started_at"].iloc[0] == pd.Timestamp(T0)

    # The column type itself refuses naive values written around the TradeLog.
    with pytest.raises(sa.exc.StatementError, match="naive datetime"), tlog.engine.begin() as c:
        c.execute(sa.update(ORDERS).values(updated_at=naive))


def test_flush_is_one_transaction(url: str) -> None:
    log = TradeLog.open(url)
    try:
        run_id = start(log)
        log.order(make_order("o-1"))
        log.order_status("o-1", OrderStatus.FILLED, T0, filled_quantity=10, average_price=512.3)
        log.fill(make_fill("o-1"))
        log.targets(DAY, "rb", [TargetRow("SPY", 1.0, 1.0, 1.0, None, ())], "weekly")
        log.equity(equity_point())
        log.equity(equity_point())  # same run and day: the last insert fails
        with pytest.raises(sa.exc.IntegrityError):
            log.flush()
        # Nothing of the failed transaction stays; then the order records are saved on
        # their own (their later fills need them) and the rest goes to an incident.
        for table in ("targets", "equity"):
            assert count(log, table) == 0, table
        assert [count(log, t) for t in ("orders", "order_events", "fills")] == [1, 2, 1]
        rejected = log.load_incidents(run_id)["context"].iloc[0]
        assert len(rejected["targets"]) == 1 and len(rejected["equity"]) == 2
        assert log.runs()["id"].tolist() == [run_id]
    finally:
        log.engine.dispose()


def fail_next_write(log: TradeLog, monkeypatch: pytest.MonkeyPatch) -> None:
    """The next flush dies half-way, as with a lost connection (a transient failure)."""
    real = log._write_buffers

    def broken(conn, prepared):
        real(conn, prepared)  # rows sent, then the connection drops before the commit
        monkeypatch.setattr(log, "_write_buffers", real)
        raise sa.exc.OperationalError("COMMIT", {}, Exception("server closed the connection"))

    monkeypatch.setattr(log, "_write_buffers", broken)


def test_failed_flush_keeps_the_buffer_for_a_retry(tlog: TradeLog, monkeypatch) -> None:
    run_id = start(tlog)
    tlog.order(make_order("o-1"))
    tlog.fill(make_fill("o-1"))
    tlog.equity(equity_point())
    fail_next_write(tlog, monkeypatch)
    with pytest.raises(sa.exc.OperationalError):
        tlog.flush()
    assert count(tlog, "fills") == 0 and count(tlog, "equity") == 0
    tlog.flush()
    assert tlog.load_orders(run_id)["symbol"].tolist() == ["SPY"]
    assert len(tlog.load_fills(run_id)) == 1 and len(tlog.load_equity(run_id)) == 1
    assert count(tlog, "order_events") == 1


def test_finish_run_flushes(url: str, tlog: TradeLog) -> None:
    run_id = start(tlog)
    tlog.order(make_order("o-1"))
    tlog.fill(make_fill("o-1"))
    tlog.equity(equity_point())
    with pytest.raises(ValueError, match="'done' is not 'finished' or 'failed'"):
        tlog.finish_run("done", T0)
    tlog.finish_run("finished", T0 + dt.timedelta(hours=2), {"sharpe": 1.25})

    reader = TradeLog.open(url)
    try:
        run = reader.runs().set_index("id").loc[run_id]
        assert run["status"] == "finished" and run["summary"] == {"sharpe": 1.25}
        assert run["finished_at"] == T0 + dt.timedelta(hours=2)
        assert len(reader.load_fills(run_id)) == 1 and len(reader.load_equity(run_id)) == 1
    finally:
        reader.close()


def test_incidents_are_written_immediately(url: str, tlog: TradeLog) -> None:
    tlog.incident(T0, "startup", "no run yet")
    run_id = start(tlog)
    tlog.equity(equity_point())  # buffered, not written by incident()
    tlog.incident(T0, "broker_error", "HTTP 500", {"attempt": np.int64(2)})
    reader = TradeLog.open(url)
    try:
        incidents = reader.load_incidents()
        assert incidents["kind"].tolist() == ["startup", "broker_error"]
        assert pd.isna(incidents["run_id"].iloc[0]) and incidents["run_id"].iloc[1] == run_id
        assert incidents["context"].tolist() == [None, {"attempt": 2}]
        assert reader.load_incidents(run_id)["kind"].tolist() == ["broker_error"]
        assert reader.load_equity(run_id).empty
    finally:
        reader.close()


def test_recording_needs_a_run_and_a_known_mode(tlog: TradeLog) -> None:
    with pytest.raises(RuntimeError, match="start_run"):
        tlog.equity(equity_point())
    with pytest.raises(ValueError, match="runs.mode: 'prod'"):
        start(tlog, mode="prod")


EXPECTED_COLUMNS = {
    "load_fills": [
        "filled_at",
        "symbol",
        "side",
        "quantity",
        "price",
        "commission",
        "slippage_cost",
        "client_order_id",
    ],
    "load_orders": [
        "run_id",
        "account_id",
        "client_order_id",
        "broker_order_id",
        "rebalance_id",
        "symbol",
        "side",
        "quantity",
        "notional",
        "reference_price",
        "reason",
        "status",
        "status_message",
        "filled_quantity",
        "average_price",
        "submitted_at",
        "updated_at",
    ],
    "load_regimes": [
        "day",
        "regime",
        "vix",
        "vix_date",
        "spread",
        "spread_date",
        "uncertainty",
        "uncertainty_date",
        "warning",
        "decided_rules",
        "kept_rules",
        "stale_inputs",
    ],
    "load_targets": [
        "day",
        "rebalance_id",
        "symbol",
        "baseline",
        "overlay",
        "final",
        "stop_price",
        "reasons",
        "trigger",
    ],
    "load_risk_events": ["day", "rule", "symbol", "action", "inputs"],
    "load_positions": ["day", "symbol", "quantity", "price", "market_value"],
}
FLOAT_COLUMNS = {
    "load_fills": ["quantity", "price", "commission", "slippage_cost"],
    "load_orders": ["quantity", "notional", "reference_price", "filled_quantity", "average_price"],
    "load_regimes": ["vix", "spread", "uncertainty"],
    "load_targets": ["baseline", "overlay", "final", "stop_price"],
    "load_positions": ["quantity", "price", "market_value"],
}


def test_readers_return_documented_columns(tlog: TradeLog) -> None:
    empty_run = start(tlog)
    tlog.finish_run("finished", T0)
    run_id = start(tlog)
    tlog.regime(RegimeDecision(DAY, Regime.GROWTH, 14.0, DAY, 0.5, DAY, 90.0, DAY))
    tlog.targets(DAY, "rb", [TargetRow("SPY", 1.0, 1.0, 1.0, 500.0, ("x",))], "weekly")
    tlog.risk_event(RiskEvent(DAY, "stop", "sell", {"price": 1.0}, "SPY"))
    tlog.order(make_order("o-1"))
    tlog.fill(make_fill("o-1"))
    tlog.equity(equity_point())
    tlog.positions(DAY, {"SPY": (10.0, 512.3)})
    tlog.flush()

    for rid, rows in ((run_id, 1), (empty_run, 0)):
        for name, columns in EXPECTED_COLUMNS.items():
            frame = getattr(tlog, name)(rid)
            assert frame.columns.tolist() == columns, name
            assert len(frame) == rows, name
            for column in FLOAT_COLUMNS.get(name, []):
                assert frame[column].dtype == np.float64, (name, column)
        equity = tlog.load_equity(rid)
        assert isinstance(equity.index, pd.DatetimeIndex) and equity.index.name == "day"
        assert equity.columns.tolist() == [
            "equity",
            "cash",
            "positions_value",
            "drawdown",
            "regime",
        ]
        assert all(equity[c].dtype == np.float64 for c in ["equity", "cash", "drawdown"])
        assert len(equity) == rows
    assert tlog.load_fills(run_id)["price"].iloc[0] == 512.3
    assert tlog.runs().columns.tolist() == [
        "id",
        "mode",
        "strategy",
        "config_hash",
        "config",
        "code_version",
        "data_source",
        "synthetic",
        "started_at",
        "finished_at",
        "status",
        "summary",
        "holder",
        "heartbeat_at",
    ]
    assert tlog.load_incidents().columns.tolist() == ["at", "run_id", "kind", "message", "context"]


def test_notional_orders_keep_their_amount(tlog: TradeLog) -> None:
    run_id = start(tlog)
    tlog.order(make_order("by-value", quantity=1.95), notional=1000.0)
    tlog.order(make_order("by-shares"))
    tlog.flush()
    orders = tlog.load_orders(run_id).set_index("client_order_id")
    assert orders.loc["by-value", "notional"] == 1000.0
    assert np.isnan(orders.loc["by-shares", "notional"])
    (row,) = select_all(
        tlog, sa.select(ORDERS.c.notional).where(ORDERS.c.client_order_id == "by-value")
    )
    assert row.notional == Decimal(1000)


def test_strategy_state_commits_with_the_records_or_not_at_all(tlog: TradeLog, monkeypatch) -> None:
    run_id = start(tlog)
    tlog.save_state("main", "paper", {"regime": Regime.GROWTH, "peak": Decimal("101.5")}, T0)
    tlog.order(make_order("o-1"))
    reader = TradeLog(tlog.engine)  # another process: sees only what is committed
    assert reader.load_state("main", "paper") is None  # buffered, not committed
    fail_next_write(tlog, monkeypatch)
    with pytest.raises(sa.exc.OperationalError):
        tlog.flush()
    assert reader.load_state("main", "paper") is None
    # This log's next job goes on from the state its failed commit still holds: the
    # older committed row, saved over it, would make a sent rebalance due again.
    assert tlog.load_state("main", "paper") == {"regime": "GROWTH", "peak": "101.5"}
    tlog.flush()
    assert reader.load_state("main", "paper") == {"regime": "GROWTH", "peak": "101.5"}
    assert tlog.load_state("main", "paper") == {"regime": "GROWTH", "peak": "101.5"}
    assert tlog.load_orders(run_id)["symbol"].tolist() == ["SPY"]

    later = T0 + dt.timedelta(days=1)
    tlog.save_state("main", "paper", {"regime": "TRANSITION"}, later)
    tlog.save_state("main", "paper", {"regime": "UNCERTAINTY"}, later)  # the last call wins
    tlog.save_state("other", "live", {"n": 1}, later)
    tlog.flush()
    assert tlog.load_state("main", "paper") == {"regime": "UNCERTAINTY"}
    assert tlog.load_state("other", "live") == {"n": 1}
    assert tlog.load_state("nobody", "live") is None
    (stamp,) = select_all(tlog, sa.text("SELECT count(*) FROM strategy_state"))
    assert stamp[0] == 2
    with pytest.raises(BotError, match="instance 'main' holds paper state, not live"):
        tlog.load_state("main", "live")
    with pytest.raises(ValueError, match="strategy_state.mode"):
        tlog.save_state("main", "demo", {}, later)
    with pytest.raises(ValueError, match="naive datetime"):
        tlog.save_state("main", "paper", {}, dt.datetime(2024, 3, 5))


def test_macro_cache_inserts_new_days_and_updates_revised_ones(tlog: TradeLog) -> None:
    days = [dt.date(2024, 3, 1), dt.date(2024, 3, 4), dt.date(2024, 3, 5)]
    tlog.save_macro("VIX", days, [14.5, 15.25, 13.0], T0)
    tlog.save_macro("T10Y2Y", days[:1], [-0.35], T0)
    later = T0 + dt.timedelta(days=2)
    new_days = [dt.date(2024, 3, 4), pd.Timestamp("2024-03-05"), dt.date(2024, 3, 6)]
    saved = tlog.save_macro("VIX", new_days, [15.25, 13.5, np.float64(16.0)], later)

    # The stored series from the first day given on (not the days stored before it).
    assert saved == ([dt.date(2024, 3, d) for d in (4, 5, 6)], [15.25, 13.5, 16.0])
    assert tlog.load_macro("VIX") == (days + [dt.date(2024, 3, 6)], [14.5, 15.25, 13.5, 16.0])
    assert tlog.load_macro("VIX", since=dt.date(2024, 3, 5)) == (saved[0][1:], saved[1][1:])
    assert tlog.save_macro("VIX", [], [], later) == tlog.load_macro("VIX")  # nothing given
    assert tlog.load_macro("T10Y2Y") == ([dt.date(2024, 3, 1)], [-0.35])
    assert tlog.load_macro("USEPUINDXD") == ([], [])
    rows = select_all(
        tlog,
        sa.select(MACRO_OBSERVATIONS.c.day, MACRO_OBSERVATIONS.c.fetched_at)
        .where(MACRO_OBSERVATIONS.c.series == "VIX")
        .order_by(MACRO_OBSERVATIONS.c.day),
    )
    # Unchanged 2024-03-01 and 03-04 keep their first fetch time; the revised and new days do not.
    assert [at for _, at in rows] == [T0, T0, later, later]
    with pytest.raises(ValueError, match="2 dates but 1 values"):
        tlog.save_macro("VIX", days[:2], [1.0], T0)
    with pytest.raises(ValueError, match="not finite"):
        tlog.save_macro("VIX", days[:1], [float("nan")], T0)


def test_macro_days_the_source_withdrew_in_the_span_it_covers_are_deleted(tlog: TradeLog) -> None:
    days = [dt.date(2024, 3, d) for d in (1, 4, 5, 6, 7)]
    tlog.save_macro("VIX", days, [14.5, 15.25, 13.0, 16.0, 17.0], T0)
    tlog.save_macro("T10Y2Y", days, [0.1] * 5, T0)
    # A download from 03-04 to 03-07 (03-07 answered "."): 03-05 and 03-07 are gone.
    saved = tlog.save_macro("VIX", [days[1], days[3]], [15.25, 16.0], T0,
                            covers=(days[1], days[4]))
    assert saved == ([days[1], days[3]], [15.25, 16.0])
    assert tlog.load_macro("VIX") == ([days[0], days[1], days[3]], [14.5, 15.25, 16.0])
    assert tlog.load_macro("T10Y2Y")[0] == days  # another series: untouched
    tlog.save_macro("T10Y2Y", days[2:3], [0.1], T0)  # no span known: nothing deleted
    assert tlog.load_macro("T10Y2Y")[0] == days


def test_an_order_recorded_by_an_earlier_process_is_updated_not_inserted_again(url: str) -> None:
    """A decision re-run after a restart: the venue answers 'duplicate client id', the
    broker adopts the order, the engine records it again. That insert used to fail the
    unique constraint and, kept in the buffer, fail every flush after it."""
    first = TradeLog.open(url)
    start(first, mode="paper")
    first.order(make_order("o-1"))
    first.close()

    second = TradeLog.open(url)
    run_id = start(second, mode="paper")
    adopted = make_order("o-1")
    adopted.status, adopted.broker_order_id = OrderStatus.FILLED, "venue-1"
    adopted.filled_quantity, adopted.average_price = 10.0, 512.3
    second.order(adopted)
    second.fill(make_fill("o-1"))
    second.equity(equity_point())
    second.flush()
    orders = second.load_orders()
    assert list(orders["client_order_id"]) == ["o-1"]
    assert orders["status"].iloc[0] == "filled" and orders["broker_order_id"].iloc[0] == "venue-1"
    assert count(second, "fills") == 1 and count(second, "equity") == 1
    assert len(second.load_equity(run_id)) == 1
    second.close()


def test_rows_the_database_rejects_are_kept_in_an_incident_and_do_not_block_later_ones(
    tlog: TradeLog,
) -> None:
    run_id = start(tlog)
    tlog.equity(equity_point())
    tlog.flush()
    tlog.equity(equity_point())  # the same day again: the (run, day) key refuses it
    with pytest.raises(sa.exc.IntegrityError):
        tlog.flush()
    incidents = tlog.load_incidents(run_id)
    assert list(incidents["kind"]) == ["tradelog_rejected"]
    assert incidents["context"].iloc[0]["equity"][0]["day"] == DAY.isoformat()
    tlog.equity(equity_point(DAY + dt.timedelta(days=1)))
    tlog.flush()  # the buffer no longer holds the rejected row
    assert count(tlog, "equity") == 2


def test_a_rejected_flush_still_stores_the_strategy_state(tlog: TradeLog) -> None:
    """The state went into the incident with the refused equity row and the buffer was
    cleared: the next job reloaded the older committed state, and the rebalance whose
    orders were saved beside it was due again."""
    start(tlog)
    tlog.save_state("main", "paper", {"last_rebalance_day": "2024-03-01"}, T0)
    tlog.equity(equity_point())
    tlog.flush()
    tlog.order(make_order("o-1"))
    tlog.save_state("main", "paper", {"last_rebalance_day": "2024-03-04"}, T0)
    tlog.equity(equity_point())  # the same day again: refused
    with pytest.raises(sa.exc.IntegrityError):
        tlog.flush()
    reader = TradeLog(tlog.engine)
    assert reader.load_state("main", "paper") == {"last_rebalance_day": "2024-03-04"}
    assert list(reader.load_orders()["client_order_id"]) == ["o-1"]
    # A platform task commits its phase with its plan and state: without the phase, the
    # state alone would make its retry find the rebalance done and skip it.
    tlog.save_state("main", "paper", {"last_rebalance_day": "2024-03-05"}, T0)
    tlog.equity(equity_point())  # refused again
    with pytest.raises(sa.exc.IntegrityError):
        tlog.flush(sa.text("SELECT 1"))
    assert reader.load_state("main", "paper") == {"last_rebalance_day": "2024-03-04"}


def test_rejected_positions_are_kept_one_row_per_symbol(tlog: TradeLog) -> None:
    """Snapshots are buffered one per day; the incident keeps them as the table's rows."""
    run_id = start(tlog)
    tlog.equity(equity_point())
    tlog.flush()
    tlog.positions(DAY, {"SPY": (2.0, 500.25), "TLT": (3.5, 90.0)})
    tlog.positions(DAY + dt.timedelta(days=1), {"SPY": (2.0, 501.0)})
    tlog.equity(equity_point())  # refused: the rows buffered with it go to the incident
    with pytest.raises(sa.exc.IntegrityError):
        tlog.flush()
    kept = tlog.load_incidents(run_id)["context"].iloc[0]["positions"]
    next_day = (DAY + dt.timedelta(days=1)).isoformat()
    assert kept == [[run_id, None, DAY.isoformat(), "SPY", 2.0, 500.25],
                    [run_id, None, DAY.isoformat(), "TLT", 3.5, 90.0],
                    [run_id, None, next_day, "SPY", 2.0, 501.0]]


def test_buffered_positions_are_stored_per_symbol_with_exact_values(tlog: TradeLog) -> None:
    run_id = start(tlog)
    tlog.positions(DAY, {"SPY": (2.0, 500.25), "TLT": (0.125, 0.1)})
    tlog.positions(DAY + dt.timedelta(days=1), {"SPY": (2.0, 501.0), "TLT": (0.125, 0.2)})
    tlog.flush()
    stored = tlog.load_positions(run_id)
    assert len(stored) == 4
    assert list(stored["quantity"]) == [2.0, 0.125, 2.0, 0.125]
    assert list(stored["price"]) == [500.25, 0.1, 501.0, 0.2]


def test_numpy_floats_are_stored_exactly() -> None:
    """numpy 2 prints np.float64(1.5) as 'np.float64(1.5)': parsing the repr failed."""
    from bot.store.models import to_decimal

    assert to_decimal(np.float64(0.1) + np.float64(0.2)) == Decimal("0.30000000000000004")
    assert to_decimal(np.float32(0.5)) == Decimal("0.5")


def test_ctrl_c_during_a_flush_arrives_after_it_and_nothing_is_written_twice(
    tlog: TradeLog, monkeypatch
) -> None:
    """Ctrl-C between the commit and forgetting the buffer left the rows buffered, and
    the shutdown's flush wrote them again: the signal now waits for the flush to end."""
    import os
    import signal

    run_id = start(tlog)
    tlog.equity(equity_point())
    tlog.order(make_order("o-1"))
    real = tlog._clear_buffers

    def interrupted():
        os.kill(os.getpid(), signal.SIGINT)  # pressed just after the commit
        real()

    monkeypatch.setattr(tlog, "_clear_buffers", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tlog.flush()
    monkeypatch.setattr(tlog, "_clear_buffers", real)
    tlog.flush()  # the shutdown's flush: nothing left to write
    assert len(tlog.load_equity(run_id)) == 1 and count(tlog, "order_events") == 1


def test_orders_flushed_with_rejected_rows_are_kept_so_their_fills_can_follow(
    tlog: TradeLog,
) -> None:
    """A quarantine also moved the orders of the same flush into the incident, and every
    later status change or fill of those orders failed with 'unknown client_order_id'."""
    run_id = start(tlog)
    tlog.equity(equity_point())
    tlog.flush()
    tlog.order(make_order("o-1"))
    tlog.equity(equity_point())  # rejected: same (run, day)
    with pytest.raises(sa.exc.IntegrityError):
        tlog.flush()
    rejected = tlog.load_incidents(run_id)["context"].iloc[0]
    assert rejected["orders"] == [] and len(rejected["equity"]) == 1
    tlog.order_status("o-1", OrderStatus.FILLED, T0, filled_quantity=10.0, average_price=512.3)
    tlog.fill(make_fill("o-1"))
    tlog.flush()
    orders = tlog.load_orders(run_id)
    assert orders["status"].tolist() == ["filled"] and len(tlog.load_fills(run_id)) == 1


def test_a_server_that_never_answers_is_an_error_not_a_hang(monkeypatch) -> None:
    """A PostgreSQL address that accepts connections and stays silent (a hung server, a
    half-open proxy): opening the trade log fails after the connect timeout, naming the
    masked URL, instead of holding the command (or a job, or a heartbeat) for ever."""
    import socket
    import threading

    from bot.store import engines

    monkeypatch.setattr(engines, "CONNECT_TIMEOUT_S", 2)  # libpq's smallest
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel accepts; nobody ever reads or writes
    url = f"postgresql+psycopg://bot:secret@127.0.0.1:{silent.getsockname()[1]}/trades"
    outcome: list[BaseException | None] = []

    def open_log() -> None:
        try:
            engines.writer_engine(url)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - the outcome is the assertion
            outcome.append(exc)

    thread = threading.Thread(target=open_log, daemon=True)
    thread.start()
    thread.join(30)
    silent.close()
    assert not thread.is_alive(), "opening the trade log hung on a silent server"
    assert isinstance(outcome[0], BotError)
    assert "127.0.0.1" in str(outcome[0]) and "secret" not in str(outcome[0])
    # a URL's own connect_timeout is kept
    assert engines._server_timeouts(sa.engine.make_url(url + "?connect_timeout=30")) == {}


def test_a_reader_keeps_the_urls_search_path_and_still_cannot_write(pg_database_url: str) -> None:
    """A log kept in its own schema (`?options=-csearch_path%3D...`): the read-only
    engine used to pass its own libpq options, which replaced the URL's, so every
    inspection command read the public schema (here: a log with another run)."""
    schema = f"bot_reader_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(pg_database_url)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = f"{pg_database_url}?options=-csearch_path%3D{schema}"
    try:
        for log_url, strategy in ((pg_database_url, "public_one"), (url, "in_schema")):
            writer = TradeLog.open(log_url)
            start(writer, strategy=strategy)
            writer.close()
        reader = TradeLog.open_readonly(url)
        try:
            assert reader.runs()["strategy"].tolist() == ["in_schema"]
            with reader.engine.connect() as conn:
                assert conn.execute(sa.text("SHOW search_path")).scalar_one() == schema
                with pytest.raises(sa.exc.DBAPIError, match="read-only transaction"):
                    conn.execute(sa.text("DELETE FROM runs"))
        finally:
            reader.close()
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        reset_pg(pg_database_url)
        admin.dispose()


def test_long_sentences_in_actions_and_triggers_are_stored_whole(tlog: TradeLog) -> None:
    """Before: VARCHAR(100) columns; on PostgreSQL one longer action refused the whole
    write it was part of (the day's equity included), while SQLite kept it."""
    run_id = start(tlog)
    action = "cluster TQQQ, UPRO, UDOW " + "x" * 300
    trigger = "period: 4 trading days since last " + "y" * 300
    tlog.risk_event(RiskEvent(DAY, "correlation", action, {"max": 0.93}))
    tlog.targets(DAY, "rb-2024-03-04", [TargetRow("SPY", 0.5, 0.5, 0.5, None, ("why",))], trigger)
    tlog.equity(equity_point())
    tlog.flush()
    assert list(tlog.load_risk_events(run_id)["action"]) == [action]
    assert list(tlog.load_targets(run_id)["trigger"]) == [trigger]
    assert count(tlog, "equity") == 1 and tlog.load_incidents(run_id).empty


def test_a_long_data_source_is_stored_on_every_backend(tlog: TradeLog) -> None:
    """A CSV market's source names its directory, which can be a long path: PostgreSQL
    refused to start such a run (VARCHAR(200)), SQLite kept it."""
    source = "csv:/" + "/".join(["a-deeply-nested-folder"] * 20)
    name = "a_strategy_" + "x" * 150
    run_id = start(tlog, data_source=source, strategy=name)
    tlog.flush()
    row = tlog.runs().set_index("id").loc[run_id]
    assert (row["data_source"], row["strategy"]) == (source, name)


def test_latest_targets_hold_a_fund_stopped_since_the_decision_at_zero(tlog: TradeLog) -> None:
    """A stop's sale writes no targets row: the dashboard's current-vs-target view still
    showed UGL at the 30% of the rebalance two days before it was sold."""
    from bot.store import queries

    run_id = start(tlog)
    decided, stopped = dt.date(2023, 2, 1), dt.date(2023, 2, 3)
    tlog.targets(decided, "x-20230201-rb", [
        TargetRow("UGL", 0.3, 0.3, 0.3, 40.0, ("inverse vol",)),
        TargetRow("SPY", 0.7, 0.7, 0.7, 400.0, ("inverse vol",)),
    ], "every 4 days")
    tlog.risk_event(RiskEvent(stopped, "stop", "stop hit: position sold", {"price": 39.0}, symbol="UGL"))
    tlog.flush()
    with tlog.engine.connect() as conn:
        rows = queries.latest_targets(conn, run_id).frame().set_index("symbol")
    assert float(rows.loc["UGL", "final"]) == 0.0 and float(rows.loc["SPY", "final"]) == 0.7
    assert list(rows.loc["UGL", "reasons"])[-1] == "stop hit on 2023-02-03: out until the next rebalance"
    assert list(rows.loc["SPY", "reasons"]) == ["inverse vol"]


def test_a_trade_log_in_a_folder_it_cannot_write_says_so(tmp_path, monkeypatch):
    """SQLite's "unable to open database file" on a read-only mount gave no hint why."""
    import os
    import re
    from pathlib import Path

    from bot.errors import DatabaseUnreachable
    from bot.store import engines

    folder = tmp_path / "mounted"
    (folder / "tradelog.sqlite").mkdir(parents=True)  # not a file SQLite can open
    real_access = os.access
    monkeypatch.setattr(engines.os, "access", lambda p, mode: False if Path(p) == folder else real_access(p, mode))
    with pytest.raises(DatabaseUnreachable, match=rf"its folder {re.escape(str(folder))} is not writable"):
        engines.writer_engine(f"sqlite:///{folder / 'tradelog.sqlite'}")
