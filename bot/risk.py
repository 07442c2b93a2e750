"""The risk guard: position cap, volatility regime, correlation clusters, drawdown
defence and per-asset stops.

Pure functions on arrays. Each rule returns the adjusted weights and, when it fires, a
RiskEvent carrying the inputs it saw, so the trade log can show why money moved. Weights
may sum to less than 1: the rest is cash. The position cap holds after every step.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from bot.config import RiskSettings
from bot.strategy.window_stats import WindowStats, series_vol
from bot.types import Regime, RiskEvent, new_record

_EPS = 1e-12


def _redistribute(w: np.ndarray, amount: float, receivers: np.ndarray, cap: float) -> np.ndarray:
    """Give `amount` to the `receivers`, pro rata to their weights (equally if all are
    zero), never lifting one above `cap`. What cannot be placed stays unallocated (cash)."""
    return np.array(_redistribute_values(w.tolist(), amount, receivers.tolist(), cap))


def _redistribute_values(
    values: list[float], amount: float, receivers: list[bool], cap: float
) -> list[float]:
    """`_redistribute` on plain floats, a handful per asset: numpy's calls on arrays this
    small cost more than the arithmetic (and sums of fewer than eight floats add in
    numpy's order, so the results are numpy's to the bit)."""
    for _ in range(len(values)):
        if amount <= _EPS:
            break
        room = [max(cap - x, 0.0) if r else 0.0 for x, r in zip(values, receivers, strict=True)]
        if not any(space > _EPS for space in room):
            break
        basis = [x if space > _EPS else 0.0 for x, space in zip(values, room, strict=True)]
        total = sum(basis)
        if total <= _EPS:
            basis = [1.0 if space > _EPS else 0.0 for space in room]
            total = sum(basis)
        given = [min(amount * b / total, space) for b, space in zip(basis, room, strict=True)]
        values = [x + g for x, g in zip(values, given, strict=True)]
        amount -= sum(given)
    return values


def cap_weights(w: np.ndarray, cap: float, tradable: np.ndarray | None = None) -> np.ndarray:
    """Clip every weight at `cap` and hand the excess to the other `tradable` assets (the
    ones that may receive it) pro rata, until the cap holds everywhere. What none can
    take stays in cash. Returns `w` itself when nothing is over the cap."""
    limit = cap + _EPS
    values = w.tolist()  # plain floats: nothing over the cap is the usual case
    over = [v > limit for v in values]
    if not any(over):
        return w
    excess = sum(v - cap for v, o in zip(values, over, strict=True) if o)
    capped = [cap if o else v for v, o in zip(values, over, strict=True)]
    listed = [True] * len(values) if tradable is None else tradable.tolist()
    receivers = [not o and t for o, t in zip(over, listed, strict=True)]
    return np.array(_redistribute_values(capped, excess, receivers, cap))


class GuardInputs(NamedTuple):
    """What the guard sees at a rebalance decision (all arrays in universe order); a
    tuple, made once per decision (a frozen dataclass sets each field the slow way)."""

    day: dt.date
    symbols: tuple[str, ...]
    is_bond: np.ndarray  # bool per asset: receives weight when risk is cut
    returns: np.ndarray  # (days, assets) trailing daily returns, newest last; may be short
    prices: np.ndarray  # decision prices
    regime: Regime
    defensive: bool
    # bool per asset: has a price today. Freed weight never goes to an asset that is not
    # listed yet: the planner cannot buy it, so its target would show as drift every day.
    tradable: np.ndarray
    # Statistics of `returns` the target model already computed for this decision.
    stats: WindowStats | None = None
    # bool per asset: may receive the weight the position cap frees (None: every
    # tradable asset). The regime overlay's cut assets are left out, so the cap does not
    # hand back what the overlay took (UNCERTAINTY: gold over the cap refilled equities).
    cap_receivers: np.ndarray | None = None

    def window_stats(self) -> WindowStats:
        return self.stats if self.stats is not None else WindowStats(self.returns)


@dataclass
class GuardResult:
    weights: np.ndarray
    stops: np.ndarray  # NaN where no stop applies
    events: list[RiskEvent] = field(default_factory=list)
    reasons: list[list[str]] = field(default_factory=list)


def _note_changes(before: np.ndarray, after: np.ndarray, reasons: list[list[str]], why: str):
    # Python floats: the same differences and text, without numpy calls per asset
    for i, (b, a) in enumerate(zip(before.tolist(), after.tolist(), strict=True)):
        if abs(a - b) > 1e-10:
            reasons[i].append(f"{why}: {b:.4f} -> {a:.4f}")


def volatility_rule(
    w: np.ndarray, inp: GuardInputs, cfg: RiskSettings
) -> tuple[np.ndarray, RiskEvent | None]:
    """Portfolio volatility over `vol_window` days against its `vol_history`-day level,
    both measured with the candidate weights on the assets' daily returns.

    Above vol_high x history: risk assets x high_vol_risk_scale, freed weight to bonds
    (within the cap), the rest to cash. Below vol_low x history: risk assets x
    low_vol_risk_scale (each within the cap), funded from cash first, then bonds down to
    low_vol_bond_floor of their weight; what that cannot fund is not bought.
    """
    if inp.returns.shape[0] < cfg.vol_history:
        return w, None
    port = inp.returns[-cfg.vol_history :] @ w
    recent = series_vol(port[-cfg.vol_window :])
    history = series_vol(port)
    if history <= 0:
        return w, None
    ratio = recent / history
    inputs = {"vol_recent": recent, "vol_history": history, "ratio": ratio}
    risk = ~inp.is_bond
    if ratio > cfg.vol_high:
        out = w.copy()
        out[risk] *= cfg.high_vol_risk_scale
        freed = float(w.sum() - out.sum())
        out = _redistribute(out, freed, inp.is_bond & inp.tradable, cfg.position_cap)
        action = f"high volatility: risk assets x{cfg.high_vol_risk_scale}, freed weight to bonds"
        return out, RiskEvent(inp.day, "volatility", action, inputs)
    if ratio < cfg.vol_low:
        out = w.copy()
        out[risk] = np.minimum(out[risk] * cfg.low_vol_risk_scale, cfg.position_cap)
        wanted = float(out.sum() - w.sum())
        cash = max(1.0 - float(w.sum()), 0.0)
        from_bonds = max(wanted - cash, 0.0)
        bonds_total = float(w[inp.is_bond].sum())
        sellable = bonds_total * (1.0 - cfg.low_vol_bond_floor)
        if from_bonds > sellable:  # not enough to fund it: scale the increase down
            affordable = cash + sellable
            out[risk] = w[risk] + (out[risk] - w[risk]) * (affordable / wanted)
            from_bonds = sellable
        if bonds_total > 0:
            out[inp.is_bond] = w[inp.is_bond] * (1.0 - from_bonds / bonds_total)
        action = f"low volatility: risk assets x{cfg.low_vol_risk_scale}, funded by cash/bonds"
        return out, RiskEvent(inp.day, "volatility", action, inputs)
    return w, None


def correlated_clusters(corr: np.ndarray, threshold: float) -> list[list[int]]:
    """Connected groups of assets linked by pairwise correlation above `threshold`."""
    linked = (corr > threshold).tolist()
    n = len(linked)
    seen = [False] * n
    clusters = []
    for start in range(n):
        if seen[start]:
            continue
        stack, members = [start], []
        seen[start] = True
        while stack:
            i = stack.pop()
            members.append(i)
            for j, link in enumerate(linked[i]):
                if link and not seen[j]:
                    seen[j] = True
                    stack.append(j)
        if len(members) > 1:
            clusters.append(sorted(members))
    return clusters


def correlation_matrix(returns: np.ndarray) -> np.ndarray:
    """Pearson correlations of the columns; a constant column correlates with nothing."""
    return WindowStats(returns).correlation(returns.shape[0])


def correlation_rule(
    w: np.ndarray, inp: GuardInputs, cfg: RiskSettings
) -> tuple[np.ndarray, RiskEvent | None]:
    """De-concentrate assets that move together: when pairwise correlations over
    `correlation_window` days exceed `correlation_max`, the connected cluster is treated
    as one position whose combined weight may not exceed `cluster_cap`; the excess goes
    to the assets in no cluster (within the position cap), the rest to cash."""
    if inp.returns.shape[0] < cfg.correlation_window:
        return w, None
    corr = inp.window_stats().correlation(cfg.correlation_window)
    corr.flat[:: corr.shape[1] + 1] = 0.0  # the diagonal, as np.fill_diagonal sets it
    max_corr = float(corr.max())
    if max_corr <= cfg.correlation_max:
        return w, None
    out = w.tolist()  # plain floats: a few per cluster
    cut_clusters = []
    clusters = correlated_clusters(corr, cfg.correlation_max)
    # Excess goes only to assets in no cluster: handing it to another cluster (even one
    # under its cap now) could push that cluster back over cluster_cap.
    receivers = inp.tradable.tolist()
    for members in clusters:
        for i in members:
            receivers[i] = False
    for members in clusters:
        total = sum(out[i] for i in members)
        if total <= cfg.cluster_cap + _EPS:
            continue
        scale = cfg.cluster_cap / total
        for i in members:
            out[i] *= scale
        out = _redistribute_values(out, total - cfg.cluster_cap, receivers, cfg.position_cap)
        cut_clusters.append([inp.symbols[i] for i in members])
    if not cut_clusters:
        return w, None
    inputs = {"max_correlation": max_corr, "clusters": cut_clusters, "cluster_cap": cfg.cluster_cap}
    event = RiskEvent(inp.day, "correlation", "correlated cluster cut to cluster_cap", inputs)
    return np.array(out), event


def stop_levels(prices: np.ndarray, vol: np.ndarray, regime: Regime, cfg: RiskSettings) -> np.ndarray:
    """stop_i = price_i * (1 - alpha * sigma_i * regime_factor), sigma_i daily volatility."""
    factor = cfg.stop_regime_factor[regime]
    return prices * (1.0 - cfg.stop_alpha * vol * factor)


def guard(w: np.ndarray, inp: GuardInputs, cfg: RiskSettings) -> GuardResult:
    """Run the enabled rules in a fixed order: cap, volatility, correlation, drawdown
    defence, stops. The cap holds after every step because later steps only scale down
    or redistribute within it."""
    reasons: list[list[str]] = [[] for _ in range(len(w))]
    events: list[RiskEvent] = []
    rules = set(cfg.rules)

    receivers = inp.tradable if inp.cap_receivers is None else inp.tradable & inp.cap_receivers
    capped = cap_weights(w, cfg.position_cap, receivers)
    if capped is not w:
        _note_changes(w, capped, reasons, f"position cap {cfg.position_cap:.0%}")
        events.append(RiskEvent(inp.day, "position_cap", "weights capped", {"cap": cfg.position_cap}))
        w = capped

    for name, rule in (("volatility", volatility_rule), ("correlation", correlation_rule)):
        if name in rules:
            out, event = rule(w, inp, cfg)
            if event is not None:
                _note_changes(w, out, reasons, name)
                events.append(event)
                w = out

    if "drawdown" in rules and inp.defensive:
        out = w * (1.0 - cfg.defensive_cash)
        _note_changes(w, out, reasons, "defensive mode")
        events.append(
            RiskEvent(
                inp.day,
                "drawdown",
                f"defensive mode: {cfg.defensive_cash:.0%} of the portfolio moved to cash",
                {"defensive_cash": cfg.defensive_cash},
            )
        )
        w = out

    if "stops" in rules and inp.returns.shape[0] >= cfg.vol_window:
        vol = inp.window_stats().vol(cfg.vol_window)
        stops = np.where(w > 0, stop_levels(inp.prices, vol, inp.regime, cfg), np.nan)
    else:
        stops = np.empty(len(w))
        stops.fill(np.nan)  # np.full, without its Python wrapper (once per decision)
    return GuardResult(w, stops, events, reasons)


class DrawdownState(NamedTuple):
    """Running peak and defensive mode; persisted between days and across restarts, so
    it names the day defence began, not an index into one process's data."""

    peak: float = 0.0
    defensive: bool = False
    entered_day: dt.date | None = None


