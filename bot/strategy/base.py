"""The seam between the engine and a target model: what a model sees and returns.

The engine owns the clock, the book, the drawdown state, the planner and the log; a
target model turns a history window into target weights and says why. The leverage
strategy and the robo-advisor factor model are two models behind the same engine.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import numpy as np

from bot.types import Regime, RiskEvent, TargetRow


class DecisionContext(NamedTuple):
    """Everything known at the close of day `t`; arrays are views ending at t. A tuple:
    a frozen dataclass sets each field through object.__setattr__, and a backtest makes
    one per rebalance."""

    t: int
    day: dt.date
    symbols: tuple[str, ...]
    dates: np.ndarray  # trading days up to and including t
    closes: np.ndarray  # (t+1, assets) adjusted closes, NaN before an asset listed
    returns: np.ndarray  # trailing daily returns over the model's window, full rows only
    tradable: np.ndarray  # bool per asset: has a price today
    regime: Regime
    defensive: bool


@dataclass
class TargetDecision:
    """Final target weights (sum <= 1, the rest is cash), per-asset rows with reasons,
    risk events, and stop levels (NaN where none)."""

    weights: np.ndarray
    rows: list[TargetRow]
    events: list[RiskEvent] = field(default_factory=list)
    stops: np.ndarray | None = None


class TargetModel(Protocol):
    """Turns history into target weights. Pure: no I/O, no clock, no state."""

    #: trading days of returns the model needs (the engine passes at most this many)
    returns_window: int
    #: calendar days of price history a live feed must download for a full decision
    history_calendar_days: int

    def decide(self, ctx: DecisionContext) -> TargetDecision: ...
