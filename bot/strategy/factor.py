"""The robo-advisor factor model: four standardized signals, a profile-weighted composite
score, and a linear program with a drawn total weight (the whitepaper in
../shared/research/002_*.txt; docs/robo.md).

Per decision (weekly, on the last trading day of the week): relative strength, trend,
mean reversion and seasonality per ETF from closes up to the decision day, each
standardized across the universe; Score = sum of the profile's weights x signals; the
LP of bot.strategy.factor_optimizer turns scores into weights. The risk guard of the
leverage model runs afterwards with whatever rules the config enables (the robo configs
enable none, and their position cap equals the LP's 50% bound, which the static fallback
respects too, so it changes nothing).
Every signal, the score, the rank, the LP's reason and the drawn total go into each
asset's reasons in the trade log.
"""

from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass

import numpy as np

from bot.config import FactorSettings, Settings
from bot.risk import GuardInputs, guard
from bot.strategy.base import DecisionContext, TargetDecision
from bot.strategy.factor_optimizer import Allocation, allocate, allocate_static, draw_total
from bot.strategy.factor_signals import (
    HoldingWindow,
    SignalSet,
    composite,
    compute_signals,
    turn_of_month_flags,
)
from bot.types import TargetRow


def holding_window(day: dt.date, lag: int, holding_days: int, before: int, after: int) -> HoldingWindow:
    """Month and turn-of-month flag of the sessions a decision taken at the close of
    `day` will be held: orders go out `lag` sessions later and fill at the next open, so
    the holding starts `lag + 1` sessions after `day` and lasts `holding_days`. Uses the
    NYSE calendar, which is known in advance (no prices)."""
    from bot.calendar import sessions

    horizon = dt.timedelta(days=2 * (lag + holding_days) + 45)  # well past the window's month
    span = sessions(day.replace(day=1), day + horizon)
    later = span[span > np.datetime64(day)]
    hold = later[lag : lag + holding_days]
    if len(hold) == 0:  # beyond the calendar's range: fall back to the decision month
        return HoldingWindow(day.year, day.month, False)
    flags = turn_of_month_flags(span, before, after)
    first = hold[0].astype(dt.date)
    return HoldingWindow(first.year, first.month, bool(flags[np.isin(span, hold)].any()))


@dataclass(frozen=True)
class FactorExplanation:
    """One decision of the factor model and everything it was computed from."""

    holding: HoldingWindow
    signals: SignalSet
    ranked: np.ndarray  # bool per asset: entered the LP
    scores: np.ndarray  # composite score per asset
    allocation: Allocation  # the LP's (or the static mix's) weights and totals
    used_lp: bool  # False: too little history, the static example allocation
    decision: TargetDecision  # what the engine receives


