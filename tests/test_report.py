"""Report assembly, its JSON file, terminal tables, markdown and charts."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from bot.report import (
    RunSeries,
    build_report,
    render_table,
    report_to_markdown,
    write_charts,
    write_json,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LABEL = "SYNTHETIC market (seed 7)"
DATES = pd.bdate_range("2024-01-01", periods=6)  # Mon Jan 1 .. Mon Jan 8


def strategy_run() -> RunSeries:
    equity = pd.Series([100.0, 110.0, 99.0, 108.9, 108.9, 119.79], index=DATES)
    fills = pd.DataFrame(
        {
            "filled_at": pd.to_datetime(["2024-01-02 14:30", "2024-01-05 14:30"]),
            "symbol": ["TQQQ", "TQQQ"],
            "side": ["buy", "sell"],
            "quantity": [1.0, 1.0],
            "price": [50.0, 55.0],
            "commission": [0.0, 0.0],
            "slippage_cost": [0.01, 0.01],
        }
    )
    weights = pd.DataFrame(
        {"TQQQ": [0.0, 0.6, 0.6, 0.7, 0.7, 0.0], "CASH": [1.0, 0.4, 0.4, 0.3, 0.3, 1.0]},
        index=DATES,
    )
    regimes = pd.Series(
        ["GROWTH", "GROWTH", "UNCERTAINTY", "TRANSITION", "GROWTH", "GROWTH"], index=DATES
    )
    return RunSeries("strategy", equity, fills=fills, weights=weights, regimes=regimes)


def benchmark_run() -> RunSeries:
    # Starts a week earlier and ends later than the strategy; lacks Jan 3.
    dates = pd.bdate_range("2023-12-25", "2024-01-12").drop(pd.Timestamp("2024-01-03"))
    return RunSeries("SPY", pd.Series(np.linspace(100.0, 120.0, len(dates)), index=dates))


PERIODS = [("first week", "2024-01-01", "2024-01-05"), ("2019", "2019-01-01", "2019-12-31")]


def make_report() -> dict:
    return build_report(
        strategy_run(),
        [benchmark_run()],
        risk_free=pd.Series([5.0], index=pd.to_datetime(["2023-12-01"])),
        market=benchmark_run().equity,
        periods=PERIODS,
        data_label=LABEL,
        meta={"config": "default.toml", "seed": 7},
    )


def test_build_report_structure():
    report = make_report()
    assert set(report) == {"meta", "summary", "periods", "regimes", "implementation_cost"}
    assert report["meta"]["data_label"] == LABEL
    assert report["meta"]["seed"] == 7
    assert report["meta"]["generated_at"].endswith("+00:00")
    assert [row["name"] for row in report["summary"]] == ["strategy", "SPY"]
    assert set(report["periods"]) == {"strategy", "SPY"}
    # 2019 lies outside the run: left out, not printed as an empty row.
    assert [row["name"] for row in report["periods"]["strategy"]] == ["first week"]
    assert [row["name"] for row in report["periods"]["SPY"]] == ["first week"]
    # Strategy returns +10 %, -10 %, +10 %, 0 %, +10 % carry labels G, G, U, T, G.
    regimes = {row["regime"]: row["days"] for row in report["regimes"]}
    assert regimes == {"GROWTH": 3, "UNCERTAINTY": 1, "TRANSITION": 1}


def test_benchmark_is_cut_to_strategy_dates():
    strategy_row, spy_row = make_report()["summary"]
    assert (spy_row["start"], spy_row["end"], spy_row["days"]) == ("2024-01-01", "2024-01-08", 6)
    assert (strategy_row["start"], strategy_row["end"]) == ("2024-01-01", "2024-01-08")
    # SPY is linear from 100 on Dec 25 by 20/13 per business day (14 dates, Jan 3 dropped).
    # Jan 1 is its 6th point and Jan 8 its 10th: (100 + 9 x s) / (100 + 5 x s) - 1.
    s = 20.0 / 13.0
    assert spy_row["total_return"] == pytest.approx((100 + 9 * s) / (100 + 5 * s) - 1)
    # Strategy: 119.79 / 100 - 1; two fills, costs 0.02.
    assert strategy_row["total_return"] == pytest.approx(0.1979)
    assert (strategy_row["trades"], strategy_row["transaction_costs"]) == (2, pytest.approx(0.02))
    assert strategy_row["win_rate"] == 1.0


def test_a_benchmark_whose_data_ends_early_is_not_carried_on_flat():
    """`bot report` on a run longer than its data (a paper run, SPY not yet fetched for
    its last days). Before: SPY's last close was repeated over those days, so its row
    ended on the run's last day and the strategy's beta took them as days the market did
    not move (beta 1.92 and alpha 147 % a year here, against 2 and 0)."""
    dates = pd.bdate_range("2024-01-01", periods=8)
    m = np.array([0.01, -0.02, 0.015, 0.005])  # SPY's returns while it has data
    spy = pd.Series(100 * np.cumprod(np.r_[1.0, 1 + m]), index=dates[:5])
    r = np.r_[2 * m, 0.03, -0.01, 0.02]  # the strategy: 2x SPY, then moves on its own
    strategy = RunSeries("strategy", pd.Series(100 * np.cumprod(np.r_[1.0, 1 + r]), index=dates))
    report = build_report(strategy, [RunSeries("SPY", spy)], risk_free=None, market=spy,
                          periods=[("all", "2024-01-01", "2024-12-31")], data_label="x", meta={})
    strategy_row, spy_row = report["summary"]
    assert (spy_row["end"], spy_row["days"]) == ("2024-01-05", 5)
    assert spy_row["total_return"] == pytest.approx(spy.iloc[-1] / 100 - 1)
    assert report["periods"]["SPY"][0]["end"] == "2024-01-05"
    # Regressed on the four days SPY has: exactly 2x, no alpha.
    assert strategy_row["beta"] == pytest.approx(2.0)
    assert strategy_row["alpha"] == pytest.approx(0.0, abs=1e-12)
    assert strategy_row["end"] == "2024-01-10"  # the strategy keeps all its days


def test_report_is_strict_json_and_round_trips(tmp_path):
    report = make_report()
    path = tmp_path / "out" / "report.json"
    write_json(report, path)
    assert json.loads(path.read_text()) == report
    json.dumps(report, allow_nan=False)


def test_render_table_shows_names_and_label():
    console = Console(record=True, width=200)
    render_table(make_report(), console=console)
    text = console.export_text()
    for needle in ("strategy", "SPY", LABEL, "SYNTHETIC DATA", "first week", "UNCERTAINTY"):
        assert needle in text, needle
    assert "19.79" in text  # strategy total return in percent


def test_render_table_shows_none_as_dash():
    report = make_report()
    report["summary"][1]["alpha"] = None
    console = Console(record=True, width=200)
    render_table(report, console=console)
    spy_line = next(line for line in console.export_text().splitlines() if "SPY" in line)
    assert " - " in spy_line


def test_markdown_summary_table():
    md = report_to_markdown(make_report())
    lines = md.strip().splitlines()
    assert LABEL in lines[0]
    header, rule, strategy, spy = lines[2:6]
    assert header.startswith("| series | total return % | CAGR %")
    assert rule.count("---") == 15
    assert strategy.startswith("| strategy | 19.79 |")
    assert spy.startswith("| SPY |")


def test_a_run_under_a_year_is_warned_that_its_annualised_figures_say_little():
    """Six days that gained 19.79% read as a CAGR of millions of percent: under a year
    the terminal and markdown summaries say so (the GIPS standards never annualise
    such periods); a run of a year or more gets no note."""
    note = "The run spans 6 trading days (2024-01-01 to 2024-01-08), less than a year"
    console = Console(record=True, width=300)
    render_table(make_report(), console=console)
    assert note in console.export_text()
    assert note in report_to_markdown(make_report())

    dates = pd.bdate_range("2023-01-03", "2023-12-29")  # a backtest of 2023: 360 days
    year = RunSeries("strategy", pd.Series(np.linspace(100.0, 110.0, len(dates)), index=dates))
    report = build_report(year, [], risk_free=None, market=None, periods=[], data_label=LABEL,
                          meta={})
    console = Console(record=True, width=300)
    render_table(report, console=console)
    assert "less than a year" not in console.export_text()
    assert "less than a year" not in report_to_markdown(report)


def test_write_charts_creates_pngs(tmp_path):
    paths = write_charts(strategy_run(), [benchmark_run()], tmp_path, data_label=LABEL)
    assert [p.name for p in paths] == ["equity.png", "drawdown.png", "weights.png"]
    for path in paths:
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000


def test_write_charts_without_weights_or_regimes(tmp_path):
    run = strategy_run()
    run.weights = None
    run.regimes = None
    paths = write_charts(run, [], tmp_path, data_label="bundled CSV")
    assert [p.name for p in paths] == ["equity.png", "drawdown.png"]


def test_charts_of_fifteen_years_with_many_regime_spans(tmp_path):
    dates = pd.bdate_range("2010-01-01", periods=15 * 252)
    rng = np.random.default_rng(0)
    equity = pd.Series(100 * np.cumprod(1 + rng.normal(0.0004, 0.02, len(dates))), index=dates)
    weekly = np.repeat(rng.choice(["GROWTH", "TRANSITION", "UNCERTAINTY"], len(dates) // 5 + 1), 5)
    regimes = pd.Series(weekly[: len(dates)], index=dates)
    weights = pd.DataFrame(
        rng.dirichlet(np.ones(4), len(dates)), index=dates, columns=["TQQQ", "UPRO", "TMF", "CASH"]
    )
    run = RunSeries("strategy", equity, weights=weights, regimes=regimes)
    bench = RunSeries("SPY", equity * 0.9)
    paths = write_charts(run, [bench], tmp_path, data_label=LABEL)
    assert [p.name for p in paths] == ["equity.png", "drawdown.png", "weights.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in paths)


def test_log_scale_labels_only_round_minor_ticks():
    """Over several decades every minor tick labelled made the axis unreadable (overlapping
    6,000,000 / 7,000,000 / ...): labels now sit at 1x, 2x and 5x a power of ten only."""
    from bot.report import _log_scale, _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [60_000, 20_000_000])
    _log_scale(ax)
    fig.canvas.draw()
    lo, hi = ax.get_ylim()
    labels = [
        (tick.get_loc(), tick.label1.get_text())
        for tick in ax.yaxis.get_major_ticks() + ax.yaxis.get_minor_ticks()
        if lo <= tick.get_loc() <= hi and tick.label1.get_text()
    ]
    plt.close(fig)
    assert {"100,000", "200,000", "500,000", "1,000,000", "5,000,000"} <= {t for _, t in labels}
    leading = {f"{loc:.0e}"[0] for loc, _ in labels}
    assert leading <= {"1", "2", "5"}, labels


def test_a_period_under_a_year_is_warned_too():
    """The summary's short-span warning looked at the run only: a period of a few days at
    the end of the data ("2025-present" once the data reaches January) showed a CAGR of
    53.96% from a 0.12% move without a word."""
    dates = pd.bdate_range("2022-01-03", "2024-01-10")
    run = RunSeries("strategy", pd.Series(np.linspace(100.0, 130.0, len(dates)), index=dates))
    periods = [("2022-2023", "2022-01-03", "2023-12-29"), ("2024-present", "2024-01-02", "present")]
    report = build_report(run, [], risk_free=None, market=None, periods=periods, data_label=LABEL, meta={})
    console = Console(record=True, width=300)
    render_table(report, console=console)
    text = console.export_text()
    assert "2024-present: under a year, so its CAGR" in text
    assert "2022-2023: under a year" not in text and "less than a year" not in text


def test_a_stored_report_names_its_drawdown_as_the_runs(tmp_path, capsys) -> None:
    """`bot report --run 2` of a run that resumed its strategy below an earlier run's peak:
    its max DD (-4.55%) is the run's own, while the stored drawdown the risk guard acts on
    (`bot equity`) reached -12.50%. The report said nothing of the larger one."""
    from tests.test_cli_errors import run_cli
    from tests.test_dashboard import resumed_below_its_peak

    url = f"sqlite:///{tmp_path / 'resumed.sqlite'}"
    run_id = resumed_below_its_peak(url)
    out = tmp_path / "r"
    code, printed, err = run_cli(capsys, "report", "--database", url, "--run", str(run_id),
                                 "--out", str(out), "--no-charts")
    assert code == 0, err
    expected = ("max DD and the drawdown chart are this run's, from the highest equity it "
                "recorded (-4.55% at worst); the trade log's drawdown (`bot equity`) is from the "
                "strategy's all-time peak, earlier runs included, the one its drawdown defence "
                "measures from: -5.00% on the last day, -12.50% at worst.")
    assert expected in " ".join(printed.split())
    report = json.loads((out / "report.json").read_text())
    assert expected in report["meta"]["notes"]
    assert report["summary"][0]["max_drawdown"] == pytest.approx(105 / 110 - 1)  # still the run's
