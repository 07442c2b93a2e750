"""Inspection commands against a trade log filled by a real run, on SQLite and PostgreSQL,
and the CLI reading while a writer records (no 'database is locked')."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from bot.cli import main
from bot.store import TradeLog
from bot.store.models import FILLS
from bot.types import EquityPoint, Order, OrderRequest, OrderStatus, Side
from tests.conftest import CONFIG, REPO
from tests.test_store import reset_pg

START, END = "2016-01-04", "2016-06-30"


def fill_by_replay(url: str, out: Path) -> int:
    """Record one run the way a user without keys does: the daemon replayed on the
    synthetic market (scheduler, jobs, engine, replay venue, trade log)."""
    code = main([
        "run", "--config", str(CONFIG), "--synthetic", "--replay", f"{START}:{END}",
        "--database", url,
    ])
    assert code == 0
    log = TradeLog.open_readonly(url)
    try:
        return int(log.runs()["id"].max())
    finally:
        log.engine.dispose()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def filled(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[tuple[str, int]]:
    """A trade log holding one finished run: (url, run id)."""
    tmp = tmp_path_factory.mktemp("inspect")
    if request.param == "sqlite":
        url = f"sqlite:///{tmp / 'log.sqlite'}"
    else:
        url = request.getfixturevalue("pg_database_url")
    run_id = fill_by_replay(url, tmp / "out")
    yield url, run_id
    if request.param == "postgresql":
        reset_pg(url)


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def as_json(capsys, *args: str) -> list[dict]:
    code, out, err = run_cli(capsys, *args, "--format", "json")
    assert code == 0, err
    return json.loads(out)


def test_each_command_exports_what_the_database_holds(filled, capsys) -> None:
    url, run_id = filled
    log = TradeLog.open_readonly(url)
    try:
        fills = log.load_fills(run_id)
        equity = log.load_equity(run_id)
        regimes = log.load_regimes(run_id)
        risk = log.load_risk_events(run_id)
        positions = log.load_positions(run_id)
        with log.engine.connect() as conn:
            exact = conn.execute(sa.select(FILLS).order_by(FILLS.c.filled_at, FILLS.c.id)).all()
    finally:
        log.engine.dispose()

    trades = as_json(capsys, "trades", "--database", url)
    assert [t["client_order_id"] for t in trades] == fills["client_order_id"].tolist()
    # Money stays exact: the JSON holds the stored decimal's digits, positional (never
    # "1.87E-8" or PostgreSQL's "0E-10"), without trailing zeros.
    assert [Decimal(t["price"]) for t in trades] == [f.price for f in exact]
    assert [Decimal(t["value"]) for t in trades] == [f.quantity * f.price for f in exact]
    texts = [t[k] for t in trades for k in ("price", "value", "quantity", "commission")]
    assert not [x for x in texts if "E" in x or (("." in x) and x.endswith("0"))]

    rows = as_json(capsys, "equity", "--database", url)
    assert [r["day"] for r in rows] == [d.date().isoformat() for d in equity.index]
    assert [float(r["equity"]) for r in rows] == equity["equity"].tolist()
    # Below zero, as bot report, the dashboard and the metrics show a drawdown (it was
    # +0.1467 here and -0.1468 there).
    peak = equity["equity"].cummax()
    expected = (equity["equity"] / peak - 1.0).tolist()
    assert [float(r["drawdown"]) for r in rows] == pytest.approx(expected, abs=1e-9)
    assert min(float(r["drawdown"]) for r in rows) < 0

    assert len(as_json(capsys, "regimes", "--database", url)) == len(regimes)
    assert [e["rule"] for e in as_json(capsys, "risk-events", "--database", url)] == risk["rule"].tolist()

    last_day = positions["day"].max()
    held = as_json(capsys, "positions", "--database", url)
    snapshot = positions[positions["day"] == last_day]
    assert sorted(p["symbol"] for p in held) == sorted(snapshot["symbol"])
    equity_then = equity.loc[last_day, "equity"]
    for p in held:
        value = snapshot.loc[snapshot["symbol"] == p["symbol"], "market_value"].iloc[0]
        assert p["weight"] == pytest.approx(value / equity_then, rel=1e-9)
    history = as_json(capsys, "positions", "--database", url, "--history")
    assert len(history) == len(positions)

    runs = as_json(capsys, "runs", "--database", url)
    assert [(r["id"], r["mode"], r["status"], r["synthetic"]) for r in runs] == [
        (run_id, "replay", "finished", True)
    ]

    code, out, _ = run_cli(capsys, "trades", "--database", url, "--format", "csv")
    parsed = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(parsed) == len(fills)
    assert parsed[0]["client_order_id"] == fills["client_order_id"].iloc[0]
    assert parsed[-1]["price"] == str(exact[-1].price)

    code, out, _ = run_cli(capsys, "equity", "--database", url)
    last = equity.iloc[-1]
    assert code == 0 and f"equity — run {run_id}" in out
    assert f"{last['equity']:,.2f}" in out  # the newest rows are the ones shown
    assert f"showing the last 100 of {len(equity)} rows" in out


def test_filters_select_days_symbols_and_the_latest_rows(filled, capsys) -> None:
    url, run_id = filled
    log = TradeLog.open_readonly(url)
    try:
        fills = log.load_fills(run_id)
        equity = log.load_equity(run_id)
        orders = log.load_orders(run_id)
    finally:
        log.engine.dispose()

    rows = as_json(capsys, "equity", "--database", url, "--since", "2016-03-01", "--until", "2016-03-31")
    march = equity.loc["2016-03-01":"2016-03-31"]
    assert [r["day"] for r in rows] == [d.date().isoformat() for d in march.index]

    symbol = fills["symbol"].value_counts().index[0]
    picked = as_json(capsys, "trades", "--database", url, "--symbol", f" {symbol.lower()} ")
    assert {t["symbol"] for t in picked} == {symbol}
    assert len(picked) == (fills["symbol"] == symbol).sum()

    latest = as_json(capsys, "trades", "--database", url, "--limit", "5", "--run", str(run_id))
    assert [t["client_order_id"] for t in latest] == fills["client_order_id"].tail(5).tolist()

    # The last day there is means no upper bound (there is no day after it to stop at).
    assert len(as_json(capsys, "trades", "--database", url, "--until", "9999-12-31")) == len(fills)
    assert len(as_json(capsys, "orders", "--database", url, "--until", "9999-12-31")) == len(orders)

    since = dt.date(2016, 5, 2)
    late = as_json(capsys, "trades", "--database", url, "--since", since.isoformat())
    days = pd.to_datetime(fills["filled_at"]).dt.date
    assert len(late) == (days >= since).sum() and len(late) > 0

    not_final = ~orders["status"].isin(["filled", "canceled", "rejected", "expired"])
    open_orders = as_json(capsys, "orders", "--database", url, "--status", "open")
    assert [o["client_order_id"] for o in open_orders] == orders.loc[not_final, "client_order_id"].tolist()
    filled_orders = as_json(capsys, "orders", "--database", url, "--status", "filled")
    assert len(filled_orders) == (orders["status"] == "filled").sum()


def test_mistakes_are_named(filled, capsys, tmp_path) -> None:
    url, _ = filled
    code, _, err = run_cli(capsys, "trades", "--database", url, "--run", "99")
    assert code == 2 and "no run 99 in the trade log" in err
    code, _, err = run_cli(capsys, "regimes", "--database", url, "--symbol", "TQQQ")
    assert code == 2 and "--symbol does not apply to `bot regimes`: its rows are not per asset" in err
    missing = tmp_path / "none.sqlite"
    code, _, err = run_cli(capsys, "equity", "--database", f"sqlite:///{missing}")
    assert code == 2 and f"no trade log at {missing}" in err
    assert not missing.exists()  # reading never creates a database


def test_report_rebuilds_a_stored_run_against_spy(filled, capsys, tmp_path) -> None:
    url, run_id = filled
    out = tmp_path / "report"
    code, printed, err = run_cli(capsys, "report", "--database", url, "--run", str(run_id),
                                 "--out", str(out))
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    strategy, spy = report["summary"]
    log = TradeLog.open_readonly(url)
    try:
        equity = log.load_equity(run_id)["equity"]
        trades = len(log.load_fills(run_id))
    finally:
        log.engine.dispose()
    assert strategy["total_return"] == pytest.approx(equity.iloc[-1] / equity.iloc[0] - 1, rel=1e-12)
    assert strategy["trades"] == trades and strategy["days"] == len(equity)
    assert spy["name"].startswith("SPY") and spy["start"] == strategy["start"]
    assert strategy["beta"] is not None  # measured against SPY
    assert report["meta"]["run_id"] == run_id and "SYNTHETIC" in report["meta"]["data_label"]
    assert "SYNTHETIC" in printed
    for chart in ("equity.png", "drawdown.png", "weights.png"):
        assert (out / chart).read_bytes().startswith(b"\x89PNG")
    tearsheet = (out / "tearsheet.html").read_text()
    assert f"{strategy['total_return'] * 100:.2f}" in tearsheet and spy["name"] in tearsheet


# --- a hand-made paper run: open orders, runs list, a report without a benchmark ----------


def _order(cid: str, at: dt.datetime) -> Order:
    return Order(OrderRequest(cid, "rb-1", "TQQQ", Side.BUY, 2.0, "rebalance", 50.0), OrderStatus.NEW, at)


def test_open_orders_runs_and_a_report_without_benchmark(tmp_path, capsys) -> None:
    url = f"sqlite:///{tmp_path / 'paper.sqlite'}"
    fill_by_replay(url, tmp_path / "bt")
    capsys.readouterr()
    log = TradeLog.open(url)
    at = dt.datetime(2024, 3, 4, 15, tzinfo=dt.UTC)
    paper = log.start_run(mode="paper", strategy="s", config_hash="h", config={"not": "valid"},
                          code_version="t", data_source="alpaca-paper", synthetic=False, started_at=at)
    log.order(_order("p-1", at))
    log.order_status("p-1", OrderStatus.ACCEPTED, at, broker_order_id="alp-1")
    log.order(_order("p-2", at), notional=100.0)
    log.order_status("p-2", OrderStatus.FILLED, at, filled_quantity=2.0, average_price=50.0)
    for i, value in enumerate([100_000.0, 100_500.0, 99_800.0]):
        log.equity(EquityPoint(dt.date(2024, 3, 4 + i), value, value, 0.0, 0.0, None))
    log.close()

    runs = as_json(capsys, "runs", "--database", url)
    assert [(r["id"], r["mode"]) for r in runs] == [(1, "replay"), (paper, "paper")]
    # an export has every column: the stored config and summary too
    assert runs[1]["config"] == {"not": "valid"} and runs[1]["summary"] is None
    assert runs[0]["config"]["strategy"]["name"] and runs[0]["summary"]["jobs"] > 0
    code, table, _ = run_cli(capsys, "runs", "--database", url)
    assert code == 0 and '"not"' not in table  # a table has no room for them
    open_orders = as_json(capsys, "orders", "--database", url, "--status", "open")  # latest run
    assert [(o["client_order_id"], o["status"], o["broker_order_id"]) for o in open_orders] == [
        ("p-1", "accepted", "alp-1")
    ]
    everything = as_json(capsys, "orders", "--database", url, "--run", "all", "--symbol", "TQQQ")
    assert {o["run_id"] for o in everything} == {1, paper}
    assert [o["notional"] for o in everything if o["run_id"] == paper] == [None, "100"]

    code, printed, err = run_cli(capsys, "report", "--database", url, "--out", str(tmp_path / "r"),
                                 "--no-charts")
    assert code == 0, err
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert [row["name"] for row in report["summary"]] == [f"s (run {paper}, paper)"]
    assert report["summary"][0]["total_return"] == pytest.approx(-0.002)
    assert "SPY benchmark left out: the run's stored config no longer validates" in printed


# --- reading while a writer records ----------------------------------------------------

WRITER = textwrap.dedent(
    """
    import datetime as dt, sys
    from bot.logs import configure_logging
    from bot.store import TradeLog
    from bot.types import EquityPoint, Fill, Order, OrderRequest, OrderStatus, Side

    url, batches = sys.argv[1], int(sys.argv[2])
    configure_logging("WARNING", "json")  # to stderr; stdout carries the progress lines
    log = TradeLog.open(url)
    t0 = dt.datetime(2024, 1, 2, 21, tzinfo=dt.UTC)
    log.start_run(mode="paper", strategy="w", config_hash="h", config={}, code_version="t",
                  data_source="writer", synthetic=False, started_at=t0)
    for i in range(batches):  # one small job after another, each flushed like the daemon does
        at = t0 + dt.timedelta(days=i)
        cid = f"w-{i}"
        req = OrderRequest(cid, f"rb-{i}", "TQQQ", Side.BUY, 1.0, "test", 50.0)
        log.order(Order(req, OrderStatus.NEW, at))
        log.order_status(cid, OrderStatus.FILLED, at, filled_quantity=1.0, average_price=50.0)
        log.fill(Fill(cid, "TQQQ", Side.BUY, 1.0, 50.0, 0.0, 0.01, at))
        log.equity(EquityPoint(at.date(), 1000.0 + i, 100.0, 900.0 + i, 0.0, None))
        log.positions(at.date(), {"TQQQ": (float(i + 1), 50.0)})
        log.save_state("writer", "paper", {"batch": i}, at)
        log.flush()
        if i == 0:
            print("started", flush=True)
    log.finish_run("finished", t0 + dt.timedelta(days=batches))
    log.close()
    print("done", flush=True)
    """
)


@pytest.fixture
def writer(tmp_path) -> Callable[[str, int], subprocess.Popen]:
    """Starts a process that records small batches like the daemon; waits for its first flush.

    (The replay daemon will replace this script once it exists.)"""
    started: list[subprocess.Popen] = []

    def start(url: str, batches: int) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, url, str(batches)], cwd=REPO,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        started.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "started"
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_the_cli_reads_while_a_writer_records(tmp_path, writer, capsys) -> None:
    url = f"sqlite:///{tmp_path / 'live.sqlite'}"
    batches = 400
    proc = writer(url, batches)
    reads = 0
    while proc.poll() is None or reads < 2:
        for command in (["equity", "--limit", "3"], ["orders", "--status", "open"], ["trades"]):
            code, _, err = run_cli(capsys, *command, "--database", url, "--format", "json")
            assert code == 0, err
            assert "locked" not in err
            reads += 1
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    assert "locked" not in err and out.strip() == "done"
    assert reads >= 3, reads
    rows = as_json(capsys, "equity", "--database", url)
    assert len(rows) == batches and Decimal(rows[-1]["equity"]) == Decimal(1000 + batches - 1)
    assert len(as_json(capsys, "trades", "--database", url)) == batches


def test_the_cli_reads_while_a_replay_runs(tmp_path, capsys) -> None:
    """The daemon itself (replayed on the synthetic market) writes after every job while
    the inspection commands read: no 'database is locked'."""
    url = f"sqlite:///{tmp_path / 'replay.sqlite'}"
    log_file = (tmp_path / "replay.log").open("w")  # a pipe would fill up and stall it
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "--log-format", "json", "run", "--config", str(CONFIG),
         "--synthetic", "--replay", "2021-01-04:2022-12-30", "--database", url],
        cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT, text=True,
    )
    reads = during = 0
    try:
        deadline = time.monotonic() + 240  # bounded: the replay takes seconds
        while proc.poll() is None and time.monotonic() < deadline:
            if not (tmp_path / "replay.sqlite").exists():
                time.sleep(0.05)
                continue
            for command in (["equity", "--limit", "3"], ["orders", "--status", "open"], ["runs"]):
                code, _, err = run_cli(capsys, *command, "--database", url, "--format", "json")
                assert "locked" not in err
                if code == 0:
                    reads += 1
                    during += proc.poll() is None
    finally:
        proc.wait(timeout=300)
        log_file.close()
    output = (tmp_path / "replay.log").read_text()
    assert proc.returncode == 0, output[-2000:]
    assert "locked" not in output
    assert during >= 3, f"only {during} reads overlapped the replay"
    rows = as_json(capsys, "equity", "--database", url, "--limit", "1000")
    assert len(rows) > 450


def test_incidents_are_listed_with_their_context(tmp_path, capsys):
    """Failed jobs, stale data and rejected rows were recorded but no command showed them."""
    db = f"sqlite:///{tmp_path / 'i.sqlite'}"
    log = TradeLog.open(db)
    log.start_run(mode="paper", strategy="s", config_hash="-", config={}, code_version="-",
                  data_source="-", synthetic=False, started_at=dt.datetime(2024, 3, 4, tzinfo=dt.UTC))
    log.incident(dt.datetime(2024, 3, 4, 15, tzinfo=dt.UTC), "job_failed", "open: HTTP 503",
                 {"job": "open"})
    log.incident(dt.datetime(2024, 3, 6, 15, tzinfo=dt.UTC), "stale_data", "no bar for TQQQ")
    log.close()
    rows = as_json(capsys, "incidents", "--database", db)
    assert [r["kind"] for r in rows] == ["job_failed", "stale_data"]
    assert rows[0]["context"] == {"job": "open"}
    rows = as_json(capsys, "incidents", "--database", db, "--since", "2024-03-05")
    assert [r["kind"] for r in rows] == ["stale_data"]


def test_the_latest_run_is_the_newest_that_recorded_something(tmp_path, capsys):
    """`bot once` (a dry run) records an empty run; it used to become "the latest run",
    and every command then said "no rows match"."""
    db = f"sqlite:///{tmp_path / 'l.sqlite'}"
    log = TradeLog.open(db)
    kwargs = dict(strategy="s", config_hash="-", config={}, code_version="-", data_source="-",
                  synthetic=False, started_at=dt.datetime(2024, 3, 4, tzinfo=dt.UTC))
    first = log.start_run(mode="paper", **kwargs)
    log.equity(EquityPoint(dt.date(2024, 3, 4), 100.0, 100.0, 0.0, 0.0, None))
    log.flush()
    log.start_run(mode="paper", **kwargs)  # nothing recorded in it
    log.close()
    rows = as_json(capsys, "equity", "--database", db)
    assert [r["run_id"] for r in rows] == [first]


def test_positions_limit_counts_held_symbols_only(tmp_path, capsys):
    """Sold-out symbols are stored at 0 in a snapshot; --limit took the newest rows first
    and then dropped them, so `--limit 1` could say "no rows match" with positions held."""
    db = f"sqlite:///{tmp_path / 'p.sqlite'}"
    log = TradeLog.open(db)
    log.start_run(mode="paper", strategy="s", config_hash="-", config={}, code_version="-",
                  data_source="-", synthetic=False, started_at=dt.datetime(2024, 3, 4, tzinfo=dt.UTC))
    log.equity(EquityPoint(dt.date(2024, 3, 4), 100.0, 0.0, 100.0, 0.0, None))
    log.positions(dt.date(2024, 3, 4), {"SPY": (1.0, 60.0), "IWM": (1.0, 40.0),
                                        "BND": (0.0, 70.0), "VNQ": (0.0, 80.0)})
    log.close()
    capsys.readouterr()  # the flush's log line
    rows = as_json(capsys, "positions", "--database", db, "--limit", "1")
    assert [r["symbol"] for r in rows] == ["IWM"]
    rows = as_json(capsys, "positions", "--database", db)
    assert [r["symbol"] for r in rows] == ["SPY", "IWM"]


HEAVY = ("pandas", "numpy", "scipy", "alpaca", "apscheduler", "alembic", "pydantic",
         "structlog", "sqlalchemy.orm")


@pytest.mark.parametrize("command", ["orders", "runs", "trades"])
def test_inspection_commands_import_no_analysis_or_trading_libraries(filled, command):
    """`bot orders` and its kin only read and print: pandas, numpy, scipy, alpaca-py,
    APScheduler and Alembic (for a log at the current schema) stay unloaded, which
    halves how long they take to start; so do pydantic (the config is not read when the
    URL is given), structlog (they log nothing; bot.logs sets it up on first use) and
    SQLAlchemy's ORM (the tables are Core tables, read with SQL expressions)."""
    url, _run = filled
    script = textwrap.dedent(f"""
        import contextlib, io, sys
        from bot.cli import main
        with contextlib.redirect_stdout(io.StringIO()) as out:
            code = main([{command!r}, "--database", {url!r}, "--format", "json"])
        loaded = sorted(m for m in {HEAVY!r} if m in sys.modules)
        print(code, len(out.getvalue().splitlines()), ",".join(loaded) or "-")
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=True)
    code, lines, loaded = proc.stdout.split()
    assert (code, loaded) == ("0", "-")
    assert int(lines) > 3  # it printed rows


def test_a_table_fetches_only_the_rows_it_shows_and_counts_the_rest(filled):
    """`bot equity` shows the last 100 rows: those are fetched, the others only counted."""
    from bot.store import queries

    url, run_id = filled
    log = TradeLog.open_readonly(url)
    try:
        with log.engine.connect() as conn:
            every = queries.equity(conn, queries.Filters(run=run_id))
            shown = queries.equity(conn, queries.Filters(run=run_id, limit=100, count_all=True))
            few = queries.equity(conn, queries.Filters(run=run_id, limit=len(every) + 5,
                                                       count_all=True))
    finally:
        log.engine.dispose()
    assert len(every) > 100 and every.total is None
    assert shown.rows == every.rows[-100:]
    assert (shown.total, shown.matched) == (len(every), len(every))
    assert few.rows == every.rows and few.total is None  # all of them fit: nothing counted


def test_stored_text_is_shown_as_written_not_as_rich_markup(tmp_path, capsys, monkeypatch):
    """Before: a table cell went through rich's markup, so "[inverse_vol: ...]" vanished
    (read as a style tag) and ":warning:" became an emoji."""
    from bot.types import RiskEvent

    monkeypatch.setenv("COLUMNS", "200")
    db = f"sqlite:///{tmp_path / 'm.sqlite'}"
    log = TradeLog.open(db)
    log.start_run(mode="paper", strategy="s", config_hash="-", config={}, code_version="-",
                  data_source="-", synthetic=False, started_at=dt.datetime(2024, 3, 4, tzinfo=dt.UTC))
    action = "[inverse_vol: insufficient history] weights kept :warning: [/]"
    log.risk_event(RiskEvent(dt.date(2024, 3, 4), "volatility", action, {"x": 1.0}))
    log.equity(EquityPoint(dt.date(2024, 3, 4), 100.0, 100.0, 0.0, 0.0, None))
    log.close()
    capsys.readouterr()
    code, out, err = run_cli(capsys, "risk-events", "--database", db)
    assert code == 0, err
    assert action in out


def test_csv_keeps_integer_ids_whole_next_to_empty_cells():
    """An incident outside any run, a single-account order beside a client account's:
    the id columns hold None in some rows, and must still print 1, not 1.0."""
    from bot.store.export import write
    from bot.store.rows import Rows

    rows = Rows(("run_id", "account_id", "equity", "inputs"),
                [(None, 1, Decimal("1.87E-8"), {"a": 1}), (3, None, Decimal("0E-10"), None)])
    out = io.StringIO()
    write(rows, "csv", title="t", out=out)
    assert list(csv.reader(io.StringIO(out.getvalue()))) == [
        ["run_id", "account_id", "equity", "inputs"],
        ["", "1", "0.0000000187", '{"a": 1}'],
        ["3", "", "0", ""],
    ]


@pytest.mark.parametrize(("stored", "text"), [
    ("1.87E-8", "0.0000000187"), ("0E-10", "0"), ("-0E-10", "0"), ("5.0000000000", "5"),
    ("5.0", "5"), ("1E+2", "100"), ("21.7480116022", "21.7480116022"), ("-0.5", "-0.5"),
])
def test_decimals_print_as_positional_digits(stored, text):
    from bot.store.export import decimal_text

    assert decimal_text(Decimal(stored)) == text
    assert Decimal(text) == Decimal(stored)


@pytest.mark.parametrize("folder", ["col[red]", "we[/ird]"])
def test_paths_with_brackets_are_printed_as_they_are(tmp_path, capsys, monkeypatch, folder):
    """Table titles and printed paths went through rich's markup: a trade log in
    `col[red]/` was titled `col/...`, and `we[/ird]` failed with MarkupError."""
    monkeypatch.setenv("COLUMNS", "200")
    where = tmp_path / folder
    where.mkdir(parents=True)
    db = f"sqlite:///{where / 'm.sqlite'}"
    log = TradeLog.open(db)
    log.start_run(mode="paper", strategy="s", config_hash="-", config={}, code_version="-",
                  data_source="-", synthetic=False, started_at=dt.datetime(2024, 3, 4, tzinfo=dt.UTC))
    for i, value in enumerate([100.0, 101.0, 99.0]):
        log.equity(EquityPoint(dt.date(2024, 3, 4 + i), value, value, 0.0, 0.0, None))
    log.close()
    capsys.readouterr()
    def unwrapped(text: str) -> str:  # a long title is folded to the table's width
        return "".join(text.split())

    code, out, err = run_cli(capsys, "equity", "--database", db)
    assert code == 0, err
    assert unwrapped(f"equity — run 1 — {db}") in unwrapped(out)
    code, out, err = run_cli(capsys, "report", "--database", db, "--no-charts",
                             "--out", str(where / "rep"))
    assert code == 0, err
    assert unwrapped(f"report of run 1: {where / 'rep' / 'report.json'}") in unwrapped(out)


# --- what an auditor reads months later: zones, long texts, spreadsheets, accounts, pipes ---


def _paper_log(db: str) -> TradeLog:
    log = TradeLog.open(db)
    log.start_run(mode="paper", strategy="s", config_hash="-", config={}, code_version="-",
                  data_source="-", synthetic=False, started_at=dt.datetime(2024, 3, 4, tzinfo=dt.UTC))
    return log


def test_table_times_name_their_zone(tmp_path, capsys, monkeypatch):
    """Tables showed `2024-03-04 15:00:00` while CSV and JSON said +00:00: read months
    later, 15:00 looked like a New York time as easily as a UTC one."""
    monkeypatch.setenv("COLUMNS", "200")
    db = f"sqlite:///{tmp_path / 'z.sqlite'}"
    log = _paper_log(db)
    log.incident(dt.datetime(2024, 3, 4, 15, tzinfo=dt.UTC), "job_failed", "open: HTTP 503")
    log.close()
    capsys.readouterr()
    code, out, err = run_cli(capsys, "incidents", "--database", db)
    assert code == 0, err
    assert "2024-03-04 15:00:00 UTC" in out
    code, out, err = run_cli(capsys, "runs", "--database", db)
    assert code == 0 and "2024-03-04 00:00:00 UTC" in out, err


def test_long_texts_wrap_in_tables_instead_of_being_cut(tmp_path, capsys, monkeypatch):
    """A long risk-event action or incident message was cut with "…" (and the table drawn
    wider than the terminal): stacking a table made every column no-wrap, the free-text
    ones too."""
    from bot.types import RiskEvent

    monkeypatch.setenv("COLUMNS", "100")
    db = f"sqlite:///{tmp_path / 'w.sqlite'}"
    text = "Überweisung 日本語 " + " ".join(f"word{i}" for i in range(60))
    log = _paper_log(db)
    log.risk_event(RiskEvent(dt.date(2024, 3, 4), "stop", text, {"x": 1.0}))
    log.incident(dt.datetime(2024, 3, 4, 15, tzinfo=dt.UTC), "job_failed", text, {"job": "open"})
    log.equity(EquityPoint(dt.date(2024, 3, 4), 100.0, 100.0, 0.0, 0.0, None))
    log.close()
    capsys.readouterr()
    for command in ("risk-events", "incidents"):
        code, out, err = run_cli(capsys, command, "--database", db)
        assert code == 0, err
        assert "…" not in out, command
        assert max(len(line) for line in out.splitlines()) <= 100, command
        shown = " ".join(out.replace("│", " ").split())
        assert all(word in shown for word in text.split()), command


def test_csv_cells_a_spreadsheet_would_run_are_kept_as_text():
    """A text starting with = + - @ opened in a spreadsheet is a formula
    (=HYPERLINK(...) runs); such a cell gets a leading ' there. Numbers (a negative one
    too) and the JSON stay as stored. A lone carriage return inside a text is quoted (the
    csv module left it bare, and readers split the row there)."""
    from bot.store.export import write
    from bot.store.rows import Rows

    texts = ['=HYPERLINK("http://x","y")', "+1+2", "-2+3", "@SUM(1)", "\t=1", "\r=1", "a=b", "x\ry", "-"]
    rows = Rows(("reason", "cash"), [(t, Decimal("-0.5")) for t in texts])
    out = io.StringIO()
    write(rows, "csv", title="t", out=out)
    parsed = list(csv.reader(io.StringIO(out.getvalue(), newline="")))[1:]
    assert [r[0] for r in parsed] == ["'" + t if t[0] in "=+-@\t\r" else t for t in texts]
    assert {r[1] for r in parsed} == {"-0.5"}
    out = io.StringIO()
    write(rows, "json", title="t", out=out)
    assert [r["reason"] for r in json.loads(out.getvalue())] == texts


def test_account_is_taken_as_the_registry_takes_it(tmp_path, capsys):
    """--account with a broker id without hyphens (as `bot accounts add|show` take it)
    found nothing, and a number over the id column's range was an OverflowError traceback."""
    from bot.accounts import AccountRegistry, AccountSpec

    db = f"sqlite:///{tmp_path / 'a.sqlite'}"
    broker = "8f2c1e5a-0b7d-4c3e-9a61-2d5f0e8b7c44"
    log = _paper_log(db)
    account = AccountRegistry(log.engine).add(AccountSpec(broker, "balanced"),
                                              dt.datetime(2024, 3, 4, tzinfo=dt.UTC))
    with log.recording_for(account.id):
        log.equity(EquityPoint(dt.date(2024, 3, 4), 100.0, 100.0, 0.0, 0.0, None))
    log.close()
    capsys.readouterr()
    for ref in (str(account.id), broker.upper(), broker.replace("-", "")):
        rows = as_json(capsys, "equity", "--database", db, "--account", ref)
        assert [r["account_id"] for r in rows] == [account.id], ref
    code, _, err = run_cli(capsys, "equity", "--database", db, "--account", "9" * 30)
    assert code == 2 and f"--account {'9' * 30}: no such account" in err


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_a_closed_pipe_ends_the_command_quietly(tmp_path, fmt):
    """`bot orders | head -1`: the reader has what it wanted. CSV and JSON ended with 0;
    a table ended with status 1 (rich's own handling), failing a `set -o pipefail` script."""
    import os

    url = f"sqlite:///{tmp_path / 'p.sqlite'}"
    log = _paper_log(url)
    for i in range(300):
        log.equity(EquityPoint(dt.date(2024, 3, 4) + dt.timedelta(days=i), 100.0, 100.0, 0.0, 0.0, None))
    log.close()
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "bot", "equity", "--database", url, "--format", fmt],
            cwd=REPO, stdout=write, stderr=subprocess.PIPE, text=True, timeout=120,
        )
    finally:
        os.close(write)
    assert (proc.returncode, proc.stderr) == (0, "")


