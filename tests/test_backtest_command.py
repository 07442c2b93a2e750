"""`bot backtest` when something fails after the simulation started: the run is marked
failed and keeps everything it recorded (it used to stay 'running' with no rows)."""

import pytest

import bot.runner
from bot.cli import main
from bot.store.tradelog import TradeLog
from tests.conftest import CONFIG

ARGS = ["backtest", "--config", str(CONFIG), "--synthetic", "--no-charts",
        "--start", "2016-01-04", "--end", "2016-06-30"]


@pytest.mark.parametrize("error", [RuntimeError("report broke"), KeyboardInterrupt()])
def test_a_run_that_fails_after_simulating_is_failed_with_its_records(
    tmp_path, monkeypatch, error
):
    """An error propagates; Ctrl-C ends the command with 130 (the CLI's own handling)."""
    def broken(*args, **kwargs):
        raise error

    monkeypatch.setattr(bot.runner, "build_report", broken)
    db = f"sqlite:///{tmp_path / 'log.sqlite'}"
    if isinstance(error, KeyboardInterrupt):
        assert main([*ARGS, "--database", db, "--out", str(tmp_path / "out")]) == 130
    else:
        with pytest.raises(type(error)):
            main([*ARGS, "--database", db, "--out", str(tmp_path / "out")])
    log = TradeLog.open_readonly(db)
    runs = log.runs()
    assert list(runs["status"]) == ["failed"] and runs["finished_at"].notna().all()
    run_id = int(runs["id"].iloc[0])
    assert len(log.load_equity(run_id)) > 100 and len(log.load_orders(run_id)) > 10
    log.close()


def test_reports_go_beside_their_database(tmp_path, monkeypatch):
    """Reports were named by run id alone under ./var/reports: run 1 of another database
    overwrote them."""
    monkeypatch.chdir(tmp_path)
    for name in ("a", "b"):
        db = f"sqlite:///{tmp_path / name / 'log.sqlite'}"
        assert main([*ARGS, "--no-benchmarks", "--database", db]) == 0
    assert (tmp_path / "a" / "reports" / "run-1" / "report.json").is_file()
    assert (tmp_path / "b" / "reports" / "run-1" / "report.json").is_file()
    assert not (tmp_path / "var").exists()
