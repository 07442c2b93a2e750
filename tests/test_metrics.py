"""Metrics against small cases whose expected numbers are worked out by hand in comments."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from bot.metrics import (
    RoundTrip,
    daily_risk_free,
    max_drawdown,
    performance,
    period_table,
    regime_table,
    round_trips_fifo,
)

SQRT252 = math.sqrt(252)
FILL_COLUMNS = ["filled_at", "symbol", "side", "quantity", "price", "commission", "slippage_cost"]


def series(values: list[float], dates: list[str]) -> pd.Series:
    return pd.Series(values, index=pd.DatetimeIndex(pd.to_datetime(dates)), dtype=float)


def make_fills(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=FILL_COLUMNS)
    frame["filled_at"] = pd.to_datetime(frame["filled_at"])
    return frame


# Equity 100 -> 110 -> 99 -> 108.9: daily returns +10 %, -10 %, +10 %.
# First and last dates are exactly 1461 days = 4 * 365.25 apart, i.e. 4 calendar years.
EQ = series([100, 110, 99, 108.9], ["2020-01-01", "2021-06-01", "2022-06-01", "2024-01-01"])

# Two buys of A, then two sells that split the second lot, plus a B lot left open.
FILLS = make_fills(
    [
        ("2020-02-03", "A", "buy", 10, 100.0, 1.0, 0.2),
        ("2020-03-02", "A", "buy", 10, 110.0, 1.0, 0.2),
        ("2020-04-01", "A", "sell", 15, 120.0, 1.5, 0.2),
        ("2020-05-01", "A", "sell", 5, 90.0, 0.5, 0.2),
        ("2020-05-01", "B", "buy", 3, 50.0, 0.0, 0.2),
    ]
)


class TestReturnMetrics:
    def test_total_return_and_cagr(self):
        perf = performance(EQ)
        # 108.9 / 100 - 1 = 0.089 over exactly 4 years -> 1.089 ** (1/4) - 1.
        assert perf["total_return"] == pytest.approx(0.089)
        assert perf["cagr"] == pytest.approx(1.089**0.25 - 1)
        assert (perf["start"], perf["end"], perf["days"]) == ("2020-01-01", "2024-01-01", 4)

    def test_cagr_of_ten_percent_a_year(self):
        # 100 -> 146.41 = 1.1 ** 4 over 4 calendar years is 10 %/yr.
        eq = series([100, 146.41], ["2020-01-01", "2024-01-01"])
        assert performance(eq)["cagr"] == pytest.approx(0.10)

    def test_volatility(self):
        # mean = 0.1/3; deviations 0.0667, -0.1333, 0.0667; squares sum 0.026667;
        # / (n-1 = 2) = 0.013333 -> std 0.115470 -> x sqrt(252) = 1.833030.
        assert performance(EQ)["annual_volatility"] == pytest.approx(1.833030, rel=1e-6)

    def test_sharpe_and_sortino_without_risk_free(self):
        perf = performance(EQ)
        # Sharpe: 0.033333 / 0.115470 * sqrt(252) = 0.288675 * 15.874508 = 4.582576.
        assert perf["sharpe"] == pytest.approx(4.582576, rel=1e-6)
        # Downside: sqrt(mean(0, 0.01, 0)) = sqrt(0.003333) = 0.057735;
        # Sortino: 0.033333 / 0.057735 * sqrt(252) = 0.577350 * 15.874508 = 9.165151.
        assert perf["sortino"] == pytest.approx(9.165151, rel=1e-6)

    def test_max_drawdown_and_calmar(self):
        perf = performance(EQ)
        # Peak 110, trough 99: 99 / 110 - 1 = -0.1.
        assert perf["max_drawdown"] == pytest.approx(-0.10)
        assert perf["calmar"] == pytest.approx((1.089**0.25 - 1) / 0.10)

    def test_max_drawdown_takes_the_worst_of_several(self):
        # Falls: 100->80 is -20 %, then 120->84 is -30 %.
        eq = series([100, 80, 120, 84, 130], pd.date_range("2024-01-01", periods=5).astype(str))
        assert max_drawdown(eq) == pytest.approx(-0.30)

    def test_sharpe_with_constant_risk_free(self):
        # 2.52 %/yr -> daily d = 1.0252 ** (1/252) - 1. Subtracting a constant leaves the
        # std unchanged, so Sharpe = (mean - d) / 0.115470 * sqrt(252).
        rf = series([2.52], ["2019-01-01"])
        d = 1.0252 ** (1 / 252) - 1
        expected = (0.1 / 3 - d) / (math.sqrt(0.04 / 3)) * SQRT252
        assert performance(EQ, risk_free=rf)["sharpe"] == pytest.approx(expected)


class TestRiskFreeAlignment:
    DATES = pd.DatetimeIndex(
        pd.to_datetime(["2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05"])
    )

    @staticmethod
    def daily(pct: float) -> float:
        return (1 + pct / 100) ** (1 / 252) - 1

    def test_uses_last_known_value_never_a_future_one(self):
        # 5 % known since Dec 29; 10 % published Jan 4; 99 % only on Jan 6 (after the data).
        rf = series([5.0, 10.0, 99.0], ["2023-12-29", "2024-01-04", "2024-01-06"])
        got = daily_risk_free(rf, self.DATES)
        expected = [self.daily(5), self.daily(5), self.daily(10), self.daily(10)]
        assert got.to_numpy() == pytest.approx(expected)

    def test_zero_before_first_value_and_gaps_carry_forward(self):
        # First value Jan 3 -> Jan 2 gets 0. The NaN on Jan 4 (FRED's '.') is skipped,
        # so Jan 4 and Jan 5 keep Jan 3's 4 %.
        rf = series([4.0, float("nan")], ["2024-01-03", "2024-01-04"])
        got = daily_risk_free(rf, self.DATES)
        assert got.to_numpy() == pytest.approx([0.0, self.daily(4), self.daily(4), self.daily(4)])

    def test_a_weekend_value_applies_to_monday_not_friday(self):
        dates = pd.DatetimeIndex(pd.to_datetime(["2024-01-05", "2024-01-08"]))  # Fri, Mon
        rf = series([3.0], ["2024-01-06"])  # Saturday
        assert daily_risk_free(rf, dates).to_numpy() == pytest.approx([0.0, self.daily(3)])

    def test_sharpe_pairs_each_return_with_the_rate_of_its_own_date(self):
        eq = series([100, 110, 99, 108.9], self.DATES.astype(str))
        rf = series([5.0, 10.0, 99.0], ["2023-12-29", "2024-01-04", "2024-01-06"])
        # Returns on Jan 3, 4, 5 pair with 5 %, 10 %, 10 %; Jan 6's 99 % is never used.
        excess = np.array([0.1, -0.1, 0.1]) - [self.daily(5), self.daily(10), self.daily(10)]
        expected = excess.mean() / excess.std(ddof=1) * SQRT252
        assert performance(eq, risk_free=rf)["sharpe"] == pytest.approx(expected)


class TestRoundTrips:
    def test_fifo_splits_lots_and_allocates_commissions(self):
        trips = round_trips_fifo(FILLS)
        # Sell 15 @120 closes lot1 (10 @100) and 5 of lot2 (10 @110); sell 5 @90 closes the
        # rest of lot2. Commission per unit: lot buys 0.1, first sell 0.1, second sell 0.1.
        #   10 x (120-100) - 10 x 0.2 = 198;  5 x (120-110) - 5 x 0.2 = 49;
        #   5 x (90-110) - 5 x 0.2 = -101. The open B lot is not a round trip.
        day = pd.Timestamp
        assert trips == [
            RoundTrip("A", day("2020-02-03"), day("2020-04-01"), 10.0, 100.0, 120.0, 198.0),
            RoundTrip("A", day("2020-03-02"), day("2020-04-01"), 5.0, 110.0, 120.0, 49.0),
            RoundTrip("A", day("2020-03-02"), day("2020-05-01"), 5.0, 110.0, 90.0, -101.0),
        ]

    def test_symbols_are_matched_separately_and_in_time_order(self):
        # Given out of order: the X buy at 10 (Jan 2) precedes the buy at 20 (Jan 3), so
        # FIFO closes the 10 lot; Y's sell must not touch X's lots.
        fills = make_fills(
            [
                ("2024-01-04", "X", "sell", 1, 15.0, 0.0, 0.0),
                ("2024-01-03", "X", "buy", 1, 20.0, 0.0, 0.0),
                ("2024-01-02", "X", "buy", 1, 10.0, 0.0, 0.0),
                ("2024-01-02", "Y", "buy", 2, 5.0, 0.0, 0.0),
                ("2024-01-05", "Y", "sell", 2, 6.0, 0.0, 0.0),
            ]
        )
        trips = round_trips_fifo(fills)
        assert [(t.symbol, t.entry_price, t.pnl) for t in trips] == [
            ("X", 10.0, 5.0),
            ("Y", 5.0, 2.0),
        ]

    def test_sell_without_an_open_lot_is_ignored(self):
        # 3 sold against 2 held: only 2 match (pnl 2 x 1 = 2); the extra unit has no lot.
        fills = make_fills(
            [
                ("2024-01-02", "Z", "buy", 2, 10.0, 0.0, 0.0),
                ("2024-01-03", "Z", "sell", 3, 11.0, 0.0, 0.0),
            ]
        )
        trips = round_trips_fifo(fills)
        assert [(t.quantity, t.pnl) for t in trips] == [(2.0, 2.0)]

    def test_no_fills_no_trips(self):
        assert round_trips_fifo(make_fills([])) == []


class TestTradeMetrics:
    def test_win_rate_profit_loss_costs_turnover(self):
        perf = performance(EQ, fills=FILLS)
        # Round trips 198, 49, -101: 2 of 3 win; mean win 123.5 / |mean loss| 101.
        assert perf["win_rate"] == pytest.approx(2 / 3)
        assert perf["profit_loss_ratio"] == pytest.approx(123.5 / 101)
        assert perf["trades"] == 5
        # Commissions 1 + 1 + 1.5 + 0.5 + 0 = 4, slippage 5 x 0.2 = 1.
        assert perf["transaction_costs"] == pytest.approx(5.0)
        # Notional 1000 + 1100 + 1800 + 450 + 150 = 4500; / 2 = 2250;
        # mean equity (100 + 110 + 99 + 108.9) / 4 = 104.475; over 4 years.
        assert perf["turnover"] == pytest.approx(2250 / 104.475 / 4)

    def test_profit_loss_ratio_needs_winners_and_losers(self):
        only_win = FILLS.iloc[[0, 2]].assign(quantity=10)  # buy 10 @100, sell 10 @120
        perf = performance(EQ, fills=only_win)
        assert perf["win_rate"] == 1.0
        assert perf["profit_loss_ratio"] is None

    def test_empty_fills_mean_zero_trades_and_no_fills_mean_unknown(self):
        empty = performance(EQ, fills=make_fills([]))
        assert (empty["trades"], empty["transaction_costs"], empty["turnover"]) == (0, 0.0, 0.0)
        assert empty["win_rate"] is None
        missing = performance(EQ)
        assert (missing["trades"], missing["transaction_costs"], missing["turnover"]) == (
            None,
            None,
            None,
        )


class TestAlphaBeta:
    def test_recovers_known_linear_relation(self):
        # Strategy return = 0.0001 + 1.5 x market return exactly, risk-free 0:
        # beta = 1.5 and alpha = 0.0001 x 252 = 0.0252.
        market_r = np.array([0.01, -0.02, 0.015, 0.0, 0.005, -0.007, 0.012])
        dates = pd.bdate_range("2024-01-02", periods=len(market_r) + 1)
        market = pd.Series(100 * np.cumprod(np.r_[1.0, 1 + market_r]), index=dates)
        equity = pd.Series(50 * np.cumprod(np.r_[1.0, 1 + 0.0001 + 1.5 * market_r]), index=dates)
        perf = performance(equity, market=market)
        assert perf["beta"] == pytest.approx(1.5)
        assert perf["alpha"] == pytest.approx(0.0252)

    def test_market_on_another_calendar_is_forward_filled(self):
        # Market has no Jan 4 print: it keeps Jan 3's 102, so its returns are
        # +2 %, 0 %, +1/102. Equity moves 2x those returns -> beta 2, alpha 0.
        eq_dates = pd.DatetimeIndex(
            pd.to_datetime(["2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05"])
        )
        market = series([100, 102, 103], ["2024-01-02", "2024-01-03", "2024-01-05"])
        m = np.array([0.02, 0.0, 1 / 102])
        equity = pd.Series(100 * np.cumprod(np.r_[1.0, 1 + 2 * m]), index=eq_dates)
        perf = performance(equity, market=market)
        assert perf["beta"] == pytest.approx(2.0)
        assert perf["alpha"] == pytest.approx(0.0, abs=1e-12)

    def test_flat_market_gives_none(self):
        market = pd.Series(100.0, index=EQ.index)
        perf = performance(EQ, market=market)
        assert perf["alpha"] is None and perf["beta"] is None


class TestUndefined:
    def test_single_point(self):
        perf = performance(series([100], ["2024-01-02"]))
        assert perf["total_return"] == 0.0 and perf["max_drawdown"] == 0.0
        for key in ("cagr", "annual_volatility", "sharpe", "sortino", "calmar", "win_rate"):
            assert perf[key] is None, key

    def test_flat_equity_has_zero_vol_but_no_ratios(self):
        perf = performance(series([100, 100, 100], ["2024-01-02", "2024-01-03", "2024-01-04"]))
        assert perf["annual_volatility"] == 0.0
        assert perf["sharpe"] is None and perf["sortino"] is None and perf["calmar"] is None

    def test_flat_equity_has_no_ratios_over_a_moving_risk_free_rate_either(self):
        """All cash for two years against a T-bill rate that moves: the excess returns are
        the rate's own noise, and the Sharpe ratio read -247 (the rolling one thousands)."""
        from bot.tearsheet.analytics import rolling_sharpe

        days = pd.bdate_range("2023-01-03", "2024-12-31")
        flat = pd.Series(1e5, index=days)
        rate = pd.Series(np.linspace(4.2, 5.3, len(days)), index=days)
        perf = performance(flat, risk_free=rate)
        assert perf["annual_volatility"] == 0.0
        assert perf["sharpe"] is None and perf["sortino"] is None
        assert rolling_sharpe(flat, 63, rate).empty

    def test_empty_equity_is_an_error(self):
        with pytest.raises(ValueError):
            performance(pd.Series([], index=pd.DatetimeIndex([]), dtype=float))

    def test_results_are_strict_json(self):
        flat = series([100, 100, 100], ["2024-01-02", "2024-01-03", "2024-01-04"])
        for perf in (performance(EQ, fills=FILLS, market=EQ), performance(flat, market=flat)):
            json.dumps(perf, allow_nan=False)
            assert all(v is None or type(v) in (float, int, str) for v in perf.values())


    def test_a_gain_too_large_to_annualise_over_a_short_span_is_none_not_a_crash(self):
        """21x in one day annualises past float range (21 ** 365.25, 21 ** 252): Python's
        float power raised OverflowError, which aborted the whole report (a period window
        overlapping a run by a day or two can hold such a span)."""
        jump = series([100.0, 2100.0], ["2024-01-02", "2024-01-03"])
        perf = performance(jump)
        assert perf["total_return"] == pytest.approx(20.0) and perf["cagr"] is None
        json.dumps(perf, allow_nan=False)
        labels = pd.Series(["GROWTH", "GROWTH"], index=jump.index)
        (row,) = regime_table(jump, labels)
        assert row["total_return"] == pytest.approx(20.0) and row["annual_return"] is None


