"""What a user's first hours found: a mistyped data directory, tracebacks, commands that
only worked from the repository root, a stale --help, reversed date ranges that matched
nothing, and reports of unfinished runs that looked complete."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import socket
from pathlib import Path

import pytest

from bot.cli import build_parser
from bot.config import load_settings, resolve_data_dir
from bot.data.history import load_history
from bot.errors import DataError
from bot.store.locate import database_url
from bot.store.tradelog import TradeLog
from bot.types import EquityPoint
from tests.conftest import CONFIG, REPO
from tests.test_cli_errors import run_cli

SHORT = ["--start", "2016-01-04", "--end", "2016-03-31", "--no-charts", "--no-benchmarks"]


@pytest.fixture(autouse=True)
def _no_env_overrides(monkeypatch) -> None:
    monkeypatch.delenv("BOT_DATA_DIR", raising=False)
    monkeypatch.delenv("BOT_DATABASE_URL", raising=False)


def sqlite_url(tmp_path: Path, name: str = "log.sqlite") -> str:
    return f"sqlite:///{tmp_path / name}"


def record_run(url: str, status: str | None = None) -> int:
    """A hand-made paper run with three equity points; `status` None leaves it running."""
    log = TradeLog.open(url)
    at = dt.datetime(2024, 3, 4, 15, tzinfo=dt.UTC)
    run_id = log.start_run(mode="paper", strategy="s", config_hash="h", config={},
                           code_version="t", data_source="alpaca-paper", synthetic=False,
                           started_at=at)
    for i, value in enumerate([100_000.0, 100_500.0, 99_800.0]):
        log.equity(EquityPoint(dt.date(2024, 3, 4 + i), value, value, 0.0, 0.0, None))
    if status is not None:
        log.finish_run(status, at + dt.timedelta(days=3))
    log.close()
    return run_id


def repo_copy_without_data(tmp_path: Path) -> Path:
    """A fresh clone's config in a folder whose default data/ does not exist."""
    config = tmp_path / "clone" / "config" / CONFIG.name
    config.parent.mkdir(parents=True)
    shutil.copy(CONFIG, config)
    return config


# --- 1: a data directory the user named must exist ---------------------------------------


@pytest.mark.parametrize("given_by", ["flag", "env", "config"])
def test_a_mistyped_data_directory_is_an_error_not_a_synthetic_backtest(
    given_by, tmp_path, monkeypatch, capsys
) -> None:
    typo = tmp_path / "shraed-data"
    config = CONFIG
    args = ["backtest", "--database", sqlite_url(tmp_path), "--out", str(tmp_path / "o"), *SHORT]
    if given_by == "flag":
        args += ["--data-dir", str(typo)]
    elif given_by == "env":
        monkeypatch.setenv("BOT_DATA_DIR", str(typo))
    else:
        config = tmp_path / "mine.toml"
        text = CONFIG.read_text().replace('directory = "data"', f'directory = "{typo}"', 1)
        assert str(typo) in text
        config.write_text(text)
    code, out, err = run_cli(capsys, *args, "--config", str(config))
    assert code == 2, out
    assert f"{typo} [data directory]: directory not found" in err
    assert "SYNTHETIC" not in out + err and not (tmp_path / "o").exists()


def test_an_existing_directory_without_prices_is_an_error(tmp_path, settings) -> None:
    with pytest.raises(DataError, match="no prices/ folder"):
        load_history(settings, tmp_path)


def test_without_data_at_the_default_location_the_market_is_synthetic(tmp_path, capsys) -> None:
    config = repo_copy_without_data(tmp_path)
    settings = load_settings(config)
    assert load_history(settings, resolve_data_dir(settings, config)).synthetic

    code, out, err = run_cli(capsys, "backtest", "--config", str(config), "--database",
                             sqlite_url(tmp_path), "--out", str(tmp_path / "o"), *SHORT)
    assert code == 0, err
    assert "SYNTHETIC" in out


def test_synthetic_and_a_data_directory_are_one_choice(tmp_path, capsys) -> None:
    """Both given, --data-dir was dropped without a word: which market ran?"""
    code, out, err = run_cli(capsys, "backtest", "--synthetic", "--data-dir", "/nonexistent",
                             "--database", sqlite_url(tmp_path), "--out", str(tmp_path / "o"),
                             *SHORT)
    assert code == 2 and "not allowed with argument --synthetic" in err
    assert not (tmp_path / "o").exists()


# --- 2: no tracebacks for a busy or impossible port, or a file that is not SQLite --------


@pytest.fixture
def empty_log(tmp_path) -> str:
    """A trade log at the current schema, without runs."""
    url = sqlite_url(tmp_path)
    TradeLog.open(url).close()
    return url


def test_a_dashboard_port_in_use_is_named(empty_log, capsys) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, _out, err = run_cli(capsys, "dashboard", "--database", empty_log, "--port", str(port))
    assert code == 2
    assert f"127.0.0.1:{port}: the port is already in use" in err and "--port" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("port", ["99999", "65536", "-1"])
def test_an_impossible_dashboard_port_is_named(empty_log, port, capsys) -> None:
    code, _out, err = run_cli(capsys, "dashboard", "--database", empty_log, "--port", port)
    assert code == 2
    assert err.strip() == f"error: --port {port}: expected a port number 1-65535 (0: any free port)"


@pytest.mark.parametrize(
    "command", [["runs"], ["trades"], ["db", "current"], ["db", "upgrade"], ["report"], ["dashboard"]]
)
def test_a_file_that_is_not_sqlite_is_named(command, tmp_path, capsys) -> None:
    garbage = tmp_path / "notes.sqlite"
    garbage.write_bytes(b"these are my notes, not a database\n" * 200)
    code, _out, err = run_cli(capsys, *command, "--database", f"sqlite:///{garbage}")
    assert code == 2
    assert str(garbage) in err and "file is not a database" in err
    assert "Traceback" not in err


