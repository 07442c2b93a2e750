"""A profile's targets, decided once, handed to every client account of the profile.

The weekly decision runs each profile's target model once (the factor model's LP: three
LPs for three profiles, not one per client) and records the targets with their reasons.
Each account's engine then gets `ProfileTargets` as its target model: when the engine's
own rebalance rule finds a rebalance due, it asks the model, which answers with the
profile's decision instead of solving again. Everything else (drawdown bookkeeping, the
rebalance rule, the planner on the account's own holdings and cash, sells first) is the
engine's, unchanged.
"""

from __future__ import annotations

import numpy as np

from bot.errors import BotError
from bot.platform.store import StoredDecision
from bot.strategy.base import DecisionContext, TargetDecision


class ProfileTargets:
    """TargetModel answering with one profile's stored decision for its day."""

    def __init__(self, decision: StoredDecision, symbols: tuple[str, ...],
                 history_calendar_days: int) -> None:
        missing = [s for s in decision.weights if s not in symbols]
        if missing:
            raise BotError(
                f"profile {decision.profile}: the decision of {decision.day} has weights for "
                f"{', '.join(missing)}, which its config no longer trades"
            )
        self.decision = decision
        self.weights = np.array([decision.weights.get(s, 0.0) for s in symbols])
        stops = decision.stops
        self.stops = None if stops is None else np.array(
            [np.nan if stops.get(s) is None else float(stops[s]) for s in symbols]
        )
        self.returns_window = 0  # nothing is computed here
        self.history_calendar_days = history_calendar_days

    def decide(self, ctx: DecisionContext) -> TargetDecision:
        if ctx.day != self.decision.day:
            raise BotError(
                f"profile {self.decision.profile}: a rebalance on {ctx.day} was due but the "
                f"platform decided the profile's targets on {self.decision.day}"
            )
        # No rows and no events: the weekly decision recorded them once for the profile.
        stops = None if self.stops is None else self.stops.copy()
        return TargetDecision(self.weights.copy(), [], [], stops)


def stored_weights(symbols: tuple[str, ...], weights: np.ndarray) -> dict[str, float]:
    return {s: float(w) for s, w in zip(symbols, weights, strict=True)}


def stored_stops(symbols: tuple[str, ...], stops: np.ndarray | None) -> dict[str, float | None] | None:
    if stops is None:
        return None
    return {s: (None if not np.isfinite(v) else float(v)) for s, v in zip(symbols, stops, strict=True)}