class TestPeriodTable:
    def test_slices_equity_and_fills(self):
        periods = [
            ("2020", "2020-01-01", "2020-12-31"),
            ("to mid 2022", "2021-01-01", "2022-06-30"),
            ("future", "2030-01-01", "2030-12-31"),
        ]
        rows = period_table(EQ, periods, fills=FILLS)
        # 2020 holds only the curve's first point (nothing before it) and 2030 none: both
        # left out, not shown empty. 2021-2022 runs from the close before it (2020-01-01,
        # 100) through 110 to 99 = -1 %; the fills of 2020 are not its days.
        assert [row["name"] for row in rows] == ["to mid 2022"]
        assert rows[0]["total_return"] == pytest.approx(-0.01)
        assert (rows[0]["start"], rows[0]["end"]) == ("2020-01-01", "2022-06-01")
        assert rows[0]["trades"] == 0

    def test_back_to_back_periods_compound_to_the_period_spanning_them(self):
        """Before: each period began at its own first close, so the move from one
        period's last close into the next one's first was in neither (SPY's 2022 read
        -18.65% against the calendar year's -18.18%)."""
        dates = pd.bdate_range("2019-12-02", "2022-01-31")
        rng = np.random.default_rng(5)
        eq = pd.Series(100 * np.cumprod(1 + rng.normal(0.0005, 0.01, len(dates))), index=dates)
        halves = [("2020", "2020-01-01", "2020-12-31"), ("2021", "2021-01-01", "2021-12-31")]
        first, second = period_table(eq, halves)
        (whole,) = period_table(eq, [("both", "2020-01-01", "2021-12-31")])
        assert (1 + first["total_return"]) * (1 + second["total_return"]) == pytest.approx(
            1 + whole["total_return"], rel=1e-12)
        year_end = eq.loc[:"2020-12-31"].iloc[-1]
        assert second["total_return"] == pytest.approx(eq.loc[:"2021-12-31"].iloc[-1] / year_end - 1)
        assert second["start"] == "2020-12-31"  # measured from that close, as a calendar year

    def test_a_period_to_the_present_runs_to_the_last_point(self):
        rows = period_table(EQ, [("since 2021", "2021-01-01", "present")])
        assert rows[0]["start"] == "2020-01-01"  # the close before the period
        assert rows[0]["end"] == EQ.index[-1].date().isoformat()

    def test_fills_on_window_days_are_kept(self):
        # Window 2020-01-01..2021-06-01 holds 100 -> 110 and all 5 fills (Feb-May 2020).
        rows = period_table(EQ, [("early", "2020-01-01", "2021-06-01")], fills=FILLS)
        assert rows[0]["trades"] == 5
        assert rows[0]["total_return"] == pytest.approx(0.10)


    def test_a_windows_round_trips_are_matched_over_the_whole_run(self):
        """A lot bought before the window and sold in it: matching the window's fills
        alone paired the sell with a later buy inside the window (a loss at 120 where the
        real trip, bought at 100, won)."""
        dates = pd.bdate_range("2024-01-01", "2024-03-29")
        eq = pd.Series(np.linspace(100_000, 101_000, len(dates)), index=dates)
        fills = make_fills([
            ("2024-01-10", "A", "buy", 10, 100.0, 0.0, 0.0),
            ("2024-02-12", "A", "buy", 10, 120.0, 0.0, 0.0),
            ("2024-02-20", "A", "sell", 10, 110.0, 0.0, 0.0),
        ])
        (february,) = period_table(eq, [("feb", "2024-02-01", "2024-02-29")], fills=fills)
        assert february["win_rate"] == 1.0  # the sell closed the January lot: +100
        assert february["trades"] == 2  # the window's own fills
        (january,) = period_table(eq, [("jan", "2024-01-01", "2024-01-31")], fills=fills)
        assert january["win_rate"] is None  # nothing closed in January


