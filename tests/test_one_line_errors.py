"""Inputs and accidents that used to end in a traceback now end in one line naming what
was wrong (exit code 2): huge numbers on the command line, an unknown log level, a full
disk during a backtest, a damaged SQLite file, schema revisions and columns that do not
match the code, strict config values, and the files a new user gets wrong."""

from __future__ import annotations

import os
import resource
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from bot.cli import main
from bot.errors import BotError
from bot.store import TradeLog
from bot.store.schema import SchemaMismatch, head_revision
from tests.conftest import CONFIG, REPO
from tests.test_store import backend_url, start

HUGE = "1234567890123456789012345678901"  # 31 digits: overflows SQLite's 64-bit integers


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, *expected: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    for text in expected:
        assert text in last, last


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    """A trade log holding one short synthetic backtest (copied by the tests that break it)."""
    path = tmp_path_factory.mktemp("recorded") / "log.sqlite"
    code = main(["backtest", "--config", str(CONFIG), "--synthetic", "--start", "2020-01-02",
                 "--end", "2020-06-30", "--database", f"sqlite:///{path}", "--no-charts",
                 "--no-benchmarks", "--out", str(path.parent / "report")])
    assert code == 0
    return path


def _copy(recorded: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy.sqlite"
    source = sqlite3.connect(recorded)
    target = sqlite3.connect(copy)
    source.backup(target)  # a consistent copy, WAL included
    source.close()
    target.close()
    return copy


# --- the command line --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["orders", "--limit", HUGE], "argument --limit: expected a row count from 0 (all)"),
        (["orders", "--limit", "-1"], "argument --limit: expected a row count"),
        (["orders", "--run", HUGE], "argument --run: expected a run id (1 to 9223372036854775807"),
        (["report", "--run", HUGE], "argument --run: expected a run id"),
        (["dashboard", "--run", "0"], "argument --run: expected a run id"),
        (["platform", "status", "--run", HUGE], "argument --run: expected a run id"),
        (["platform", "status", "--limit", "-1"], "argument --limit: expected a row count from 0 (all)"),
        (["worker", "--concurrency", HUGE], "argument --concurrency: expected a whole number from 1"),
        (["sweep", "--workers", "two"], "argument --workers: expected a whole number from 1"),
        (["serve", "--port", "70000"], "argument --port: expected a port number 1-65535"),
        (["api-keys", "create", "x", "--rate-limit", "0"],
         "argument --rate-limit: expected requests per minute, a whole number from 1 to"),
        (["--log-level", "VERBOSE", "runs"],
         "argument --log-level: expected one of DEBUG, INFO, WARNING, ERROR, got 'VERBOSE'"),
    ],
)
def test_numbers_and_names_no_command_can_use_are_usage_errors(capsys, args, expected):
    """Before: OverflowError from SQLite (--limit, --run) and KeyError from structlog."""
    code, _out, err = run_cli(capsys, *args)
    assert_one_line_error(code, err, expected)


def test_log_levels_are_taken_in_any_case(capsys):
    code, out, _err = run_cli(capsys, "--log-level", "debug", "version")
    assert code == 0 and out.strip()


def test_a_negative_port_is_refused(recorded, capsys):
    code, _out, err = run_cli(capsys, "dashboard", "--database", f"sqlite:///{recorded}",
                              "--port", "-1")
    assert_one_line_error(code, err, "--port -1: expected a port number 1-65535")


# --- a full disk -------------------------------------------------------------------------


def _bot_with_file_limit(limit_bytes: int, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`bot ARGS` in a child whose files may not grow beyond `limit_bytes` (ulimit -f).
    CPython ignores SIGXFSZ at start-up, so the write fails with EFBIG instead of the
    signal killing the process: the error must then say which file."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    env = {**os.environ, "BOT_LOG_FORMAT": "json", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "bot", *args], cwd=cwd, env=env, preexec_fn=limit,
        capture_output=True, text=True, timeout=300, check=False,
    )


