"""Replay runs the daemon itself (triggers, jobs, engine restored from the trade log
every job, replay venue) on a simulated clock; it must send the backtest's orders."""

import datetime as dt

import pandas as pd
import pytest

from bot.backtest import run_backtest, scratch_tradelog
from bot.daemon.replay import parse_span, replay
from bot.store.tradelog import TradeLog
from tests.test_backtest import variant


def start_run(log, mode):
    return log.start_run(mode=mode, strategy="t", config_hash="-", config={}, code_version="-",
                         data_source="-", synthetic=False, started_at=dt.datetime.now(dt.UTC))


@pytest.mark.parametrize("weighting", ["inverse_vol", "erc"])
def test_replay_sends_the_same_orders_as_the_backtest(settings, real_market, tmp_path, weighting):
    cfg = variant(settings, strategy={"weighting": weighting},
                  backtest={"start": "2020-01-02", "end": "2020-06-30", "fill": "next_open"})
    bt_log = scratch_tradelog("bt")
    result = run_backtest(cfg, real_market, bt_log, order_prefix="same")
    bt_log.flush()

    log = TradeLog.open(f"sqlite:///{tmp_path / 'replay.sqlite'}")
    run_id = start_run(log, "replay")
    outcome = replay(cfg, real_market, log, run_id, dt.date(2020, 1, 2), dt.date(2020, 6, 30))
    assert outcome.jobs_run > 3 * 120

    def orders(tl, rid, prefix):
        frame = tl.load_orders(rid)
        frame["key"] = frame["client_order_id"].str.removeprefix(prefix)
        return frame.set_index("key").sort_index()

    ours, theirs = orders(log, run_id, f"rp{run_id}"), orders(bt_log, bt_log.run_id, "same")
    assert list(ours.index) == list(theirs.index) and len(ours) > 100
    pd.testing.assert_series_equal(ours["quantity"], theirs["quantity"], rtol=1e-12)
    pd.testing.assert_series_equal(ours["filled_quantity"], theirs["filled_quantity"], rtol=1e-12)
    pd.testing.assert_series_equal(ours["average_price"], theirs["average_price"], rtol=1e-12)

    equity = log.load_equity(run_id)["equity"]
    assert equity.iloc[-1] == pytest.approx(result.equity[-1], rel=1e-12)
    assert len(equity) == len(result.equity)
    regimes = log.load_regimes(run_id)
    assert not regimes.empty
    # Each close carries the regime in force that day, a week's first included (the
    # daemon's close job ran before the step that put a new week's regime in force)
    labels = log.load_equity(run_id)["regime"].tolist()
    assert labels == bt_log.load_equity(bt_log.run_id)["regime"].tolist()
    assert len(set(labels)) > 1  # the span changes regime
    log.close()


def test_span_parsing():
    assert parse_span("2020-01-02:2020-02-03") == (dt.date(2020, 1, 2), dt.date(2020, 2, 3))
    with pytest.raises(ValueError, match="START:END"):
        parse_span("2020-01-02")
    with pytest.raises(ValueError, match="before START"):
        parse_span("2020-02-03:2020-01-02")


@pytest.mark.parametrize("lag", [0, 5])
def test_the_robo_profile_replays_like_its_backtest(real_market_robo, tmp_path, lag):
    from bot.config import load_settings
    from tests.conftest import REPO

    cfg = variant(load_settings(REPO / "config" / "robo_balanced.toml"),
                  rebalance={"execution_lag_days": lag},
                  backtest={"start": "2019-01-02", "end": "2019-06-28", "fill": "next_open"})
    bt_log = scratch_tradelog("bt")
    run_backtest(cfg, real_market_robo, bt_log, order_prefix="same")
    bt_log.flush()
    log = TradeLog.open(f"sqlite:///{tmp_path / 'robo.sqlite'}")
    run_id = start_run(log, "replay")
    replay(cfg, real_market_robo, log, run_id, dt.date(2019, 1, 2), dt.date(2019, 6, 28))
    ours = log.load_orders(run_id)
    theirs = bt_log.load_orders(bt_log.run_id)
    keys = sorted(ours["client_order_id"].str.removeprefix(f"rp{run_id}"))
    assert keys == sorted(theirs["client_order_id"].str.removeprefix("same")) and len(keys) > 20
    assert log.load_equity(run_id)["equity"].iloc[-1] == pytest.approx(
        bt_log.load_equity(bt_log.run_id)["equity"].iloc[-1], rel=1e-12)
    log.close()


@pytest.fixture(scope="module")
def real_market_robo(shared_data):
    from bot.data.csv_source import load_csv_directory

    return load_csv_directory(shared_data, ["SPY", "IWM", "BND", "VNQ"])


def test_replay_log_lines_carry_simulated_time_and_say_synthetic_without_the_label(tmp_path):
    """The data label once at the start; after it every line is flagged synthetic, and
    every line a job writes says the simulated time it ran at."""
    import json
    import subprocess
    import sys

    from tests.conftest import REPO

    command = [sys.executable, "-m", "bot", "--log-format", "json", "run", "--synthetic",
               "--replay", "2023-01-03:2023-02-28", "--database", f"sqlite:///{tmp_path / 's.sqlite'}"]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    assert len(lines) > 50
    labelled = [line for line in lines if "SYNTHETIC" in line.get("data", "")]
    assert labelled == lines[:2]  # the warning and "replay started"; never again
    assert all(line.get("synthetic") is True for line in lines[1:])
    jobs = [line for line in lines if line["event"] in ("close", "decision", "regime decided")]
    assert len(jobs) > 40 and all(len(line["simulated"]) == 16 for line in jobs)
    closes = [line for line in lines if line["event"] == "close"]
    assert all(line["simulated"].startswith(line["day"]) for line in closes)
    assert "SYNTHETIC" in proc.stdout

    quiet = subprocess.run([*command[:6], "-q", *command[6:-1], f"sqlite:///{tmp_path / 'q.sqlite'}"],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0, quiet.stderr
    levels = {json.loads(line)["level"] for line in quiet.stderr.splitlines() if line.startswith("{")}
    assert levels == {"warning"}  # the synthetic-market warning only
    assert "replay run" in quiet.stdout and "final equity" in quiet.stdout


def test_replay_reports_its_progress_in_simulated_time(settings, tmp_path):
    from bot.data.synthetic import synthetic_market

    market = synthetic_market(list(settings.symbols), "2023-01-03", "2023-03-31", seed=3)
    log = TradeLog.open(f"sqlite:///{tmp_path / 'p.sqlite'}")
    seen: list[float] = []
    replay(settings, market, log, start_run(log, "replay"), dt.date(2023, 2, 1), dt.date(2023, 2, 28),
           progress=seen.append)
    log.close()
    assert len(seen) > 50 and seen == sorted(seen) and 0 < seen[0] < 0.1 and seen[-1] == 1.0
