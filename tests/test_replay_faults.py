"""A replay stopped by a signal, run past its data, or with failing jobs ends honestly:
the running job finishes, orders left at the simulated venue are closed, the run is
marked and the exit code says what happened."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from bot.cli import main
from bot.daemon.jobs import TradingJobs
from bot.store.tradelog import TradeLog
from tests.conftest import CONFIG, REPO

FINAL = {"filled", "canceled", "expired", "rejected"}


def replay_cli(db: Path, span: str) -> int:
    return main(["--log-format", "json", "run", "--config", str(CONFIG), "--synthetic",
                 "--replay", span, "--database", f"sqlite:///{db}"])


def only_run(db: Path) -> dict:
    log = TradeLog.open(f"sqlite:///{db}")
    try:
        runs = log.runs()
        assert len(runs) == 1, runs
        run = runs.iloc[0].to_dict()
        run["orders"] = log.load_orders(int(run["id"]))
        run["incidents"] = log.load_incidents(int(run["id"]))
        with log.engine.connect() as conn:
            run["events"] = conn.exec_driver_sql(
                "SELECT order_id, status, COUNT(*) FROM order_events GROUP BY order_id, status"
            ).all()
    finally:
        log.close()
    return run


def test_sigterm_stops_a_replay_after_the_running_job(tmp_path):
    """Before: SIGTERM killed the process at once (-15), the run stayed `running`."""
    db = tmp_path / "term.sqlite"
    out = (tmp_path / "replay.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "--log-format", "json", "run", "--config", str(CONFIG),
         "--synthetic", "--replay", "2015-01-02:2024-12-31", "--database", f"sqlite:///{db}"],
        cwd=REPO, stdout=out, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 30
        text = ""
        while time.monotonic() < deadline and text.count('"event": "close"') < 20:
            assert proc.poll() is None, text[-2000:]
            time.sleep(0.05)
            text = (tmp_path / "replay.log").read_text()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        out.close()
    text = (tmp_path / "replay.log").read_text()
    assert code == 143, text[-2000:]
    assert '"replay interrupted"' in text and '"stopped"' in text
    run = only_run(db)
    assert run["status"] == "failed"
    assert run["summary"]["interrupted"] == "SIGTERM"
    assert list(run["incidents"]["kind"]) == ["interrupted"]
    assert "SIGTERM" in run["incidents"]["message"].iloc[0]
    # on the replay's clock as its job incidents, the wall-clock time beside it
    assert run["incidents"]["at"].iloc[0] < run["started_at"]
    assert run["incidents"]["context"].iloc[0]["wall_clock"] >= run["started_at"].isoformat()[:10]
    assert run["summary"]["span"] == run["incidents"]["context"].iloc[0]["span"]  # to run again
    assert set(run["orders"]["status"]) <= FINAL


def test_ctrl_c_closes_the_orders_waiting_at_the_venue(tmp_path, monkeypatch, capsys):
    """Ctrl-C right after a decision sent orders. Before: KeyboardInterrupt skipped the
    end of the replay and its orders stayed `accepted` for ever."""
    original = TradingJobs.open_job

    def open_then_ctrl_c(self: TradingJobs, day=None) -> None:
        original(self, day)
        if self.ctx.broker.open_order_count():
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(TradingJobs, "open_job", open_then_ctrl_c)
    db = tmp_path / "int.sqlite"
    assert replay_cli(db, "2023-01-03:2023-03-31") == 130
    run = only_run(db)
    orders = run["orders"]
    assert len(orders) > 0 and set(orders["status"]) == {"canceled"}
    assert set(orders["status_message"]) == {"replay interrupted before the fill day"}
    assert run["status"] == "failed"
    assert "interrupted by SIGINT" in run["incidents"]["message"].iloc[0]
    err = capsys.readouterr().err
    assert '"replay interrupted"' in err
    assert "order_already_recorded" not in err
    # each order recorded once: one `accepted` and one `canceled` event, no repeats
    assert sorted({(status, n) for _oid, status, n in run["events"]}) == [
        ("accepted", 1), ("canceled", 1)]


def test_ctrl_c_between_a_commit_and_the_buffer_clear_records_nothing_twice(
    tmp_path, monkeypatch, capsys
):
    """The journey's 6 `tradelog.order_already_recorded` warnings: Ctrl-C landed after a
    flush committed and before it cleared its buffer, and the run's shutdown wrote the
    buffer again (orders were caught, their events and targets were inserted twice).
    Now the signal only asks the replay to stop, so the write completes."""
    original = TradeLog._clear_buffers
    fired = []

    def clear_after_ctrl_c(self: TradeLog) -> None:
        if self._orders and not fired:
            fired.append(True)
            signal.raise_signal(signal.SIGINT)
        original(self)

    monkeypatch.setattr(TradeLog, "_clear_buffers", clear_after_ctrl_c)
    db = tmp_path / "window.sqlite"
    assert replay_cli(db, "2023-01-03:2023-03-31") == 130
    assert fired
    assert "order_already_recorded" not in capsys.readouterr().err
    run = only_run(db)
    assert max(n for _oid, _status, n in run["events"]) == 1
    assert set(run["orders"]["status"]) <= FINAL


def test_a_replay_past_the_end_of_the_data_is_refused(tmp_path, capsys):
    """Before: it ran on, 78 jobs failed, and the run ended `finished` with exit 0."""
    db = tmp_path / "past.sqlite"
    assert replay_cli(db, "2024-11-01:2025-02-28") == 2
    err = capsys.readouterr().err
    assert "runs past the end of the data" in err and "2024-12-31" in err
    assert "--replay 2024-11-01:2024-12-31" in err
    log = TradeLog.open(f"sqlite:///{db}")
    assert log.runs().empty  # refused before any run was recorded
    log.close()


def test_a_span_ending_on_a_holiday_after_the_data_is_accepted():
    from bot.daemon.replay import check_span
    from bot.errors import BotError

    dates = np.array(["2024-12-27", "2024-12-30", "2024-12-31"], dtype="datetime64[ns]")
    market = SimpleNamespace(prices=SimpleNamespace(dates=dates), label="test data")
    sessions = check_span(dt.date(2024, 12, 27), dt.date(2025, 1, 1), market)
    assert sessions[-1].day == dt.date(2024, 12, 31)
    with pytest.raises(BotError, match="last day of test data is 2024-12-31"):
        check_span(dt.date(2024, 12, 27), dt.date(2025, 1, 2), market)


def test_a_replay_with_a_failed_job_says_so_and_exits_1(tmp_path, monkeypatch, capsys):
    """Before: failed jobs only showed as log lines; the run was `finished`, exit 0."""
    original = TradingJobs.close_job
    failed = []

    def close_failing_once(self: TradingJobs, day: dt.date | None = None) -> None:
        if self.ctx.clock.now().date() == dt.date(2023, 1, 10) and not failed:
            failed.append(True)
            raise RuntimeError("disk on fire")
        original(self, day)

    monkeypatch.setattr(TradingJobs, "close_job", close_failing_once)
    db = tmp_path / "fail.sqlite"
    assert replay_cli(db, "2023-01-03:2023-02-28") == 1
    out = capsys.readouterr().out
    assert "FAILED: 1 job failed (first: close at 2023-01-10 21:20 UTC)" in out
    run = only_run(db)
    assert run["status"] == "failed"
    assert run["summary"]["jobs_failed"] == 1
    assert set(run["orders"]["status"]) <= FINAL


def test_a_replay_near_the_end_of_the_exchange_calendar_runs_or_is_refused(tmp_path, capsys):
    """Before: a span ending within about three weeks of the offline calendar's last
    session crashed with DateOutOfBounds after its last job, when the scheduler read the
    next week's sessions. Now such a span is refused before any run is recorded, with
    the latest end that works, and that end (and the days before it) replay cleanly."""
    import re

    from bot.daemon.sessions import exchange_calendar_bounds

    last_known = exchange_calendar_bounds()[1]
    config = tmp_path / "late.toml"
    config.write_text(CONFIG.read_text().replace(
        "[data]\n", f'[data]\nsynthetic_end = "{last_known}"\n', 1))

    def replay(db: Path, end: dt.date) -> int:
        start = end - dt.timedelta(days=8)
        return main(["--log-format", "json", "run", "--config", str(config), "--synthetic",
                     "--replay", f"{start}:{end}", "--database", f"sqlite:///{db}", "-q"])

    def refused(end: dt.date) -> str:
        db = tmp_path / f"refused-{end}.sqlite"
        assert replay(db, end) == 2, end
        err = capsys.readouterr().err
        assert "ends too close to the end of the exchange calendar" in err, err
        assert str(last_known) in err and "Traceback" not in err
        log = TradeLog.open(f"sqlite:///{db}")
        assert log.runs().empty  # refused before any run was recorded
        log.close()
        return err

    found = re.search(r"end it by (\d{4}-\d{2}-\d{2})", refused(last_known))
    assert found
    latest = dt.date.fromisoformat(found.group(1))
    assert dt.timedelta(days=14) < last_known - latest < dt.timedelta(days=35)
    for back in range(7):  # every weekday among them
        end = latest - dt.timedelta(days=back)
        assert replay(tmp_path / f"ok-{end}.sqlite", end) == 0, end
    capsys.readouterr()
    refused(latest + dt.timedelta(days=1))