class TestRegimeTable:
    def test_return_goes_to_previous_days_regime(self):
        dates = pd.bdate_range("2024-01-01", periods=5)
        eq = pd.Series([100, 110, 99, 108.9, 108.9], index=dates)
        labels = pd.Series(
            ["GROWTH", "GROWTH", "UNCERTAINTY", "UNCERTAINTY", "GROWTH"], index=dates
        )
        rows = regime_table(eq, labels)
        # Returns +10 %, -10 %, +10 %, 0 % carry the labels of days 0..3: G, G, U, U.
        growth, unc = rows
        assert (growth["regime"], growth["days"], growth["share"]) == ("GROWTH", 2, 0.5)
        # GROWTH: 1.1 x 0.9 - 1 = -0.01; annualized 0.99 ** (252/2) - 1;
        # vol: std(+0.1, -0.1, ddof=1) = 0.141421 x sqrt(252).
        assert growth["total_return"] == pytest.approx(-0.01)
        assert growth["annual_return"] == pytest.approx(0.99**126 - 1)
        assert growth["annual_volatility"] == pytest.approx(math.sqrt(0.02) * SQRT252)
        # UNCERTAINTY: 1.1 x 1.0 - 1 = 0.1; std(0.1, 0) = 0.070711.
        assert (unc["regime"], unc["days"]) == ("UNCERTAINTY", 2)
        assert unc["total_return"] == pytest.approx(0.10)
        assert unc["annual_return"] == pytest.approx(1.1**126 - 1)
        assert unc["annual_volatility"] == pytest.approx(math.sqrt(0.005) * SQRT252)

    def test_single_day_regime_has_no_volatility(self):
        dates = pd.bdate_range("2024-01-01", periods=3)
        eq = pd.Series([100, 101, 102], index=dates)
        labels = pd.Series(["GROWTH", "TRANSITION", "GROWTH"], index=dates)
        rows = {r["regime"]: r for r in regime_table(eq, labels)}
        assert rows["TRANSITION"]["days"] == 1
        assert rows["TRANSITION"]["annual_volatility"] is None
        json.dumps(rows, allow_nan=False)