def update_drawdown(
    state: DrawdownState,
    equity: float,
    day: dt.date,
    days_defensive: int,
    cfg: RiskSettings,
) -> tuple[DrawdownState, RiskEvent | None]:
    """Track the peak and switch defensive mode.

    Enter when the drawdown from the peak exceeds drawdown_enter. Leave when it recovers
    below drawdown_exit (hysteresis stops flapping), or once `days_defensive` (trading
    days since entry, counted by the caller's calendar) reaches defensive_max_days,
    re-basing the peak to today's equity so the trigger then measures fresh losses
    instead of keeping the portfolio half in cash for years after a deep crash.
    """
    # unpacked once: each field read by name is a descriptor call (every day)
    old_peak, defensive, entered_day = state
    peak = old_peak if old_peak >= equity else equity
    if peak != old_peak:  # a new high, many days: a record without its constructor's call
        state = new_record(DrawdownState, (peak, defensive, entered_day))
    dd = 0.0 if peak <= 0 else max(0.0, 1.0 - equity / peak)  # from the peak, today included
    if not defensive and dd <= cfg.drawdown_enter:  # nearly every day
        return state, None
    inputs = {"equity": equity, "peak": peak, "drawdown": dd}
    if not defensive:
        return (
            DrawdownState(peak, True, day),
            RiskEvent(day, "drawdown", "entered defensive mode", inputs),
        )
    if dd < cfg.drawdown_exit:
        return (
            DrawdownState(peak, False, None),
            RiskEvent(day, "drawdown", "left defensive mode: drawdown recovered", inputs),
        )
    if days_defensive >= cfg.defensive_max_days:
        return (
            DrawdownState(equity, False, None),
            RiskEvent(day, "drawdown", "left defensive mode: time limit, peak re-based", inputs),
        )
    return state, None
