"""Performance statistics of an equity curve and its fills: pure functions, no I/O.

Every result is JSON-safe: a metric that cannot be computed (too few points, zero
variance, no trades) is None rather than NaN or inf, so reports can be written with
`allow_nan=False` and read by anything.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

DAYS_PER_YEAR = 365.25
_QTY_EPS = 1e-9  # quantities below this are float residue, not shares

Metric = float | int | str | None


@dataclass(frozen=True)
class RoundTrip:
    """One matched slice of a buy lot and a later sell; pnl is after both commissions."""

    symbol: str
    entry_date: pd.Timestamp
    exit_date: pd.Timestamp
    quantity: float
    entry_price: float
    exit_price: float
    pnl: float


@dataclass
class _Lot:
    quantity: float
    price: float
    commission_per_unit: float
    row: int  # the buy's row in the fills


# --------------------------------------------------------------------------- helpers


def _finite(x: float | None) -> float | None:
    """Plain Python float, or None when the value is missing, NaN or infinite."""
    if x is None:
        return None
    value = float(x)
    return value if math.isfinite(value) else None


def _clean_equity(equity: pd.Series) -> pd.Series:
    """Sorted float series without NaN, so callers may pass a benchmark that listed late."""
    if not isinstance(equity.index, pd.DatetimeIndex):
        raise TypeError("equity must be indexed by a DatetimeIndex")
    out = equity.astype(float).dropna().sort_index()
    if out.empty:
        raise ValueError("equity has no values")
    return out


def _years(index: pd.DatetimeIndex) -> float:
    """Calendar years spanned, so CAGR and turnover ignore how many trading days a year has."""
    return (index[-1] - index[0]).days / DAYS_PER_YEAR


def fill_days(fills: pd.DataFrame) -> pd.DatetimeIndex:
    """Trading day of each fill (tz-aware times use their own wall-clock date)."""
    stamps = pd.DatetimeIndex(pd.to_datetime(fills["filled_at"]))
    if stamps.tz is not None:
        stamps = stamps.tz_localize(None)
    return stamps.normalize()


def slice_fills(
    fills: pd.DataFrame | None, start: pd.Timestamp, end: pd.Timestamp
) -> pd.DataFrame | None:
    """Fills whose trading day lies in [start, end], matching an equity slice."""
    if fills is None:
        return None
    days = fill_days(fills)
    mask = (days >= start.normalize()) & (days <= end.normalize())
    return fills.loc[np.asarray(mask)]


def daily_risk_free(
    risk_free: pd.Series | None, index: pd.DatetimeIndex, periods_per_year: int = 252
) -> pd.Series:
    """Daily risk-free rate in force at each date of `index`.

    `risk_free` is an annual percent series (FRED DTB3 style: 4.23 means 4.23 %/yr) on its
    own dates. Each date takes the last value published on or before it, never a later
    one; dates before the first value get 0. The rate is then de-annualised geometrically.
    """
    rf = pd.Series(dtype=float) if risk_free is None else risk_free.astype(float).dropna()
    if rf.empty:
        return pd.Series(0.0, index=index)
    rf = rf.sort_index()
    rf = rf[~rf.index.duplicated(keep="last")]
    positions = rf.index.searchsorted(index, side="right") - 1
    pct = np.where(positions >= 0, rf.to_numpy()[np.clip(positions, 0, None)], 0.0)
    return pd.Series((1.0 + pct / 100.0) ** (1.0 / periods_per_year) - 1.0, index=index)


def risk_free_gap_note(risk_free: pd.Series | None, first_day: pd.Timestamp) -> str | None:
    """A note when the bill rate starts after the run's first day (daily_risk_free takes
    0% before its first value): Sharpe and Sortino then overstate those years' excess
    return (SPY 1996-2001: Sharpe 0.60 at 0%, 0.44 at the real ~5%). None otherwise."""
    if risk_free is None:
        return None
    known = risk_free.dropna()
    if known.empty:
        return None
    first = pd.Timestamp(known.index.min())
    if first <= first_day:
        return None
    return (f"risk-free rate starts {first.date()}, after the run's first day {first_day.date()}: "
            "Sharpe and Sortino take 0% before it")


def _align_market(market: pd.Series, index: pd.DatetimeIndex) -> pd.Series:
    """Market level at each equity date: its last value on or before that date; NaN
    before its first value and after its last (a series that ends early is not carried
    on flat, which would read as days of zero market return)."""
    clean = market.astype(float).dropna().sort_index()
    clean = clean[~clean.index.duplicated(keep="last")]
    return clean.reindex(clean.index.union(index)).ffill(limit_area="inside").reindex(index)


# --------------------------------------------------------------------------- round trips


def round_trips_fifo(fills: pd.DataFrame) -> list[RoundTrip]:
    """Match sells against earlier buys per symbol, oldest lot first (FIFO).

    A sell closes part or all of the oldest open lots, splitting a lot when needed, and
    yields one round trip per matched lot slice. Commissions are allocated pro rata to
    quantity on both legs. Lots still open at the end are not counted, and the part of a
    sell with no open lot before it (e.g. its buy lies outside the fills given) is ignored.
    Fills are processed in `filled_at` order; ties keep their input order.
    """
    if fills is None or fills.empty:
        return []
    days = fill_days(fills)
    return [
        RoundTrip(symbol, days[entry], days[exit_], quantity, entry_price, exit_price, pnl)
        for symbol, entry, exit_, quantity, entry_price, exit_price, pnl in _match_fifo(fills)
    ]


#: A matched slice: symbol, the buy's and the sell's row in the fills, quantity, entry
#: price, exit price, pnl after both commissions.
_Trip = tuple[str, int, int, float, float, float, float]


def _match_fifo(fills: pd.DataFrame) -> list[_Trip]:
    """The FIFO matching of `round_trips_fifo`, with each trip's entry and exit day given
    as the row position of its buy and sell in `fills`.

    The columns are read as plain lists, and days are looked up only for the trips kept:
    iterating a frame row by row makes a Timestamp of every date cell, which cost more
    than the matching (a report matches every run's fills in each of its periods)."""
    order = np.argsort(pd.DatetimeIndex(pd.to_datetime(fills["filled_at"])).asi8, kind="stable")
    columns = (fills[name].to_numpy()[order].tolist()
               for name in ("symbol", "side", "quantity", "price", "commission"))
    books: dict[str, deque[_Lot]] = {}
    trips: list[_Trip] = []
    for row, symbol, side, quantity, price, commission in zip(order.tolist(), *columns, strict=True):
        symbol, side, quantity = str(symbol), getattr(side, "value", side), float(quantity)
        book = books.setdefault(symbol, deque())
        per_unit = float(commission) / quantity if quantity > 0 else 0.0
        if side == "buy":
            book.append(_Lot(quantity, float(price), per_unit, row))
        elif side == "sell":
            _close_lots(book, symbol, row, float(price), quantity, per_unit, trips)
        else:
            raise ValueError(f"fill side must be 'buy' or 'sell', got {side!r}")
    return trips


def _close_lots(
    book: deque[_Lot], symbol: str, row: int, exit_price: float, quantity: float,
    per_unit: float, trips: list[_Trip],
) -> None:
    """Consume the oldest lots of `book` for one sell (fills row `row`), appending one
    trip per slice taken."""
    remaining = quantity
    while remaining > _QTY_EPS and book:
        lot = book[0]
        taken = min(remaining, lot.quantity)
        costs = taken * (lot.commission_per_unit + per_unit)
        pnl = taken * (exit_price - lot.price) - costs
        trips.append((symbol, lot.row, row, taken, lot.price, exit_price, pnl))
        lot.quantity -= taken
        remaining -= taken
        if lot.quantity <= _QTY_EPS:
            book.popleft()


def _trade_stats(fills: pd.DataFrame | None, pnls: list[float] | None = None) -> dict[str, Metric]:
    """Win rate and average win / average loss of the FIFO round trips of `fills` (or of
    the trips' `pnls` given, matched over a longer span)."""
    if pnls is None:
        pnls = [trip[-1] for trip in _match_fifo(fills)] if fills is not None and not fills.empty else []
    wins = [pnl for pnl in pnls if pnl > 0]
    losses = [pnl for pnl in pnls if pnl < 0]
    win_rate = len(wins) / len(pnls) if pnls else None
    ratio = None
    if wins and losses:
        ratio = float(np.mean(wins)) / abs(float(np.mean(losses)))
    return {"win_rate": _finite(win_rate), "profit_loss_ratio": _finite(ratio)}


def _cost_stats(fills: pd.DataFrame | None, equity: pd.Series, years: float) -> dict[str, Metric]:
    """Fill count, money spent on costs, annualised one-way turnover, and the costs per
    year as a fraction of mean equity (the research's "implementation cost", which it
    claims stays below 0.10% a year)."""
    if fills is None:
        return {"trades": None, "transaction_costs": None, "turnover": None, "cost_per_year": None}
    costs = float((fills["commission"].astype(float) + fills["slippage_cost"].astype(float)).sum())
    notional = float((fills["quantity"].astype(float) * fills["price"].astype(float)).abs().sum())
    mean_equity = float(equity.mean())
    turnover = cost_per_year = None
    if years > 0 and mean_equity > 0:
        turnover = notional / 2.0 / mean_equity / years
        cost_per_year = costs / mean_equity / years
    return {
        "trades": len(fills),
        "transaction_costs": _finite(costs),
        "turnover": _finite(turnover),
        "cost_per_year": _finite(cost_per_year),
    }


# --------------------------------------------------------------------------- return stats


def _cagr(total_return: float, years: float) -> float | None:
    growth = 1.0 + total_return
    if years <= 0 or growth < 0:
        return None
    return _annualised(growth, 1.0 / years)


def _annualised(growth: float, exponent: float) -> float | None:
    """growth ** exponent - 1, or None where it is out of float range (a large gain over
    a day or two): Python's float power raises OverflowError instead of giving inf."""
    try:
        return _finite(growth**exponent - 1.0)
    except OverflowError:
        return None


def _sharpe(excess: pd.Series, periods_per_year: int) -> float | None:
    """Mean over standard deviation (ddof=1) of daily excess returns, annualised."""
    if len(excess) < 2:
        return None
    std = float(excess.std(ddof=1))
    if not std > 0:
        return None
    return _finite(float(excess.mean()) / std * math.sqrt(periods_per_year))


def _sortino(excess: pd.Series, periods_per_year: int) -> float | None:
    """Mean daily excess over downside deviation sqrt(mean(min(excess, 0)^2)), annualised."""
    if len(excess) < 2:
        return None
    downside = math.sqrt(float((excess.clip(upper=0.0) ** 2).mean()))
    if not downside > 0:
        return None
    return _finite(float(excess.mean()) / downside * math.sqrt(periods_per_year))


def max_drawdown(equity: pd.Series) -> float:
    """Worst fall from a running peak, as a negative fraction (0.0 if it never fell)."""
    values = equity.to_numpy(dtype=float)
    peaks = np.maximum.accumulate(values)
    return float(np.min(values / peaks - 1.0))


def drawdown_series(equity: pd.Series) -> pd.Series:
    """Fall from the running peak at every date (<= 0), for charts."""
    return equity / equity.cummax() - 1.0


#: Two drawdowns this close are the same but for rounding.
DRAWDOWN_TOLERANCE = 1e-6


def drawdowns_differ(own: Iterable[float], all_time: Iterable[float]) -> bool:
    """Whether a run's own drawdown (from the highest equity it recorded) and the stored
    one (from the strategy's all-time peak, the one its drawdown defence measures from)
    differ on any day, both <= 0 and day by day: they do when the run resumed below a peak
    an earlier run reached. The one test of it, so the dashboard and `bot report` show the
    second drawdown on the same runs."""
    return any(abs(a - b) > DRAWDOWN_TOLERANCE for a, b in zip(own, all_time, strict=True))


def _alpha_beta(
    strat_excess: pd.Series, market_excess: pd.Series, periods_per_year: int
) -> tuple[float | None, float | None]:
    """OLS of strategy excess on market excess; alpha is the daily intercept annualised."""
    both = pd.concat([strat_excess, market_excess], axis=1).dropna()
    if len(both) < 2:
        return None, None
    y = both.iloc[:, 0].to_numpy()
    x = both.iloc[:, 1].to_numpy()
    x_dev = x - x.mean()
    var_x = float(np.dot(x_dev, x_dev))
    if not var_x > 0:
        return None, None
    beta = float(np.dot(x_dev, y - y.mean())) / var_x
    alpha = float(y.mean() - beta * x.mean()) * periods_per_year
    return _finite(alpha), _finite(beta)


def performance(
    equity: pd.Series,
    *,
    risk_free: pd.Series | None = None,
    market: pd.Series | None = None,
    fills: pd.DataFrame | None = None,
    periods_per_year: int = 252,
    trip_pnls: list[float] | None = None,
) -> dict[str, Metric]:
    """Headline statistics of one equity curve; see the module docstring for None rules.

    Daily returns are simple close-to-close returns. The risk-free rate paired with the
    return ending on day t is the one in force on t (see `daily_risk_free`). `days` is
    the number of equity points. Trade metrics use `fills` as given (None when absent);
    win rate and P/L ratio the round trips `trip_pnls` if given (matched over the whole
    run: a window's own fills would pair a sell with the wrong buy).
    """
    eq = _clean_equity(equity)
    index = pd.DatetimeIndex(eq.index)
    returns = eq.pct_change().iloc[1:]
    rf = daily_risk_free(risk_free, index, periods_per_year).iloc[1:]
    excess = returns - rf
    years = _years(index)
    total_return = float(eq.iloc[-1] / eq.iloc[0] - 1.0)
    cagr = _cagr(total_return, years)
    mdd = max_drawdown(eq)
    vol = float(returns.std(ddof=1)) * math.sqrt(periods_per_year) if len(returns) >= 2 else None
    alpha = beta = None
    if market is not None:
        market_returns = _align_market(market, index).pct_change(fill_method=None).iloc[1:]
        market_excess = market_returns - rf
        alpha, beta = _alpha_beta(excess, market_excess, periods_per_year)
    return {
        "start": index[0].date().isoformat(),
        "end": index[-1].date().isoformat(),
        "days": len(eq),
        "total_return": _finite(total_return),
        "cagr": cagr,
        "annual_volatility": _finite(vol),
        # A curve that never moved took no risk: no ratio (over a risk-free rate its
        # excess returns are the rate's own day-to-day noise, and the ratio ran to -250).
        "sharpe": _sharpe(excess, periods_per_year) if vol else None,
        "sortino": _sortino(excess, periods_per_year) if vol else None,
        "max_drawdown": _finite(mdd),
        "calmar": _finite(cagr / abs(mdd)) if cagr is not None and mdd < 0 else None,
        **_trade_stats(fills, trip_pnls),
        "alpha": alpha,
        "beta": beta,
        **_cost_stats(fills, eq, years),
    }


# --------------------------------------------------------------------------- tables


def period_table(
    equity: pd.Series,
    periods: list[tuple[str, str, str]],
    *,
    risk_free: pd.Series | None = None,
    market: pd.Series | None = None,
    fills: pd.DataFrame | None = None,
    periods_per_year: int = 252,
) -> list[dict[str, Metric]]:
    """performance() on each named (name, start ISO, end ISO or "present") window, both
    ends inclusive.

    Each window starts from the last close before it, as a calendar year's return does,
    so back-to-back windows compound to the window that spans them (the move into a
    window's first day is in it); costs, trades and turnover count the fills on the
    window's own days, and win rate and P/L ratio the round trips that closed in it,
    matched over the whole run (matching a window's fills alone paired a sell with a buy
    inside the window when its lot was bought before). A window the curve does not reach
    (no day in it, or one day and nothing before) is left out: an empty row would read
    as a result.
    """
    eq = _clean_equity(equity)
    trips: list[tuple[pd.Timestamp, float]] = []
    if fills is not None and not fills.empty:
        exit_days = fill_days(fills)
        trips = [(exit_days[trip[2]], trip[-1]) for trip in _match_fifo(fills)]
    rows: list[dict[str, Metric]] = []
    for name, start, end in periods:
        inside = eq.index >= pd.Timestamp(start)
        if end != "present":
            inside &= eq.index <= pd.Timestamp(end)
        days = np.flatnonzero(inside)
        if len(days) == 0:
            continue
        part = eq.iloc[max(int(days[0]) - 1, 0) : int(days[-1]) + 1]
        if len(part) < 2:
            continue
        first, last = eq.index[days[0]].normalize(), part.index[-1].normalize()
        part_fills = slice_fills(fills, eq.index[days[0]], part.index[-1])
        stats = performance(
            part,
            risk_free=risk_free,
            market=market,
            fills=part_fills,
            periods_per_year=periods_per_year,
            trip_pnls=[pnl for day, pnl in trips if first <= day <= last] if fills is not None else None,
        )
        rows.append({"name": name, **stats})
    return rows


def _label(value: object) -> str | None:
    """Regime label as plain text (enum members give their value); None if missing."""
    if value is None or (not isinstance(value, str) and bool(pd.isna(value))):
        return None
    return str(getattr(value, "value", value))


def regime_table(
    equity: pd.Series, regimes: pd.Series, periods_per_year: int = 252
) -> list[dict[str, Metric]]:
    """Return statistics per regime, attributing each day's return to the regime before it.

    The return from t-1 to t belongs to the regime in force at t-1: the market's regime as
    the weekly rule classified it when the day began. It is not the regime the positions
    were decided under: a switch triggers no rebalance, so for up to a rebalance interval
    after one the book is still the previous regime's (94 of the 3,735 days of the default
    backtest; crediting those to the holdings' regime moves a third of TRANSITION's
    return). `share` is days / all daily returns (so the shares sum to 1 when every day
    has a label). Rows follow first appearance.
    """
    eq = _clean_equity(equity)
    known = regimes.sort_index()
    known = known[~known.index.duplicated(keep="last")]
    labels = known.reindex(eq.index, method="ffill").map(_label)
    returns = eq.pct_change().iloc[1:]
    prior = pd.Series(labels.to_numpy()[:-1], index=returns.index)
    total = len(returns)
    rows: list[dict[str, Metric]] = []
    for name in dict.fromkeys(x for x in prior if isinstance(x, str)):  # NaN: no regime yet
        rows.append(_regime_row(name, returns[prior == name], total, periods_per_year))
    return rows


def _regime_row(
    name: str, returns: pd.Series, total: int, periods_per_year: int
) -> dict[str, Metric]:
    days = len(returns)
    compounded = float((1.0 + returns).prod() - 1.0)
    annual = _annualised(1.0 + compounded, periods_per_year / days) if compounded > -1 else None
    vol = float(returns.std(ddof=1)) * math.sqrt(periods_per_year) if days >= 2 else None
    return {
        "regime": name,
        "days": days,
        "share": _finite(days / total),
        "total_return": _finite(compounded),
        "annual_return": _finite(annual),
        "annual_volatility": _finite(vol),
    }
