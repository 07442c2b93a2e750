"""A run whose process was killed outright (SIGKILL, OOM, power cut) is closed by the next
command that starts a run on this machine: its holder ("host:pid:start") names a process
that no longer runs, so it is marked failed with an `abandoned` incident. Runs of live
processes, of other hosts and without a holder are left alone."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest
import sqlalchemy as sa

from bot.store import TradeLog
from bot.store.abandoned import close_dead_runs
from bot.store.holder import holder_state, this_process
from tests.conftest import CONFIG, REPO

T0 = dt.datetime(2024, 3, 4, 14, 0, tzinfo=dt.UTC)


def test_a_holder_is_this_host_pid_and_start_and_is_gone_once_its_process_is():
    me = this_process()
    host, pid, ticks = me.rsplit(":", 2)
    name, namespace = host.split("@")
    assert (name, int(pid)) == (socket.gethostname(), os.getpid()) and ticks.isdigit()
    assert int(namespace) == os.stat("/proc/self/ns/pid").st_ino
    assert holder_state(me) == "alive"
    child = subprocess.run(
        [sys.executable, "-c", "from bot.store.holder import this_process; print(this_process())"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert child.startswith(f"{host}:") and holder_state(child) == "gone"  # it has exited
    assert holder_state(f"{host}:{pid}:{int(ticks) + 1}") == "gone"  # our pid, but another process's start
    for unknown in (None, "", "garbage", f"another-host:{pid}:{ticks}", f"{host}:x:1",
                    f"{host}:0:{ticks}", f"{name}@1:{pid}:{ticks}"):  # another PID namespace
        assert holder_state(unknown) == "unknown"
    # written before namespaces were recorded: the host name alone, checked as before
    assert holder_state(f"{name}:{pid}:{ticks}") == "alive"
    assert holder_state(f"{name}:{pid}:{int(ticks) + 1}") == "gone"


def test_a_process_that_proc_hides_is_not_taken_for_gone(monkeypatch):
    """/proc mounted with hidepid shows no other user's process: absent from /proc is no
    proof. A pid that exists reads 'unknown'; one that does not, 'gone'."""
    from bot.store import holder

    host, _pid, ticks = this_process().rsplit(":", 2)
    exited = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                            capture_output=True, text=True, check=True).stdout.strip()
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        real = holder._start_ticks
        hidden = {int(exited), running.pid}
        monkeypatch.setattr(holder, "_start_ticks", lambda p: None if p in hidden else real(p))
        assert holder_state(f"{host}:{running.pid}:{ticks}") == "unknown"  # os.kill finds it
        assert holder_state(f"{host}:{exited}:{ticks}") == "gone"  # no such process
    finally:
        running.kill()
        running.wait()


def _run(log: TradeLog, holder: str | None) -> int:
    return log.start_run(mode="backtest", strategy="s", config_hash="-", config={},
                         code_version="-", data_source="-", synthetic=False, started_at=T0,
                         holder=holder)


def _status(url: str) -> dict[int, str]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        out = dict(conn.execute(sa.text("SELECT id, status FROM runs")).all())
    engine.dispose()
    return out


def test_only_runs_whose_holder_is_gone_are_closed(tmp_path):
    url = f"sqlite:///{tmp_path / 't.sqlite'}"
    log = TradeLog.open(url)
    host, pid, ticks = this_process().rsplit(":", 2)
    dead = _run(log, f"{host}:{pid}:{int(ticks) + 1}")
    alive = _run(log, this_process())
    elsewhere = _run(log, f"another-host:{pid}:{ticks}")
    unheld = _run(log, None)  # a platform batch's run, shared by its workers
    ended = _run(log, f"{host}:{pid}:{int(ticks) + 1}")
    log.finish_run("finished", T0)
    current = _run(log, this_process())
    assert close_dead_runs(log, current, T0) == [dead]
    assert close_dead_runs(log, current, T0) == []  # once
    incidents = log.load_incidents()
    log.close()
    status = _status(url)
    assert status[dead] == "failed" and status[ended] == "finished"
    assert [status[r] for r in (alive, elsewhere, unheld, current)] == ["running"] * 4
    assert list(incidents["kind"]) == ["abandoned"] and list(incidents["run_id"]) == [dead]
    assert "its process is gone" in incidents["message"].iloc[0]


def test_a_killed_simulations_open_orders_are_canceled_and_its_end_is_its_last_heartbeat(tmp_path):
    """A replay killed between sending an order and the poll that fills it left the
    order `accepted` forever, and the run "finished" when the next run found it (a run
    killed on Friday and found on Monday lasted a weekend). A paper session's open order
    is at Alpaca: it stays for the next start's reconciliation."""
    from bot.types import Order, OrderRequest, OrderStatus, Side

    url = f"sqlite:///{tmp_path / 't.sqlite'}"
    log = TradeLog.open(url)
    host, pid, ticks = this_process().rsplit(":", 2)
    gone = f"{host}:{pid}:{int(ticks) + 1}"
    runs = {}
    for mode in ("replay", "paper"):
        runs[mode] = log.start_run(mode=mode, strategy="s", config_hash="-", config={},
                                   code_version="-", data_source="-", synthetic=False,
                                   started_at=T0, holder=gone)
        for n, status in enumerate((OrderStatus.ACCEPTED, OrderStatus.FILLED)):
            request = OrderRequest(f"{mode}-{n}", f"{mode}-rb", "SPY", Side.BUY, 1.0, "test", 500.0)
            log.order(Order(request, status, T0, f"b-{mode}-{n}"))
        log.flush()
    last_beat = T0 + dt.timedelta(hours=1)
    with log.engine.begin() as conn:
        conn.execute(sa.text("UPDATE runs SET heartbeat_at = :at WHERE id = :id"),
                     {"at": last_beat.replace(tzinfo=None), "id": runs["replay"]})
    # a replay of another host silent past the lease may only be suspended: its orders stay
    runs["silent"] = log.start_run(mode="replay", strategy="s", config_hash="-", config={},
                                   code_version="-", data_source="-", synthetic=False,
                                   started_at=T0, holder="another-host:1:1")
    request = OrderRequest("silent-0", "silent-rb", "SPY", Side.BUY, 1.0, "test", 500.0)
    log.order(Order(request, OrderStatus.ACCEPTED, T0, "b-silent"))
    log.flush()
    with log.engine.begin() as conn:
        conn.execute(sa.text("UPDATE runs SET heartbeat_at = :at WHERE id = :id"),
                     {"at": (T0 + dt.timedelta(days=3, minutes=-20)).replace(tzinfo=None),
                      "id": runs["silent"]})
    current = _run(log, this_process())
    found = T0 + dt.timedelta(days=3)
    assert sorted(close_dead_runs(log, current, found)) == sorted(runs.values())
    orders = log.load_orders(None).set_index("client_order_id")
    assert orders.loc["replay-0", "status"] == "canceled"
    assert "before its simulated venue filled it" in orders.loc["replay-0", "status_message"]
    assert orders.loc["replay-1", "status"] == "filled"
    assert list(orders.loc[["paper-0", "paper-1"], "status"]) == ["accepted", "filled"]
    assert orders.loc["silent-0", "status"] == "accepted"
    with log.engine.connect() as conn:
        events = conn.execute(sa.text(
            "SELECT o.client_order_id, e.status FROM order_events e JOIN orders o ON o.id = e.order_id"
            " WHERE e.status = 'canceled'")).all()
        ended = dict(conn.execute(sa.text("SELECT id, finished_at FROM runs")).all())
    assert events == [("replay-0", "canceled")]
    assert str(ended[runs["replay"]]).startswith("2024-03-04 15:00")  # its last heartbeat
    incidents = log.load_incidents()
    replay_incident = incidents[incidents["run_id"] == runs["replay"]].iloc[0]
    assert "its 1 open order(s) canceled" in replay_incident["message"]
    # a day after its last heartbeat it is taken for gone: its orders are closed then
    with log.engine.begin() as conn:
        conn.execute(sa.text("UPDATE runs SET heartbeat_at = :at WHERE id = :id"),
                     {"at": (T0 + dt.timedelta(days=1)).replace(tzinfo=None), "id": runs["silent"]})
    later = _run(log, this_process())
    close_dead_runs(log, later, found)
    orders = log.load_orders(None).set_index("client_order_id")
    assert orders.loc["silent-0", "status"] == "canceled"
    kinds = log.load_incidents(runs["silent"])["kind"].tolist()
    assert kinds == ["abandoned", "abandoned_orders"]
    log.close()


