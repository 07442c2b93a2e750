"""The synthetic market: deterministic, on real trading days, and behaving like a market
(leveraged funds decay by the daily-reset rule, volatility clusters, crashes happen)."""

from __future__ import annotations

import exchange_calendars as xcals
import numpy as np
import pytest

from bot.data.base import RISK_FREE, SPREAD, UNCERTAINTY, VIX, MarketData
from bot.data.synthetic import KNOWN_SYMBOLS, synthetic_market

UNIVERSE = list(KNOWN_SYMBOLS)  # the 22 symbols the bot knows
START, END = "2010-01-01", "2024-12-31"


@pytest.fixture(scope="module")
def market() -> MarketData:
    return synthetic_market(UNIVERSE, START, END)


def _close(md: MarketData, symbol: str) -> np.ndarray:
    return md.prices.close[:, md.prices.index_of(symbol)]


def _returns(md: MarketData, symbol: str) -> np.ndarray:
    close = _close(md, symbol)
    return close[1:] / close[:-1] - 1


def test_same_seed_same_market(market: MarketData) -> None:
    again = synthetic_market(UNIVERSE, START, END, seed=7)
    np.testing.assert_array_equal(market.prices.close, again.prices.close)
    np.testing.assert_array_equal(market.prices.open, again.prices.open)
    for name, series in market.macro.items():
        np.testing.assert_array_equal(series.values, again.macro[name].values)
    other = synthetic_market(UNIVERSE, START, END, seed=8)
    assert not np.array_equal(market.prices.close, other.prices.close)


def test_symbol_path_does_not_depend_on_other_symbols(market: MarketData) -> None:
    alone = synthetic_market(["TQQQ", "ZZZZ"], START, END)
    np.testing.assert_array_equal(alone.prices.close[:, 0], _close(market, "TQQQ"))


def test_prices_are_positive_and_complete(market: MarketData) -> None:
    p = market.prices
    assert p.close.shape == p.open.shape == (len(p.dates), len(UNIVERSE))
    assert np.isfinite(p.close).all() and np.isfinite(p.open).all()
    assert (p.close > 0).all() and (p.open > 0).all()


@pytest.mark.filterwarnings("ignore:Series.values returning:DeprecationWarning")
def test_dates_are_xnys_sessions(market: MarketData) -> None:
    sessions = xcals.get_calendar("XNYS").sessions_in_range("2010-01-01", "2024-12-31")
    np.testing.assert_array_equal(market.prices.dates, sessions.to_numpy().astype("datetime64[D]"))


def test_labelled_synthetic(market: MarketData) -> None:
    assert market.synthetic
    assert "SYNTHETIC" in market.label and "seed=7" in market.label


@pytest.mark.parametrize(("fund", "base"), [("TQQQ", "QQQ"), ("UPRO", "SPY"), ("TMF", "TLT")])
def test_leveraged_fund_follows_daily_reset_rule(market: MarketData, fund: str, base: str) -> None:
    lev, index_er = KNOWN_SYMBOLS[fund], KNOWN_SYMBOLS[base].expense_ratio
    assert KNOWN_SYMBOLS[base].index == lev.index and KNOWN_SYMBOLS[base].leverage == 1
    index_return = _returns(market, base) + index_er / 252
    rf_daily = market.macro[RISK_FREE].values[:-1] / 100 / 252
    expected = lev.leverage * index_return - (lev.leverage - 1) * rf_daily - lev.expense_ratio / 252
    np.testing.assert_allclose(_returns(market, fund), expected, rtol=0, atol=1e-12)


def test_volatility_clusters(market: MarketData) -> None:
    squared = _returns(market, "SPY") ** 2
    squared = squared - squared.mean()
    for lag in (1, 5):
        autocorrelation = (squared[lag:] @ squared[:-lag]) / (squared @ squared)
        assert autocorrelation > 0.05


def test_default_seed_has_a_crash(market: MarketData) -> None:
    close = _close(market, "SPY")
    drawdown = close / np.maximum.accumulate(close) - 1
    assert drawdown.min() < -0.20


