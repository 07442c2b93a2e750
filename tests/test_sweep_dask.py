"""`bot sweep --cluster`: the same sweep on a Dask distributed cluster (a LocalCluster of
two worker processes on 127.0.0.1, started here) gives exactly the process pool's
results; a cluster that cannot be reached or used is a one-line error."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import bot.sweep.executors
from bot.store.sweeps import load_sweep
from bot.store.tradelog import TradeLog
from tests.conftest import CONFIG
from tests.test_cli_errors import run_cli

distributed = pytest.importorskip("distributed")

ARGS = ["--synthetic", "--start", "2014-01-02", "--end", "2014-12-31", "--no-charts",
        "--grid", "risk.vol_high=1.25,2", "--grid", "rebalance.every_days=2,8",
        "--walk-forward", "4m:2m"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=None,
    ) as local:
        yield local.scheduler_address


def result_of(db: str) -> dict:
    log = TradeLog.open_readonly(db)
    try:
        return load_sweep(log.engine, 1)["result"]
    finally:
        log.close()


def test_the_cluster_gives_the_process_pools_results(capsys, tmp_path: Path, cluster: str) -> None:
    pool_db, dask_db = (f"sqlite:///{tmp_path / name}" for name in ("pool.sqlite", "dask.sqlite"))
    base = ["sweep", "--config", str(CONFIG), *ARGS]
    code, _, err = run_cli(capsys, *base, "--database", pool_db, "--workers", "2")
    assert code == 0, err
    code, out, err = run_cli(capsys, *base, "--database", dask_db, "--cluster", cluster)
    assert code == 0, err
    assert f"dask {cluster}, 2 worker(s)" in out
    pool, dask = result_of(pool_db), result_of(dask_db)
    for row in pool["ranking"] + dask["ranking"]:
        assert row.pop("seconds") > 0  # time in its worker: the one thing allowed to differ
    assert pool["ranking"] == dask["ranking"]  # params, every summary figure, final equity
    assert pool["walk_forward"] == dask["walk_forward"]  # picks and the stitched curve
    assert len(pool["walk_forward"]["windows"]) == 4


def test_a_cluster_that_cannot_be_reached_is_named(capsys, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(bot.sweep.executors, "CONNECT_TIMEOUT_S", 1)
    db = tmp_path / "log.sqlite"
    code, _, err = run_cli(capsys, "sweep", "--config", str(CONFIG), *ARGS,
                           "--database", f"sqlite:///{db}", "--cluster", "tcp://127.0.0.1:9")
    assert code == 2
    assert "--cluster tcp://127.0.0.1:9: cannot reach a Dask scheduler there" in err
    assert "Traceback" not in err and not db.exists()


@pytest.mark.parametrize("address", ["nonsense", "http://localhost:8786", "tcp://localhost",
                                     "tcp://[::1:8799", "tcp://127.0.0.1:99999"])
def test_a_malformed_cluster_address_is_named_at_once(capsys, tmp_path: Path, address) -> None:
    """It was reported as unreachable, then the half-made client hung the exit for 20 s
    and printed a traceback."""
    db = tmp_path / "log.sqlite"
    code, _, err = run_cli(capsys, "sweep", "--config", str(CONFIG), *ARGS,
                           "--database", f"sqlite:///{db}", "--cluster", address)
    assert code == 2
    assert f"--cluster {address!r}: not a scheduler address; expected tcp://host:port" in err
    assert "Traceback" not in err and not db.exists()


def test_workers_size_the_local_pool_only(capsys, cluster: str) -> None:
    code, _, err = run_cli(capsys, "sweep", "--config", str(CONFIG), *ARGS,
                           "--cluster", cluster, "--workers", "2")
    assert code == 2 and "--workers sizes the local pool" in err


def test_a_worker_with_edited_source_is_another_version(tmp_path: Path) -> None:
    """A worker whose checkout had uncommitted edits (4x the slippage) reported the same
    `version+commit` and its results were taken: the version now hashes the source."""
    from bot.sweep.executors import _worker_version, source_digest

    package = tmp_path / "bot"
    package.mkdir()
    (package / "backtest.py").write_text("SLIPPAGE = 5\n")
    before = source_digest(package)
    (package / "backtest.py").write_text("SLIPPAGE = 20\n")
    assert source_digest(package) != before
    assert "(source " in _worker_version()


def test_a_scheduler_lost_mid_sweep_fails_the_sweep_not_its_combinations(monkeypatch) -> None:
    """Each combination still queued came back failed with "scheduler-connection-lost",
    and the sweep was recorded as finished, ranked on the few done before."""
    from types import SimpleNamespace

    from bot.errors import BotError
    from bot.sweep.executors import DaskCluster

    class Lost(Exception):
        pass

    class future:  # noqa: N801 - a Dask future's stand-in: hashable, as futures are
        def __init__(self, value):
            self.value = value

        def result(self):
            if isinstance(self.value, Exception):
                raise self.value
            return self.value

        def release(self):
            pass

    done = future("outcome 1")
    lost = [future(Lost("run_variant-1 cancelled for reason: scheduler-connection-lost."))
            for _ in range(3)]
    queue = iter([done, *lost])
    client = SimpleNamespace(status="running", loop=None, scatter=lambda *a, **k: "market",
                             submit=lambda *a, **k: next(queue), cancel=lambda f: None,
                             close=lambda: None)
    monkeypatch.setattr(distributed, "as_completed", lambda futures, loop=None: iter(futures))
    executor = object.__new__(DaskCluster)
    executor.client, executor.address, executor.label = client, "tcp://127.0.0.1:8786", "dask"
    tasks = [SimpleNamespace(position=i) for i in range(4)]
    outcomes = executor.outcomes("market", tasks)
    assert next(outcomes) == "outcome 1"
    client.status = "closing"
    with pytest.raises(BotError, match=r"lost the Dask scheduler after 1 of 4 combinations"):
        next(outcomes)
    executor.close()  # a client whose scheduler is gone: nothing cancelled, closed quietly
