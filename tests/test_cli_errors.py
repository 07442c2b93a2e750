"""A user's mistake gets one line naming what was wrong, not a traceback; and the
commands agree on which trade log and which market data a run belongs to."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy.engine import make_url

import bot.cli
from bot.backtest import span_indices
from bot.cli import main
from bot.config import load_settings, resolve_store_url
from bot.errors import BotError
from bot.store.engines import mask_url
from bot.store.locate import database_url
from bot.store.tradelog import TradeLog
from bot.types import EquityPoint
from tests.conftest import CONFIG, REPO


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """main() in process; argparse's usage errors count as exit code 2 like in a shell."""
    try:
        code = main(list(args))
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- 7: input errors at the command line -------------------------------------------------

SQLITE = "sqlite:///{tmp}/log.sqlite"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["backtest", "--start", "2024-02-30"], "argument --start: expected a real calendar date"),
        (["run", "--replay", "2024-01-01"], "--replay expects START:END"),
        (["run", "--replay", "2024-03-01:2024-01-01"], "END 2024-01-01 is before START 2024-03-01"),
        (["data", "fetch", "--start", "2020-13-01"], "argument --start: expected a real calendar date"),
        (["runs", "--database", "not a url"], "'not a url' is not a database URL"),
        (["runs", "--database", "foo://x/y"], "the trade log lives in SQLite or PostgreSQL, not 'foo'"),
        # before: "the database driver 'MySQLdb' is not installed", as if that would do
        (["runs", "--database", "mysql://u:s3cret@h/db"], "mysql://u:***@h/db: the trade log lives in "
         "SQLite or PostgreSQL, not 'mysql'"),
        (["backtest", "--database", "postgresql://u:s3cret@h:x/db"], "is not a database URL"),
        (["runs", "--database", "postgresql+psycopg://u:s3cret@127.0.0.1:1/x"],
         "cannot connect to the trade-log database postgresql+psycopg://u:***@127.0.0.1:1/x"),
        (["db", "upgrade", "--database", "sqlite:////proc/leverbot-nope/log.sqlite"],
         "cannot create the folder of the trade log"),
        (["backtest", "--synthetic", "--no-charts", "--database", "sqlite:////proc/leverbot-nope/log.sqlite"],
         "cannot create the folder of the trade log"),
        (["runs", "--database", "postgresql+psycopg://127.0.0.1:1/x?user=u&password=s3cret"],
         "cannot connect to the trade-log database postgresql+psycopg://127.0.0.1:1/x?user=u&password=***"),
        # before: an empty --data-dir ("$DATA" with DATA unset) ran on the synthetic market
        (["backtest", "--data-dir", ""], "argument --data-dir: expected a directory, got an empty value"),
        (["data", "fetch", "--data-dir", " "], "argument --data-dir: expected a directory, got an empty value"),
        (["sweep", "--grid", "risk.vol_high=1,2", "--data-dir", ""], "argument --data-dir: expected a directory"),
        # before: the synthetic market was used and --data-dir dropped without a word
        (["backtest", "--synthetic", "--data-dir", "/tmp"], "--data-dir: not allowed with argument --synthetic"),
        (["run", "--replay", "2024-01-02:2024-02-01", "--data-dir", "/tmp", "--synthetic"],
         "--synthetic: not allowed with argument --data-dir"),
        (["health", "--max-age", "nan"], "--max-age: expected a number of seconds above 0"),
        (["health", "--max-age", "inf"], "--max-age: expected a number of seconds above 0"),
        (["health", "--max-age", "-5"], "--max-age: expected a number of seconds above 0"),
        # before: raised to 2 seconds without a word
        (["dashboard", "--refresh", "0"], "--refresh: expected a whole number of seconds from 2"),
        (["stress", "--run", "99999999999999999999999"], "argument --run: expected a run id"),
        (["accounts", "add", "9f2c1e5a-0b7d-4c3e-9a61-2d5f0e8b7c50", "--profile", "balanced",
          "--suitability", '{"score": 1e400}'], "--suitability: expected a JSON object, e.g. "
         "'{\"score\": 7}': 1e400 is not a finite number (too large for a float)"),
        (["rebalancing", "push", "--profile", "balanced", "--weights", "CASH=0.5,AGG=0.3"],
         "--weights: 'CASH=0.5': CASH is not a symbol; the cash weight is what the other weights leave"),
    ],
)
def test_input_errors_are_one_line_with_exit_code_2(capsys, args, expected) -> None:
    code, _out, err = run_cli(capsys, *args)
    assert code == 2
    assert expected in err
    assert "Traceback" not in err and "s3cret" not in err


