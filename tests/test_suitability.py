"""SRRI (CESR/10-673) and PRIIPs MRM (Reg. 2017/653 Annex II) on hand-made curves, and
`bot suitability` end to end."""

import io
import json
import math

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from bot.calendar import sessions, week_ends
from bot.cli import main
from bot.robo_cli import render
from bot.suitability import (
    MRM_BOUNDS,
    SRRI_BOUNDS,
    cornish_fisher_var,
    priips_mrm,
    risk_class,
    srri,
    suitability,
    vev,
)
from tests.conftest import REPO


@pytest.mark.parametrize("vol, expected", [
    (0.0, 1), (0.00499, 1), (0.005, 2), (0.0199, 2), (0.02, 3), (0.0499, 3), (0.05, 4),
    (0.0999, 4), (0.10, 5), (0.1499, 5), (0.15, 6), (0.2499, 6), (0.25, 7), (0.90, 7),
])
def test_srri_classes_are_lower_inclusive(vol, expected):
    assert risk_class(vol, SRRI_BOUNDS) == expected


@pytest.mark.parametrize("vev_value, expected", [
    (0.0049, 1), (0.005, 2), (0.0499, 2), (0.05, 3), (0.1199, 3), (0.12, 4), (0.20, 5),
    (0.2999, 5), (0.30, 6), (0.7999, 6), (0.80, 7),
])
def test_mrm_classes_follow_annex_ii(vev_value, expected):
    assert risk_class(vev_value, MRM_BOUNDS) == expected


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_volatility_that_is_not_a_number_has_no_class(value):
    """NaN fell in class 7 (bisect puts it after every bound): a wrong class, not none."""
    with pytest.raises(ValueError, match="no risk class"):
        risk_class(value, SRRI_BOUNDS)


def weekly_curve(weekly_return, start="2017-01-02", end="2024-12-31"):
    """A daily equity curve that moves only on the last trading day of each week, by
    `weekly_return(k, day)` on the k-th week end."""
    days = sessions(start, end)
    steps = np.ones(len(days))
    for k, i in enumerate(np.flatnonzero(week_ends(days))[1:]):
        steps[i] = 1 + weekly_return(k, days[i])
    return pd.Series(100 * np.cumprod(steps), index=pd.DatetimeIndex(days))


def alternating(size):
    return lambda k, _day: size if k % 2 == 0 else -size


def test_srri_is_the_weekly_volatility_of_the_last_five_years():
    def returns(k, day):  # wild before 2020, calm after
        return (0.10 if day < np.datetime64("2020-01-01") else 0.01) * (1 if k % 2 == 0 else -1)

    equity = weekly_curve(returns)
    result = srri(equity)
    weekly = equity[week_ends(equity.index.to_numpy().astype("datetime64[D]"))]
    expected = weekly.pct_change().dropna().iloc[-260:].std(ddof=1) * math.sqrt(52)
    assert result.volatility == pytest.approx(expected)
    assert result.volatility == pytest.approx(0.01 * math.sqrt(52), rel=0.01)  # 7.2%
    assert result.risk_class == 4 and result.weeks == 260 and not result.short_history
    assert result.end == "2024-12-27"  # the partial last week (Mon 30, Tue 31) is dropped
    assert result.start == "2020-01-03"  # 260 weeks before


def test_srri_on_less_than_five_years_is_flagged():
    result = srri(weekly_curve(alternating(0.02), start="2022-01-03"))
    assert result.short_history and result.weeks < 260 and result.risk_class == 5


def symmetric_log_returns(a, n):
    """Log returns -a, +a, 0, 0, 0, 0 repeated: mean 0, skew 0, kurtosis exactly 3."""
    return np.resize([-a, a, 0.0, 0.0, 0.0, 0.0], n)


def curve_from_logs(logs, start="2019-01-02"):
    days = sessions(start, "2024-12-31")[: len(logs) + 1]
    return pd.Series(100 * np.exp(np.r_[0.0, np.cumsum(logs)]), index=pd.DatetimeIndex(days))


def test_priips_vev_of_a_normal_like_series_is_its_annual_volatility():
    logs = symmetric_log_returns(0.02, 1200)  # 4.8 years: used whole, flagged short
    result = priips_mrm(curve_from_logs(logs), rhp_years=5)
    assert result.short_history and result.observations == 1200
    sigma = 0.02 / math.sqrt(3)
    assert result.sigma == pytest.approx(sigma, rel=1e-3)
    assert result.skew == pytest.approx(0.0, abs=1e-2)
    assert result.excess_kurtosis == pytest.approx(0.0, abs=1e-2)
    # Zero skew and excess kurtosis: VaR = -1.96 sigma sqrt(N) - sigma^2 N / 2, and
    # VEV = sigma sqrt(256) up to the 3.842 vs 1.96^2 rounding in the regulation.
    assert result.vev == pytest.approx(sigma * 16, rel=2e-3)
    assert result.mrm_class == 4  # 18.5%


