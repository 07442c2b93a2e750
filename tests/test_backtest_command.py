"""`bot backtest` when something fails after the simulation started: the run is marked
failed and keeps everything it recorded (it used to stay 'running' with no rows)."""

import sys
from pathlib import Path

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
    (incident,) = log.load_incidents(run_id).itertuples()  # `bot incidents` says why
    if isinstance(error, KeyboardInterrupt):
        assert incident.kind == "interrupted" and "stopped (Ctrl-C" in incident.message
    else:
        assert incident.kind == "run_failed"
        assert incident.message == "backtest failed: RuntimeError: report broke"
    log.close()


def test_reports_go_beside_their_database(tmp_path, monkeypatch):
    """Reports were named by run id alone under ./var/reports: run 1 of another database
    overwrote them; then by folder, and two trade logs in one folder still shared
    reports/run-1."""
    import json

    monkeypatch.chdir(tmp_path)
    databases = {"a/tradelog.sqlite": "a/reports/run-1", "b/tradelog.sqlite": "b/reports/run-1",
                 "c/one.sqlite": "c/reports/one-run-1", "c/two.sqlite": "c/reports/two-run-1"}
    for path in databases:
        assert main([*ARGS, "--no-benchmarks", "--no-charts", "--database", f"sqlite:///{tmp_path / path}"]) == 0
    for path, folder in databases.items():
        meta = json.loads((tmp_path / folder / "report.json").read_text())["meta"]
        assert meta["database"].endswith(path)  # its own run 1's report
    assert not (tmp_path / "var").exists()


def _cmdline(pid: int) -> str:
    """A process's command line, or "" when it exited between listing and reading."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return ""


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="charts fork on Linux only")
def test_sigterm_fails_the_run_and_no_chart_worker_outlives_the_command(tmp_path):
    """Killed, `bot backtest` left its chart worker waiting on a pipe forever (holding
    the database connection) and the run 'running'."""
    import os
    import signal
    import sqlite3
    import subprocess
    import time

    path = tmp_path / "k.sqlite"
    db = f"sqlite:///{path}"
    args = [sys.executable, "-m", "bot", "backtest", "--config", str(CONFIG), "--synthetic",
            "--start", "2010-01-04", "--end", "2016-12-30", "--database", db,
            "--out", str(tmp_path / "out")]

    def runs_recorded() -> int:
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as conn:
                return conn.execute("SELECT count(*) FROM runs").fetchone()[0]
        except sqlite3.Error:  # no file or no table yet
            return 0

    def start_until_the_worker_draws(stderr=subprocess.DEVNULL) -> tuple[subprocess.Popen, int]:
        """Started (in a process group of its own, as a shell starts a job), its run
        recorded and its worker forked. A child that still shows the
        parent's command line may also be `git rev-parse` (code_version) between its
        fork and its exec, before the run exists: signalled then, the command rightly
        records nothing, and the run read afterwards was the killed one's, 'running'."""
        before = runs_recorded()
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=stderr,
                                start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            # the run first: git has exited by then, so a child found now is the worker
            if runs_recorded() > before:
                kids = [k for k in _children(proc.pid) if "bot" in _cmdline(k)]
                if kids:
                    return proc, kids[0]
            time.sleep(0.02)
        raise AssertionError("the chart worker never started")

    proc, worker = start_until_the_worker_draws()
    proc.send_signal(signal.SIGKILL)  # the worst case: no cleanup at all in the parent
    proc.wait(timeout=10)
    time.sleep(1.0)
    assert not _alive(worker)

    proc, worker = start_until_the_worker_draws()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 130
    time.sleep(1.0)
    assert not _alive(worker)
    log = TradeLog.open_readonly(db)
    assert log.runs()["status"].tolist()[-1] == "failed"
    log.close()

    # Ctrl-C at a terminal signals the whole group, the worker too: one clean exit, no
    # traceback from the worker (it printed one, from its pipe, 3 times in 4).
    with (tmp_path / "stderr").open("w") as err:
        proc, worker = start_until_the_worker_draws(stderr=err)
        time.sleep(1.0)  # the references done: the worker waits idle on its pipe
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=30) == 130
    time.sleep(1.0)
    assert not _alive(worker)
    assert "Traceback" not in (tmp_path / "stderr").read_text()


def test_a_command_run_in_process_hands_its_frozen_heap_back(tmp_path, capsys):
    """`bot backtest` freezes its startup heap (bot.heap); main() called in-process thaws
    it when the command ends, so a test run or a notebook keeps collecting cycles."""
    import gc

    from bot.cli import main

    assert main(["backtest", "--config", str(CONFIG), "--synthetic", "--start", "2024-01-02",
                 "--end", "2024-02-28", "--no-charts", "--no-benchmarks",
                 "--database", f"sqlite:///{tmp_path / 't.sqlite'}",
                 "--out", str(tmp_path / "report")]) == 0
    assert gc.get_freeze_count() == 0