# --- 3: commands work from any directory ------------------------------------------------


@pytest.mark.parametrize("command", [["backtest"], ["runs"], ["report"], ["db", "current"],
                                     ["dashboard"]])
def test_the_default_config_is_the_repositorys_from_elsewhere(command, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(command)
    assert args.config == str(CONFIG)
    assert database_url(args.config, None) == f"sqlite:///{REPO / 'var' / 'tradelog.sqlite'}"


def test_in_the_repository_the_default_config_stays_relative(monkeypatch) -> None:
    monkeypatch.chdir(REPO)
    assert build_parser().parse_args(["runs"]).config == "config/diversified_leverage.toml"


def test_a_config_the_user_names_is_taken_as_given(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    code, _out, err = run_cli(capsys, "runs", "--config", "config/diversified_leverage.toml")
    assert code == 2
    assert "invalid configuration config/diversified_leverage.toml" in err and "file not found" in err


def test_runs_from_elsewhere_does_not_blame_a_config_nobody_gave(tmp_path, monkeypatch,
                                                                 capsys) -> None:
    monkeypatch.chdir(tmp_path)
    _code, _out, err = run_cli(capsys, "runs")
    assert "invalid configuration" not in err


# --- 4: --help lists the real commands ----------------------------------------------------


def test_help_describes_every_command_group() -> None:
    """Listed once each, by argparse itself (tests/test_terminal.py checks the once)."""
    text = build_parser().format_help()
    assert "Command line: `bot backtest`, `bot config check`, `bot version`" not in text
    for command in ("backtest", "run", "once", "data", "health", "trades", "orders",
                    "positions", "regimes", "equity", "risk-events", "runs", "report",
                    "dashboard", "db", "suitability", "config"):
        assert f"\n    {command} " in text, command


# --- 5: a reversed date range is an error -------------------------------------------------


def test_a_reversed_date_range_is_an_error(tmp_path, capsys) -> None:
    url = sqlite_url(tmp_path)
    record_run(url, "finished")
    code, out, err = run_cli(capsys, "trades", "--database", url,
                             "--since", "2024-06-30", "--until", "2024-01-01")
    assert code == 2, out
    assert "--until 2024-01-01 is before --since 2024-06-30" in err
    code, _out, err = run_cli(capsys, "equity", "--database", url, "--format", "json",
                              "--since", "2024-03-05", "--until", "2024-03-05")
    assert code == 0, err


# --- 6: a report of an unfinished run says so -------------------------------------------


def dead_holder() -> str:
    """A holder of this host whose process is gone: our pid, another process's start."""
    from bot.store.holder import this_process

    me = this_process()
    if me is None:
        pytest.skip("no /proc: a holder's state cannot be told")
    host_pid, ticks = me.rsplit(":", 1)
    return f"{host_pid}:{int(ticks) + 1}"


def set_holder(url: str, run_id: int, holder: str | None,
               heartbeat_at: dt.datetime | None = None) -> None:
    """What a run's process left behind: its holder and last heartbeat."""
    import sqlalchemy as sa

    from bot.store.models import RUNS

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.update(RUNS).where(RUNS.c.id == run_id)
                     .values(holder=holder, heartbeat_at=heartbeat_at))
    engine.dispose()


@pytest.mark.parametrize(("status", "holder", "meaning"), [  # holder none: a run of before holders
    (None, "none", "is still marked 'running': it is in progress, or was stopped before"),
    (None, "gone", "is still marked 'running' but its process is gone (killed, or the machine"),
    (None, "alive", "is still marked 'running' and its process is alive: it is in progress"),
    ("failed", "alive", "failed: it stopped on an error or was interrupted"),
])
def test_a_report_of_an_unfinished_run_warns_first(status, holder, meaning, tmp_path, capsys) -> None:
    """A 'running' run's warning says what `bot runs` knows of its process: a run killed
    with kill -9 read "in progress, or was stopped" while `bot runs` said it was gone."""
    url = sqlite_url(tmp_path)
    run_id = record_run(url, status)
    if holder == "alive":
        from bot.store.holder import this_process

        set_holder(url, run_id, this_process(), dt.datetime.now(dt.UTC))
    elif holder == "gone":
        set_holder(url, run_id, dead_holder(), dt.datetime(2024, 3, 6, 21, 5, tzinfo=dt.UTC))
    capsys.readouterr()  # the recording's own log lines
    out = tmp_path / "r"
    code, printed, err = run_cli(capsys, "report", "--database", url, "--run", str(run_id),
                                 "--out", str(out), "--no-charts")
    assert code == 0, err
    warning = f"WARNING: run {run_id} {meaning}"
    assert printed.startswith(warning) and printed.count(warning) == 1
    assert "the figures cover only what it recorded (last equity point 2024-03-06)" in printed
    if holder == "gone":
        assert "; last heartbeat 2024-03-06 21:05 UTC;" in printed
    notes = json.loads((out / "report.json").read_text())["meta"]["notes"]
    assert notes[0].startswith(warning)


def test_a_report_of_a_finished_run_has_no_warning(tmp_path, capsys) -> None:
    url = sqlite_url(tmp_path)
    run_id = record_run(url, "finished")
    code, printed, err = run_cli(capsys, "report", "--database", url, "--run", str(run_id),
                                 "--out", str(tmp_path / "r"), "--no-charts")
    assert code == 0, err
    assert "WARNING" not in printed