def test_spans_outside_the_data_are_errors_before_a_run_is_recorded(tmp_path, capsys) -> None:
    url = SQLITE.format(tmp=tmp_path)
    for span, expected in [
        ("2016-01-09:2016-01-10", "no trading session in that span"),  # a weekend
        ("2026-01-05:2026-02-02", "is outside the data: SYNTHETIC market"),
        # before: accepted, then 2,510 jobs failed on "no daily bar for 2007-12-31"
        ("2007-01-02:2008-02-01", "starts before the data: the first day of SYNTHETIC market "
                                  "(synthetic seed=7) is 2008-01-02; replay from it with "
                                  "--replay 2008-01-02:2008-02-01"),
    ]:
        code, _out, err = run_cli(capsys, "run", "--synthetic", "--replay", span, "--database", url)
        assert code == 2 and expected in err, err
    log = TradeLog.open_readonly(url)
    try:
        assert log.runs().empty  # checked before a run is recorded
    finally:
        log.engine.dispose()

    code, _out, err = run_cli(capsys, "backtest", "--synthetic", "--start", "2030-01-02",
                              "--no-charts", "--no-benchmarks", "--database", url,
                              "--out", str(tmp_path / "out"))
    assert code == 2 and "holds fewer than 2 trading days of data" in err, err
    taken = tmp_path / "a-file"
    taken.write_text("")
    code, _out, err = run_cli(capsys, "backtest", "--synthetic", "--no-charts", "--no-benchmarks",
                              "--database", url, "--out", str(taken))
    assert code == 2 and str(taken) in err, err
    log = TradeLog.open_readonly(url)
    try:
        assert log.runs().empty  # both refused before a run was recorded
    finally:
        log.engine.dispose()


def test_span_indices_reports_bad_dates_as_user_errors() -> None:
    dates = np.array(["2024-01-02", "2024-01-03", "2024-01-04"], dtype="datetime64[D]")
    assert span_indices(dates, "2024-01-02", None) == (0, 3)
    with pytest.raises(BotError, match="backtest.start: expected a real calendar date"):
        span_indices(dates, "2024-02-30", None)
    with pytest.raises(BotError, match="the data covers 2024-01-02 to 2024-01-04"):
        span_indices(dates, "2025-01-02", None)


def test_mask_url_hides_the_password_of_text_that_is_no_url() -> None:
    assert mask_url("postgresql://bot:s3cret@db:port/x") == "postgresql://bot:***@db:port/x"
    assert mask_url("postgresql://bot:s3cret@db/x") == "postgresql://bot:***@db/x"
    assert mask_url("postgresql://bot:p@ss@db:port/x") == "postgresql://bot:***@db:port/x"
    assert mask_url("sqlite:///:memory:") == "sqlite:///:memory:"


@pytest.mark.parametrize(("url", "masked"), [
    ("postgresql+psycopg://user:p@ss@127.0.0.1/db", "postgresql+psycopg://user:***@127.0.0.1/db"),
    ("postgresql://127.0.0.1:1/db?user=u&password=s3cretpw", "postgresql://127.0.0.1:1/db?user=u&password=***"),
    ("postgresql://h/db?sslpassword=s3cret&sslmode=require", "postgresql://h/db?sslpassword=***&sslmode=require"),
    ("postgresql://bot@db/x?application_name=bot", "postgresql://bot@db/x?application_name=bot"),
    ("sqlite:////tmp/a.sqlite", "sqlite:////tmp/a.sqlite"),
])
def test_mask_url_hides_passwords_wherever_the_url_holds_them(url, masked) -> None:
    assert mask_url(url) == masked
    parsed = mask_url(make_url(url))  # a URL object: rendered by SQLAlchemy, then masked
    assert "s3cret" not in parsed and "p@ss" not in parsed


def _filled_log(tmp_path: Path, capsys) -> str:
    url = SQLITE.format(tmp=tmp_path)
    code, _out, err = run_cli(capsys, "run", "--config", str(CONFIG), "--synthetic",
                              "--replay", "2016-01-04:2016-03-31", "--database", url)
    assert code == 0, err
    return url


def test_a_closed_pipe_ends_the_command_quietly(tmp_path, capsys) -> None:
    """`bot trades --format csv | head -1`: the reader is gone before the rows are written."""
    url = _filled_log(tmp_path, capsys)
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "bot", "trades", "--database", url, "--format", "csv"],
            stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120, cwd=REPO,
        )
    finally:
        os.close(write_end)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr


