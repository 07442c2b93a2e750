"""The dashboard beyond its numbers: round axis ticks, a phone-sized screen, in-place
updates, the run selector and --host."""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import urllib.request

import pytest

from bot.dashboard.server import make_server
from bot.dashboard.svg import MAX_POINTS, Line, date_ticks, line_chart, nice_ticks
from bot.errors import BotError
from tests.conftest import CONFIG
from tests.test_dashboard import Dom, chromium, replayed  # noqa: F401 - the fixture

CHART_WIDTH_TICKS = 9  # what a 1100-px chart asks for


def test_value_ticks_are_round_numbers() -> None:
    assert nice_ticks(91_234.0, 131_873.0) == [100_000, 110_000, 120_000, 130_000]
    assert nice_ticks(-0.2791, 0.0) == [-0.25, -0.2, -0.15, -0.1, -0.05, 0.0]
    assert nice_ticks(0.5, 0.9) == [0.5, 0.6, 0.7, 0.8, 0.9]
    for low, high in ((3.3, 97.1), (98_000.0, 118_576.0), (-0.33, -0.01), (0.9, 7.4)):
        ticks = nice_ticks(low, high)
        assert 3 <= len(ticks) <= 7 and all(low <= t <= high for t in ticks)
        step = ticks[1] - ticks[0]
        mantissa = step / 10 ** __import__("math").floor(__import__("math").log10(step))
        assert round(mantissa, 9) in (1.0, 2.0, 2.5, 5.0)
        assert all(t / step == pytest.approx(round(t / step)) for t in ticks)  # multiples


def test_date_ticks_fall_on_month_and_year_boundaries() -> None:
    years = date_ticks(dt.date(2010, 3, 1), dt.date(2024, 12, 31), CHART_WIDTH_TICKS)
    assert [label for _, label in years] == ["2012", "2014", "2016", "2018", "2020", "2022", "2024"]
    assert all(day.month == 1 and day.day == 1 for day, _ in years)
    months = date_ticks(dt.date(2024, 1, 2), dt.date(2024, 12, 31), 6)
    assert [label for _, label in months] == ["Mar 2024", "May 2024", "Jul 2024", "Sep 2024", "Nov 2024"]
    mixed = date_ticks(dt.date(2023, 1, 3), dt.date(2024, 12, 31), 6)
    assert [label for _, label in mixed] == ["Jul 2023", "2024", "Jul 2024"]
    weeks = date_ticks(dt.date(2024, 1, 2), dt.date(2024, 1, 19), 6)
    assert [d.weekday() for d, _ in weeks] == [0, 0]


def test_a_long_drawdown_chart_draws_its_deepest_day() -> None:
    """A 3,736-day run whose trough (-33.79%, day 1363) fell between the points every
    4th-point thinning kept: the chart bottomed at -32.85% while the card said -33.79%."""
    first = dt.date(2010, 1, 4)
    values = [-0.30 - 0.0285 * (i % 2) for i in range(3736)]  # -30.00% / -32.85% ...
    trough = 1363
    assert trough % -(-len(values) // MAX_POINTS) != 0  # the old stride skipped it
    values[trough] = -0.3379
    points = [((first + dt.timedelta(days=i)).isoformat(), v) for i, v in enumerate(values)]
    svg = line_chart("dd", [Line("strategy", points, "#b3261e")], title="Drawdown",
                     y_format=str, width=1100, height=220)
    coords = re.search(r'<polyline points="([^"]+)"', svg).group(1).split()
    drawn = [(float(x), float(y)) for x, y in (c.split(",") for c in coords)]
    left, plot_w = 80, 1100 - 80 - 16
    trough_x = round(left + plot_w * trough / (len(values) - 1), 1)
    lowest = max(drawn, key=lambda p: p[1])  # SVG y grows downwards
    assert lowest[0] == trough_x
    assert len(drawn) <= MAX_POINTS + 2


def _serve(url: str, host: str = "127.0.0.1"):
    srv = make_server(url, port=0, run=None, refresh=2, config_path=CONFIG, host=host)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    return srv, thread


def _get(srv, path: str) -> str:
    host, port = srv.server_address[:2]
    with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=30) as response:
        return response.read().decode()


