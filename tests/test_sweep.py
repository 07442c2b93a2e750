"""`bot sweep` end to end on the synthetic market (and real data): each combination is
exactly the `bot backtest` of the same overrides, ranked by its metric, recorded as a
run tagged with the sweep; a failed combination, a dead worker or Ctrl-C does not lose
the rest; walk-forward picks on training windows only and stitches test windows only."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

import bot.sweep.executors
import bot.sweep.runner
from bot.backtest import run_backtest
from bot.config import load_settings
from bot.data.base import MarketData, PriceHistory
from bot.data.synthetic import synthetic_market
from bot.metrics import performance, slice_fills
from bot.runner import BacktestOptions, apply_overrides
from bot.store.sweeps import load_sweep, load_sweep_runs
from bot.store.tradelog import TradeLog
from bot.sweep.grid import with_overrides
from bot.sweep.runner import SweepOptions, run_sweep
from bot.sweep.variant import DiscardingLog, detached_log
from tests.conftest import CONFIG
from tests.test_cli_errors import run_cli

SPAN = ["--start", "2016-01-04", "--end", "2016-08-31"]
GRID = ["--grid", "risk.vol_high=1.25,2", "--grid", "rebalance.every_days=2,8"]


def sweep(capsys, db: str, *args: str, synthetic: bool = True) -> tuple[int, str, str]:
    extra = ["--synthetic"] if synthetic else []
    return run_cli(capsys, "sweep", "--config", str(CONFIG), *extra, "--database", db, *args)


def backtest(capsys, db: str, params: dict, *args: str) -> int:
    """`bot backtest` of one combination, by the --set flags a user would type; its run id."""
    sets = [w for key, value in params.items() for w in ("--set", f"{key}={value}")]
    code, _, err = run_cli(
        capsys, "backtest", "--config", str(CONFIG), "--no-charts", "--database", db, *args, *sets
    )
    assert code == 0, err
    log = TradeLog.open_readonly(db)
    run_id = int(log.runs()["id"].max())
    log.close()
    return run_id


def stored(db: str, sweep_id: int = 1):
    log = TradeLog.open_readonly(db)
    try:
        return load_sweep(log.engine, sweep_id), load_sweep_runs(log.engine, sweep_id)
    finally:
        log.close()


def run_row(db: str, run_id: int) -> pd.Series:
    log = TradeLog.open_readonly(db)
    runs = log.runs().set_index("id")
    log.close()
    return runs.loc[run_id]


def final_equity(db: str, run_id: int) -> float:
    log = TradeLog.open_readonly(db)
    equity = log.load_equity(run_id)
    log.close()
    return float(equity["equity"].iloc[-1])


def test_each_combination_is_the_backtest_of_its_overrides_ranked_and_recorded(
    capsys, tmp_path: Path
) -> None:
    db = f"sqlite:///{tmp_path / 'log.sqlite'}"
    code, out, err = sweep(capsys, db, *SPAN, *GRID, "--workers", "2")
    assert code == 0, err
    row, runs = stored(db)
    assert row["status"] == "finished" and row["metric"] == "sharpe" and row["record"] == "summary"
    assert row["grid"] == [["risk.vol_high", [1.25, 2]], ["rebalance.every_days", [2, 8]]]
    assert runs["params"].tolist() == [
        {"risk.vol_high": a, "rebalance.every_days": b} for a in (1.25, 2) for b in (2, 8)
    ]
    assert (runs["status"] == "finished").all() and runs["error"].isna().all()
    for run_id, params in zip(runs["run_id"], runs["params"], strict=True):
        config = run_row(db, run_id)["config"]
        assert config["risk"]["vol_high"] == params["risk.vol_high"]
        assert config["rebalance"]["every_days"] == params["rebalance.every_days"]

    # Ranked by Sharpe, best first, as stored in each run's summary; printed in that order.
    result = row["result"]
    by_sharpe = runs.sort_values("summary", key=lambda s: s.map(lambda x: -x["sharpe"]))
    assert [r["run_id"] for r in result["ranking"]] == by_sharpe["run_id"].tolist()
    assert [r["rank"] for r in result["ranking"]] == [1, 2, 3, 4]
    lines = [line for line in out.splitlines() if line.startswith("│")]
    assert [int(line.split("│")[2]) for line in lines] == by_sharpe["run_id"].tolist()

    # The best, re-run on its own by `bot backtest --set`: the same numbers. (--no-benchmarks:
    # the synthetic market draws each symbol on its own, so the prices are those the sweep
    # loaded with the reference portfolios' symbols.)
    best = result["ranking"][0]
    alone = backtest(capsys, db, best["params"], "--synthetic", "--no-benchmarks", *SPAN)
    assert final_equity(db, alone) == best["final_equity"]
    assert run_row(db, alone)["summary"] == run_row(db, best["run_id"])["summary"]

    out_dir = tmp_path / "reports" / "log-sweep-1"
    heatmap = (out_dir / "heatmap.png").read_bytes()
    assert heatmap[:8] == b"\x89PNG\r\n\x1a\n" and len(heatmap) > 5_000
    ranking = pd.read_csv(out_dir / "ranking.csv")
    assert ranking["run_id"].tolist() == by_sharpe["run_id"].tolist()
    assert json.loads((out_dir / "sweep.json").read_text())["ranking"] == result["ranking"]
    log = TradeLog.open_readonly(db)  # summary: no per-day records for sweep runs
    assert log.load_equity(int(runs["run_id"].iloc[0])).empty
    log.close()
    code, _, err = run_cli(capsys, "report", "--run", str(runs["run_id"].iloc[0]),
                           "--database", db, "--no-charts")
    assert code == 2 and "a combination of sweep 1, which kept its summary only" in err


def test_a_sweeps_runs_beat_while_it_works_and_the_pool_forks_safely(
    capsys, tmp_path: Path, monkeypatch
) -> None:
    """The sweep's process beats for every combination still running (a sweep on another
    machine, killed, is closed by the lease); its workers fork while it beats."""
    import datetime as dt
    import threading

    from bot.store import heartbeat

    monkeypatch.setattr(heartbeat, "INTERVAL", dt.timedelta(seconds=0.01))
    db = f"sqlite:///{tmp_path / 'log.sqlite'}"
    threads_before = set(threading.enumerate())
    code, _, err = sweep(capsys, db, *SPAN, *GRID, "--workers", "2")
    assert code == 0, err
    _, runs = stored(db)
    rows = [run_row(db, run_id) for run_id in runs["run_id"]]
    assert all(r["status"] == "finished" and r["heartbeat_at"] is not None for r in rows)
    assert any(r["heartbeat_at"] > r["started_at"] for r in rows)  # beaten while running
    assert not [t for t in set(threading.enumerate()) - threads_before if t.name == "run-heartbeat"]


def test_a_sweeps_runs_get_their_first_beat_when_they_start(capsys, tmp_path: Path) -> None:
    """With the default interval no beat of the thread falls inside a short sweep: the
    heartbeat every run shows is the one written when the runs were opened."""
    db = f"sqlite:///{tmp_path / 'log.sqlite'}"
    code, _, err = sweep(capsys, db, *SPAN, "--grid", "risk.vol_high=1.25,2")
    assert code == 0, err
    _, runs = stored(db)
    rows = [run_row(db, run_id) for run_id in runs["run_id"]]
    assert all(r["started_at"] <= r["heartbeat_at"] <= r["finished_at"] for r in rows)


def test_a_summary_run_keeps_nothing_and_decides_exactly_as_with_a_real_log(settings) -> None:
    """--record summary drops the engine's records as they come; the engine never reads
    them back, so every equity point and fill is the same as with a recording log."""
    market = synthetic_market([*settings.symbols, "SPY"], "2015-01-02", "2016-06-30", seed=7)
    config = with_overrides(settings, [("backtest.start", "2015-06-01")], "test")
    kept, dropped = detached_log(1), DiscardingLog(1)
    a = run_backtest(config, market, kept, order_prefix="bt1")
    b = run_backtest(config, market, dropped, order_prefix="bt1")
    assert a.equity.tolist() == b.equity.tolist() and a.fills == b.fills and len(a.fills) > 50
    assert kept._pending() and not dropped._pending()  # a new record method would show here


@pytest.mark.parametrize("overrides", [
    [("rebalance.min_trade_notional", 1e12)],  # never trades
    [("risk.stop_alpha", 0.5), ("rebalance.min_trade_notional", 5000)],
])
def test_stops_hit_on_funds_not_held_decide_as_with_a_real_log(settings, monkeypatch, overrides):
    """A stop hit on a fund the book does not hold makes the engine ask its log whether a
    stop order went out this period. Before, both sweep logs sent that question to a
    database they do not have: the combination failed ('NoneType' object has no attribute
    'connect'), 7 of the 12 of --grid risk.stop_alpha=0.5,1,2,3 --grid
    rebalance.min_trade_notional=50,5000,50000 on the real data, and a variant that never
    trades could not be ranked at all."""
    from bot.backtest import scratch_tradelog
    from bot.engine import Engine
    from bot.sweep.variant import VariantTask, run_variant

    asked = []
    original = Engine._stop_sent_this_period
    monkeypatch.setattr(Engine, "_stop_sent_this_period",
                        lambda self, t, symbol: asked.append(symbol) or original(self, t, symbol))
    market = synthetic_market([*settings.symbols, "SPY"], "2015-01-02", "2016-06-30", seed=7)
    config = with_overrides(settings, [("backtest.start", "2015-06-01"), *overrides], "test")
    real_log = scratch_tradelog("real")
    real = run_backtest(config, market, real_log, order_prefix="bt1")
    real_log.discard()
    assert asked  # the question was asked
    for log in (detached_log(1), DiscardingLog(1)):
        run = run_backtest(config, market, log, order_prefix="bt1")
        assert run.equity.tolist() == real.equity.tolist() and run.fills == real.fills
    outcome = run_variant(market, VariantTask(0, 1, config))
    assert outcome.error is None and outcome.summary["trades"] == len(real.fills)


def test_record_full_keeps_everything_bot_backtest_records(capsys, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'log.sqlite'}"
    span = ["--start", "2016-01-04", "--end", "2016-06-30"]
    code, _, err = sweep(capsys, db, *span, "--grid", "risk.vol_high=1.25,2", "--record", "full",
                         "--no-charts")
    assert code == 0, err
    _, runs = stored(db)
    swept = int(runs["run_id"].iloc[1])
    alone = backtest(capsys, db, {"risk.vol_high": 2}, "--synthetic", "--no-benchmarks", *span)
    log = TradeLog.open_readonly(db)
    for load in (log.load_equity, log.load_orders, log.load_fills, log.load_targets,
                 log.load_risk_events, log.load_regimes, log.load_positions):
        mine, theirs = load(swept), load(alone)
        assert len(mine) == len(theirs) > 0, load.__name__
    a, b = log.load_fills(swept), log.load_fills(alone)
    assert a["price"].tolist() == b["price"].tolist()
    assert a["client_order_id"].str.startswith(f"bt{swept}-").all()  # its own order ids
    log.close()
    assert not (tmp_path / "reports" / "log-sweep-1" / "heatmap.png").exists()  # one parameter


def test_a_failed_combination_is_reported_and_the_others_still_count(
    capsys, tmp_path: Path
) -> None:
    """The second start leaves no trading day before the end (4 July is a holiday): that
    combination fails in the engine, as `bot backtest` would; the sweep goes on."""
    db = f"sqlite:///{tmp_path / 'log.sqlite'}"
    code, out, err = sweep(capsys, db, "--end", "2016-07-04",
                           "--grid", "backtest.start=2016-01-04,2016-07-02", "--no-charts")
    assert code == 1
    assert "holds fewer than 2 trading days" in out  # in the table
    row, runs = stored(db)
    assert row["status"] == "finished"
    assert runs["status"].tolist() == ["finished", "failed"]
    assert pd.isna(runs["error"].iloc[0])
    assert runs["error"].iloc[1].startswith("backtest span 2016-07-02..2016-07-04 holds fewer")
    ranking = row["result"]["ranking"]
    assert [(r["rank"], r["error"] is None) for r in ranking] == [(1, True), (None, False)]


def _dying(positions: set[int]):
    """run_variant, but the worker running a combination at `positions` is killed."""
    real = bot.sweep.executors.run_variant

    def run(market, task):
        if task.position in positions:
            os._exit(9)  # as the kernel's OOM killer would end it: no clean-up, no outcome
        return real(market, task)

    return run


def _sweep_with_dying_workers(capsys, tmp_path: Path, monkeypatch, positions: set[int]):
    """A four-combination sweep on one worker whose combinations at `positions` kill their
    worker; returns its stored sweep row (finished, exit 1) and runs."""
    monkeypatch.setattr(bot.sweep.executors, "run_variant", _dying(positions))  # forked workers inherit it
    db = f"sqlite:///{tmp_path / 'log.sqlite'}"
    code, _, _ = sweep(capsys, db, "--start", "2016-01-04", "--end", "2016-03-31",
                       "--grid", "rebalance.every_days=2,3,4,8", "--workers", "1", "--no-charts")
    assert code == 1
    row, runs = stored(db)
    assert row["status"] == "finished"
    return row, runs


def test_a_dead_worker_fails_only_the_combination_that_killed_it(
    capsys, tmp_path: Path, monkeypatch
) -> None:
    """A worker killed outright (out of memory, a crash in a library) breaks the pool,
    which failed every combination left, blaming each for the death. What was left runs
    again in a fresh pool: only the one that kills its worker again is failed."""
    row, runs = _sweep_with_dying_workers(capsys, tmp_path, monkeypatch, {1})
    assert runs["status"].tolist() == ["finished", "failed", "finished", "finished"]
    assert runs["error"].iloc[1] == bot.sweep.executors.WORKER_DIED
    assert [r["rank"] is not None for r in row["result"]["ranking"]].count(True) == 3


def test_a_pool_that_breaks_twice_fails_what_is_left_saying_which_ran(
    capsys, tmp_path: Path, monkeypatch
) -> None:
    """Two combinations that kill their workers: the first breaks the first pool, the
    second the retry's; the one never run again is not blamed for a death."""
    from bot.sweep.executors import DIED_BESIDE, POOL_BROKE

    row, runs = _sweep_with_dying_workers(capsys, tmp_path, monkeypatch, {1, 2})
    assert runs["status"].tolist() == ["finished", "failed", "failed", "failed"]
    # 1 ran when the first pool broke; 2 when the retry's did; 3 never ran
    assert runs["error"].tolist()[1:] == [DIED_BESIDE, DIED_BESIDE, POOL_BROKE]


