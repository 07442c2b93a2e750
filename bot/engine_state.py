"""What the engine remembers between days, and its JSON form in the trade log.

Dates, not indices: a later process (the daemon after a restart, with another data
window) must read the same meaning from it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bot.risk import DrawdownState
from bot.types import Regime


@dataclass
class PendingTargets:
    """A decision waiting for its execution day (rebalance.execution_lag_days > 0)."""

    decided: dt.date
    execute_on: dt.date
    weights: np.ndarray
    reason: str


@dataclass
class EngineState:
    """Everything the engine remembers between days. Dates, not indices, so it means the
    same thing to a later process with a different data window."""

    regime: Regime | None = None
    regime_day: dt.date | None = None  # the trading day the regime was decided for
    upcoming_regime: tuple[dt.date, Regime] | None = None  # decided ahead, not yet in force
    # Outcome of each regime rule at the last decision (bot.strategy.regime): a rule the
    # next decision cannot decide from fresh inputs keeps its outcome from here.
    regime_outcomes: dict[str, bool] | None = None
    last_rebalance_day: dt.date | None = None
    targets: np.ndarray | None = None
    stops: np.ndarray | None = None
    # The closes of last_rebalance_day the stops were set against: a history adjusted
    # since (a split) shows that day at other prices, and the engine moves the stops by
    # as much (Engine._stops). None in states saved before it was kept.
    stop_basis: np.ndarray | None = None
    stopped: set[str] = field(default_factory=set)
    drawdown: DrawdownState = field(default_factory=DrawdownState)
    pending: list[PendingTargets] = field(default_factory=list)  # in flight, oldest first
    # Why a rebalance is owed: a defensive switch that found orders still open. It must
    # not be lost (the drawdown rule reports a switch only on the day it happens).
    owed_rebalance: str | None = None
    equity_peak: float = 0.0  # high-water mark of the recorded equity (never re-based)

    def to_dict(self, symbols: tuple[str, ...]) -> dict[str, Any]:
        """JSON-safe form (floats round-trip exactly through JSON)."""

        def by_symbol(values: np.ndarray | None) -> dict[str, float | None] | None:
            if values is None:
                return None
            return {s: (None if np.isnan(v) else float(v)) for s, v in zip(symbols, values, strict=True)}

        dd = self.drawdown
        return {
            "regime": self.regime.value if self.regime else None,
            "regime_day": _iso(self.regime_day),
            "upcoming_regime": None
            if self.upcoming_regime is None
            else [_iso(self.upcoming_regime[0]), self.upcoming_regime[1].value],
            "regime_outcomes": self.regime_outcomes,
            "last_rebalance_day": _iso(self.last_rebalance_day),
            "targets": by_symbol(self.targets),
            "stops": by_symbol(self.stops),
            "stop_basis": by_symbol(self.stop_basis),
            "stopped": sorted(self.stopped),
            "drawdown": {"peak": dd.peak, "defensive": dd.defensive, "entered_day": _iso(dd.entered_day)},
            "pending": [
                {
                    "decided": _iso(p.decided),
                    "execute_on": _iso(p.execute_on),
                    "weights": by_symbol(p.weights),
                    "reason": p.reason,
                }
                for p in self.pending
            ],
            "owed_rebalance": self.owed_rebalance,
            "equity_peak": self.equity_peak,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any], symbols: tuple[str, ...]) -> EngineState:
        """Inverse of to_dict; symbols added to the universe since then start at 0."""

        def array(values: dict[str, float | None] | None) -> np.ndarray | None:
            if values is None:
                return None
            return np.array([np.nan if values.get(s) is None else values[s] for s in symbols])

        dd = raw.get("drawdown") or {}
        pending = raw.get("pending")
        targets = array(raw.get("targets"))
        return cls(
            regime=Regime(raw["regime"]) if raw.get("regime") else None,
            regime_day=_date(raw.get("regime_day")),
            upcoming_regime=None
            if not raw.get("upcoming_regime")
            else (_date(raw["upcoming_regime"][0]), Regime(raw["upcoming_regime"][1])),
            # Older states had none: the previous regime implies them (decide_regime).
            regime_outcomes=_outcomes(raw.get("regime_outcomes")),
            last_rebalance_day=_date(raw.get("last_rebalance_day")),
            targets=None if targets is None else np.nan_to_num(targets),
            stops=array(raw.get("stops")),
            stop_basis=array(raw.get("stop_basis")),
            stopped=set(raw.get("stopped") or ()),
            drawdown=DrawdownState(
                float(dd.get("peak", 0.0)), bool(dd.get("defensive", False)),
                _date(dd.get("entered_day")),
            ),
            pending=[
                PendingTargets(
                    _date(p["decided"]), _date(p["execute_on"]),
                    np.nan_to_num(array(p["weights"])), p["reason"],
                )
                # States saved before decisions could queue hold one object or null.
                for p in (pending if isinstance(pending, list) else [pending] if pending else [])
            ],
            owed_rebalance=raw.get("owed_rebalance"),
            # Older states had none: the guard's peak is the best estimate there is.
            equity_peak=float(raw.get("equity_peak", dd.get("peak", 0.0))),
        )


def _iso(day: dt.date | None) -> str | None:
    return None if day is None else day.isoformat()


def _date(text: str | None) -> dt.date | None:
    return None if not text else dt.date.fromisoformat(text)


def _outcomes(raw: Any) -> dict[str, bool] | None:
    if not isinstance(raw, dict) or not raw:
        return None
    return {str(rule): bool(holds) for rule, holds in raw.items()}