def test_a_replay_whose_output_closes_is_a_failed_run_with_an_incident(tmp_path) -> None:
    """`bot run --replay ... 2>&1 | head -3` exited 0 like a finished replay, its run
    marked failed with no incident saying why."""
    from bot.store.tradelog import TradeLog

    url = f"sqlite:///{tmp_path / 'cut.sqlite'}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "run", "--replay", "2023-01-03:2024-12-31", "--synthetic",
         "--database", url],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=REPO,
    )
    assert proc.stdout is not None
    for _ in range(3):  # `| head -3`: three lines read, then the reader is gone
        proc.stdout.readline()
    proc.stdout.close()
    assert proc.wait(timeout=300) != 0
    log = TradeLog.open_readonly(url)
    try:
        assert list(log.runs()["status"]) == ["failed"]
        [incident] = log.load_incidents().itertuples()
        assert incident.kind == "interrupted" and "its output was closed" in incident.message
    finally:
        log.close()


def test_other_broken_pipes_and_bugs_keep_their_traceback(monkeypatch, capsys) -> None:
    """Only a closed stdout is quiet: a broken socket or a plain bug still propagates."""

    def broken_socket(_args):
        raise BrokenPipeError("the broker's socket")

    monkeypatch.setattr(bot.cli, "_cmd_config_check", broken_socket)
    with pytest.raises(BrokenPipeError):
        main(["config", "check", str(CONFIG)])

    def bug(_args):
        raise KeyError("a bug")

    monkeypatch.setattr(bot.cli, "_cmd_config_check", bug)
    with pytest.raises(KeyError):
        main(["config", "check", str(CONFIG)])


# --- 4: a relative BOT_DATABASE_URL names one file for every command ----------------------