def test_an_interrupted_sweep_leaves_nothing_running(capsys, tmp_path: Path, monkeypatch) -> None:
    real = bot.sweep.runner.RunCloser.add
    calls = []

    def interrupted(closer, outcome):
        calls.append(outcome)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real(closer, outcome)

    monkeypatch.setattr(bot.sweep.runner.RunCloser, "add", interrupted)
    db = f"sqlite:///{tmp_path / 'log.sqlite'}"
    code, _, _ = sweep(capsys, db, "--start", "2016-01-04", "--end", "2016-03-31",
                       "--grid", "rebalance.every_days=2,3,4,8", "--workers", "1", "--no-charts")
    assert code == 130
    row, runs = stored(db)
    assert row["status"] == "failed" and row["finished_at"] is not None
    assert runs["status"].tolist() == ["finished", "failed", "failed", "failed"]


WF_SPAN = ["--start", "2014-01-02", "--end", "2015-12-31"]
WF_GRID = ["--grid", "risk.vol_high=1.25,2", "--grid", "rebalance.every_days=2,8"]


def test_walk_forward_picks_on_training_windows_and_stitches_test_windows(
    capsys, tmp_path: Path
) -> None:
    """Checked against the equity each run stored: the pick of every window is the best
    Sharpe inside its training window, and the curve is the picks' test-window returns.
    A window's fills are sized to the stitched account after its switch cost is paid, the
    equity its returns compound on (they were sized to the equity before it, so the
    out-of-sample costs and turnover counted trades on money the switch had spent)."""
    db = f"sqlite:///{tmp_path / 'log.sqlite'}"
    code, out, err = sweep(capsys, db, *WF_SPAN, *WF_GRID, "--walk-forward", "6m:3m",
                           "--record", "full")
    assert code == 0, err
    row, runs = stored(db)
    wf = row["result"]["walk_forward"]
    assert row["walk_forward"] == "6m:3m" and wf["spec"] == "6m:3m" and "Walk-forward 6m:3m" in out
    log = TradeLog.open_readonly(db)
    equity = {int(r): log.load_equity(int(r))["equity"] for r in runs["run_id"]}
    log.close()
    days = next(iter(equity.values())).index
    windows = wf["windows"]
    assert len(windows) == 6
    previous_end = None
    for w in windows:
        train = slice(pd.Timestamp(w["train"][0]), pd.Timestamp(w["train"][1]))
        test_start, test_end = (pd.Timestamp(d) for d in w["test"])
        assert pd.Timestamp(w["train"][1]) < test_start  # out of sample
        assert days[days.get_loc(test_start) - 1] == pd.Timestamp(w["train"][1])  # right after
        if previous_end is not None:  # contiguous, never overlapping
            assert days[days.get_loc(previous_end) + 1] == test_start
        previous_end = test_end
        scores = {run: performance(eq.loc[train])["sharpe"] for run, eq in equity.items()}
        assert w["run_id"] == max(scores, key=lambda r: (scores[r], -r))
    assert previous_end == days[-1]

    curve = pd.read_csv(tmp_path / "reports" / "log-sweep-1" / "walk_forward.csv",
                        index_col="day", parse_dates=True)["equity"]
    # A change of pick trades the old pick's weights into the new one's at the close
    # before the window: |w_new - w_old| x equity x slippage (5 bp; no commission in the
    # config), each weight the run's recorded holding valued at that day's close.
    log = TradeLog.open_readonly(db)
    positions = {int(r): log.load_positions(int(r)) for r in runs["run_id"]}
    fills = {int(r): log.load_fills(int(r)) for r in runs["run_id"]}
    log.close()
    base = apply_overrides(load_settings(CONFIG), BacktestOptions(
        config=CONFIG, start=WF_SPAN[1], end=WF_SPAN[3], synthetic=True), str(CONFIG))
    prices = bot.sweep.runner.market_for(base, tmp_path).prices

    def weights(run: int, day: pd.Timestamp) -> pd.Series:
        known = positions[run][positions[run]["day"] <= day]  # snapshots on trading days
        held = known.groupby("symbol")["quantity"].last()
        row = int(np.searchsorted(prices.dates, np.datetime64(day.date())))
        closes = pd.Series({s: prices.close[row, prices.index_of(s)] for s in held.index})
        return held * closes / equity[run].loc[day]

    expected, costs, fill_costs = [100_000.0], [], 0.0
    for k, w in enumerate(windows):
        eq = equity[w["run_id"]]
        lo, hi = days.get_loc(pd.Timestamp(w["test"][0])), days.get_loc(pd.Timestamp(w["test"][1]))
        cost = 0.0
        if k and w["run_id"] != windows[k - 1]["run_id"]:
            day = pd.Timestamp(w["train"][1])
            old, new = weights(windows[k - 1]["run_id"], day), weights(w["run_id"], day)
            traded = new.sub(old, fill_value=0.0).abs().sum()
            cost = traded * expected[-1] * 5 / 1e4
        costs.append(cost)
        part = slice_fills(fills[w["run_id"]], *(pd.Timestamp(d) for d in w["test"]))
        paid = float((part["commission"] + part["slippage_cost"]).sum())
        fill_costs += paid * (expected[-1] - cost) / eq.iloc[lo - 1]
        growth = eq.iloc[lo : hi + 1].to_numpy() / eq.iloc[lo - 1 : hi].to_numpy()
        expected.extend((expected[-1] - cost) * np.cumprod(growth))
    assert sum(c > 0 for c in costs) >= 1  # the pick changed: switches were charged
    assert [w["switch_cost"] for w in windows] == pytest.approx(costs, rel=1e-9, abs=1e-9)
    assert wf["switch_costs"] == pytest.approx(sum(costs), rel=1e-9)
    assert wf["summary"]["transaction_costs"] == pytest.approx(fill_costs, rel=1e-9)
    assert wf["test_return_net_of_switch_cost"] is True  # it is not to be taken off again
    assert "net of switch" in out
    assert f"costing {sum(costs):,.2f}" in out
    assert curve.index[0] == pd.Timestamp(windows[0]["train"][1])
    assert curve.index[1] == pd.Timestamp(windows[0]["test"][0]) and curve.index[-1] == days[-1]
    np.testing.assert_allclose(curve.to_numpy(), expected, rtol=1e-9)
    assert wf["final_equity"] == pytest.approx(expected[-1], rel=1e-9)
    assert wf["summary"]["start"] == windows[0]["train"][1]
    assert (tmp_path / "reports" / "log-sweep-1" / "walk_forward.png").is_file()