def test_priips_matches_a_published_worked_example():
    # quant.stackexchange.com/q/69314: sigma 0.0378, skew 0.9201, excess kurtosis 12.068,
    # N = 256, T = 1 give VaR -1.3534 and VEV 0.5990.
    var = cornish_fisher_var(0.0378, 0.9201, 12.068, 256)
    assert var == pytest.approx(-1.3534, abs=1e-4)
    assert vev(var, 1.0) == pytest.approx(0.5990, abs=1e-4)


def test_a_fat_left_tail_raises_the_vev():
    base = symmetric_log_returns(0.01, 1200)
    crashes = base.copy()
    crashes[::100] = -0.06  # rare large losses
    rallies = -crashes  # the mirror image: same sigma and kurtosis, opposite skew
    left = priips_mrm(curve_from_logs(crashes), 5)
    right = priips_mrm(curve_from_logs(rallies), 5)
    assert left.sigma == pytest.approx(right.sigma) and left.skew < 0 < right.skew
    assert left.vev > right.vev


def test_suitability_flags_a_mismatch():
    equity = weekly_curve(alternating(0.03))  # about 21.6% a year: SRRI 6
    perf = {"start": "2017-01-02", "end": "2024-12-31", "max_drawdown": -0.1, "sharpe": 0.5,
            "cagr": 0.01, "annual_volatility": 0.2}
    row = suitability("x", equity, (3, 5), 5.0, perf)
    assert row["srri"]["risk_class"] == 6 and not row["fits"]
    assert row["mismatch"] == "SRRI 6 is above the intended range 3-5"
    assert suitability("x", equity, (5, 7), 5.0, perf)["fits"]


def test_bot_suitability_prints_and_writes_every_profile(shared_data, tmp_path):
    out = tmp_path / "suitability.json"
    args = ["suitability", "--data-dir", str(shared_data), "--start", "2016-01-04", "--out", str(out)]
    for profile in ("conservative", "balanced", "aggressive"):
        args += ["--config", str(REPO / "config" / f"robo_{profile}.toml")]
    assert main(args) == 0
    report = json.loads(out.read_text())
    console = Console(file=io.StringIO(), width=250)
    render(report, console)  # the table the command printed, from the same report
    printed = console.file.getvalue()
    assert [p["profile"] for p in report["profiles"]] == ["conservative", "balanced", "aggressive"]
    for profile in report["profiles"]:
        for key in ("strategy", "static_allocation"):
            row = profile[key]
            low, high = row["intended_srri"]
            assert row["fits"] == (low <= row["srri"]["risk_class"] <= high)
            assert not row["srri"]["short_history"] and row["srri"]["weeks"] == 260
            assert row["span"] == ["2016-01-04", "2024-12-31"]
            assert 1 <= row["priips"]["mrm_class"] <= 7 and row["max_drawdown"] < 0
        assert profile["profile"] in printed and profile["strategy"]["name"] in printed
    if not report["profiles"][0]["strategy"]["fits"]:
        assert "conservative: SRRI" in printed and "above the intended range" in printed
    aggressive = report["profiles"][2]["strategy"]
    assert aggressive["srri"]["risk_class"] >= 6  # QQQ/ARKK/XLK/IEMG: well above 15% a year


def report_row(name, srri_short, priips_short, fits=True):
    """One row of `bot suitability`'s JSON, as a run over a span of the given lengths."""
    weeks, days = (29, 146) if srri_short or priips_short else (260, 1258)
    return {
        "name": name, "span": ["2024-06-03", "2024-12-31"], "expected_volatility": 0.2402,
        "srri": {"volatility": 0.2402, "risk_class": 6, "weeks": weeks if srri_short else 260,
                 "start": "2024-06-07", "end": "2024-12-27", "short_history": srri_short},
        "srri_rolling_range": None, "intended_srri": [5, 7], "fits": fits,
        "mismatch": None if fits else "SRRI 6 is above the intended range 3-5",
        "priips": {"vev": 0.2204, "mrm_class": 5, "var_return_space": -1.31, "sigma": 0.0137,
                   "skew": -0.58, "excess_kurtosis": 1.12,
                   "observations": days if priips_short else 1258, "rhp_years": 7.0,
                   "short_history": priips_short},
        "max_drawdown": -0.137, "max_drawdown_5y": -0.137, "sharpe": 0.30, "cagr": 0.092,
        "annual_volatility_daily": 0.218,
    }


