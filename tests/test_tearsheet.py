"""The tearsheet: its tables on hand-made curves, and the page itself, rendered offline by
headless Chromium with every chart drawn."""

from __future__ import annotations

import math
import re
import subprocess

import numpy as np
import pandas as pd
import pytest

from bot.metrics import performance
from bot.report import RunSeries, build_report
from bot.tearsheet import analytics
from bot.tearsheet.page import equity_figure, log_ticks, render, write_tearsheet
from tests.test_dashboard import BROWSER_FLAGS, require_chromium


def curve(values, start="2021-01-04") -> pd.Series:
    return pd.Series(values, index=pd.bdate_range(start, periods=len(values)), dtype=float)


def test_monthly_and_yearly_returns_compound_from_the_previous_close() -> None:
    days = pd.DatetimeIndex(["2021-01-04", "2021-01-29", "2021-02-01", "2021-02-26", "2021-03-31",
                             "2022-01-03", "2022-01-31"])
    eq = pd.Series([100.0, 110.0, 99.0, 121.0, 121.0, 133.1, 100.0], index=days)
    table = analytics.monthly_returns(eq)
    assert table.loc[2021, "Jan"] == pytest.approx(0.10)  # from the curve's first close
    assert table.loc[2021, "Feb"] == pytest.approx(0.10)  # 110 -> 121, the dip inside ignored
    assert table.loc[2021, "Mar"] == 0.0
    assert math.isnan(table.loc[2021, "Apr"]) and math.isnan(table.loc[2022, "Feb"])
    assert table.loc[2022, "Jan"] == pytest.approx(100.0 / 121.0 - 1.0)
    years = analytics.yearly_returns(eq)
    assert years[2021] == pytest.approx(0.21) and years[2022] == pytest.approx(100 / 121 - 1)
    assert (1 + years).prod() == pytest.approx(eq.iloc[-1] / eq.iloc[0])


def test_drawdown_periods_deepest_first_with_their_dates() -> None:
    eq = curve([100, 90, 85, 100, 105, 100, 84, 95, 105.1, 110, 99])
    deep, first, still_open = analytics.drawdown_periods(eq)
    days = [d.date().isoformat() for d in eq.index]
    assert deep == {"peak": days[4], "trough": days[6], "recovery": days[8],
                    "depth": pytest.approx(-0.2), "days_down": 2, "days_to_recover": 2}
    assert first == {"peak": days[0], "trough": days[2], "recovery": days[3],
                     "depth": pytest.approx(-0.15), "days_down": 2, "days_to_recover": 1}
    assert still_open == {"peak": days[9], "trough": days[10], "recovery": None,
                          "depth": pytest.approx(-0.1), "days_down": 1, "days_to_recover": None}
    assert analytics.drawdown_periods(eq, top=1) == [deep]
    assert analytics.drawdown_periods(curve([1, 2, 3])) == []
    # The deepest one is the run's max drawdown, as bot.metrics reports it.
    assert deep["depth"] == pytest.approx(performance(eq)["max_drawdown"])


def test_rolling_sharpe_and_volatility_match_the_whole_run_formula_on_each_window() -> None:
    rng = np.random.default_rng(4)
    eq = curve(100 * np.cumprod(1 + rng.normal(0.0005, 0.01, 300)))
    rf = pd.Series([2.0, 4.0], index=pd.DatetimeIndex(["2020-12-01", "2021-06-01"]))
    sharpe = analytics.rolling_sharpe(eq, 60, rf)
    vol = analytics.rolling_volatility(eq, 60)
    assert len(sharpe) == len(vol) == 299 - 59  # 299 daily returns, full windows only
    for k in (0, 80, 239):  # the k-th value covers the 60 returns of closes k..k+60
        whole = performance(eq.iloc[k: k + 61], risk_free=rf)
        assert sharpe.index[k] == eq.index[k + 60]
        assert sharpe.iloc[k] == pytest.approx(whole["sharpe"], rel=1e-9)
        assert vol.iloc[k] == pytest.approx(whole["annual_volatility"], rel=1e-9)


def test_a_benchmark_that_would_squash_the_strategy_gets_its_own_panel() -> None:
    strategy = curve(np.linspace(100, 700, 200))  # 7x
    others = {"SPY": curve(np.linspace(100, 600, 200)), "fixed": curve(np.geomspace(100, 2000, 200)),
              "TQQQ": curve(np.geomspace(100, 16000, 200))}
    assert analytics.off_scale(strategy, others) == ["TQQQ"]
    assert analytics.off_scale(curve([100, 101, 100]), {"x": curve([100, 150, 190])}) == []
    assert log_ticks(0.8, 168) == [1, 2, 5, 10, 20, 50, 100]
    assert log_ticks(0.95, 1.02) == [1]


