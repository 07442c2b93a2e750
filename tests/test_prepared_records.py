"""A trade log's rows converted ahead of the flush (TradeLog.prepare): what a sweep worker
hands the process that writes its run. The conversion of an unconnected dialect is the
connected engine's own; a flush given it only inserts; a stale or foreign one is redone."""

from __future__ import annotations

import datetime as dt
import pickle
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

import bot.store.tradelog as tradelog_module
from bot.backtest import run_backtest
from bot.data.synthetic import synthetic_market
from bot.store import TradeLog
from bot.store.tradelog import PreparedRecords, dialect_key
from bot.sweep.grid import with_overrides
from bot.sweep.runner import RunCloser
from bot.sweep.variant import VariantTask, _dialect, run_variant
from bot.types import EquityPoint
from tests.test_store import backend_url

T0 = dt.datetime(2024, 3, 4, 21, 0, tzinfo=dt.UTC)
TABLES = ("orders", "order_events", "fills", "regime_decisions", "targets", "risk_events",
          "equity", "positions")


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    yield from backend_url(request, tmp_path)


@pytest.fixture(scope="module")
def market(settings):
    return synthetic_market([*settings.symbols, "SPY"], "2015-01-02", "2016-06-30", seed=7)


@pytest.fixture(scope="module")
def config(settings):
    return with_overrides(settings, [("backtest.start", "2015-06-01")], "test")


def start(log: TradeLog) -> int:
    return log.start_run(mode="backtest", strategy="s", config_hash="h", config={},
                         code_version="v", data_source="d", synthetic=True, started_at=T0)


def recorded(url: str, config, market) -> TradeLog:
    """A log on `url` holding a half-year backtest's records, none written yet."""
    log = TradeLog.open(url)
    start(log)
    run_backtest(config, market, log, order_prefix=f"p{log.run_id}")
    assert log._pending()
    return log


def comparable(prepared: PreparedRecords) -> list:
    """Every table's converted columns, psycopg's JSON wrappers (no equality of their
    own) as what they hold."""
    def plain(v):
        return ("json", v.obj, v.dumps) if type(v).__name__ in ("Json", "Jsonb") else v

    tables = (prepared.orders, prepared.events, prepared.fills, *prepared.others)
    return [(t.table, t.columns, [[plain(v) for v in column] for column in t.values])
            for t in tables]


def counts(log: TradeLog) -> dict[str, int]:
    with log.engine.connect() as conn:
        return {t: conn.exec_driver_sql(f"SELECT COUNT(*) FROM {t}").scalar_one() for t in TABLES}


def test_an_unconnected_dialect_prepares_what_the_engine_would(url, config, market) -> None:
    log = recorded(url, config, market)
    try:
        key = dialect_key(log.engine.dialect)
        assert key in ("sqlite+pysqlite", "postgresql+psycopg", "postgresql+psycopg2")
        ours, engines = log.prepare(_dialect(key)), log.prepare(log.engine.dialect)
        assert comparable(ours) == comparable(engines)
        # sent between processes as it is (psycopg's JSON wrappers included)
        assert comparable(pickle.loads(pickle.dumps(ours))) == comparable(engines)
        assert ours.orders.count == len(log._orders) > 20 and ours.fills.count == len(log._fills)
    finally:
        log.close()


def test_a_flush_given_prepared_rows_only_inserts_them(url, config, market, monkeypatch) -> None:
    log = recorded(url, config, market)
    try:
        sizes = {"orders": len(log._orders), "fills": len(log._fills), "equity": len(log._equity)}
        prepared = log.prepare(_dialect(dialect_key(log.engine.dialect)))

        def no_conversion(*args, **kwargs):
            raise AssertionError("converted again")

        monkeypatch.setattr(tradelog_module, "prepare_rows", no_conversion)
        log.finish_run("finished", T0, prepared=prepared)
        stored = counts(log)
        assert {k: stored[k] for k in sizes} == sizes
        assert not log._pending()
    finally:
        log.close()


def test_a_stale_or_foreign_preparation_is_made_again(tmp_path, config, market) -> None:
    url = f"sqlite:///{tmp_path / 'log.sqlite'}"
    log = recorded(url, config, market)
    try:
        stale = log.prepare(log.engine.dialect)
        log.equity(EquityPoint(dt.date(2016, 7, 1), 1.0, 1.0, 0.0, 0.0, None))  # after it
        equity = len(log._equity)
        log.flush(prepared=stale)
        assert counts(log)["equity"] == equity  # the late point too
        start(log)
        log.equity(EquityPoint(dt.date(2016, 7, 1), 2.0, 2.0, 0.0, 0.0, None))
        foreign = log.prepare(_dialect("postgresql+psycopg"))
        log.flush(prepared=foreign)
        with log.engine.connect() as conn:  # stored as SQLite stores it: text, not Decimal
            value = conn.exec_driver_sql(
                "SELECT equity FROM equity WHERE run_id = ?", (log.run_id,)
            ).scalar_one()
        assert value == "2.0"
    finally:
        log.close()


def test_a_sweep_worker_prepares_its_records_and_the_writer_only_inserts(
    tmp_path, config, market, monkeypatch
) -> None:
    url = f"sqlite:///{tmp_path / 'log.sqlite'}"
    writer = TradeLog.open(url)
    run_id = start(writer)
    try:
        task = VariantTask(1, run_id, config, record_full=True,
                           dialect=dialect_key(writer.engine.dialect))
        outcome = run_variant(market, task)
        assert outcome.error is None and outcome.prepared is not None and outcome.log is not None
        orders = len(outcome.log._orders)

        def no_conversion(*args, **kwargs):
            raise AssertionError("converted in the writing process")

        monkeypatch.setattr(tradelog_module, "prepare_rows", no_conversion)
        closer = RunCloser(writer.engine)
        closer.add(outcome)
        closer.flush()
        assert counts(writer)["orders"] == orders > 20
        with writer.engine.connect() as conn:
            status = conn.execute(sa.text("SELECT status FROM runs WHERE id = :r"),
                                  {"r": run_id}).scalar_one()
        assert status == "finished"
        assert outcome.log is None and outcome.prepared is None  # freed once written
    finally:
        writer.close()


def test_without_a_dialect_the_worker_sends_its_records_unconverted(config, market) -> None:
    """A task made without the database's dialect (none known): the writer converts."""
    outcome = run_variant(market, VariantTask(1, 1, config, record_full=True))
    assert outcome.log is not None and outcome.log._pending() and outcome.prepared is None