def _future_changed(market: MarketData, cut: np.datetime64) -> MarketData:
    """The same market with every price from `cut` on shaken by a random walk."""
    p = market.prices
    k = int(np.searchsorted(p.dates, cut))
    rng = np.random.default_rng(3)
    shake = np.ones_like(p.close)
    shake[k:] = np.cumprod(1 + rng.normal(0, 0.03, size=(len(p.dates) - k, p.close.shape[1])), axis=0)
    prices = PriceHistory(p.dates, p.symbols, p.close * shake, p.open * shake, p.filled)
    return replace(market, prices=prices)


def test_walk_forward_picks_do_not_see_the_future(tmp_path: Path, monkeypatch) -> None:
    """Prices changed from the third test window on leave the first three windows' training
    scores (so their picks) and the curve before the change exactly as they were: nothing
    after a training window reaches its pick. Later scores and the later curve do change,
    so the change had teeth."""
    def options(name: str) -> SweepOptions:
        return SweepOptions(
            config=CONFIG, grid=tuple(WF_GRID[1::2]), walk_forward="6m:3m", start=WF_SPAN[1],
            end=WF_SPAN[3], synthetic=True, database=f"sqlite:///{tmp_path / name}",
            charts=False, workers=2,
        )

    console = Console(file=open(os.devnull, "w"), width=200)  # noqa: SIM115
    before = run_sweep(options("a.sqlite"), console)
    cut = np.datetime64(before.walk_forward["windows"][2]["test"][0])
    real = bot.sweep.runner.market_for
    monkeypatch.setattr(bot.sweep.runner, "market_for",
                        lambda *args: _future_changed(real(*args), cut))
    after = run_sweep(options("b.sqlite"), console)

    first, second = (r.walk_forward["windows"] for r in (before, after))
    for a, b in zip(first[:3], second[:3], strict=True):  # every score, not just the pick
        assert a["scores"] == b["scores"] and a["params"] == b["params"]
    assert first[3]["scores"] != second[3]["scores"]
    early = before.curve.index < pd.Timestamp(cut)
    np.testing.assert_array_equal(before.curve[early], after.curve[early])
    assert not np.allclose(before.curve[~early], after.curve[~early])