def test_a_benchmark_whose_data_ends_early_stops_where_its_data_does() -> None:
    """Before: its last close was repeated to the strategy's last day, a flat line and
    zero returns (rolling volatility, yearly bars, the distribution) it never had."""
    strategy = RunSeries("strategy", curve(np.linspace(100, 120, 30)))
    spy = RunSeries("SPY buy-and-hold", curve(np.linspace(100, 110, 20)))
    fig, _ = equity_figure(strategy, [spy])
    (line,) = [t for t in fig.data if t.name == "SPY buy-and-hold"]
    assert len(line.x) == 20 and pd.Timestamp(line.x[-1]) == spy.equity.index[-1]


def _series(seed: int = 1, days: int = 800) -> tuple[RunSeries, list[RunSeries]]:
    rng = np.random.default_rng(seed)
    index = pd.bdate_range("2019-01-02", periods=days)
    strat = pd.Series(1e5 * np.cumprod(1 + rng.normal(0.0015, 0.012, days)), index=index)
    spy = pd.Series(300 * np.cumprod(1 + rng.normal(0.0004, 0.011, days)), index=index)
    tqqq = pd.Series(20 * np.cumprod(1 + rng.normal(0.004, 0.03, days)), index=index)
    regimes = pd.Series(["GROWTH"] * 300 + ["TRANSITION"] * 40 + ["UNCERTAINTY"] * 30 + ["GROWTH"] * 430,
                        index=index)
    return (RunSeries("strategy", strat, regimes=regimes),
            [RunSeries("SPY buy-and-hold", spy), RunSeries("TQQQ only", tqqq)])


def test_the_strategy_is_drawn_last_and_thickest_and_tqqq_apart() -> None:
    strategy, benchmarks = _series()
    fig, off = equity_figure(strategy, benchmarks)
    assert off == ["TQQQ only"]
    main = [t for t in fig.data if t.type == "scatter" and t.yaxis == "y" and t.x[0] is not None]
    assert [t.name for t in main] == ["SPY buy-and-hold", "strategy"]  # strategy on top
    assert main[-1].line.width > main[0].line.width
    apart = [t.name for t in fig.data if t.yaxis == "y3"]
    assert apart == ["TQQQ only", "strategy"]
    (strip,) = [t for t in fig.data if t.type == "heatmap"]
    assert list(strip.text[0][299:301]) == ["GROWTH", "TRANSITION"] and len(strip.x) == 800
    assert fig.layout.yaxis.type == "log" and list(fig.layout.yaxis.tickvals)[:2] == [1.0, 2.0]


def test_the_page_is_self_contained_and_every_chart_renders_offline(tmp_path) -> None:
    strategy, benchmarks = _series()
    report = build_report(strategy, benchmarks, risk_free=None, market=benchmarks[0].equity,
                          periods=[("2020", "2020-01-01", "2020-12-31")],
                          data_label="SYNTHETIC test", meta={"run_id": 7})
    (path,) = write_tearsheet(report, strategy, benchmarks, tmp_path)
    html = path.read_text()
    assert not re.search(r"<(script|img|iframe)[^>]+src=|<link\b|@import", html, re.I)
    assert "SYNTHETIC DATA" in html and "run 7" in html
    for row in report["summary"]:  # the report's own numbers, formatted as in the terminal
        assert f"<td>{row['total_return'] * 100:.2f}</td>" in html
    assert html.count('class="plotly-graph-div"') == 6

    browser = require_chromium()
    offline = "--host-resolver-rules=MAP * ~NOTFOUND"  # any request for the network fails
    proc = subprocess.run(
        [str(browser), *BROWSER_FLAGS, offline, f"--user-data-dir={tmp_path / 'p'}",
         "--dump-dom", path.as_uri()], capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count('class="main-svg"') >= 12  # plotly drew every chart (2 layers each)
    assert proc.stdout.count('class="plot-container plotly"') == 6


def test_a_run_of_three_days_still_renders(tmp_path) -> None:
    strategy = RunSeries("s", curve([100.0, 99.0, 98.0]))
    report = build_report(strategy, [], risk_free=None, market=None, periods=[], data_label="x", meta={})
    html = render(report, strategy, [])
    assert "never below a previous peak" not in html and html.count('class="plotly-graph-div"') == 6


def test_a_run_that_lost_everything_renders_on_a_linear_axis(tmp_path) -> None:
    """Before: a curve reaching 0 sent log_ticks into an endless loop (10 ** -inf is 0,
    and 0 * 10 never passes the top), so `bot report` hung without writing the page."""
    strategy = RunSeries("s", curve([100.0, 60.0, 20.0, 0.0, 0.0]))
    spy = RunSeries("SPY buy-and-hold", curve([100.0, 101.0, 102.0, 103.0, 104.0]))
    report = build_report(strategy, [spy], risk_free=None, market=None, periods=[], data_label="x",
                          meta={})
    html = render(report, strategy, [spy])
    assert html.count('class="plotly-graph-div"') == 6
    fig, _ = equity_figure(strategy, [spy])
    assert fig.layout.yaxis.type != "log" and fig.layout.yaxis.title.text == "growth of 1"
    with pytest.raises(ValueError, match="0 < low"):
        log_ticks(0.0, 1.0)