def test_a_full_disk_during_a_backtest_names_the_trade_log(tmp_path):
    """Before: a sqlalchemy OperationalError traceback ('disk I/O error'), exit 1."""
    db = tmp_path / "full.sqlite"  # 140 kB with the empty schema, 600 kB after a year
    done = _bot_with_file_limit(
        200_000, "backtest", "--config", str(CONFIG), "--synthetic", "--start", "2020-01-02",
        "--end", "2020-06-30", "--database", f"sqlite:///{db}", "--no-charts", "--no-benchmarks",
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: the trade log {db}: disk I/O error"), last
    assert "ulimit -f" in last


def test_a_full_disk_while_writing_the_report_names_the_file(tmp_path):
    """Before: OSError 'File too large' traceback (from the chart worker without a file
    name). report.json of half a year without benchmarks is ~2 kB."""
    out = tmp_path / "report"
    done = _bot_with_file_limit(
        1_000, "backtest", "--config", str(CONFIG), "--synthetic", "--start", "2020-01-02",
        "--end", "2020-06-30", "--database", "sqlite://", "--no-benchmarks", "--no-charts",
        "--out", str(out), cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last == (f"error: cannot write {out}/report.json: File too large (the disk is full or "
                    "a file-size limit such as ulimit -f was reached)"), last


def test_a_chart_that_cannot_be_written_is_named(tmp_path):
    """The charts are drawn in a worker process: its error must cross back with the path."""
    import pandas as pd

    from bot.report import RunSeries, write_charts
    from bot.runner import Background

    equity = pd.Series([1.0, 1.1, 1.05], index=pd.date_range("2024-01-02", periods=3))
    (tmp_path / "equity.png").mkdir()  # savefig cannot replace a folder
    drawing = Background()
    drawing.submit(write_charts, RunSeries("s", equity), [], tmp_path, data_label="test")
    with pytest.raises(BotError, match=f"cannot write {tmp_path / 'equity.png'}: Is a directory"):
        drawing.wait()


def test_a_report_folder_that_cannot_exist_is_named(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, _out, err = run_cli(
        capsys, "backtest", "--config", str(CONFIG), "--synthetic", "--start", "2020-01-02",
        "--end", "2020-02-28", "--database", f"sqlite:///{tmp_path}/t.sqlite", "--no-charts",
        "--no-benchmarks", "--out", str(blocker / "report"),
    )
    assert_one_line_error(code, err, f"cannot write {blocker / 'report'}: Not a directory")


# --- a damaged or mismatched trade log ---------------------------------------------------


def _corrupt_table(path: Path, table: str) -> None:
    """Overwrite the first pages of `table`'s b-tree with garbage, as a bad disk would."""
    conn = sqlite3.connect(path)
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
    conn.close()
    with path.open("r+b") as handle:
        for page in range(root, root + 3):
            handle.seek((page - 1) * page_size)
            handle.write(b"\xde\xad\xbe\xef" * (page_size // 4))


def test_a_damaged_sqlite_file_is_named_with_the_way_to_recover(recorded, tmp_path, capsys):
    """Before: sqlalchemy DatabaseError 'database disk image is malformed' traceback."""
    path = _copy(recorded, tmp_path)
    _corrupt_table(path, "orders")
    code, _out, err = run_cli(capsys, "orders", "--database", f"sqlite:///{path}")
    assert_one_line_error(code, err, f"the trade log {path}: database disk image is malformed",
                          f"sqlite3 {path} .recover")


def test_a_read_only_trade_log_file_is_named_when_recording(recorded, tmp_path):
    """(Opened read-only through a file: URI, since root ignores permission bits.)"""
    from bot.store.engines import TradeLogFileError

    path = _copy(recorded, tmp_path)
    log = TradeLog.open(f"sqlite:///file:{path}?mode=ro&uri=true")
    with pytest.raises(TradeLogFileError, match=f"the trade log {path}: attempt to write a "
                                                 "readonly database .the file or its folder is read-only"):
        start(log)
    log.engine.dispose()


def test_upgrading_a_revision_from_a_newer_bot_says_to_upgrade_the_bot(recorded, tmp_path, capsys):
    """Before: alembic CommandError traceback "Can't locate revision identified by '9999'"."""
    path = _copy(recorded, tmp_path)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    url = f"sqlite:///{path}"
    code, _out, err = run_cli(capsys, "db", "upgrade", "--database", url)
    assert_one_line_error(code, err, "is at revision 9999, which this version of the bot does "
                                     "not know", "upgrade the bot")
    code, out, _err = run_cli(capsys, "db", "current", "--database", url)
    assert code == 1 and "unknown to this version of the bot" in out and "bot db upgrade" not in out


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path):
    yield from backend_url(request, tmp_path)


def test_a_dropped_column_at_head_is_noticed_when_connecting(url, capsys):
    """Before: the revision said head, so every command ran until its first query failed
    (`bot orders`: OperationalError 'no such column: orders.status_message')."""
    log = TradeLog.open(url)
    start(log)
    log.close()
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE orders DROP COLUMN status_message"))
    engine.dispose()
    for opener in (TradeLog.open, TradeLog.open_readonly):
        with pytest.raises(SchemaMismatch, match="table orders lacks column status_message"):
            opener(url)
    code, _out, err = run_cli(capsys, "orders", "--database", url)
    assert_one_line_error(code, err, f"is at schema revision {head_revision()} but its tables do not match it",
                          "restore a backup")
    code, _out, err = run_cli(capsys, "db", "upgrade", "--database", url)
    assert_one_line_error(code, err, "table orders lacks column status_message")
    code, out, _err = run_cli(capsys, "db", "current", "--database", url)
    assert code == 1 and "tables do not match it: table orders lacks column status_message" in out


def test_a_missing_table_is_named_too(tmp_path):
    url = f"sqlite:///{tmp_path}/t.sqlite"
    TradeLog.open(url).close()
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE fills"))
    engine.dispose()
    with pytest.raises(BotError, match="table fills is missing"):
        TradeLog.open(url)


# --- config values that must be refused --------------------------------------------------

BAD_CONFIG = """
[universe]
TQQQ = { weight = 0.5, leverage = "3" }
TMF = { weight = 0.5 }
[strategy]
var_adjust = "yes"
vol_window = 20.0
[regime]
vix_transition = 40
vix_uncertainty = 35
[risk]
position_cap = 0.6
stop_alpha = 1e6
[rebalance]
fractional = 1
[backtest]
initial_cash = 1e20
"""


def test_config_check_reports_each_refused_value(tmp_path, capsys):
    """Before: "3", "yes", 1 and 20.0 were converted silently, and the rest accepted."""
    path = tmp_path / "bad.toml"
    path.write_text(BAD_CONFIG)
    code, out, _err = run_cli(capsys, "config", "check", str(path))
    assert code == 1
    for expected in (
        "universe.TQQQ.leverage: Input should be a valid number (got '3'): write the number "
        "without quotes",
        "strategy.var_adjust: Input should be a valid boolean (got 'yes'): write true or false",
        "strategy.vol_window: Input should be a valid integer (got 20.0)",
        "rebalance.fractional: Input should be a valid boolean (got 1)",
        "regime: vix_transition 40 must not exceed vix_uncertainty 35",
        "risk.stop_alpha: expected a value from 0 to 10 (got 1000000.0)",
        "backtest.initial_cash: expected a value from 100 to 1e+11 (got 1e+20)",
    ):
        assert expected in out, out
    assert "INVALID (7 problem(s))" in out


def test_toml_dates_arrays_and_regime_names_still_read(tmp_path):
    """Strict types keep what TOML can only write one way: a bare date, an array for a
    tuple, a regime's name as text."""
    from bot.config import load_settings

    path = tmp_path / "ok.toml"
    path.write_text(
        '[universe]\nSPY = { weight = 1.0 }\n[risk]\nposition_cap = 1.0\nrules = ["stops"]\n'
        "[regime]\ninitial = \"GROWTH\"\n[backtest]\nstart = 2012-01-03\ninitial_cash = 5000\n"
        'periods = [["one", "2013-01-01", "2014-01-01"]]\n[overlay.GROWTH]\nSPY = 1\n'
    )
    settings = load_settings(path)
    assert settings.risk.rules == ("stops",) and settings.backtest.start == "2012-01-03"
    assert settings.backtest.initial_cash == 5000.0  # an integer is a fine number
    assert settings.regime.initial.value == "GROWTH"


# --- files a new user gets wrong ---------------------------------------------------------


def _data_dir(tmp_path: Path, name: str, content: bytes) -> Path:
    """The bundled-like layout with one price file replaced."""
    root = tmp_path / "data"
    (root / "prices").mkdir(parents=True)
    (root / "prices" / name).write_bytes(content)
    return root


GOOD = (b"date,open,high,low,close,adj_close,volume\n2024-01-02,10,11,9,10.5,10.5,1\n"
        b"2024-01-03,10.5,11,10,10.8,10.8,1\n2024-01-04,10.8,11,10.5,10.9,10.9,1\n")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "not a readable CSV file"),
        (b"date,open,close\n", "file has a header but no rows"),
        (b"date,open,volume\n2024-01-02,1,5\n", "[close]: needs columns date and close"),
        (GOOD + b"2024-01-04,10.8,11,10.5,10.9,10.9,1\n", "2024-01-04 is duplicated"),
        (GOOD.replace(b"2024-01-03", b"2024-01-05"), "2024-01-04 follows a later date"),
        (GOOD.replace(b"10.8,10.8", b"10.8,\xff\xfe"), "not a readable CSV file: 'utf-8' codec"),
        ("\ufeffdate,close\n2024-01-02,1\n".encode("utf-16"), "not a readable CSV file"),
    ],
    ids=["empty", "header-only", "no-close", "duplicated", "unsorted", "not-utf8", "utf16"],
)
def test_broken_price_files_are_one_line_errors(tmp_path, capsys, content, expected):
    root = _data_dir(tmp_path, "TQQQ.csv", content)
    code, _out, err = run_cli(capsys, "backtest", "--config", str(CONFIG), "--data-dir", str(root),
                              "--database", f"sqlite:///{tmp_path}/t.sqlite", "--no-charts")
    assert_one_line_error(code, err, str(root / "prices" / "TQQQ.csv"), expected)


def test_unknown_symbol_and_a_folder_in_place_of_a_file(tmp_path, capsys):
    root = _data_dir(tmp_path, "SPY.csv", GOOD)
    code, _out, err = run_cli(capsys, "backtest", "--config", str(CONFIG), "--data-dir", str(root),
                              "--database", f"sqlite:///{tmp_path}/t.sqlite", "--no-charts")
    assert_one_line_error(code, err, "no price file for 'TQQQ'; available: SPY")
    (root / "prices" / "TQQQ.csv").mkdir()
    code, _out, err = run_cli(capsys, "backtest", "--config", str(CONFIG), "--data-dir", str(root),
                              "--database", f"sqlite:///{tmp_path}/t.sqlite", "--no-charts")
    assert_one_line_error(code, err, "TQQQ.csv [symbol]: is not a file")


def test_an_unreadable_price_file_is_named(tmp_path, monkeypatch):
    """As root the permission bits cannot stop a read, so the OS error is raised as the
    read would raise it."""
    import pandas as pd

    from bot.data.csv_source import load_csv_directory
    from bot.errors import DataError

    root = _data_dir(tmp_path, "SPY.csv", GOOD)

    def denied(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(pd, "read_csv", denied)
    with pytest.raises(DataError, match=r"SPY.csv: cannot be read: Permission denied"):
        load_csv_directory(root, ["SPY"], macro=())


def test_the_module_entry_point_exists():
    """The disk-full tests run `python -m bot`; make sure it is the CLI."""
    assert (REPO / "bot" / "__main__.py").is_file()


def test_a_tearsheet_that_cannot_be_written_is_named(tmp_path):
    import pandas as pd

    from bot.report import RunSeries, build_report
    from bot.tearsheet.page import write_tearsheet

    equity = pd.Series([1.0, 1.1, 1.05, 1.2], index=pd.date_range("2024-01-02", periods=4))
    strategy = RunSeries("s", equity)
    (tmp_path / "tearsheet.html").mkdir()  # a folder where the page should go
    with pytest.raises(BotError, match=f"cannot write {tmp_path / 'tearsheet.html'}: Is a directory"):
        report = build_report(strategy, [], risk_free=None, market=None, periods=[],
                              data_label="test", meta={})
        write_tearsheet(report, strategy, [], tmp_path)