def test_a_synthetic_runs_tables_say_so(tmp_path, capsys, monkeypatch):
    """Only `bot runs` said a run traded the synthetic market: its orders, regimes (VIX
    and spreads that look like history) and equity now say it in their titles."""
    monkeypatch.setenv("COLUMNS", "200")
    db = f"sqlite:///{tmp_path / 's.sqlite'}"
    for synthetic in (True, False):
        log = TradeLog.open(db)
        log.start_run(mode="backtest", strategy="s", config_hash="-", config={}, code_version="-",
                      data_source="-", synthetic=synthetic,
                      started_at=dt.datetime(2024, 3, 4, tzinfo=dt.UTC))
        log.equity(EquityPoint(dt.date(2024, 3, 4), 100.0, 100.0, 0.0, 0.0, None))
        log.close()
    capsys.readouterr()
    code, out, err = run_cli(capsys, "equity", "--database", db, "--run", "1")
    assert code == 0, err
    assert "run 1 (SYNTHETIC market)" in out
    code, out, err = run_cli(capsys, "equity", "--database", db, "--run", "2")
    assert code == 0, err
    assert "SYNTHETIC" not in out
    # A CSV or JSON export has no title: each row carries its run's flag.
    rows = as_json(capsys, "equity", "--database", db, "--run", "all")
    assert [(r["run_id"], r["synthetic"]) for r in rows] == [(1, True), (2, False)]
    code, out, _ = run_cli(capsys, "equity", "--database", db, "--run", "1", "--format", "csv")
    [row] = list(csv.DictReader(io.StringIO(out)))
    assert (row["run_id"], row["synthetic"]) == ("1", "True")
    assert [r["synthetic"] for r in as_json(capsys, "runs", "--database", db)] == [True, False]