def test_a_bill_rate_that_starts_after_the_run_is_named_where_sharpe_is_shown(tmp_path, shared_data, capsys):
    """Before its first value the risk-free rate is taken as 0%: Sharpe and Sortino of
    those years overstate the excess return (the shipped DTB3 starts 2000, the prices
    1993). The backtest and `bot report` say so; a rate that covers the run says nothing."""
    import shutil

    from bot.cli import main
    from bot.metrics import risk_free_gap_note

    rate = pd.Series([4.0, 4.1], index=pd.to_datetime(["2015-01-02", "2015-01-05"]))
    assert risk_free_gap_note(rate, pd.Timestamp("2015-01-02")) is None
    assert risk_free_gap_note(None, pd.Timestamp("2012-01-03")) is None
    assert risk_free_gap_note(rate, pd.Timestamp("2012-01-03")) == (
        "risk-free rate starts 2015-01-02, after the run's first day 2012-01-03: "
        "Sharpe and Sortino take 0% before it")

    data = tmp_path / "data"
    shutil.copytree(shared_data, data)
    bills = pd.read_csv(data / "macro" / "DTB3.csv")
    bills[bills["date"] >= "2015-01-01"].to_csv(data / "macro" / "DTB3.csv", index=False)
    db = f"sqlite:///{tmp_path / 'log.sqlite'}"
    args = ["--database", db, "--no-charts"]
    assert main(["backtest", *args, "--data-dir", str(data), "--no-benchmarks", "--start", "2012-01-03", "--end", "2016-12-30",
                 "--out", str(tmp_path / "bt")]) == 0
    assert "risk-free rate starts 2015-01-02, after the run's first day 2012-01-03" in capsys.readouterr().out
    assert main(["report", "--run", "1", *args, "--out", str(tmp_path / "stored")]) == 0
    assert "risk-free rate starts 2015-01-02" in capsys.readouterr().out
