"""Volatility decay of the leveraged ETFs: what Avellaneda & Zhang predict, what the data
shows, per asset and per regime.

A fund that holds L times its index's daily return, reset every day, compounds to

    log(F_T / F_0) = L log(I_T / I_0) - L(L-1)/2 sum_t r_t^2 - costs + O(r^3),

r_t the index's daily return (Avellaneda & Zhang 2010; the research's
E[decay] = beta(beta-1)/2 sigma^2 dt, with sigma^2 dt the day's realized variance r_t^2).
So, over any set of days:

- *predicted decay* = L(L-1)/2 sum r_t^2, from the underlying's realized variance;
- *realized gap* = sum_t [L log(1 + r_t) - log(1 + R_t)], R_t the fund's daily return:
  how far the fund fell behind L times its index, in log terms;
- *residual* = gap - predicted decay: what the decay does not explain: the fund's costs
  (expense ratio; financing the borrowed (L-1) exposure, shown beside it as (L-1) x the
  3-month bill rate), the index fund's dividends (the data's prices include them) and
  tracking error.

Log terms add up over days, so the days of each regime give that regime's share (the
return from t-1 to t counted in the regime of t-1, as the report's regime table does).
All three are shown per year (x 252 / days). The underlying is `universe.X.underlying` in
the config: QQQ, SPY, DIA, TLT and GLD are in the data. DIG's index (Dow Jones U.S. Oil &
Gas) has no fund in the data: its decay is predicted from DIG's own variance divided by
L^2 (the index variance a daily-reset 2x fund implies) and no gap can be measured.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from rich.table import Table

from bot.config import Asset
from bot.metrics import daily_risk_free

TRADING_DAYS = 252
ALL = "all"


def decay_section(
    closes: pd.DataFrame | None,
    universe: Mapping[str, Asset],
    regimes: pd.Series | None,
    days: pd.DatetimeIndex,
    risk_free: pd.Series | None = None,
) -> dict[str, Any] | None:
    """The report's decay table over `days` (the run's dates), or None when the universe
    holds no leveraged fund or there are no prices. `risk_free` is the bill rate in
    percent (DTB3) for the financing column."""
    levered = {sym: a for sym, a in universe.items() if a.leverage != 1.0}
    if closes is None or not levered or len(days) < 2:
        return None
    # A price's last close carries over a day it did not trade, never past its data's end
    # (`bot report` on a run longer than its data): those days are unknown, not flat.
    inside = closes.reindex(closes.index.union(days)).ffill(limit_area="inside").reindex(days)
    labels = _prior_regime(regimes, days)
    bill = daily_risk_free(risk_free, days).iloc[1:] if risk_free is not None else None
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    for sym, asset in levered.items():
        if sym not in inside:
            notes.append(f"{sym}: no prices in the data")
            continue
        fund = inside[sym].pct_change().iloc[1:]
        underlying = asset.underlying if asset.underlying in inside else None
        if asset.underlying and underlying is None:
            notes.append(f"{sym}: its underlying {asset.underlying} is not in the data")
        if underlying is None:
            index = fund / asset.leverage  # the index return a daily-reset fund implies
            notes.append(
                f"{sym}: no underlying fund in the data; decay predicted from its own variance "
                f"/ {asset.leverage:g}^2, gap not measurable"
            )
        else:
            index = inside[underlying].pct_change().iloc[1:]
        rows.extend(
            _asset_rows(sym, underlying, asset.leverage, fund, index, labels, bill,
                        measured=underlying is not None)
        )
    return {"rows": rows, "notes": notes} if rows else None


def _prior_regime(regimes: pd.Series | None, days: pd.DatetimeIndex) -> pd.Series:
    """Regime in force at t-1 for the return ending on each day t (None if unknown)."""
    if regimes is None:
        return pd.Series([None] * (len(days) - 1), index=days[1:], dtype=object)
    known = regimes.sort_index()
    known = known[~known.index.duplicated(keep="last")]
    labels = known.reindex(days, method="ffill")
    values = [None if pd.isna(v) else str(getattr(v, "value", v)) for v in labels]
    return pd.Series(values[:-1], index=days[1:], dtype=object)


def _asset_rows(
    symbol: str,
    underlying: str | None,
    leverage: float,
    fund: pd.Series,
    index: pd.Series,
    labels: pd.Series,
    bill: pd.Series | None,
    *,
    measured: bool,
) -> list[dict[str, Any]]:
    both = np.isfinite(fund.to_numpy()) & np.isfinite(index.to_numpy())
    f, r = fund.to_numpy()[both], index.to_numpy()[both]
    regime = labels.to_numpy()[both]
    rf = None if bill is None else bill.to_numpy()[both]
    groups = [(ALL, np.ones(len(f), dtype=bool))] + [
        (name, regime == name) for name in dict.fromkeys(x for x in regime if isinstance(x, str))
    ]
    rows = []
    for name, mask in groups:
        n = int(mask.sum())
        if n == 0:
            continue
        variance = float(np.sum(r[mask] ** 2))
        predicted = leverage * (leverage - 1.0) / 2.0 * variance
        gap = float(np.sum(leverage * np.log1p(r[mask]) - np.log1p(f[mask]))) if measured else None
        per_year = TRADING_DAYS / n
        rows.append({
            "symbol": symbol,
            "underlying": underlying,
            "leverage": leverage,
            "regime": name,
            "days": n,
            "underlying_vol": float(np.sqrt(variance * per_year)),
            "predicted_decay": predicted * per_year,
            "realized_gap": None if gap is None else gap * per_year,
            "residual": None if gap is None else (gap - predicted) * per_year,
            "financing": None if rf is None else (leverage - 1.0) * float(rf[mask].sum()) * per_year,
        })
    return rows


def _pct(value: Any) -> str:
    return "-" if value is None else f"{value * 100:.2f}"


def decay_table(report: dict[str, Any]) -> Table | None:
    """The decay section as a terminal table (None when the report has none)."""
    section = report.get("decay")
    if not section or not section.get("rows"):
        return None
    table = Table(
        title="Volatility decay per year, log (decay = L(L-1)/2 x index variance; "
        "gap = L x index - fund; residual = gap - decay: costs, dividends, tracking)",
        title_justify="left",
        caption="; ".join(section.get("notes") or ()) or None,
        caption_justify="left",
    )
    for header in ("fund", "index", "regime"):
        table.add_column(header, style="bold" if header == "fund" else None)
    for header in ("days", "index vol %", "decay %", "gap %", "residual %", "(L-1) bill %"):
        table.add_column(header, justify="right")
    last = None
    for row in section["rows"]:
        if last is not None and row["symbol"] != last:
            table.add_section()
        last = row["symbol"]
        table.add_row(
            f"{row['symbol']} {row['leverage']:g}x",
            row["underlying"] or "(own / L)",
            row["regime"],
            str(row["days"]),
            _pct(row["underlying_vol"]),
            _pct(row["predicted_decay"]),
            _pct(row["realized_gap"]),
            _pct(row["residual"]),
            _pct(row.get("financing")),
        )
    return table