@pytest.mark.parametrize("mode", ["backtest", "replay"])
def test_a_killed_commands_run_is_closed_by_the_next_command(tmp_path, mode):
    """The killed process opened its run as the commands do (bot.runner.start_run)."""
    url = f"sqlite:///{tmp_path / 't.sqlite'}"
    script = textwrap.dedent(f"""
        import time
        from bot import runner
        from bot.config import load_settings
        from bot.store import TradeLog
        log = TradeLog.open({url!r})
        run = runner.start_run(log, load_settings({str(CONFIG)!r}), {mode!r}, "synthetic", True)
        print(run, flush=True)
        time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE,
                            text=True)
    try:
        killed_run = int(proc.stdout.readline())
        assert _status(url) == {killed_run: "running"}
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        proc.kill()
        proc.wait()
    code = subprocess.run(
        [sys.executable, "-m", "bot", "backtest", "--config", str(CONFIG), "--synthetic",
         "--start", "2024-01-02", "--end", "2024-03-28", "--no-charts", "--no-benchmarks",
         "--database", url, "--out", str(tmp_path / "report")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert code.returncode == 0, code.stderr
    assert _status(url) == {killed_run: "failed", killed_run + 1: "finished"}


def test_bot_runs_says_whether_a_running_runs_process_still_runs(tmp_path, capsys):
    from bot.cli import main

    url = f"sqlite:///{tmp_path / 't.sqlite'}"
    log = TradeLog.open(url)
    host, pid, ticks = this_process().rsplit(":", 2)
    runs = [_run(log, f"{host}:{pid}:{int(ticks) + 1}"), _run(log, this_process()),
            _run(log, None)]
    log.finish_run("finished", T0)
    log.close()
    capsys.readouterr()
    assert main(["runs", "--database", url, "--format", "json"]) == 0
    shown = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    assert [shown[r]["process"] for r in runs] == ["gone", "alive", None]
    assert main(["runs", "--database", url]) == 0
    table = capsys.readouterr().out
    assert "gone" in table and "alive" in table and host not in table  # holder: exports only
