"""The dashboard end to end: a real run in the trade log, the server on 127.0.0.1, the page
rendered by headless Chromium, and every number checked against the database."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path

import pytest
import sqlalchemy as sa

from bot.dashboard.server import DashboardServer, make_server
from bot.store.models import (
    EQUITY,
    FILLS,
    ORDERS,
    POSITIONS,
    TARGETS,
)
from tests.conftest import CONFIG
from tests.test_inspect_cli import fill_by_replay
from tests.test_store import reset_pg

CHROMIUM = Path("/usr/bin/chromium")
BROWSER_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--virtual-time-budget=5000",
]


def require_chromium() -> Path:
    if CHROMIUM.is_file():
        return CHROMIUM
    reason = f"{CHROMIUM} not found (apt-get install chromium chromium-driver)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; .ci/run installs it")
    pytest.skip(reason)


class Dom(HTMLParser):
    """Elements by id, the rows of each table, and each element's text (what a person sees)."""

    def __init__(self) -> None:
        super().__init__()
        self.by_id: dict[str, dict[str, str]] = {}
        self.text: dict[str, str] = {}
        self.rows: dict[str, list[dict]] = {}
        self._open: list[tuple[str, str | None]] = []
        self._table: str | None = None
        self._row: dict | None = None
        self._cell: dict | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if "id" in a:
            self.by_id[a["id"]] = a
            self.text[a["id"]] = ""
        self._open.append((tag, a.get("id")))
        if tag == "table":
            self._table = a.get("id")
            self.rows.setdefault(self._table or "", [])
        elif tag == "tr" and self._table is not None:
            self._row = {"attrs": a, "cells": []}
        elif tag in ("td", "th") and self._row is not None:
            self._cell = {"attrs": a, "text": "", "header": tag == "th"}

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            opened, _ = self._open.pop()
            if opened == tag:
                break
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row["cells"].append(self._cell)
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if not any(c["header"] for c in self._row["cells"]):
                self.rows[self._table or ""].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        for _, element_id in self._open:
            if element_id:
                self.text[element_id] += data
        if self._cell is not None:
            self._cell["text"] += data


def body_rows(dom: Dom, table: str) -> list[dict]:
    return [r for r in dom.rows[table] if "empty" not in r["attrs"].get("class", "")]


@pytest.fixture(scope="module")
def replayed(tmp_path_factory) -> tuple[str, int]:
    """A SQLite trade log filled by a run. (Swap in the replay daemon when it exists.)"""
    tmp = tmp_path_factory.mktemp("dashboard")
    url = f"sqlite:///{tmp / 'log.sqlite'}"
    run_id = fill_by_replay(url, tmp / "out")
    return url, run_id


def serve(url: str) -> Iterator[DashboardServer]:
    srv = make_server(url, port=0, run=None, refresh=30, config_path=CONFIG)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    srv.tradelog.engine.dispose()
    thread.join()


@pytest.fixture
def server(replayed) -> Iterator[DashboardServer]:
    yield from serve(replayed[0])


def summary_of(srv: DashboardServer) -> dict:
    with urllib.request.urlopen(f"{address(srv)}/api/summary", timeout=30) as response:
        return json.load(response)


def address(srv: DashboardServer) -> str:
    host, port = srv.server_address[:2]
    return f"http://{host}:{port}"


