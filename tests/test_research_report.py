"""Report figures the research gives: its three periods (without overlap, left out when a
run does not reach them), a plain fixed-weight comparison, and the implementation cost
beside the research's claim of < 0.10% a year."""

import json

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from bot.backtest import run_backtest, scratch_tradelog
from bot.config import RESEARCH_PERIODS, BacktestSettings, parse_settings
from bot.metrics import performance
from bot.reference import reference_settings
from bot.report import RunSeries, build_report, render_table


def test_default_periods_are_the_research_regimes_back_to_back():
    periods = BacktestSettings().periods
    assert [name for name, _, _ in periods] == [
        "Pre-pandemic growth 2017-2021",
        "Post-pandemic recovery 2021-2025",
        "Current environment 2025-present",
    ]
    assert periods == RESEARCH_PERIODS
    # Each period starts the day after the previous one ends: no day is counted twice.
    for (_, _, end), (_, start, _) in zip(periods[:-1], periods[1:], strict=True):
        assert pd.Timestamp(end) + pd.Timedelta(days=1) == pd.Timestamp(start)
    assert periods[-1][2] == "present"


def test_a_period_end_must_be_a_date_or_present(settings):
    from bot.errors import ConfigError

    raw = settings.model_dump(mode="json")
    raw["backtest"]["periods"] = [["ok", "2020-01-01", "present"], ["bad", "2020-01-01", "later"]]
    with pytest.raises(ConfigError, match=r'backtest.periods.1.2: expected a date YYYY-MM-DD or "present"'):
        parse_settings(raw, "test")


def test_periods_outside_the_run_are_left_out_and_present_runs_to_its_end():
    dates = pd.bdate_range("2019-06-03", "2023-06-30")
    equity = pd.Series(np.linspace(100.0, 150.0, len(dates)), index=dates)
    report = build_report(
        RunSeries("strategy", equity), [], risk_free=None, market=None,
        periods=RESEARCH_PERIODS + [("2008 crisis", "2008-01-01", "2008-12-31")],
        data_label="test", meta={},
    )
    rows = report["periods"]["strategy"]
    assert [r["name"] for r in rows] == ["Pre-pandemic growth 2017-2021", "Post-pandemic recovery 2021-2025"]
    assert (rows[0]["start"], rows[0]["end"]) == ("2019-06-03", "2020-12-31")
    assert (rows[1]["start"], rows[1]["end"]) == ("2020-12-31", "2023-06-30")  # the close before
    console = Console(record=True, width=200)
    render_table(report, console)
    text = console.export_text()
    assert "2025-present" not in text and "2008 crisis" not in text and "no data" not in text


def test_cost_per_year_is_costs_over_mean_equity_per_year_beside_the_claim():
    dates = pd.to_datetime(["2020-01-01", "2021-01-01", "2022-01-01"])  # 731 days
    equity = pd.Series([100_000.0, 150_000.0, 200_000.0], index=dates)
    fills = pd.DataFrame({
        "filled_at": pd.to_datetime(["2020-06-01", "2021-06-01"]), "symbol": ["A", "A"],
        "side": ["buy", "sell"], "quantity": [10.0, 10.0], "price": [100.0, 110.0],
        "commission": [100.0, 50.0], "slippage_cost": [150.0, 0.0],
    })
    stats = performance(equity, fills=fills)
    assert stats["cost_per_year"] == pytest.approx(300.0 / 150_000.0 / (731 / 365.25))
    report = build_report(
        RunSeries("strategy", equity, fills=fills), [], risk_free=None, market=None,
        periods=[], data_label="test", meta={},
    )
    section = report["implementation_cost"]
    assert section["claim"] == "< 0.10% of the portfolio a year" and section["claim_value"] == 0.001
    assert section["rows"] == [
        {"name": "strategy", "transaction_costs": 300.0, "cost_per_year": stats["cost_per_year"]}
    ]
    console = Console(record=True, width=200)
    render_table(report, console)
    text = console.export_text()
    assert "Implementation cost per year (the research claims < 0.10%" in text
    assert f"{stats['cost_per_year'] * 100:.3f}" in text
    json.dumps(report, allow_nan=False)


def test_a_factor_run_shows_its_cost_without_the_leverage_papers_claim():
    """Paper 000 (leverage) claims < 0.10% a year; paper 002 (robo) states no cost figure,
    so the factor strategy's report must not print 000's claim as if it were its own."""
    dates = pd.to_datetime(["2020-01-01", "2021-01-01", "2022-01-01"])
    equity = pd.Series([100_000.0, 150_000.0, 200_000.0], index=dates)
    fills = pd.DataFrame({
        "filled_at": pd.to_datetime(["2020-06-01"]), "symbol": ["A"], "side": ["buy"],
        "quantity": [10.0], "price": [100.0], "commission": [100.0], "slippage_cost": [0.0],
    })
    report = build_report(
        RunSeries("robo_balanced", equity, fills=fills), [], risk_free=None, market=None,
        periods=[], data_label="test", meta={}, strategy_kind="factor",
    )
    section = report["implementation_cost"]
    assert section["claim"] is None and section["claim_value"] is None
    assert section["source"].startswith("research 002")
    assert section["rows"][0]["transaction_costs"] == 100.0
    console = Console(record=True, width=200)
    render_table(report, console)
    text = console.export_text()
    assert "Implementation cost per year" in text and "research 002 states no cost figure" in text
    assert "claims" not in text and "0.10%" not in text and "x the claim" not in text
    assert f"{section['rows'][0]['cost_per_year'] * 100:.3f}" in text
    json.dumps(report, allow_nan=False)


