"""Trade-log flush benchmark: the full strategy's records (2010-03-01..2024-12-31, about
60,000 rows each) written N times in a row into one fresh database, SQLite and
PostgreSQL, each flush timed. A flush must not slow down as the tables grow.

    python benchmarks/tradelog_flush.py [--data-dir ../shared/data] [--runs 8]
        [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/postgres]

PostgreSQL is skipped if the server cannot be reached; the benchmark creates and drops
its own database there (leverbot_flush_bench).
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from bot.backtest import run_backtest
from bot.config import load_settings, parse_settings
from bot.data.csv_source import load_csv_directory
from bot.logs import configure_logging
from bot.store.tradelog import TradeLog

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config" / "diversified_leverage.toml"
START, END = "2010-03-01", "2024-12-31"
BENCH_DB = "leverbot_flush_bench"


def flush_times(url: str, settings, market, runs: int) -> list[float]:
    """Seconds of each run's finish_run (its flush and its end), in order."""
    log = TradeLog.open(url)
    seconds = []
    try:
        for _ in range(runs):
            log.start_run(mode="backtest", strategy="bench", config_hash="-", config={},
                          code_version="-", data_source="-", synthetic=False,
                          started_at=dt.datetime.now(dt.UTC))
            run_backtest(settings, market, log, order_prefix=f"bench{log.run_id}")
            t0 = time.perf_counter()
            log.finish_run("finished", dt.datetime.now(dt.UTC))
            seconds.append(time.perf_counter() - t0)
    finally:
        log.close()
    return seconds


def postgres_database(admin_url: str) -> tuple[sa.Engine, str] | None:
    """A fresh benchmark database on the server of `admin_url`, or None if unreachable."""
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {BENCH_DB}")
            conn.exec_driver_sql(f"CREATE DATABASE {BENCH_DB}")
    except sa.exc.OperationalError as exc:
        print(f"PostgreSQL: not reachable, skipped ({exc.orig})")
        admin.dispose()
        return None
    return admin, sa.make_url(admin_url).set(database=BENCH_DB).render_as_string(False)


def show(label: str, seconds: list[float]) -> None:
    each = ", ".join(f"{s:.2f}" for s in seconds)
    print(f"{label}: {each} s; last / first {seconds[-1] / seconds[0]:.2f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    args = ap.parse_args(argv)
    configure_logging("WARNING")
    base = load_settings(CONFIG)
    settings = parse_settings(
        {**base.model_dump(mode="json"),
         "backtest": {**base.backtest.model_dump(mode="json"), "start": START, "end": END}},
        "benchmark strategy",
    )
    market = load_csv_directory(args.data_dir, list(base.symbols))
    print(f"{args.runs} full-strategy runs, {START}..{END}, each flushed into one database")
    with tempfile.TemporaryDirectory() as tmp:
        show("SQLite", flush_times(f"sqlite:///{tmp}/bench.sqlite", settings, market, args.runs))
    found = postgres_database(args.postgres)
    if found is not None:
        admin, url = found
        try:
            show("PostgreSQL", flush_times(url, settings, market, args.runs))
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
            admin.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