def test_real_data_combinations_equal_bot_backtest(capsys, tmp_path: Path, shared_data) -> None:
    db = f"sqlite:///{tmp_path / 'log.sqlite'}"
    span = ["--start", "2020-01-02", "--end", "2020-12-31", "--data-dir", str(shared_data)]
    code, _, err = sweep(capsys, db, *span, "--grid", "risk.vol_high=1.25,2",
                         "--grid", "risk.stop_alpha=2,3", synthetic=False)
    assert code == 0, err
    row, runs = stored(db)
    assert not row["synthetic"] and "SYNTHETIC" not in row["data_source"]
    ranking = row["result"]["ranking"]
    assert len({r["final_equity"] for r in ranking}) == 4  # the values do change the runs
    for entry in (ranking[0], ranking[-1]):
        alone = backtest(capsys, db, entry["params"], *span)
        assert final_equity(db, alone) == entry["final_equity"]
        assert run_row(db, alone)["summary"] == run_row(db, entry["run_id"])["summary"]


def test_pool_workers_yield_the_cpu_to_the_sweeps_own_process(settings, monkeypatch) -> None:
    """The sweep's process writes every combination's records (--record full): its
    workers run at a lower priority, so it is not starved by them."""
    from bot.sweep.executors import WORKER_NICENESS, LocalPool
    from bot.sweep.variant import VariantOutcome, VariantTask

    def report_niceness(market, task):
        return VariantOutcome(task.position, task.run_id, summary={"niceness": os.nice(0)})

    monkeypatch.setattr(bot.sweep.executors, "run_variant", report_niceness)
    pool = LocalPool(2)
    try:
        tasks = [VariantTask(i, i, settings) for i in range(4)]
        outcomes = list(pool.outcomes(object(), tasks))  # type: ignore[arg-type]
    finally:
        pool.close()
    expected = min(os.nice(0) + WORKER_NICENESS, 19)
    assert [o.summary["niceness"] for o in outcomes] == [expected] * 4
    assert os.nice(0) < expected  # the sweep's own process keeps its priority