def test_the_strategic_comparison_is_the_plain_fixed_weight_portfolio(settings, real_market):
    """It kept the strategy's $50 minimum trade: 2,280,211 instead of the plain
    portfolio's 2,280,311 that the numpy loop, vectorbt and bt all give."""
    ref = reference_settings(settings)["Strategic fixed weights (4d)"]
    raw = ref.model_dump(mode="json")
    raw["backtest"] |= {"fill": "same_close", "slippage_bps": 0.0, "start": "2010-03-01",
                        "end": "2024-12-31"}
    result = run_backtest(parse_settings(raw, "test"), real_market, scratch_tradelog("ref"))

    prices = real_market.prices.select(ref.symbols).between(
        np.datetime64("2010-03-01"), np.datetime64("2024-12-31")
    ).close
    weights = np.array([ref.universe[s].weight for s in ref.symbols])
    shares, cash = np.zeros(len(weights)), ref.backtest.initial_cash
    expected = np.empty(len(prices))
    for t, row in enumerate(prices):
        value = cash + shares @ row
        if t % 4 == 0:
            shares = weights * value / row
            cash = value - shares @ row
        expected[t] = cash + shares @ row
    np.testing.assert_allclose(result.equity, expected, rtol=1e-9, atol=0)
    assert result.equity[-1] == pytest.approx(2_280_311.124312, abs=1e-5)


def test_a_report_on_data_other_than_the_runs_says_so(tmp_path, monkeypatch, capsys):
    """The run read a CSV folder since deleted; `bot report` finds data elsewhere (here
    BOT_DATA_DIR) and compares the run with it. It did so silently while its header named
    the run's own folder; a note now says which data stands in."""
    import json
    import shutil

    from bot.cli import main
    from bot.data.alpaca import write_csv_directory
    from bot.data.synthetic import synthetic_market
    from tests.conftest import CONFIG

    symbols = ["TQQQ", "UPRO", "UDOW", "TMF", "UGL", "DIG", "SPY"]
    market = synthetic_market(symbols, "2019-01-02", "2020-06-30")
    ran_on, stand_in = tmp_path / "ran_on", tmp_path / "stand_in"
    for folder in (ran_on, stand_in):
        write_csv_directory(market.prices, market.macro, folder)
    db = f"sqlite:///{tmp_path / 'log.sqlite'}"
    assert main(["backtest", "--config", str(CONFIG), "--data-dir", str(ran_on), "--no-charts",
                 "--no-benchmarks", "--start", "2019-06-03", "--end", "2020-06-30",
                 "--database", db, "--out", str(tmp_path / "bt")]) == 0
    shutil.rmtree(ran_on)
    monkeypatch.setenv("BOT_DATA_DIR", str(stand_in))
    capsys.readouterr()
    assert main(["report", "--run", "1", "--database", db, "--no-charts",
                 "--out", str(tmp_path / "again")]) == 0
    out = capsys.readouterr().out
    notes = json.loads((tmp_path / "again" / "report.json").read_text())["meta"]["notes"]
    [note] = [n for n in notes if "no longer there" in n]
    assert str(ran_on) in note and str(stand_in) in note
    assert "no longer there" in out


def test_a_relative_data_dir_is_recorded_where_it_is(tmp_path, monkeypatch, capsys):
    """`--data-dir data` was recorded as csv:data: a report asked from anywhere else could
    not find it, and the stand-in note called a folder still there "no longer there"."""
    import json

    from bot.cli import main
    from bot.data.alpaca import write_csv_directory
    from bot.data.synthetic import synthetic_market
    from bot.store.tradelog import TradeLog
    from tests.conftest import CONFIG

    market = synthetic_market(["TQQQ", "UPRO", "UDOW", "TMF", "UGL", "DIG", "SPY"],
                              "2019-01-02", "2020-06-30")
    write_csv_directory(market.prices, market.macro, tmp_path / "data")
    db = f"sqlite:///{tmp_path / 'log.sqlite'}"
    monkeypatch.chdir(tmp_path)
    assert main(["backtest", "--config", str(CONFIG), "--data-dir", "data", "--no-charts",
                 "--no-benchmarks", "--start", "2019-06-03", "--database", db,
                 "--out", str(tmp_path / "bt")]) == 0
    log = TradeLog.open_readonly(db)
    assert log.runs()["data_source"].tolist() == [f"csv:{tmp_path / 'data'}"]
    log.engine.dispose()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["report", "--run", "1", "--database", db, "--no-charts",
                 "--out", str(tmp_path / "again")]) == 0
    report = json.loads((tmp_path / "again" / "report.json").read_text())
    assert report["meta"]["notes"] == [] and report["summary"][1]["name"].startswith("SPY")