def chromium(*args: str, tmp: Path) -> subprocess.CompletedProcess:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    return subprocess.run(
        [str(require_chromium()), *BROWSER_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=180, cwd=tmp,
    )


def snapshot_without_market(url: str, run_id: int | None) -> dict:
    """What the dashboard collects for `run_id` of the log at `url`, with no market data
    (the SPY card and decay left out), read as the server reads: read-only."""
    from bot.dashboard.snapshot import MarketCache, collect
    from bot.store.benchmark import RunMarket
    from bot.store.tradelog import TradeLog

    reader = TradeLog.open_readonly(url)
    try:
        no_market = MarketCache(lambda *_: RunMarket(None, None, None, None, "test: no market"))
        return collect(reader, run_id, no_market)
    finally:
        reader.close()


def database_view(url: str, run_id: int) -> dict:
    """The numbers the page must show, read straight from the tables."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        last = conn.execute(
            sa.select(EQUITY).where(EQUITY.c.run_id == run_id).order_by(EQUITY.c.day.desc())
        ).first()
        fills = conn.execute(
            sa.select(FILLS.c.client_order_id).where(FILLS.c.run_id == run_id)
            .order_by(FILLS.c.filled_at, FILLS.c.id)
        ).scalars().all()
        open_orders = conn.execute(
            sa.select(ORDERS.c.client_order_id).where(
                ORDERS.c.run_id == run_id,
                ORDERS.c.status.not_in(["filled", "canceled", "rejected", "expired"]),
            )
        ).scalars().all()
        snap_day = conn.execute(
            sa.select(sa.func.max(POSITIONS.c.day)).where(POSITIONS.c.run_id == run_id)
        ).scalar_one()
        snapshot = conn.execute(
            sa.select(POSITIONS).where(POSITIONS.c.run_id == run_id, POSITIONS.c.day == snap_day)
        ).all()
        equity_then = conn.execute(
            sa.select(EQUITY.c.equity).where(EQUITY.c.run_id == run_id, EQUITY.c.day == snap_day)
        ).scalar_one()
        target_day = conn.execute(
            sa.select(sa.func.max(TARGETS.c.day)).where(TARGETS.c.run_id == run_id)
        ).scalar_one()
        targets = conn.execute(
            sa.select(TARGETS).where(TARGETS.c.run_id == run_id, TARGETS.c.day == target_day)
        ).all()
    engine.dispose()
    return {
        "equity": last.equity,
        "day": last.day.isoformat(),
        "fills": fills,
        "open_orders": set(open_orders),
        "weights": {p.symbol: float(p.market_value / equity_then) for p in snapshot},
        "targets": {t.symbol: t.final for t in targets},
    }


def test_the_page_in_chromium_shows_what_the_database_holds(replayed, server, tmp_path) -> None:
    url, run_id = replayed
    require_chromium()
    assert server.server_address[0] == "127.0.0.1"
    db = database_view(url, run_id)

    proc = chromium("--dump-dom", f"{address(server)}/", tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = Dom()
    dom.feed(proc.stdout)

    assert dom.by_id["latest-equity"]["data-value"] == str(db["equity"])
    assert dom.text["latest-equity"] == f"{db['equity']:,.2f}"
    assert dom.by_id["synthetic-banner"]  # a synthetic run says so
    assert int(dom.by_id["trade-count"]["data-value"]) == len(db["fills"])
    trades = body_rows(dom, "trades")
    shown = [r["attrs"]["data-client-order-id"] for r in trades]
    assert shown == list(reversed(db["fills"][-20:]))  # the latest 20, newest first
    assert int(dom.text["trades-shown"]) == len(shown)

    assert int(dom.by_id["open-order-count"]["data-value"]) == len(db["open_orders"])
    open_rows = body_rows(dom, "open-orders")
    assert {r["attrs"]["data-client-order-id"] for r in open_rows} == db["open_orders"]

    weights = {r["attrs"]["data-symbol"]: r for r in body_rows(dom, "weights")}
    assert set(weights) == set(db["targets"]) | set(db["weights"]) | {"CASH"}
    for symbol, expected in db["weights"].items():
        current = next(c for c in weights[symbol]["cells"] if "current" in c["attrs"].get("class", ""))
        assert float(current["attrs"]["data-value"]) == pytest.approx(expected, rel=1e-12)
        assert current["text"] == f"{expected * 100:.2f}%"
    for symbol, expected in db["targets"].items():
        target = next(c for c in weights[symbol]["cells"] if "target" in c["attrs"].get("class", ""))
        assert float(target["attrs"]["data-value"]) == expected

    assert "equity-chart" in dom.by_id and "drawdown-chart" in dom.by_id
    assert "benchmark-note" not in dom.by_id  # SPY covered the run
    assert body_rows(dom, "regimes") and body_rows(dom, "risk-events")

    shot = tmp_path / "dashboard.png"
    proc = chromium(f"--screenshot={shot}", "--window-size=1400,1800", f"{address(server)}/", tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_the_summary_api_matches_and_nothing_can_write(replayed, server) -> None:
    url, run_id = replayed
    db = database_view(url, run_id)
    summary = summary_of(server)
    assert summary["run"]["id"] == run_id
    assert Decimal(summary["equity"]["latest"]) == db["equity"] and summary["equity"]["day"] == db["day"]
    assert summary["trade_count"] == len(db["fills"])
    assert summary["open_order_count"] == len(db["open_orders"])
    assert summary["benchmark"]["curve"][0][1] == pytest.approx(summary["equity"]["curve"][0][1])

    request = urllib.request.Request(f"{address(server)}/", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 405
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"{address(server)}/admin", timeout=30)
    assert missing.value.code == 404
    # The server's own connection cannot write either: the database opened read-only.
    with pytest.raises(sa.exc.OperationalError, match="readonly"), server.tradelog.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM equity"))
    assert database_view(url, run_id) == db



def test_the_dashboard_reads_postgresql_in_read_only_transactions(pg_database_url, tmp_path) -> None:
    run_id = fill_by_replay(pg_database_url, tmp_path / "out")
    try:
        db = database_view(pg_database_url, run_id)
        for srv in serve(pg_database_url):
            summary = summary_of(srv)
            assert Decimal(summary["equity"]["latest"]) == db["equity"]
            assert summary["trade_count"] == len(db["fills"])
            assert {o["client_order_id"] for o in summary["open_orders"]} == db["open_orders"]
            with pytest.raises(sa.exc.InternalError, match="read-only transaction"), \
                    srv.tradelog.engine.begin() as conn:
                conn.execute(sa.text("DELETE FROM equity"))
    finally:
        reset_pg(pg_database_url)


def test_the_dashboard_benchmark_reads_the_runs_own_data_source(tmp_path) -> None:
    """Like `bot report`, the dashboard must not depend on the directory it runs from."""
    from bot.dashboard.snapshot import MarketCache, collect
    from bot.store.benchmark import RunMarket
    from bot.store.tradelog import TradeLog
    from bot.types import EquityPoint

    log = TradeLog.open(f"sqlite:///{tmp_path / 'd.sqlite'}")
    log.start_run(mode="backtest", strategy="s", config_hash="-", config={}, code_version="-",
                  data_source="csv:/data/the/run/read", synthetic=False,
                  started_at=dt.datetime(2024, 1, 2, tzinfo=dt.UTC))
    log.equity(EquityPoint(dt.date(2024, 1, 2), 100.0, 100.0, 0.0, 0.0, None))
    log.flush()
    asked = []

    def load(config, synthetic, data_source):
        asked.append(data_source)
        return RunMarket(None, None, None, None, "test: no market")

    collect(log, log.run_id, MarketCache(load))
    assert asked == ["csv:/data/the/run/read"]
    log.close()


def test_a_flat_book_shows_its_snapshot_day_all_in_cash(tmp_path, capsys) -> None:
    """The last snapshot sold everything (every quantity 0): its rows were dropped before
    its day was read, so the dashboard said "no snapshot" and `bot positions` "no rows
    match" for a snapshot that exists."""
    from bot.cli import main
    from bot.store.tradelog import TradeLog
    from bot.types import EquityPoint

    url = f"sqlite:///{tmp_path / 'flat.sqlite'}"
    log = TradeLog.open(url)
    log.start_run(mode="paper", strategy="s", config_hash="-", config={}, code_version="-",
                  data_source="-", synthetic=False, started_at=dt.datetime(2024, 1, 2, tzinfo=dt.UTC))
    held, flat = dt.date(2024, 1, 2), dt.date(2024, 1, 3)
    log.equity(EquityPoint(held, 100.0, 40.0, 60.0, 0.0, None))
    log.positions(held, {"SPY": (1.0, 60.0), "TLT": (0.0, 90.0)})
    log.equity(EquityPoint(flat, 101.0, 101.0, 0.0, 0.0, None))
    log.positions(flat, {"SPY": (0.0, 61.0), "TLT": (0.0, 91.0)})
    log.close()

    weights = snapshot_without_market(url, None)["weights"]
    assert weights["as_of"] == flat.isoformat()
    assert {r["symbol"]: r["current"] for r in weights["rows"]} == {"SPY": 0.0, "TLT": 0.0, "CASH": 1.0}

    capsys.readouterr()
    assert main(["positions", "--database", url, "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["day"], r["symbol"], r["quantity"]) for r in rows] == [
        ("2024-01-03", "SPY", "0"), ("2024-01-03", "TLT", "0")
    ]
    assert main(["positions", "--database", url]) == 0
    assert "the book is flat on 2024-01-03" in capsys.readouterr().out


def test_one_sold_out_asset_does_not_read_as_a_flat_book(tmp_path, capsys) -> None:
    """`bot positions --symbol TLT` shows TLT's zero row of the last snapshot; the book
    still holds SPY, so it says TLT is not held rather than that the book is flat."""
    from bot.cli import main
    from bot.store.tradelog import TradeLog
    from bot.types import EquityPoint

    url = f"sqlite:///{tmp_path / 'one.sqlite'}"
    log = TradeLog.open(url)
    log.start_run(mode="paper", strategy="s", config_hash="-", config={}, code_version="-",
                  data_source="-", synthetic=False, started_at=dt.datetime(2024, 1, 2, tzinfo=dt.UTC))
    day = dt.date(2024, 1, 3)
    log.equity(EquityPoint(day, 100.0, 40.0, 60.0, 0.0, None))
    log.positions(day, {"SPY": (1.0, 60.0), "TLT": (0.0, 90.0)})
    log.close()
    capsys.readouterr()
    assert main(["positions", "--database", url, "--symbol", "TLT"]) == 0
    out = capsys.readouterr().out
    assert "TLT is not held on 2024-01-03" in out and "flat" not in out


def test_spy_is_not_carried_flat_past_the_end_of_its_data() -> None:
    """SPY data ending on 2024-12-31 under a run that went on to 2025-01-08: its curve
    stayed flat for those days, and "SPY same dates" was not the same dates."""
    import pandas as pd

    from bot.dashboard.snapshot import _benchmark
    from bot.store.benchmark import RunMarket

    days = pd.to_datetime(["2024-12-30", "2024-12-31", "2025-01-02", "2025-01-03"])
    curve = pd.Series([100.0, 101.0, 102.0, 103.0], index=days)
    spy = pd.Series([500.0, 505.0], index=days[:2])
    answer = _benchmark(RunMarket(spy, None, None, None, "real"), curve)
    assert [day for day, _ in answer["curve"]] == ["2024-12-30", "2024-12-31"]
    assert answer["total_return"] == pytest.approx(0.01)


@pytest.mark.parametrize(("holder", "beat_age", "process", "banner"), [
    ("dead", dt.timedelta(minutes=1), "gone", "its process is gone"),
    ("elsewhere", dt.timedelta(hours=2), "gone", "its process is gone"),
    ("me", dt.timedelta(seconds=5), "alive", None),
    ("me", dt.timedelta(hours=2), "alive", "its process has stopped sending heartbeats"),
])
def test_a_running_run_whose_process_is_gone_says_so(tmp_path, holder, beat_age, process, banner) -> None:
    """A run killed with kill -9 showed "status running" and a ticking "updated" stamp while
    `bot runs` said `running | gone`: /api/summary's run now has the same process state and
    last heartbeat, and the page a banner over a dead or silent run."""
    from bot.dashboard.page import render_live
    from bot.store.holder import this_process
    from bot.store.tradelog import TradeLog
    from bot.types import EquityPoint
    from tests.test_journey_cli import dead_holder, set_holder

    url = f"sqlite:///{tmp_path / 'killed.sqlite'}"
    log = TradeLog.open(url)
    run_id = log.start_run(mode="paper", strategy="s", config_hash="-", config={}, code_version="-",
                           data_source="-", synthetic=False,
                           started_at=dt.datetime(2024, 1, 2, tzinfo=dt.UTC))
    log.equity(EquityPoint(dt.date(2024, 1, 2), 100.0, 100.0, 0.0, 0.0, None))
    log.close()  # never finished: what a killed process leaves
    beat = dt.datetime.now(dt.UTC) - beat_age
    name = {"dead": dead_holder(), "me": this_process(),
            "elsewhere": "another-host@1:4242:99"}[holder]
    set_holder(url, run_id, name, beat)

    data = snapshot_without_market(url, None)
    run = data["run"]
    assert (run["status"], run["process"]) == ("running", process)
    assert run["heartbeat_at"] == beat.isoformat()
    dom = Dom()
    dom.feed(render_live(data))
    if banner is None:
        assert "process-banner" not in dom.by_id
    else:
        assert banner in dom.text["process-banner"]
        assert f"last heartbeat {beat:%Y-%m-%d %H:%M} UTC" in dom.text["process-banner"]


def resumed_below_its_peak(url: str) -> int:
    """Two runs of one strategy: the first reaches 120, the second resumes at 110 and ends
    at 114. The engine records the drawdown from the strategy's all-time peak (its state's
    equity_peak, carried between sessions), so 8.33%, 12.5%, 5% under 120; measured
    from the second run's own highest equity it is 0, -4.55%, 0."""
    from bot.store.tradelog import TradeLog
    from bot.types import EquityPoint

    first = [(2, 100.0, 0.0), (3, 120.0, 0.0)]  # (day, equity, stored drawdown depth)
    second = [(4, 110.0, 1 - 110 / 120), (5, 105.0, 1 - 105 / 120), (8, 114.0, 1 - 114 / 120)]
    log = TradeLog.open(url)
    for points in (first, second):
        run_id = log.start_run(mode="paper", strategy="s", config_hash="-", config={},
                               code_version="-", data_source="-", synthetic=False,
                               started_at=dt.datetime(2024, 1, points[0][0], tzinfo=dt.UTC))
        for day, value, depth in points:
            log.equity(EquityPoint(dt.date(2024, 1, day), value, value, 0.0, depth, None))
        log.finish_run("finished", dt.datetime(2024, 1, points[-1][0], 22, tzinfo=dt.UTC))
    log.close()
    return run_id


def test_a_resumed_run_shows_the_drawdown_its_risk_guard_acts_on(tmp_path) -> None:
    """After a restart `bot equity --run 2` showed -14.59% and the dashboard -5.07%: the
    page recomputed the drawdown from the run's own curve without a word. It now shows
    the stored one, from the strategy's all-time peak, labelled, next to the run's."""
    from bot.dashboard.page import render_live

    url = f"sqlite:///{tmp_path / 'resumed.sqlite'}"
    run_id = resumed_below_its_peak(url)
    data = snapshot_without_market(url, run_id)
    eq = data["equity"]
    assert eq["drawdown"] == 0.0 and eq["max_drawdown"] == pytest.approx(105 / 110 - 1)
    assert eq["drawdown_all_time"] == pytest.approx(-0.05)
    assert eq["max_drawdown_all_time"] == pytest.approx(-0.125)
    dom = Dom()
    dom.feed(render_live(data))
    assert float(dom.by_id["drawdown-all-time"]["data-value"]) == pytest.approx(-0.05)
    assert dom.text["drawdown-all-time"] == "-5.00%"
    assert "-5.00% now, -12.50% at worst" in dom.text["drawdown-note"]
    page = render_live(data)
    assert "drawdown (risk guard, all-time peak)" in page and "drawdown (this run)" in page
    assert 'data-series="from all-time peak"' in page  # the chart draws both


def test_spy_starting_after_the_run_says_so() -> None:
    """SPY data beginning after the run's first day: "SPY same dates" covered a shorter
    span with no note (only a late end was noted)."""
    import pandas as pd

    from bot.dashboard.snapshot import _benchmark
    from bot.store.benchmark import RunMarket, covering

    days = pd.to_datetime(["2024-12-30", "2024-12-31", "2025-01-02", "2025-01-03"])
    curve = pd.Series([100.0, 101.0, 102.0, 103.0], index=days)
    spy = pd.Series([500.0, 505.0], index=days[2:])
    answer = _benchmark(RunMarket(spy, None, None, None, "real"), curve)
    assert answer["note"] == "SPY data starts on 2025-01-02, after the run's first day (2024-12-30)"
    assert [day for day, _ in answer["curve"]] == ["2025-01-02", "2025-01-03"]
    both = covering(pd.Series([500.0], index=days[1:2]), days)[1]
    assert both == ("SPY data starts on 2024-12-31, after the run's first day (2024-12-30); "
                    "SPY data ends on 2024-12-31, before the run's last day")
    assert covering(pd.Series(1.0, index=days), days)[1] is None
