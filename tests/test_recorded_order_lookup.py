"""The flush's look-up of orders an earlier process recorded (a decision re-run after a
restart adopts its own order), through bot.store.lookup as the account import's and the
rebalancing runs' look-ups: right on both backends for more ids than one SQLite
statement may bind, and on PostgreSQL one statement with one array parameter, whose
plan does not degrade as the table grows (an IN list of 500 parameters did, once psycopg
prepared it: every row compared with every value)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from bot.store import TradeLog
from bot.types import Order, OrderRequest, OrderStatus, Side
from tests.test_store import backend_url

T0 = dt.datetime(2024, 3, 4, 21, 0, tzinfo=dt.UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    yield from backend_url(request, tmp_path)


def order(cid: str) -> Order:
    return Order(OrderRequest(cid, "rb-1", "SPY", Side.BUY, 1.0, "rebalance", 10.0),
                 OrderStatus.NEW, T0, None, 0.0, None, None)


def start(log: TradeLog) -> None:
    log.start_run(mode="paper", strategy="s", config_hash="h", config={}, code_version="v",
                  data_source="d", synthetic=False, started_at=T0)


def test_orders_recorded_earlier_are_found_among_many(url: str) -> None:
    first = TradeLog.open(url)
    start(first)
    for i in range(0, 1300, 2):  # every even id, by an earlier process
        first.order(order(f"o-{i}"))
    first.flush()
    first.close()

    log = TradeLog.open(url)
    start(log)
    wanted = [f"o-{i}" for i in range(1300)]
    selects: list[str] = []

    def count(conn, cursor, statement, *args) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            selects.append(statement)

    sa.event.listen(log.engine, "before_cursor_execute", count)
    try:
        with log.engine.connect() as conn:
            found = log._recorded_order_ids(conn, wanted)
        lookups = len(selects)
        assert set(found) == {f"o-{i}" for i in range(0, 1300, 2)}
        with log.engine.connect() as conn:
            ids = dict(conn.execute(sa.text("SELECT client_order_id, id FROM orders")).all())
        assert found == ids
        # PostgreSQL: one statement, one array; SQLite: chunks of 500 bound variables
        assert lookups == (1 if log.engine.dialect.name == "postgresql" else 3)
        assert log._recorded_order_ids(conn, []) == {}
    finally:
        sa.event.remove(log.engine, "before_cursor_execute", count)
        log.close()


def test_a_flush_adopts_an_order_an_earlier_process_recorded(url: str) -> None:
    first = TradeLog.open(url)
    start(first)
    first.order(order("o-1"))
    first.flush()
    first.close()

    log = TradeLog.open(url)
    start(log)
    log.order(order("o-1"))  # met again at the venue after a restart
    log.order(order("o-2"))
    log.flush()
    try:
        orders = log.load_orders()
        assert sorted(orders["client_order_id"]) == ["o-1", "o-2"]  # no second row
    finally:
        log.close()
