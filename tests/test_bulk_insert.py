"""The flush's bulk INSERT stores exactly what SQLAlchemy's own executemany stores, on
SQLite and PostgreSQL: the same records are written once through each path and every
table is compared cell by cell. Also what a buffered order costs in memory."""

from __future__ import annotations

import datetime as dt
import tracemalloc
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

import bot.store.tradelog as tradelog_module
from bot.store import TradeLog
from bot.store.bulk import PreparedRows
from bot.store.models import METADATA, ExactDecimal
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
from tests.test_store import backend_url, reset_pg

T0 = dt.datetime(2024, 3, 4, 21, 0, tzinfo=dt.UTC)
CEST = dt.timezone(dt.timedelta(hours=2))
DAY = dt.date(2024, 3, 4)
TABLES = ("runs", "orders", "order_events", "fills", "regime_decisions", "targets",
          "risk_events", "equity", "positions", "strategy_state")
# Floats whose repr has an exponent, a sign or many digits, and other number types.
AWKWARD = [1e-05, 1.5e16, -0.0, 0.1, 123456.789012, 2.5e-7, np.float64(0.3), 7, Decimal("1.25")]


@pytest.fixture(params=["sqlite", "postgresql"])
def url_pair(request: pytest.FixtureRequest, tmp_path) -> Iterator[tuple[str, str]]:
    """Two empty trade logs on the same backend (two schemas' worth on PostgreSQL:
    the second is a SQLite file only when the first is)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'bulk.sqlite'}", f"sqlite:///{tmp_path / 'reference.sqlite'}"
        return
    pg = next(backend_url(request, tmp_path))
    yield pg, pg
    reset_pg(pg)


def reference_prepare(
    dialect: sa.Dialect, table: sa.Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> PreparedRows:
    """No conversion: the values as recorded, for reference_insert to hand to SQLAlchemy."""
    return PreparedRows(table.name, tuple(columns), tuple(zip(*rows, strict=True)))


def reference_insert(
    conn: sa.Connection,
    table: sa.Table,
    prepared: PreparedRows,
    *,
    before: tuple[str, Sequence[Any]] | None = None,
    keep: Sequence[int] | None = None,
) -> None:
    """SQLAlchemy's own executemany over dicts: what the flush did before bulk inserts."""
    columns, values = prepared.columns, list(prepared.values)
    if before is not None:
        columns, values = (before[0], *columns), [before[1], *values]
    rows = list(zip(*values, strict=True))
    if keep is not None:
        rows = [rows[i] for i in keep]
    if rows:
        conn.execute(sa.insert(table), [dict(zip(columns, row, strict=True)) for row in rows])


def use_reference_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the trade log write through SQLAlchemy's executemany, converting nothing itself."""
    monkeypatch.setattr(tradelog_module, "prepare_rows", reference_prepare)
    monkeypatch.setattr(tradelog_module, "insert_prepared", reference_insert)


def record_first_part(log: TradeLog) -> None:
    """A run with new orders (some partly filled) and every other kind of record: 9
    orders, 13 order events, 4 fills, 2 equity points, 3 positions."""
    log.start_run(mode="paper", strategy="s", config_hash="h", config={"a": [1, 2]},
                  code_version="v", data_source="d", synthetic=False, started_at=T0)
    for i, x in enumerate(AWKWARD):
        at = T0 + dt.timedelta(seconds=i) if i % 2 else (T0 + dt.timedelta(seconds=i)).astimezone(CEST)
        side = Side.BUY if i % 2 else Side.SELL
        request = OrderRequest(f"o-{i}", "rb-1", "SPY", side, x, "rebalance", 512.25 + i)
        log.order(Order(request, OrderStatus.NEW, at, None, 0.0, None, None),
                  notional=None if i % 3 else x)
        if i % 2:
            log.order_status(f"o-{i}", OrderStatus.PARTIALLY_FILLED, at, filled_quantity=x,
                             average_price=x, message="part")
            log.fill(Fill(f"o-{i}", "SPY", side, x, 512.3, x, 0.5, at))
    log.regime(RegimeDecision(DAY, Regime.GROWTH, 14.5, DAY, 1e-05, None, 0.25, DAY, "warn",
                              {"uncertainty": True, "transition": False}, ("uncertainty",),
                              ("transition",), ("spread",)))
    log.targets(DAY, "rb-1", [TargetRow("SPY", 0.5, 0.25, 1e-05, 400.5, ("a", "b")),
                              TargetRow("TLT", 0.1, 0.2, 0.3, None, ())], "schedule")
    log.risk_event(RiskEvent(DAY, "stop", "cut", {"x": float("inf"), "d": DAY}, "SPY"))
    log.equity(EquityPoint(DAY, 100_000.0, 2_500.5, 97_499.5, -0.0125, Regime.GROWTH))
    log.equity(EquityPoint(DAY + dt.timedelta(days=1), 1e16, 0.0, 1e16, 0.0, None))
    log.positions(DAY, {"SPY": (10.0, 512.3), "TLT": (1e-05, 0.1), "UPRO": (0.0, 80.0)})