def test_the_rerun_command_of_a_combination_that_sets_the_span_leaves_out_start_and_end() -> None:
    """`bot backtest` applies --start/--end after --set: with both, the printed command
    ran the sweep's --start instead of the combination's backtest.start."""
    from bot.sweep.runner import SweepOptions, reproduce

    options = SweepOptions(CONFIG, ("backtest.start=2016-01-01,2017-01-01",),
                           start="2015-01-01", end="2018-12-31", synthetic=True)
    command = reproduce(options, {"backtest.start": "2016-01-01"})
    assert "--start" not in command and "--end 2018-12-31" in command
    assert "--set backtest.start=2016-01-01" in command
    assert "--start 2015-01-01" in reproduce(options, {"risk.vol_high": 2})


def test_an_out_that_cannot_be_a_folder_fails_before_any_work(capsys, tmp_path: Path) -> None:
    taken = tmp_path / "a-file"
    taken.write_text("")
    db = tmp_path / "log.sqlite"
    code, _, err = sweep(capsys, f"sqlite:///{db}", *SPAN, "--grid", "risk.vol_high=1.25,2",
                         "--out", str(taken))
    assert code == 2 and str(taken) in err
    assert not db.exists()  # nothing ran, no sweep recorded


def test_a_sweep_loads_the_history_bot_backtest_loads(settings, shared_data) -> None:
    """The underlyings too (QQQ, DIA, TLT, GLD): their files' days are trading days of
    the history, so without them a combination could run on other days than its
    `bot backtest`."""
    from bot.reference import underlyings
    from bot.sweep.runner import market_for

    market = market_for(settings, shared_data)
    assert underlyings(settings) and underlyings(settings) <= set(market.prices.symbols)