def test_relative_database_env_resolves_the_same_for_every_command(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BOT_DATABASE_URL", "sqlite:///logs/rel.sqlite")
    expected = f"sqlite:///{tmp_path / 'logs' / 'rel.sqlite'}"
    assert resolve_store_url(load_settings(CONFIG), CONFIG) == expected  # backtest, run
    assert database_url(str(CONFIG), None) == expected  # inspection, report, db
    assert database_url(str(CONFIG), "sqlite:///other.sqlite") == "sqlite:///other.sqlite"
    monkeypatch.setenv("BOT_DATABASE_URL", "sqlite:///:memory:")
    assert resolve_store_url(load_settings(CONFIG), CONFIG) == "sqlite:///:memory:"


def test_backtest_and_runs_open_the_same_relative_database(tmp_path, monkeypatch, capsys) -> None:
    name = f"rel-{os.getpid()}.sqlite"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BOT_DATABASE_URL", f"sqlite:///{name}")
    try:
        code, _out, err = run_cli(capsys, "backtest", "--config", str(CONFIG), "--synthetic",
                                  "--start", "2016-01-04", "--end", "2016-03-31", "--no-charts",
                                  "--no-benchmarks", "--out", str(tmp_path / "out"))
        assert code == 0, err
        code, out, err = run_cli(capsys, "runs", "--config", str(CONFIG), "--format", "json")
        assert code == 0, err
        assert [r["mode"] for r in json.loads(out)] == ["backtest"]
        assert (tmp_path / name).is_file()
    finally:
        (REPO / name).unlink(missing_ok=True)  # where the backtest used to put it


# --- 3: `bot report` judges a run by the data it recorded -------------------------------


def _report(capsys, url: str, run_id: int, out: Path) -> dict:
    code, printed, err = run_cli(capsys, "report", "--database", url, "--run", str(run_id),
                                 "--out", str(out), "--no-charts")
    assert code == 0, err
    return json.loads((out / "report.json").read_text())


def test_report_uses_the_recorded_data_from_any_directory(shared_data, tmp_path, monkeypatch,
                                                          capsys) -> None:
    monkeypatch.delenv("BOT_DATA_DIR", raising=False)
    url = SQLITE.format(tmp=tmp_path)
    code, _out, err = run_cli(capsys, "backtest", "--config", str(CONFIG), "--data-dir",
                              str(shared_data), "--start", "2019-01-02", "--end", "2019-12-31",
                              "--no-charts", "--no-benchmarks", "--database", url,
                              "--out", str(tmp_path / "bt"))
    assert code == 0, err

    monkeypatch.chdir(REPO)
    from_repo = _report(capsys, url, 1, tmp_path / "a")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # its default config/ and ../shared/data do not exist here
    from_elsewhere = _report(capsys, url, 1, tmp_path / "b")

    assert from_elsewhere["meta"]["notes"] == [] and from_elsewhere["meta"]["benchmark"]
    assert [r["name"] for r in from_elsewhere["summary"]] == [r["name"] for r in from_repo["summary"]]
    assert from_elsewhere["summary"][0]["sharpe"] == from_repo["summary"][0]["sharpe"]


def test_report_says_when_the_risk_free_rate_is_missing(tmp_path, capsys) -> None:
    url = SQLITE.format(tmp=tmp_path)
    log = TradeLog.open(url)
    at = dt.datetime(2024, 3, 4, 15, tzinfo=dt.UTC)
    run_id = log.start_run(mode="paper", strategy="s", config_hash="h", config={"not": "valid"},
                           code_version="t", data_source="alpaca+fred", synthetic=False,
                           started_at=at)
    for i, value in enumerate([100_000.0, 100_500.0, 99_800.0]):
        log.equity(EquityPoint(dt.date(2024, 3, 4 + i), value, value, 0.0, 0.0, None))
    log.close()
    notes = _report(capsys, url, run_id, tmp_path / "r")["meta"]["notes"]
    assert any(n.startswith("risk-free rate (DTB3) missing") and "assume 0%" in n for n in notes)


def test_the_default_heartbeat_is_the_clones_from_any_directory(tmp_path, monkeypatch) -> None:
    """The daemon writes and `bot health` reads var/heartbeat in the clone, wherever each
    was started (before: relative to the working directory, so a daemon started in
    another directory was reported dead)."""
    from bot.daemon_cli import heartbeat_path
    from bot.store.locate import REPO_ROOT

    monkeypatch.delenv("BOT_HEARTBEAT_FILE", raising=False)
    monkeypatch.chdir(tmp_path)
    assert heartbeat_path() == REPO_ROOT / "var" / "heartbeat"
    monkeypatch.setenv("BOT_HEARTBEAT_FILE", str(tmp_path / "hb"))
    assert heartbeat_path() == tmp_path / "hb"
    # Installed without a clone (pip install .): the user's state directory, not a folder
    # inside site-packages.
    import platformdirs

    from bot import daemon_cli

    monkeypatch.delenv("BOT_HEARTBEAT_FILE")
    monkeypatch.setattr(daemon_cli, "REPO_ROOT", tmp_path / "site-packages")
    assert heartbeat_path() == Path(platformdirs.user_state_dir("leverbot")) / "heartbeat"


def test_a_heartbeat_file_the_daemon_cannot_write_is_refused_before_it_starts(
    tmp_path, monkeypatch, capsys
) -> None:
    """BOT_HEARTBEAT_FILE=/tmp (a folder) was taken, and `bot health` said "no heartbeat"
    for ever; a folder that cannot be made failed after the daemon had connected."""
    from bot.daemon_cli import writable_heartbeat_path
    from bot.errors import BotError

    monkeypatch.setenv("BOT_HEARTBEAT_FILE", str(tmp_path))
    with pytest.raises(BotError, match=r"BOT_HEARTBEAT_FILE: .* is a directory; expected the path of a file"):
        writable_heartbeat_path()
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("BOT_HEARTBEAT_FILE", str(blocker / "hb"))
    with pytest.raises(BotError, match=r"BOT_HEARTBEAT_FILE: cannot create its folder"):
        writable_heartbeat_path()
    monkeypatch.setenv("BOT_HEARTBEAT_FILE", str(tmp_path / "new" / "hb"))
    assert writable_heartbeat_path() == tmp_path / "new" / "hb" and (tmp_path / "new").is_dir()


def test_health_reads_only_a_regular_heartbeat_file(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("BOT_HEARTBEAT_FILE", str(tmp_path))  # a folder: its time is no beat
    code, out, _err = run_cli(capsys, "health")
    assert code == 1 and "no heartbeat" in out
    beat = tmp_path / "hb"
    beat.touch()
    monkeypatch.setenv("BOT_HEARTBEAT_FILE", str(beat))
    assert run_cli(capsys, "health", "--max-age", "60")[0] == 0
    old = beat.stat().st_mtime - 2 * 86400
    os.utime(beat, (old, old))
    code, out, _err = run_cli(capsys, "health", "--max-age", "60")
    assert code == 1 and "unhealthy: last heartbeat" in out


@pytest.mark.parametrize(("ahead", "healthy"), [(2 * 86400, False), (30, True)])
def test_a_heartbeat_in_the_future_is_unhealthy(tmp_path, monkeypatch, capsys, ahead, healthy) -> None:
    """`touch -d '+2 days'`, a copied file or a clock stepped back: the age was negative,
    so below any --max-age, and health said healthy. A few seconds of clock skew pass."""
    beat = tmp_path / "hb"
    beat.touch()
    later = beat.stat().st_mtime + ahead
    os.utime(beat, (later, later))
    monkeypatch.setenv("BOT_HEARTBEAT_FILE", str(beat))
    code, out, _err = run_cli(capsys, "health", "--max-age", "300")
    if healthy:
        assert code == 0 and out.startswith("healthy")
    else:
        assert code == 1 and "in the future (a clock step or a copied file)" in out


def test_an_unknown_log_format_is_an_error_not_json(monkeypatch, capsys) -> None:
    monkeypatch.setenv("BOT_LOG_FORMAT", "xml")
    for args in (["runs", "--database", "sqlite:///:memory:"], ["version"]):
        code, _out, err = run_cli(capsys, *args)
        assert code == 2 and "BOT_LOG_FORMAT: expected console or json, got 'xml'" in err


@pytest.mark.parametrize(("args", "message"), [
    (["--replay", "2023-01-03:2023-02-01", "--live"], "--replay and --live cannot be combined"),
    (["--synthetic"], "--synthetic only applies to a replay: add --replay START:END"),
    (["--data-dir", "data"], "--data-dir only applies to a replay"),
])
def test_bot_run_refuses_flags_it_would_ignore(capsys, args, message) -> None:
    """`--live` with `--replay` ran a plain replay; `--synthetic` or `--data-dir` without
    it were ignored and the daemon asked for Alpaca keys."""
    from bot.cli import main

    assert main(["run", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_bad_database_url_in_the_environment_is_named_before_the_data(monkeypatch, capsys, tmp_path):
    """"'***' is not a database URL", after the data was loaded: the value is masked
    whole, so nothing said it came from BOT_DATABASE_URL."""
    import bot.runner

    monkeypatch.setenv("BOT_DATABASE_URL", "hello world")
    monkeypatch.setattr(bot.runner, "load_history", lambda *a, **k: pytest.fail("data loaded first"))
    code, _, err = run_cli(capsys, "backtest", "--config", str(CONFIG), "--synthetic", "--no-charts",
                           "--out", str(tmp_path / "out"))
    assert code == 2
    assert "error: BOT_DATABASE_URL (from the environment): '***' is not a database URL" in err


def test_a_run_kept_in_memory_says_nothing_of_it_is_kept(capsys, tmp_path):
    """It said "run 1 recorded in the trade log" and how to inspect it, which nothing could."""
    code, out, _ = run_cli(capsys, "backtest", "--config", str(CONFIG), "--synthetic", "--no-charts",
                           "--no-benchmarks", "--start", "2020-01-02", "--end", "2020-02-28",
                           "--database", "sqlite://", "--out", str(tmp_path / "out"))
    assert code == 0
    flat = " ".join(out.split())
    assert "run 1 was kept in an in-memory trade log (sqlite://): nothing of it is left" in flat
    assert "inspect it" not in flat


@pytest.mark.parametrize("command", [["once"], ["run"]])
def test_a_broken_config_is_named_before_missing_keys(tmp_path, capsys, monkeypatch, command) -> None:
    """`bot once` and `bot run` asked for the broker keys before they read the config:
    its TOML error came only after the keys were set, unlike every other command."""
    monkeypatch.delenv("APCA_API_KEY_ID", raising=False)
    monkeypatch.delenv("APCA_API_SECRET_KEY", raising=False)
    monkeypatch.delenv("BOT_SECRETS_FILE", raising=False)
    broken = tmp_path / "broken.toml"
    broken.write_text("[risk\nvol_high = 2\n")
    code, _out, err = run_cli(capsys, *command, "--config", str(broken))
    assert code == 2
    assert f"invalid configuration {broken}" in err and "not valid TOML" in err
    assert "APCA_API_KEY_ID" not in err


def test_a_backtest_span_in_which_no_fund_has_a_price_is_an_error(tmp_path, capsys, shared_data) -> None:
    """2000 (before every leveraged fund listed): six warnings, then a run and a report of
    zeros, exit 0. Nothing can be traded: it is an error before a run is recorded."""
    db = tmp_path / "log.sqlite"
    code, _out, err = run_cli(capsys, "backtest", "--data-dir", str(shared_data), "--no-charts",
                              "--start", "2000-01-03", "--end", "2001-01-02", "--database", f"sqlite:///{db}")
    assert code == 2
    assert "no fund of the universe has a price from 2000-01-03 to 2001-01-02" in err