def record_everything(log: TradeLog) -> None:
    """Two flushes: new orders with every kind of record, then status changes and fills
    of the written orders, a re-recorded order and strategy state."""
    record_first_part(log)
    log.flush()
    later = T0 + dt.timedelta(hours=1)
    for i in range(0, len(AWKWARD), 2):
        log.order_status(f"o-{i}", OrderStatus.FILLED, later, filled_quantity=1.5,
                         average_price=2.5e-7, broker_order_id=f"b-{i}")
        log.fill(Fill(f"o-{i}", "SPY", Side.SELL, 1.5, 2.5e-7, 0.0, 0.0, later))
    request = OrderRequest("o-1", "rb-1", "SPY", Side.BUY, 1.0, "rebalance", 1.0)
    log.order(Order(request, OrderStatus.CANCELED, later, "b-1", 0.0, None, "gone"))
    log.save_state("inst", "paper", {"n": np.int64(3), "w": [0.1, 1e-05]}, later)
    log.flush()
    log.finish_run("finished", later, {"equity": 1e16})


def contents(url: str, schema: str | None = None) -> dict[str, list[tuple[Any, ...]]]:
    engine = sa.create_engine(url)
    out = {}
    with engine.connect() as conn:
        if schema:
            conn.exec_driver_sql(f"SET search_path TO {schema}")
        for table in TABLES:
            out[table] = [tuple(r) for r in conn.exec_driver_sql(f"SELECT * FROM {table} ORDER BY 1")]
    engine.dispose()
    return out


def test_bulk_flush_stores_what_sqlalchemys_executemany_stores(url_pair, monkeypatch):
    bulk_url, reference_url = url_pair
    log = TradeLog.open(bulk_url)
    record_everything(log)
    log.close()
    bulk = contents(bulk_url)
    if bulk_url == reference_url:  # PostgreSQL: empty the database for the second pass
        reset_pg(reference_url)
    use_reference_path(monkeypatch)
    log = TradeLog.open(reference_url)
    record_everything(log)
    log.close()
    reference = contents(reference_url)
    assert all(reference[t] for t in TABLES if t != "risk_events")
    for table in TABLES:
        assert bulk[table] == reference[table], table


@pytest.mark.parametrize("x", [1e-05, 1e16, 1.5e300, 5e-324, -0.0, 0.1, 1 / 3, 123.0,
                               float("nan"), float("inf"), float("-inf")])
def test_exact_decimals_text_on_sqlite_is_the_decimal_of_the_floats_repr(x):
    from sqlalchemy.dialects import sqlite

    assert ExactDecimal().process_bind_param(x, sqlite.dialect()) == str(Decimal(repr(x)))


@pytest.mark.parametrize("dialect_name", ["sqlite", "postgresql"])
def test_exact_decimals_of_a_whole_column_are_each_values_own(dialect_name):
    """The bulk path converts a column in one call (bind_many); each cell must be what
    the column gives that value alone, whatever the mix of types in it."""
    import numpy as np
    from sqlalchemy.dialects import postgresql, sqlite

    dialect = sqlite.dialect() if dialect_name == "sqlite" else postgresql.psycopg.dialect()
    column = [0.1, None, 1e-05, Decimal("2.50"), 7, np.float64(1 / 3), float("nan"), -0.0, 1e16]
    one_by_one = [ExactDecimal().process_bind_param(v, dialect) for v in column]
    as_text = [str(v) for v in ExactDecimal().bind_many(column, dialect)]
    assert as_text == [str(v) for v in one_by_one]  # as text: Decimal NaN equals nothing
    expected = [Decimal(repr(0.1)), None, Decimal("0.00001"), Decimal("2.50"), Decimal(7),
                Decimal(repr(1 / 3)), Decimal("NaN"), Decimal("-0.0"), Decimal("1E+16")]
    as_decimals = [None if v is None else Decimal(v) for v in one_by_one]
    assert [str(v) for v in as_decimals] == [str(v) for v in expected]
    with pytest.raises(TypeError, match="bool"):
        ExactDecimal().bind_many([1.0, True], dialect)


def test_naive_timestamps_are_still_refused_by_a_bulk_flush(tmp_path):
    log = TradeLog.open(f"sqlite:///{tmp_path / 'naive.sqlite'}")
    log.start_run(mode="backtest", strategy="s", config_hash="h", config={}, code_version="v",
                  data_source="d", synthetic=False, started_at=T0)
    # Around the call-site checks, straight into the buffer: the column type refuses it.
    log._fills.append((log.run_id, None, Fill("x", "SPY", Side.BUY, 1.0, 1.0, 0.0, 0.0,
                                               dt.datetime(2024, 1, 1))))
    log._order_ids["x"] = 1
    with pytest.raises(sa.exc.StatementError, match="naive datetime"):
        log.flush()
    log.discard()


