"""A replay commits its trade log in batches (bot.daemon.commits): what it ends with must be
the rows, ids included, of the same replay committing after every job."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from bot.daemon.commits import EVERY_JOB, REPLAY_BATCH, CommitPolicy
from bot.daemon.replay import replay
from bot.data.synthetic import synthetic_market
from bot.store.models import METADATA
from bot.store.tradelog import TradeLog

#: differ between two runs by design: when each run started and finished
UNCOMPARED = {"runs", "alembic_version"}


def start_run(log: TradeLog) -> int:
    return log.start_run(mode="replay", strategy="t", config_hash="-", config={}, code_version="-",
                         data_source="-", synthetic=True, started_at=dt.datetime.now(dt.UTC))


def replayed_rows(settings, market, path, commits: CommitPolicy) -> dict[str, list[tuple]]:
    """Every trade-log table's rows, in primary-key order, after one replay."""
    url = f"sqlite:///{path}"
    log = TradeLog.open(url)
    result = replay(settings, market, log, start_run(log), dt.date(2023, 2, 1),
                    dt.date(2023, 5, 31), commits=commits)
    assert result.jobs_failed == 0 and result.jobs_run > 250
    log.close()
    engine = sa.create_engine(url)
    rows = {}
    with engine.connect() as conn:
        for name, table in METADATA.tables.items():
            if name in UNCOMPARED:
                continue
            order = list(table.primary_key.columns) or list(table.columns)
            rows[name] = [tuple(r) for r in conn.execute(sa.select(table).order_by(*order))]
    engine.dispose()
    return rows


@pytest.fixture(scope="module")
def market(settings):
    return synthetic_market([*settings.symbols, "SPY"], "2022-06-01", "2023-07-31", seed=5)


@pytest.fixture(scope="module")
def per_job(settings, market, tmp_path_factory):
    return replayed_rows(settings, market, tmp_path_factory.mktemp("c") / "every.sqlite", EVERY_JOB)


@pytest.mark.parametrize("commits", [REPLAY_BATCH, CommitPolicy("every 7 jobs", 7)],
                         ids=lambda p: p.name)
def test_a_batched_replay_ends_with_the_rows_of_one_committing_every_job(
    settings, market, per_job, tmp_path, commits
):
    assert len(per_job["orders"]) > 20 and len(per_job["fills"]) > 20
    assert len(per_job["equity"]) > 80 and per_job["strategy_state"]
    batched = replayed_rows(settings, market, tmp_path / "batched.sqlite", commits)
    assert batched.keys() == per_job.keys()
    for table, rows in per_job.items():
        assert batched[table] == rows, table


def test_the_policies():
    assert EVERY_JOB.per_job and [EVERY_JOB.due(n) for n in (1, 2)] == [True, True]
    assert not REPLAY_BATCH.per_job and not REPLAY_BATCH.due(REPLAY_BATCH.jobs - 1)
    assert REPLAY_BATCH.due(REPLAY_BATCH.jobs)
    with pytest.raises(ValueError, match="jobs must be >= 1"):
        CommitPolicy("never", 0)
