"""Weekly market regime from VIX, the 10y-2y spread and the policy-uncertainty index.

The rule is the research's, as two rules checked in order:

- the *uncertainty* rule: VIX > 35 and the curve inverted by more than 50 bp;
- the *transition* rule: VIX > 25 and policy uncertainty > 150;

UNCERTAINTY if the first holds, else TRANSITION if the second holds, else GROWTH.

Inputs are the last values *published* strictly before the decision day: an observation
dated d is published `publication_lag_days[series]` calendar days later (the uncertainty
index of a day comes out the next day), so a backtest never sees a number a live bot
could not have had. Both use this function, with the same lags.

**Partial data.** A missing or stale series does not freeze the regime. Each rule is an
AND of two comparisons, so it is decided whenever its inputs are fresh, and also when one
fresh input already makes it false (VIX 20 rules out both rules whatever the spread).
Only a rule that cannot be decided keeps its outcome from the previous decision, and only
if the regime depends on it. The decision records which rules were decided, which were
kept and which inputs were stale.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from bot.config import RegimeSettings
from bot.data.base import SPREAD, UNCERTAINTY, VIX, MacroSeries
from bot.types import Regime, RegimeDecision

UNCERTAINTY_RULE = "uncertainty"  # VIX > 35 and 10y-2y < -0.50
TRANSITION_RULE = "transition"  # VIX > 25 and policy uncertainty > 150
RULES = (UNCERTAINTY_RULE, TRANSITION_RULE)
_DAY = np.dtype("datetime64[D]")


def classify(vix: float, spread: float, uncertainty: float, th: RegimeSettings) -> Regime:
    """The research's rule on complete inputs, with thresholds from config."""
    if vix > th.vix_uncertainty and spread < th.spread_inversion:
        return Regime.UNCERTAINTY
    if vix > th.vix_transition and uncertainty > th.uncertainty_transition:
        return Regime.TRANSITION
    return Regime.GROWTH


def regime_of(outcomes: Mapping[str, bool]) -> Regime:
    """The regime the two rules' outcomes give, the first rule first."""
    if outcomes[UNCERTAINTY_RULE]:
        return Regime.UNCERTAINTY
    if outcomes[TRANSITION_RULE]:
        return Regime.TRANSITION
    return Regime.GROWTH


def outcomes_of(regime: Regime) -> dict[str, bool]:
    """Rule outcomes implied by a regime, for a decision with no recorded outcomes (the
    first one, or a state saved before outcomes were kept). In UNCERTAINTY the transition
    rule is taken as holding: VIX was above 35, so above 25, and stepping down one regime
    is the cautious reading of an unknown."""
    return {
        UNCERTAINTY_RULE: regime is Regime.UNCERTAINTY,
        TRANSITION_RULE: regime is not Regime.GROWTH,
    }


class _Input(NamedTuple):
    value: float | None
    observed: dt.date | None
    problem: str | None  # why it cannot be used; None when fresh


def _known_value(
    series: MacroSeries | None, today: dt.date, max_age_days: int, lag_days: int,
    mean_days: int = 1,
) -> _Input:
    """Last value published before `today` (observed more than `lag_days` before it), or
    with `mean_days` > 1 the mean of those observed in the `mean_days` calendar days up to
    it; or why there is none usable."""
    if series is None or len(series.dates) == 0:
        return _Input(None, None, "no data")
    cutoff = today - dt.timedelta(days=lag_days)
    found = series.last_before(cutoff) if mean_days == 1 else series.mean_before(cutoff, mean_days)
    if found is None:
        return _Input(None, None, "no value published before the decision day")
    value, observed = found
    age = (today - observed).days
    if age > max_age_days:
        return _Input(value, observed, f"stale ({age} days old)")
    return _Input(value, observed, None)


def _both(*conditions: bool | None) -> bool | None:
    """AND of comparisons that may be unknown (None): false as soon as one is false."""
    if any(c is False for c in conditions):
        return False
    if all(c is True for c in conditions):
        return True
    return None


def _greater(x: _Input, threshold: float) -> bool | None:
    return None if x.problem or x.value is None else x.value > threshold


def _less(x: _Input, threshold: float) -> bool | None:
    return None if x.problem or x.value is None else x.value < threshold


def _yes_no(outcomes: Mapping[str, bool], rules: tuple[str, ...]) -> str:
    return ", ".join(f"{r}={'yes' if outcomes[r] else 'no'}" for r in rules)


def decide_regime(
    day: np.datetime64,
    macro: dict[str, MacroSeries],
    previous: Regime | None,
    th: RegimeSettings,
    previous_outcomes: Mapping[str, bool] | None = None,
) -> RegimeDecision:
    """Classify the regime for `day`, deciding every rule its fresh inputs decide; a rule
    that cannot be decided keeps its previous outcome (`previous_outcomes`, else the one
    `previous` implies, else the configured initial regime's)."""
    lags = th.publication_lag_days
    today: dt.date = (day if day.dtype == _DAY else day.astype(_DAY)).item()
    inputs = {
        name: _known_value(macro.get(name), today, th.max_staleness_days, lags.get(name, 0),
                           th.uncertainty_mean_days if name == UNCERTAINTY else 1)
        for name in (VIX, SPREAD, UNCERTAINTY)
    }
    vix, spread, epu = inputs[VIX], inputs[SPREAD], inputs[UNCERTAINTY]
    fresh_outcomes = {
        UNCERTAINTY_RULE: _both(_greater(vix, th.vix_uncertainty), _less(spread, th.spread_inversion)),
        TRANSITION_RULE: _both(_greater(vix, th.vix_transition), _greater(epu, th.uncertainty_transition)),
    }
    before = outcomes_of(previous or th.initial)
    before.update((r, bool(v)) for r, v in (previous_outcomes or {}).items() if r in before)
    outcomes = {r: before[r] if fresh_outcomes[r] is None else fresh_outcomes[r] for r in RULES}
    decided = tuple(r for r in RULES if fresh_outcomes[r] is not None)
    # A rule checked after one that holds does not matter (UNCERTAINTY wins over TRANSITION).
    needed = RULES if not outcomes[UNCERTAINTY_RULE] else (UNCERTAINTY_RULE,)
    kept = tuple(r for r in needed if fresh_outcomes[r] is None)
    stale = tuple(name for name, x in inputs.items() if x.problem)
    regime = regime_of(outcomes)

    warning = None
    if stale:
        problems = "; ".join(f"{name}: {inputs[name].problem}" for name in stale)
        if kept:
            outcome = "previous decision" if previous or previous_outcomes else "initial regime"
            warning = f"{problems} -> kept {_yes_no(outcomes, kept)} from the {outcome}"
        else:
            warning = f"{problems} -> decided from the fresh inputs"
        warning += f": {regime.value}"
    return RegimeDecision(
        day=today,
        regime=regime,
        vix=vix.value,
        vix_date=vix.observed,
        spread=spread.value,
        spread_date=spread.observed,
        uncertainty=epu.value,
        uncertainty_date=epu.observed,
        warning=warning,
        outcomes=outcomes,
        decided=decided,
        kept=kept,
        stale=stale,
    )
