"""`bot backtest` end to end: data, engine, trade log, report files."""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from bot.cli import main
from bot.store.tradelog import TradeLog
from tests.conftest import CONFIG, REPO


def test_backtest_on_the_synthetic_market_writes_log_report_and_charts(tmp_path, capsys):
    db = f"sqlite:///{tmp_path / 'log.sqlite'}"
    code = main([
        "backtest", "--config", str(CONFIG), "--synthetic", "--database", db,
        "--out", str(tmp_path / "out"), "--start", "2015-01-02", "--end", "2016-12-30",
    ])
    assert code == 0
    out = capsys.readouterr().out
    assert "SYNTHETIC" in out and "SPY buy-and-hold" in out

    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert "SYNTHETIC" in report["meta"]["data_label"]
    names = [row["name"] for row in report["summary"]]
    assert names[0] == "diversified_leverage" and len(names) == 5
    for chart in ("equity.png", "drawdown.png", "weights.png"):
        assert (tmp_path / "out" / chart).read_bytes().startswith(b"\x89PNG")
    tearsheet = (tmp_path / "out" / "tearsheet.html").read_text()
    assert "SPY buy-and-hold" in tearsheet and "SYNTHETIC DATA" in tearsheet

    log = TradeLog.open(db)
    runs = log.runs()
    assert list(runs["status"]) == ["finished"] and bool(runs["synthetic"].iloc[0])
    run_id = int(runs["id"].iloc[0])
    equity = log.load_equity(run_id)
    assert len(equity) == report["summary"][0]["days"]
    total_return = report["summary"][0]["total_return"]
    first, last = equity["equity"].iloc[0], equity["equity"].iloc[-1]
    assert last == pytest.approx(first * (1 + total_return), rel=1e-9)
    fills = log.load_fills(run_id)
    assert len(fills) == report["summary"][0]["trades"]
    orders = log.load_orders(run_id)
    assert set(orders["status"]) <= {"filled", "canceled", "expired", "rejected"}  # all final
    assert orders["client_order_id"].str.startswith(f"bt{run_id}-").all()
    assert len(log.load_regimes(run_id)) > 90
    log.close()


def test_second_run_in_the_same_database_gets_its_own_orders(tmp_path):
    db = f"sqlite:///{tmp_path / 'log.sqlite'}"
    args = ["backtest", "--synthetic", "--database", db, "--no-charts", "--no-benchmarks",
            "--start", "2016-01-04", "--end", "2016-06-30", "--out", str(tmp_path / "o")]
    assert main(args) == 0 and main(args) == 0
    log = TradeLog.open(db)
    orders = log.load_orders()
    assert set(orders["run_id"]) == {1, 2}
    log.close()


def test_python_m_bot_on_real_data(shared_data, tmp_path):
    env = {**os.environ, "BOT_DATA_DIR": str(shared_data), "BOT_LOG_FORMAT": "json",
           "BOT_DATABASE_URL": f"sqlite:///{tmp_path / 'real.sqlite'}"}
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "backtest", "--no-charts", "--out", str(tmp_path / "r"),
         "--start", "2020-01-02", "--end", "2020-12-31"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["meta"]["data_label"].startswith("csv:")
    spy = next(r for r in report["summary"] if r["name"] == "SPY buy-and-hold")
    # SPY total return in 2020 from the adjusted closes, with 5 bp slippage on one buy at
    # the 2020-01-03 open: about +15% (price return 16.2% from the Jan 2 close).
    closes = pd.read_csv(shared_data / "prices" / "SPY.csv", index_col="date")["adj_close"]
    price_return = closes["2020-12-31"] / closes["2020-01-02"] - 1
    assert abs(spy["total_return"] - price_return) < 0.02
    assert "SYNTHETIC" not in proc.stdout