def rendered_rows(strategy, static):
    report = {"profiles": [{"profile": "aggressive", "data_label": "csv:test",
                            "strategy": strategy, "static_allocation": static}]}
    console = Console(file=io.StringIO(), width=250)
    render(report, console)
    text = console.file.getvalue()
    return [line for line in text.splitlines() if "robo_aggressive" in line or "static" in line], text


def test_a_fit_on_a_short_history_is_not_a_plain_yes():
    """A PRIIPs measure from half a year of prices was unmarked and `fits` said "yes"."""
    (strategy, static), text = rendered_rows(
        report_row("robo_aggressive", srri_short=True, priips_short=True),
        report_row("static aggressive", srri_short=False, priips_short=True),
    )
    assert "29 (short)" in strategy and "22.04 (short)" in strategy
    assert "yes (short history)" in strategy
    assert "260 " in static and "22.04 (short)" in static and "yes (short history)" in static
    assert ("aggressive: short history: SRRI on 29 weeks (260 wanted), PRIIPs VEV/MRM on 146 "
            "daily returns (5 years wanted)") in text
    (full, _), text = rendered_rows(
        report_row("robo_aggressive", srri_short=False, priips_short=False),
        report_row("static aggressive", srri_short=False, priips_short=False, fits=False),
    )
    assert "(short" not in text and "short history" not in text
    assert " yes " in full


def test_a_priips_measure_on_under_two_years_says_it_needs_a_proxy():
    """Annex II point 5: category 2 needs at least 2 years of daily prices; a measure
    from half a year was shown as merely "(short)"."""
    logs = symmetric_log_returns(0.02, 300)  # about 14 months
    assert priips_mrm(curve_from_logs(logs), rhp_years=5).under_category_2_minimum
    three_years = priips_mrm(curve_from_logs(symmetric_log_returns(0.02, 760)), rhp_years=5)
    assert three_years.short_history and not three_years.under_category_2_minimum
    row = report_row("robo_aggressive", srri_short=True, priips_short=True)
    row["priips"]["under_category_2_minimum"] = True
    (strategy, _static), text = rendered_rows(row, report_row("static aggressive", False, False))
    assert "22.04 (under 2 years)" in strategy
    assert "under the 2 years of daily prices PRIIPs category 2 needs (Annex II point 5)" in text


def test_srri_and_mrm_of_spy_match_an_independent_calculation(shared_data):
    """SPY to 2024-12-31 by hand: Friday-ending weeks (a holiday Friday's week ends on its
    Thursday), the partial week of Dec 30-31 left out, 260 returns, sample std x sqrt(52);
    PRIIPs from scipy's biased skew and excess kurtosis of the daily log returns since
    2019-12-31, N = 256 x 5."""
    from scipy import stats

    close = pd.read_csv(shared_data / "prices" / "SPY.csv", index_col="date", parse_dates=True)["close"]
    weekly = close.resample("W-FRI").last().loc[:"2024-12-27"]
    returns = weekly.pct_change().dropna().iloc[-260:]
    expected_vol = returns.std(ddof=1) * math.sqrt(52)
    result = srri(close)
    assert result.volatility == pytest.approx(expected_vol, rel=1e-12)  # 20.05%
    assert (result.risk_class, result.weeks, result.start, result.end) == (6, 260, "2020-01-03", "2024-12-27")

    logs = np.diff(np.log(close.loc["2019-12-31":].to_numpy()))
    sigma, skew = logs.std(ddof=0), stats.skew(logs, bias=True)
    kurt = stats.kurtosis(logs, fisher=True, bias=True)
    n, rhp = 256 * 5, 5
    var = sigma * math.sqrt(n) * (-1.96 + 0.474 * skew / math.sqrt(n) - 0.0687 * kurt / n
                                  + 0.146 * skew**2 / n) - 0.5 * sigma**2 * n
    expected_vev = (math.sqrt(3.842 - 2 * var) - 1.96) / math.sqrt(rhp)
    result = priips_mrm(close, rhp)
    assert result.observations == len(logs) == 1258 and not result.short_history
    assert (result.skew, result.excess_kurtosis) == (pytest.approx(skew), pytest.approx(kurt))
    assert result.vev == pytest.approx(expected_vev, rel=1e-12)  # 21.34%
    assert result.mrm_class == 5