def test_a_fund_without_a_price_in_the_span_is_named():
    """TQQQ's file cut to its last 30 rows: a 2014-2016 backtest traded five funds with
    a full report and not a word about the sixth."""
    import numpy as np
    from structlog.testing import capture_logs

    from bot.runner import warn_unpriced

    dates = np.arange("2014-01-01", "2014-01-11", dtype="datetime64[D]")
    close = np.ones((10, 2))
    close[:8, 1] = np.nan  # B's prices start on the 9th
    with capture_logs() as logs:
        assert warn_unpriced(("A", "B"), close, dates, 0, 8) == ["B"]
        assert warn_unpriced(("A", "B"), close, dates, 0, 9) == []
    (line,) = logs
    assert line["symbol"] == "B" and line["prices_from"] == "2014-01-09"
    assert "no price in the span" in line["event"]


def test_a_run_that_never_fills_an_order_says_so(tmp_path, capsys):
    """100 dollars against the default 50-dollar minimum trade: every slice is below it,
    and the run ended with 0 trades, exit 0 and no word of why."""
    db = f"sqlite:///{tmp_path / 'log.sqlite'}"
    assert main([*ARGS, "--synthetic", "--no-benchmarks", "--set", "backtest.initial_cash=100",
                 "--database", db, "--out", str(tmp_path / "out")]) == 0
    assert "no order filled in the whole run" in capsys.readouterr().err


def test_a_synthetic_runs_periods_keep_their_dates_but_not_their_names_claim(tmp_path):
    """The config's periods are history's ("Financial crisis 2008-2009"); on a synthetic
    market no crisis is in those dates, so the report says whose dates they are instead,
    in `bot backtest`'s report and in `bot report`'s rebuild of it."""
    import json

    db = f"sqlite:///{tmp_path / 'log.sqlite'}"
    args = ["backtest", "--config", str(CONFIG), "--synthetic", "--no-charts", "--no-benchmarks",
            "--start", "2019-06-03", "--end", "2020-12-31", "--database", db]
    assert main([*args, "--out", str(tmp_path / "bt")]) == 0
    assert main(["report", "--run", "1", "--database", db, "--no-charts",
                 "--out", str(tmp_path / "again")]) == 0
    for folder in ("bt", "again"):
        report = json.loads((tmp_path / folder / "report.json").read_text())
        names = [row["name"] for rows in report["periods"].values() for row in rows]
        assert names, "the span must cover a configured period"
        assert all(n.startswith("dates of ") and n.endswith(" (synthetic prices)") for n in names)


def test_the_chart_worker_leaves_ctrl_c_to_the_command():
    """Ctrl-C at a terminal reaches the forked worker too; idle on its pipe, it printed a
    traceback of its own. It ignores SIGINT: the command handles it and ends the worker."""
    import signal

    from bot.runner import Background

    worker = Background()
    disposition = worker.start(signal.getsignal, signal.SIGINT)
    assert disposition() == signal.SIG_IGN
    worker.wait()


def test_a_span_the_data_does_not_cover_is_run_on_what_there_is_and_said(tmp_path, capsys):
    """--end 2030-01-01 on data to 2024 ran to 2024 without a word (bot run --replay
    refuses such a span; a backtest's default span is the data's, so it runs and says)."""
    db = f"sqlite:///{tmp_path / 'log.sqlite'}"
    assert main(["backtest", "--config", str(CONFIG), "--synthetic", "--no-charts",
                 "--no-benchmarks", "--start", "2024-06-03", "--end", "2030-01-01",
                 "--database", db, "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "note: backtest.end 2030-01-01 is after the data's last day: the run ends on 20" in out
    assert "backtest.start" not in out


def test_the_inspect_commands_are_printed_on_one_line_however_long(tmp_path, capsys):
    """rich wrapped "inspect it: ..." at 200 columns with real newlines: a pasted command
    lost its --database value."""
    deep = tmp_path / ("a-long-folder-name-" * 6)
    deep.mkdir()
    db = f"sqlite:///{deep / 'log.sqlite'}"
    assert main([*ARGS, "--no-benchmarks", "--database", db, "--out", str(tmp_path / "out")]) == 0
    lines = capsys.readouterr().out.splitlines()
    inspect = [line for line in lines if line.startswith("inspect it: ")]
    assert len(inspect) == 1 and len(inspect[0]) > 200
    assert inspect[0].endswith(f"bot report --run 1 --database {db}")