def test_a_buffered_order_with_its_events_and_fill_stays_small():
    """Memory of the buffers per order (its row, two status events, one fill, the
    account lookup), as a backtest holds thousands of them until its one flush."""
    log = TradeLog(sa.create_engine("sqlite://"))
    log.run_id = 1
    n = 2000
    requests = [OrderRequest(f"bench-{i:06d}", "rb", "SPY", Side.BUY, 10.0 + i, "rebalance", 99.5)
                for i in range(n)]
    fills = [Fill(r.client_order_id, "SPY", Side.BUY, r.quantity, 99.6, 0.1, 0.2, T0)
             for r in requests]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for request, fill in zip(requests, fills, strict=True):
        log.order(Order(request, OrderStatus.NEW, T0))
        log.order_status(request.client_order_id, OrderStatus.FILLED, T0,
                         filled_quantity=fill.quantity, average_price=fill.price)
        log.fill(fill)
    per_order = (tracemalloc.get_traced_memory()[0] - before) / n
    tracemalloc.stop()
    # Dicts per row took ~1,200 bytes; the tuples ~550.
    assert per_order < 800, f"{per_order:.0f} bytes per buffered order"


def test_every_table_the_flush_writes_has_its_columns_named_in_order():
    """The buffers' column tuples name real columns, and every column that is not the
    row's own id is written (a column missing here would be stored as NULL)."""
    tables = METADATA.tables
    written = {
        "orders": tradelog_module.ORDER_COLUMNS,
        "order_events": ("order_id", *tradelog_module.EVENT_COLUMNS[1:]),
        "fills": ("order_id", *tradelog_module.FILL_COLUMNS),
        "regime_decisions": tradelog_module.REGIME_COLUMNS,
        "targets": tradelog_module.TARGET_COLUMNS,
        "risk_events": tradelog_module.RISK_EVENT_COLUMNS,
        "equity": tradelog_module.EQUITY_COLUMNS,
        "positions": (*tradelog_module.POSITION_COLUMNS, "market_value"),
    }
    for name, columns in written.items():
        assert sorted(columns) == sorted(c.name for c in tables[name].c if c.name != "id"), name


def test_a_row_postgresql_refuses_during_copy_is_a_data_error_kept_in_an_incident(
    pg_database_url: str,
) -> None:
    """PostgreSQL's rows go in by COPY: the driver's error still comes as SQLAlchemy's
    DataError, so the flush keeps the refused rows in an incident like any other."""
    log = TradeLog.open(pg_database_url)
    try:
        log.start_run(mode="backtest", strategy="s", config_hash="h", config={},
                      code_version="v", data_source="d", synthetic=False, started_at=T0)
        log.positions(DAY, {"X" * 40: (1.0, 2.0)})  # symbol is VARCHAR(32)
        with pytest.raises(sa.exc.DataError, match="too long"):
            log.flush()
        incidents = log.load_incidents(log.run_id)
        assert list(incidents["kind"]) == ["tradelog_rejected"]
        assert incidents["context"].iloc[0]["positions"][0][3] == "X" * 40
        log.positions(DAY, {"SPY": (1.0, 2.0)})
        log.flush()  # the refused row no longer blocks the buffer
        assert log.load_positions(log.run_id)["symbol"].tolist() == ["SPY"]
    finally:
        log.close()
        reset_pg(pg_database_url)


def test_a_connection_lost_during_copy_keeps_the_buffer_for_the_next_flush(
    pg_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server goes away in the middle of the flush's COPY: the flush fails as a lost
    connection does (SQLAlchemy's OperationalError, nothing committed, the buffer kept),
    and the next flush, on a new connection, writes every row once."""
    import bot.store.bulk as bulk

    log = TradeLog.open(pg_database_url)
    admin = sa.create_engine(pg_database_url)
    real_copy = bulk._copy
    calls = []

    def copy_then_lose_the_server(conn, table, columns, rows):
        calls.append(table.name)
        if len(calls) == 2:  # orders written, the next table's COPY loses its server
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
            with admin.begin() as other:
                other.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
        real_copy(conn, table, columns, rows)

    try:
        record_first_part(log)
        monkeypatch.setattr(bulk, "_copy", copy_then_lose_the_server)
        with pytest.raises(sa.exc.OperationalError):
            log.flush()
        assert log._pending()
        with admin.connect() as conn:
            assert conn.exec_driver_sql("SELECT COUNT(*) FROM orders").scalar_one() == 0
        monkeypatch.setattr(bulk, "_copy", real_copy)
        log.flush()
        with admin.connect() as conn:
            counts = {t: conn.exec_driver_sql(f"SELECT COUNT(*) FROM {t}").scalar_one()
                      for t in ("orders", "order_events", "fills", "equity", "positions")}
        assert counts == {"orders": 9, "order_events": 13, "fills": 4, "equity": 2, "positions": 3}
    finally:
        log.close()
        admin.dispose()
        reset_pg(pg_database_url)