class FactorModel:
    """TargetModel for strategy.kind = "factor"."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.cfg = settings.factor
        universe = settings.universe
        symbols = settings.symbols
        self.is_equity = np.array([universe[s].role == "equity" for s in symbols])
        self.is_bond = np.array([universe[s].role == "bond" for s in symbols])
        self.static = np.array([universe[s].weight for s in symbols])
        self.lag = settings.rebalance.execution_lag_days
        rk = settings.risk
        rules = set(rk.rules)
        # Signals read the whole close history (seasonality needs earlier years); the
        # returns window only feeds the guard rules a config may enable.
        self.returns_window = max(
            rk.vol_history if "volatility" in rules else 0,
            rk.correlation_window if "correlation" in rules else 0,
            rk.vol_window if "stops" in rules else 0,
        )
        cfg = self.cfg
        #: trading days of closes the core signals need before the first ranked decision
        self.warmup_days = max(cfg.rs_window + 1, cfg.tf_slow, cfg.mr_lookback + 1)
        #: calendar days of history that make a decision identical to a backtest's: the
        #: warm-up, or the seasonal average's years plus the month before them
        self.history_calendar_days = max(
            self.warmup_days * 7 // 5 + 30, 366 * (cfg.se_years + 1) + 31
        )

    def decide(self, ctx: DecisionContext) -> TargetDecision:
        return self.explain(ctx).decision

    def explain(self, ctx: DecisionContext) -> FactorExplanation:
        """The decision with the numbers behind it (signals, scores, the LP's totals), for
        the allocation API's suitability explanation; `decide` returns its `decision`."""
        cfg = self.cfg
        holding = holding_window(
            ctx.day, self.lag, cfg.holding_days, cfg.tom_days_before, cfg.tom_days_after
        )
        signals = compute_signals(ctx.closes, ctx.dates, self.is_equity, holding, cfg)
        ranked = signals.complete() & ctx.tradable
        scores = composite(signals, cfg.weights)
        drawn = draw_total(cfg.seed, ctx.day, cfg.total_min, cfg.total_max)
        use_lp = ranked.sum() >= 2
        if use_lp:
            alloc = allocate(scores, ranked, drawn, cfg.max_weight)
            how = "factor LP"
        else:
            alloc = self._static(ctx.tradable, drawn)
            how = "insufficient history for the signals: static example allocation"
        result = guard(
            alloc.weights,
            GuardInputs(ctx.day, ctx.symbols, self.is_bond, ctx.returns, ctx.closes[-1],
                        ctx.regime, ctx.defensive, ctx.tradable),
            self.settings.risk,
        )
        total_note = self._total_note(ctx.day, alloc)
        rows = []
        for i, sym in enumerate(ctx.symbols):
            reasons = (
                how,
                *signal_reasons(signals, i, holding, cfg),
                score_reason(scores, ranked, i),
                lp_reason(alloc.weights[i], ranked[i], ctx.tradable[i], cfg.max_weight)
                if use_lp else static_reason(alloc.weights[i], cfg.max_weight),
                total_note,
                *result.reasons[i],
            )
            w = float(alloc.weights[i])
            rows.append(TargetRow(sym, w, w, float(result.weights[i]), _stop(result.stops[i]), reasons))
        stops = result.stops if "stops" in self.settings.risk.rules else None
        decision = TargetDecision(result.weights, rows, result.events, stops)
        return FactorExplanation(holding, signals, ranked, scores, alloc, use_lp, decision)

    def _static(self, tradable: np.ndarray, drawn: float) -> Allocation:
        """The whitepaper's example allocation over the tradable ETFs, under the LP's cap
        and invested total: rescaled over fewer ETFs it could pass `max_weight` (AGG 58%
        when only AGG and SHY trade), and the risk guard's cap would clip it."""
        return allocate_static(self.static, tradable, drawn, self.cfg.max_weight)

    def _total_note(self, day: dt.date, alloc: Allocation) -> str:
        cfg = self.cfg
        note = (
            f"total drawn {alloc.drawn:.2%} in [{cfg.total_min:.0%}, {cfg.total_max:.0%}] "
            f"(seed {cfg.seed}, {day.isoformat()}), invested {alloc.invested:.2%}"
        )
        if alloc.unused > 1e-12:
            why = "no leverage" if alloc.drawn > 1.0 else "caps cannot hold more"
            note += f", {alloc.unused:.2%} of the draw kept in cash ({why})"
        return note


def signal_reasons(
    signals: SignalSet, i: int, holding: HoldingWindow, cfg: FactorSettings
) -> tuple[str, ...]:
    """One line per signal: standardized value, then the raw inputs behind it."""
    z, raw, d = signals.z, signals.raw, signals.detail
    years = int(d["own_month_years"][i])
    month = calendar.month_abbr[holding.month]
    own = (
        f"own {month} avg {d['own_month'][i]:+.2%} over {years}y"
        if np.isfinite(d["own_month"][i]) else f"own {month} avg n/a ({years}y < {cfg.se_min_years})"
    )
    return (
        f"RS {z['relative_strength'][i]:+.2f} ({cfg.rs_window}d return {raw['relative_strength'][i]:+.2%})",
        f"TF {z['trend'][i]:+.2f} (price vs {cfg.tf_fast}d MA {d['gap_fast'][i]:+.2%}, "
        f"vs {cfg.tf_slow}d MA {d['gap_slow'][i]:+.2%})",
        f"MR {z['mean_reversion'][i]:+.2f} ({cfg.mr_window}d return z {d['return_z'][i]:+.2f} "
        f"over {cfg.mr_lookback}d, sign reversed)",
        f"SE {z['seasonality'][i]:+.2f} ({own}; Nov-Apr equity bias {d['halloween'][i]:+.0f}; "
        f"turn of month {'in' if holding.turn_of_month else 'not in'} holding window)",
    )


def score_rank(scores: np.ndarray, ranked: np.ndarray, i: int) -> int | None:
    """1 for the best score among the ranked assets; None for an asset not ranked."""
    if not ranked[i]:
        return None
    order = np.argsort(-np.where(ranked, scores, -np.inf), kind="stable")
    return int(np.flatnonzero(order == i)[0]) + 1


def score_reason(scores: np.ndarray, ranked: np.ndarray, i: int) -> str:
    rank = score_rank(scores, ranked, i)
    if rank is None:
        return "score n/a (not ranked)"
    return f"score {scores[i]:+.3f}, rank {rank} of {int(ranked.sum())}"


def lp_reason(weight: float, ranked: bool, tradable: bool, cap: float) -> str:
    if not tradable:
        return "LP: 0 (no price today)"
    if not ranked:
        return "LP: 0 (not enough history to rank)"
    if weight >= cap - 1e-9:
        return f"LP: at the {cap:.0%} cap"
    if weight > 0:
        return f"LP: remainder {weight:.2%} (the one weight between its bounds)"
    return "LP: 0 (better-scored ETFs absorb the total)"


def static_reason(weight: float, cap: float) -> str:
    """The static fallback's weight; says so when the cap, not the mix, set it."""
    if weight >= cap - 1e-9:
        return f"static weight {weight:.2%} (at the {cap:.0%} cap, the excess spread over the others)"
    return f"static weight {weight:.2%}"


def _stop(value: float) -> float | None:
    return None if np.isnan(value) else float(value)
