"""What a flush stores, cell by cell: a full backtest is recorded to SQLite twice, through
the bulk write path and through SQLAlchemy's own executemany (what the flush did before
it was rewritten for speed), and every table's stored values and their SQLite storage
classes must be the same; the row counts are pinned. A faster write path cannot change
a single value or type.

Checksums pinned once would tie the test to one machine: the backtest's floats differ in
the 15th digit between CPUs (numpy's vector instructions add in another order)."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import sqlalchemy as sa

from bot.backtest import run_backtest
from bot.config import parse_settings
from bot.store import TradeLog
from tests.test_bulk_insert import use_reference_path

T0 = dt.datetime(2024, 1, 2, 21, 0, tzinfo=dt.UTC)

# The full strategy, 2010-03-01 .. 2024-12-31, on ../shared/data: rows per table.
PINNED_ROWS = {
    "equity": 3736,
    "fills": 5602,
    "order_events": 11226,
    "orders": 5613,
    "positions": 6546,
    "regime_decisions": 775,
    "risk_events": 2006,
    "runs": 1,
    "targets": 5730,
}


def stored_content(path: Path) -> dict[str, tuple[int, str]]:
    """Each non-empty table's row count and a checksum of its rows as SQLite stores them
    (values and typeof() of each), independent of row order."""
    engine = sa.create_engine(f"sqlite:///{path}")
    out = {}
    with engine.connect() as conn:
        tables = conn.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE type = 'table' "
            "AND name NOT LIKE 'sqlite_%' AND name != 'alembic_version'"
        ).scalars().all()
        for table in tables:
            columns = [row[1] for row in conn.exec_driver_sql(f"PRAGMA table_info({table})")]
            cells = ", ".join(f'"{c}", typeof("{c}")' for c in columns)
            rows = sorted(repr(tuple(r)) for r in conn.exec_driver_sql(f"SELECT {cells} FROM {table}"))
            if rows:
                digest = hashlib.sha256("\n".join(rows).encode()).hexdigest()
                out[table] = (len(rows), digest[:16])
    engine.dispose()
    return out


def record_backtest(settings, market, path: Path) -> None:
    raw = settings.model_dump(mode="json")
    raw["backtest"].update(start="2010-03-01", end="2024-12-31")
    cfg = parse_settings(raw, "pinned")
    log = TradeLog.open(f"sqlite:///{path}")
    log.start_run(mode="backtest", strategy="pinned", config_hash="-", config={"a": 1},
                  code_version="-", data_source="-", synthetic=False, started_at=T0)
    try:
        run_backtest(cfg, market, log, order_prefix="pin")
        log.finish_run("finished", T0, {"equity": 1.5})
    finally:
        log.close()


def test_a_recorded_backtest_stores_what_sqlalchemys_executemany_stores(
    settings, real_market, tmp_path, monkeypatch
):
    bulk_path, reference_path = tmp_path / "bulk.sqlite", tmp_path / "reference.sqlite"
    record_backtest(settings, real_market, bulk_path)
    use_reference_path(monkeypatch)
    record_backtest(settings, real_market, reference_path)
    bulk, reference = stored_content(bulk_path), stored_content(reference_path)
    assert {table: rows for table, (rows, _digest) in bulk.items()} == PINNED_ROWS
    assert bulk == reference