def test_runs_selector_fragment_and_host(replayed, tmp_path) -> None:  # noqa: F811
    url, run_id = replayed
    srv, thread = _serve(url, host="127.0.0.2")  # any loopback address: --host is used
    try:
        assert srv.server_address[0] == "127.0.0.2" and srv.host == "127.0.0.2"
        runs = json.loads(_get(srv, "/api/runs"))
        assert [r["id"] for r in runs][0] == run_id and {"mode", "status", "strategy"} <= set(runs[0])
        page = _get(srv, "/")
        dom = Dom()
        dom.feed(page)
        assert "run-select" in dom.by_id and f'<option value="{run_id}">' in page
        from bot.dashboard.page import _run_selector

        listed = _run_selector([{"id": 7, "mode": "replay", "strategy": "s", "status": "finished",
                                 "started_at": "2026-01-02", "synthetic": True}], 7, True)
        assert "run 7 · replay · s · finished · 2026-01-02 · SYNTHETIC" in listed
        assert '<script src="/dashboard.js"></script>' in page and "http-equiv=\"refresh\"" in page
        assert "fetch(\"/fragment\"" in _get(srv, "/dashboard.js")
        fragment = _get(srv, f"/fragment?run={run_id}")
        assert fragment.startswith(f'<div id="run-head" data-run-id="{run_id}">') and "<html" not in fragment
        assert 'id="latest-equity"' in fragment
        chosen = _get(srv, f"/?run={run_id}")
        assert f'<option value="{run_id}" selected>' in chosen
        summary = json.loads(_get(srv, f"/api/summary?run={run_id}"))
        assert summary["run"]["id"] == run_id
        with pytest.raises(urllib.error.HTTPError) as bad:
            _get(srv, "/api/summary?run=x")
        assert bad.value.code == 400  # the request's fault: the server is not down
        with pytest.raises(urllib.error.HTTPError) as missing:
            _get(srv, "/api/summary?run=99")
        assert missing.value.code == 404
    finally:
        srv.shutdown()
        srv.server_close()
        srv.tradelog.engine.dispose()
        thread.join()
    with pytest.raises(BotError, match="no such address"):
        make_server(url, port=0, run=None, refresh=2, config_path=CONFIG, host="192.0.2.1")


def two_runs(path) -> str:
    """A trade log with two runs that recorded equity; the second is the latest."""
    from bot.store.tradelog import TradeLog
    from bot.types import EquityPoint

    url = f"sqlite:///{path}"
    log = TradeLog.open(url)
    for day in (dt.date(2024, 1, 2), dt.date(2024, 1, 3)):
        log.start_run(mode="paper", strategy="s", config_hash="-", config={}, code_version="-",
                      data_source="-", synthetic=False,
                      started_at=dt.datetime.combine(day, dt.time(), dt.UTC))
        log.equity(EquityPoint(day, 100.0, 100.0, 0.0, 0.0, None))
        log.finish_run("finished", dt.datetime.combine(day, dt.time(23), dt.UTC))
    log.close()
    return url


def _serve_pinned(url: str, run: int):
    """`bot dashboard --run RUN`, without a market (these runs have no prices)."""
    from bot.dashboard.server import DashboardServer
    from bot.dashboard.snapshot import MarketCache
    from bot.store.benchmark import RunMarket
    from bot.store.tradelog import TradeLog

    markets = MarketCache(lambda *_: RunMarket(None, None, None, None, "test: no market"))
    srv = DashboardServer(0, TradeLog.open_readonly(url), run, 2, markets)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    return srv, thread


def test_latest_follows_the_newest_run_under_run_and_the_footer_keeps_the_run(tmp_path) -> None:
    """Under `--run 1`, "latest run (follow new runs)" (?run=latest) showed run 1, and the
    footer's /api/summary link (no ?run=) the server's run whatever the page showed."""
    srv, thread = _serve_pinned(two_runs(tmp_path / "two.sqlite"), run=1)
    try:
        assert json.loads(_get(srv, "/api/summary"))["run"]["id"] == 1  # --run: the default
        assert json.loads(_get(srv, "/api/summary?run=latest"))["run"]["id"] == 2
        assert 'data-run-id="2"' in _get(srv, "/fragment?run=latest")
        followed = _get(srv, "/?run=latest")
        assert '<option value="latest" selected>' in followed and 'data-run-id="2"' in followed
        assert 'href="/api/summary?run=latest"' in followed
        assert 'href="/api/runs?run=latest"' in followed
        pinned = _get(srv, "/")
        assert '<option value="1" selected>' in pinned and 'href="/api/summary?run=1"' in pinned
        # The page's script keeps following: its in-place update asks for ?run=latest.
        host, port = srv.server_address[:2]
        proc = chromium("--dump-dom", f"http://{host}:{port}/?run=latest", tmp=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert re.search(r'id="updated">updated ', proc.stdout), proc.stdout[-3000:]
        assert 'id="run-head" data-run-id="2"' in proc.stdout
    finally:
        srv.shutdown()
        srv.server_close()
        srv.tradelog.engine.dispose()
        thread.join()


def test_the_page_fits_a_phone_and_updates_in_place(replayed, tmp_path) -> None:  # noqa: F811
    url, _ = replayed
    srv, thread = _serve(url)
    try:
        host, port = srv.server_address[:2]
        proc = chromium("--window-size=390,900", "--dump-dom", f"http://{host}:{port}/", tmp=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        page = int(re.search(r'data-scroll-width="(\d+)"', proc.stdout).group(1))
        window = int(re.search(r'data-window-width="(\d+)"', proc.stdout).group(1))
        # Headless Chromium lays a --dump-dom page out at least 500 px wide; the phone
        # layout (below 700 px) is what is measured, and nothing may stick out of it.
        assert window <= 500 and page <= window
        # The script replaced the live part in place (its stamp is set only after a swap),
        # within the 2 s refresh and the browser's virtual time budget.
        assert re.search(r'id="updated">updated ', proc.stdout), proc.stdout[-3000:]
        assert proc.stdout.count('id="latest-equity"') == 1
    finally:
        srv.shutdown()
        srv.server_close()
        srv.tradelog.engine.dispose()
        thread.join()