def test_a_grid_key_that_changes_nothing_is_named() -> None:
    """`rebalance.every_days=2,8` on the weekly robo config gave two identical rows, and
    the sweep declared the first the best."""
    from bot.sweep.grid import Axis
    from bot.sweep.runner import inert_keys

    def row(every, vol, equity):
        return {"params": {"rebalance.every_days": every, "risk.vol_high": vol}, "error": None,
                "final_equity": equity, "summary": {"sharpe": equity / 1e5}}

    axes = [Axis("rebalance.every_days", (2, 8)), Axis("risk.vol_high", (1.25, 2.0))]
    rows = [row(2, 1.25, 1.1e5), row(8, 1.25, 1.1e5), row(2, 2.0, 1.3e5), row(8, 2.0, 1.3e5)]
    assert inert_keys(rows, axes) == ["rebalance.every_days"]
    rows[1] = row(8, 1.25, 1.2e5)  # one combination differs: the key does something
    assert inert_keys(rows, axes) == []


def test_a_pool_stopped_early_cancels_every_combination_not_started(monkeypatch) -> None:
    """Ctrl-C printed "interrupted" at once, then the exit waited for every queued
    combination: shutdown(cancel_futures=True) cancels nothing once the pool is dropped."""
    import time

    from bot.sweep import executors

    monkeypatch.setattr(executors, "run_variant", lambda market, task: time.sleep(0.2) or task)
    pool = executors.LocalPool(2)
    outcomes = pool.outcomes("market", list(range(20)))  # forked after the patch: workers sleep
    first = next(outcomes)
    assert first in range(20)
    queued = list(pool._pending)
    pool.close()
    cancelled = sum(future.cancelled() for future in queued)
    # Only those not handed to a worker yet can be cancelled: the two running, the few
    # the pool queued for them (marked running) and the ones done are not; before, none.
    assert cancelled >= 10
    assert all(f.cancelled() or f.done() or f.running() for f in queued)