def test_realistic_correlations_and_vols(market: MarketData) -> None:
    r = {s: _returns(market, s) for s in ("SPY", "QQQ", "DIA", "TLT", "GLD", "SHY")}

    def corr(a: str, b: str) -> float:
        return np.corrcoef(r[a], r[b])[0, 1]

    assert corr("SPY", "QQQ") > 0.8 and corr("SPY", "DIA") > 0.85
    assert -0.5 < corr("SPY", "TLT") < 0.0
    assert abs(corr("SPY", "GLD")) < 0.3
    vol = {s: x.std() * np.sqrt(252) for s, x in r.items()}
    assert 0.10 < vol["SPY"] < 0.30 and vol["SHY"] < 0.03


def test_vix_tracks_realized_spy_vol(market: MarketData) -> None:
    returns = _returns(market, "SPY")
    window = 21
    realized = np.sqrt(np.convolve(returns**2, np.ones(window) / window, "valid") * 252)
    # VIX at day t forecasts the next month: compare with realized vol over days t+1..t+21.
    vix = market.macro[VIX].values[: realized.size]
    assert np.corrcoef(vix, realized)[0, 1] > 0.5


def test_macro_series_in_sane_ranges(market: MarketData) -> None:
    m, dates = market.macro, market.prices.dates
    assert set(m) == {VIX, SPREAD, UNCERTAINTY, RISK_FREE}
    bounds = {VIX: (9, 120), SPREAD: (-3, 4.5), RISK_FREE: (0, 12), UNCERTAINTY: (10, 900)}
    for name, (low, high) in bounds.items():
        assert m[name].values.min() >= low and m[name].values.max() <= high, name
    assert m[VIX].values.max() > 30  # spikes in crashes
    assert m[SPREAD].values.min() < 0.5 and m[SPREAD].values.max() > 1.5  # moves, may invert
    assert 50 < np.median(m[UNCERTAINTY].values) < 200
    for name in (VIX, SPREAD, RISK_FREE):
        np.testing.assert_array_equal(m[name].dates, dates)
    calendar_days = np.arange(dates[0], dates[-1] + np.timedelta64(1, "D"))
    np.testing.assert_array_equal(m[UNCERTAINTY].dates, calendar_days)
    vix_then = m[VIX].values[np.searchsorted(dates, calendar_days, side="right") - 1]
    assert np.corrcoef(np.log(vix_then), np.log(m[UNCERTAINTY].values))[0, 1] > 0.3


def test_unknown_symbol_gets_a_generic_equity(market: MarketData) -> None:
    md = synthetic_market(["SPY", "ACME"], START, END)
    spy, acme = (np.diff(np.log(md.prices.close[:, j])) for j in range(2))
    assert 0.3 < np.corrcoef(spy, acme)[0, 1] < 0.95


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="before start"):
        synthetic_market(["SPY"], "2024-01-01", "2023-01-01")
    with pytest.raises(ValueError, match="unique"):
        synthetic_market(["SPY", "SPY"], START, END)


@pytest.mark.parametrize("phi", [0.9, 0.6, 0.3])
def test_the_ar1_filter_gives_scipys_lfilter_bits(phi: float) -> None:
    """The VIX and uncertainty noise is filtered without scipy.signal (slow to import):
    the same bits as lfilter, so the synthetic market did not move."""
    from scipy.signal import lfilter

    from bot.data.synthetic import _recursive_filter

    x = np.random.default_rng(11).standard_normal(9_000) * 0.3
    x[:3] = [-0.0, 0.0, 1e-300]
    assert np.array_equal(_recursive_filter(x, phi), lfilter([1.0], [1.0, -phi], x))
    assert _recursive_filter(np.empty(0), phi).shape == (0,)


def test_the_shared_calendar_gives_the_synthetic_markets_own_sessions() -> None:
    """Inside its span the process's calendar is used; beyond it, the market's own."""
    import pandas as pd

    from bot.data.synthetic import _sessions, _xnys

    for start, end in [("1990-01-02", "2024-12-31"), ("2008-01-02", "2026-06-30")]:
        own = _xnys(1989, 2031).sessions_in_range(pd.Timestamp(start), pd.Timestamp(end))
        assert np.array_equal(_sessions(start, end), own.to_numpy().astype("datetime64[D]"))
    assert _sessions("2035-01-02", "2035-02-01")[0] == np.datetime64("2035-01-02")
