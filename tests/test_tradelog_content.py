"""What a flush stores, cell by cell: a full backtest recorded to SQLite is pinned by
row counts and checksums of every table's stored values (their SQLite storage class
included), so a faster write path cannot change a single value or type."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import sqlalchemy as sa

from bot.backtest import run_backtest
from bot.config import parse_settings
from bot.store import TradeLog

T0 = dt.datetime(2024, 1, 2, 21, 0, tzinfo=dt.UTC)

# The full strategy, 2010-03-01 .. 2024-12-31, on ../shared/data; recorded before the
# flush was rewritten for speed. Table -> (rows, sha256 of the sorted stored values).
PINNED = {
    "equity": (3736, "7b73f29770e55efd"),
    "fills": (5582, "38ee66d5de2f463a"),
    "order_events": (11176, "48fd3fb8a6450799"),
    "orders": (5588, "a97d77ff8f33ff97"),
    "positions": (6480, "980e6b76e195c548"),
    "regime_decisions": (775, "ea24ce9a10f85ade"),
    "risk_events": (1837, "c68f300379727953"),
    "runs": (1, "c0142b0a4b89a026"),
    "targets": (5718, "e8ba696f12f34d6a"),
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


def test_a_recorded_backtest_stores_exactly_the_pinned_rows(settings, real_market, tmp_path):
    path = tmp_path / "pinned.sqlite"
    record_backtest(settings, real_market, path)
    assert stored_content(path) == PINNED