def test_the_rerun_command_writes_where_the_sweep_wrote() -> None:
    """It left out --database: the re-run went into the default trade log, not the one
    the sweep recorded its runs in. A password in the URL is masked, never printed."""
    from bot.sweep.runner import SweepOptions, reproduce

    options = SweepOptions(CONFIG, ("risk.vol_high=1.5,2",), synthetic=True,
                           database="sqlite:////tmp/sweeps/log.sqlite")
    assert "--database sqlite:////tmp/sweeps/log.sqlite" in reproduce(options, {"risk.vol_high": 2})
    secret = SweepOptions(CONFIG, ("risk.vol_high=1.5,2",), database="postgresql://bot:s3cret@db/x")
    command = reproduce(secret, {"risk.vol_high": 2})
    assert "s3cret" not in command and "postgresql://bot:***@db/x" in command


def test_the_printed_rerun_command_is_one_line_however_long(capsys, tmp_path: Path) -> None:
    """rich wrapped the "best" line at 200 columns with a real newline: pasted, the command
    ran `--end` without its value."""
    deep = tmp_path / ("a-long-folder-name-" * 6)
    deep.mkdir()
    db = f"sqlite:///{deep / 'log.sqlite'}"
    code, out, err = sweep(capsys, db, *SPAN, "--grid", "risk.vol_high=1.25,2", "--no-charts")
    assert code == 0, err
    best = [line for line in out.splitlines() if line.startswith("best (")]
    assert len(best) == 1 and len(best[0]) > 200
    assert best[0].endswith("--set risk.vol_high=1.25") or best[0].endswith("--set risk.vol_high=2")
    assert f"--database {db}" in best[0] and "--end 2016-08-31" in best[0]


def _failing(positions: set[int]):
    """run_variant, but the combinations at `positions` fail (forked workers inherit it)."""
    from bot.sweep.variant import failed_outcome

    real = bot.sweep.executors.run_variant

    def run(market, task):
        if task.position in positions:
            return failed_outcome(task, "made to fail")
        return real(market, task)

    return run


def test_a_sweep_whose_every_combination_failed_is_failed_with_no_walk_forward(
    capsys, tmp_path: Path, monkeypatch
) -> None:
    """It was stored `finished`, with a walk-forward of flat cash (CAGR 0, 100,000)."""
    monkeypatch.setattr(bot.sweep.executors, "run_variant", _failing({0, 1}))
    db = f"sqlite:///{tmp_path / 'log.sqlite'}"
    code, out, _ = sweep(capsys, db, *WF_SPAN, "--grid", "risk.vol_high=1.25,2",
                         "--walk-forward", "6m:3m", "--workers", "1")
    assert code == 1
    row, runs = stored(db)
    assert row["status"] == "failed" and row["result"]["walk_forward"] is None
    assert runs["status"].tolist() == ["failed", "failed"]
    assert "sweep 1 failed: none of its 2 combinations ran" in out
    assert "no walk-forward: nothing to pick from" in out and "Walk-forward" not in out
    assert not (tmp_path / "reports" / "log-sweep-1" / "walk_forward.csv").exists()


def test_a_walk_forward_says_it_picked_among_the_combinations_that_ran(
    capsys, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(bot.sweep.executors, "run_variant", _failing({0}))
    db = f"sqlite:///{tmp_path / 'log.sqlite'}"
    code, out, _ = sweep(capsys, db, *WF_SPAN, "--grid", "risk.vol_high=1.25,2,3",
                         "--walk-forward", "6m:3m", "--workers", "1", "--no-charts")
    assert code == 1
    row, _ = stored(db)
    wf = row["result"]["walk_forward"]
    assert row["status"] == "finished" and wf["failed_combinations"] == 1
    assert all(w["position"] in (1, 2) for w in wf["windows"])
    assert ("warning: the walk-forward picked among the 2 combinations that ran: 1 failed and "
            "were no candidates in any window") in out


def test_a_walk_forward_pick_that_never_traded_in_its_training_window_is_named(
    capsys, tmp_path: Path
) -> None:
    """100 dollars of cash trade nothing (every order below the minimum): no drawdown, so
    --metric max_drawdown picked that combination in every window, without a word."""
    db = f"sqlite:///{tmp_path / 'log.sqlite'}"
    code, out, err = sweep(capsys, db, *WF_SPAN, "--grid", "backtest.initial_cash=100,100000",
                           "--walk-forward", "6m:3m", "--metric", "max_drawdown", "--no-charts")
    assert code == 0, err
    row, runs = stored(db)
    windows = row["result"]["walk_forward"]["windows"]
    idle = int(runs["run_id"].iloc[0])
    assert [w["run_id"] for w in windows] == [idle] * len(windows)  # kept, not excluded
    assert all(w["train_trades"] == 0 for w in windows)
    first = windows[0]["train"]
    assert (f"warning: walk-forward window {first[0]}..{first[1]}: its pick, run {idle} "
            "(backtest.initial_cash=100), made no trades in that training window") in out
    assert out.count("made no trades in that training window") == len(windows)
