"""The one decision path: regime -> strategy -> risk guard -> planner -> broker -> trade log.

Backtests, replay and the live daemon all call `Engine.step` once per trading day after
the close they decide on, and hand executions back through `Engine.on_execution`. Only
the adapters differ (data, broker, clock); every decision is made here, once.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import structlog

from bot.broker.base import Broker
from bot.config import Settings
from bot.data.base import MarketData
from bot.planner import current_weights, plan_exit, plan_orders, rebalance_due
from bot.risk import DrawdownState, GuardInputs, guard, update_drawdown
from bot.store.tradelog import TradeLog
from bot.strategy.regime import decide_regime, week_starts
from bot.strategy.weights import apply_overlay, erc_weights, inverse_vol_weights
from bot.types import EquityPoint, Fill, Order, Regime, RiskEvent, TargetRow

log = structlog.get_logger(__name__)


@dataclass
class EngineState:
    """Everything the engine remembers between days; the live bot restores it from the
    trade log after a restart, so none of it may live only in memory there."""

    regime: Regime | None = None
    last_rebalance_day: dt.date | None = None
    targets: np.ndarray | None = None
    stops: np.ndarray | None = None
    stopped: set[str] = field(default_factory=set)
    drawdown: DrawdownState = field(default_factory=DrawdownState)


class StepOutcome(NamedTuple):
    """What one daily step did, for the caller's log line and for tests."""

    day: dt.date
    equity: float
    rebalance: str | None
    orders: tuple[Order, ...]
    events: tuple[RiskEvent, ...]


class Engine:
    """Decides, for one strategy instance, what to hold and which orders to send."""

    def __init__(
        self,
        settings: Settings,
        market: MarketData,
        broker: Broker,
        log: TradeLog,
        order_prefix: str,
    ) -> None:
        self.settings = settings
        self.symbols = settings.symbols
        prices = market.prices.select(self.symbols)
        self.dates = prices.dates
        self.close = prices.close
        # NaN (not yet listed) valued at zero: nothing can be held before listing.
        self._mark = np.nan_to_num(prices.close)
        self._days: list[dt.date] = prices.dates.astype("datetime64[D]").astype(object).tolist()
        self._week_starts = week_starts(prices.dates)
        self.macro = market.macro
        self.broker = broker
        self.log = log
        self.order_prefix = order_prefix

        universe = settings.universe
        self.leverage = np.array([universe[s].leverage for s in self.symbols])
        self.is_bond = np.array([universe[s].role == "bond" for s in self.symbols])
        self.strategic = np.array([universe[s].weight for s in self.symbols])
        self.overlay = {
            r: np.array([settings.overlay.get(r, {}).get(s, 1.0) for s in self.symbols])
            for r in Regime
        }
        st, rk = settings.strategy, settings.risk
        self._rules = set(rk.rules)
        self._needs_regime = st.overlay_enabled or "stops" in self._rules
        self._needs_returns = st.weighting != "strategic" or bool(
            self._rules & {"volatility", "correlation", "stops"}
        )
        self._window = 1 + max(
            st.vol_window,
            st.cov_window if st.weighting == "erc" else 0,
            st.var_window if st.var_adjust and st.weighting == "inverse_vol" else 0,
            rk.vol_history if "volatility" in self._rules else 0,
            rk.correlation_window if "correlation" in self._rules else 0,
            rk.vol_window,
        )
        self.state = EngineState(regime=None)
        self._filled_since_snapshot = False
        self._indexed_day: dt.date | None = None
        self._indexed_t = -1

    # ----------------------------------------------------------------- daily step
    def step(self, t: int, now: dt.datetime) -> StepOutcome:
        """Decide at the close of trading day t, using data up to and including t."""
        day = self._days[t]
        state = self.state
        shares = self.broker.holdings(self.symbols)
        cash = self.broker.cash()
        equity = cash + float(shares @ self._mark[t])
        events: list[RiskEvent] = []

        was_defensive = state.drawdown.defensive
        state.drawdown, dd_event = update_drawdown(
            state.drawdown, equity, t, day, self.settings.risk
        )
        forced = None
        if dd_event is not None and "drawdown" in self._rules:
            events.append(dd_event)
            self.log.risk_event(dd_event)
            if state.drawdown.defensive != was_defensive and self.settings.rebalance.on_defensive_change:
                forced = dd_event.action

        if self._needs_regime and (state.regime is None or self._week_starts[t]):
            self._decide_regime(t)

        days_since = None if state.last_rebalance_day is None else t - self._day_index(
            state.last_rebalance_day
        )
        check = rebalance_due(
            days_since,
            lambda: current_weights(shares, self._mark[t], equity),
            state.targets,
            self.broker.open_order_count(),
            self.settings.rebalance,
            forced,
        )
        orders: tuple[Order, ...] = ()
        if check.due:
            orders, guard_events = self._rebalance(t, day, now, check.reason, shares, equity)
            events.extend(guard_events)
        elif check.reason.startswith("skipped"):
            event = RiskEvent(day, "outstanding_orders", check.reason)
            events.append(event)
            self.log.risk_event(event)
        elif state.stops is not None:
            orders = self._check_stops(t, day, now, shares, events)
        return StepOutcome(day, equity, check.reason if check.due else None, orders, tuple(events))

    def record_close(self, t: int) -> EquityPoint:
        """Mark the portfolio at the close of day t (after that day's fills) and log it;
        on days with fills also snapshot the positions."""
        shares = self.broker.holdings(self.symbols)
        cash = self.broker.cash()
        positions = float(shares @ self._mark[t])
        if self._filled_since_snapshot:
            self._filled_since_snapshot = False
            self.log.positions(
                self._days[t],
                {s: (float(q), float(self._mark[t, i]))
                 for i, (s, q) in enumerate(zip(self.symbols, shares, strict=True)) if q},
            )
        equity = cash + positions
        dd = self.state.drawdown
        point = EquityPoint(
            self._days[t], equity, cash, positions, dd.drawdown(equity), self.state.regime
        )
        self.log.equity(point)
        return point

    def on_execution(self, order: Order, fill: Fill | None) -> None:
        """Record an order's final state and its fill, whichever venue produced them."""
        self.log.order_status(
            order.request.client_order_id,
            order.status,
            fill.filled_at if fill is not None else order.submitted_at,
            message=order.status_message,
            filled_quantity=order.filled_quantity,
            average_price=order.average_price,
            broker_order_id=order.broker_order_id,
        )
        if fill is not None:
            self.log.fill(fill)
            self._filled_since_snapshot = True

    def _day_index(self, day: dt.date) -> int:
        """Index of a trading day in this engine's calendar (cached: asked every day)."""
        if day != self._indexed_day:
            self._indexed_day = day
            self._indexed_t = int(np.searchsorted(self.dates, np.datetime64(day)))
        return self._indexed_t

    # ----------------------------------------------------------------- decisions
    def _decide_regime(self, t: int) -> None:
        decision = decide_regime(
            self.dates[t], self.macro, self.state.regime, self.settings.regime
        )
        self.state.regime = decision.regime
        self.log.regime(decision)
        if decision.warning:
            log.warning("regime inputs incomplete", day=str(decision.day), detail=decision.warning)

    def _returns_window(self, t: int) -> np.ndarray:
        """Daily returns over the longest window any rule needs, ending at t. Rows with a
        missing price (before an asset listed) are dropped, so rules see only full rows."""
        lo = max(0, t + 1 - self._window)
        closes = self.close[lo : t + 1]
        rets = closes[1:] / closes[:-1] - 1.0
        full = np.isfinite(rets).all(axis=1)
        return rets if full.all() else rets[full]

    def _baseline(self, rets: np.ndarray, tradable: np.ndarray) -> tuple[np.ndarray, str]:
        """Strategy weights before the overlay, and how they were obtained."""
        st = self.settings.strategy
        strategic = np.where(tradable, self.strategic, 0.0)
        strategic = strategic / strategic.sum()
        if st.weighting == "strategic":
            return strategic, "strategic weights"
        if not tradable.all() or rets.shape[0] < st.vol_window:
            return strategic, f"{st.weighting}: insufficient history, strategic weights used"
        if st.weighting == "erc":
            window = rets[-st.cov_window :]
            if window.shape[0] < len(self.symbols) + 1:
                return strategic, "erc: insufficient history, strategic weights used"
            return erc_weights(np.cov(window, rowvar=False)), f"erc over {window.shape[0]} days"
        var = rets[-st.var_window :] if st.var_adjust and rets.shape[0] >= st.var_window else None
        result = inverse_vol_weights(
            rets[-st.vol_window :], self.leverage, var, st.var_confidence, st.var_factor_floor
        )
        how = f"inverse vol {st.vol_window}d / leverage" + (" x VaR factor" if var is not None else "")
        return result.weights, how

    def _rebalance(
        self,
        t: int,
        day: dt.date,
        now: dt.datetime,
        reason: str,
        shares: np.ndarray,
        equity: float,
    ) -> tuple[tuple[Order, ...], list[RiskEvent]]:
        state = self.state
        regime = state.regime or self.settings.regime.initial
        tradable = np.isfinite(self.close[t])
        rets = self._returns_window(t) if self._needs_returns else np.empty((0, len(self.symbols)))
        baseline, how = self._baseline(rets, tradable)
        overlaid = (
            apply_overlay(baseline, self.overlay[regime])
            if self.settings.strategy.overlay_enabled
            else baseline
        )
        result = guard(
            overlaid,
            GuardInputs(
                day, self.symbols, self.is_bond, rets, self.close[t], regime,
                state.drawdown.defensive,
            ),
            self.settings.risk,
        )
        rebalance_id = f"{self.order_prefix}-{day:%Y%m%d}-rb"
        rows = [
            TargetRow(
                sym,
                float(baseline[i]),
                float(overlaid[i]),
                float(result.weights[i]),
                None if np.isnan(result.stops[i]) else float(result.stops[i]),
                (how, *result.reasons[i]),
            )
            for i, sym in enumerate(self.symbols)
        ]
        self.log.targets(day, rebalance_id, rows, reason)
        for event in result.events:
            self.log.risk_event(event)

        requests = plan_orders(
            rebalance_id,
            self.symbols,
            result.weights,
            shares,
            self.close[t],
            equity,
            self.settings.rebalance,
            reason,
        )
        orders = tuple(self._submit(r, now) for r in requests)
        state.targets = result.weights
        state.stops = result.stops if "stops" in self._rules else None
        state.stopped = set()
        state.last_rebalance_day = day
        return orders, result.events

    def _check_stops(
        self, t: int, day: dt.date, now: dt.datetime, shares: np.ndarray, events: list[RiskEvent]
    ) -> tuple[Order, ...]:
        """Sell any held asset whose close fell below its stop; it stays in cash (target 0)
        until the next rebalance."""
        stops = self.state.stops
        assert stops is not None and self.state.targets is not None
        hit = np.flatnonzero((self.close[t] < stops) & (shares > 0))
        if hit.size == 0:
            return ()
        orders = []
        targets = self.state.targets.copy()
        for i in hit:
            sym = self.symbols[i]
            if sym in self.state.stopped:
                continue
            price = float(self.close[t, i])
            event = RiskEvent(
                day,
                "stop",
                "stop hit: position sold, in cash until the next rebalance",
                {"price": price, "stop": float(stops[i]), "regime": str(self.state.regime)},
                symbol=sym,
            )
            events.append(event)
            self.log.risk_event(event)
            request = plan_exit(
                f"{self.order_prefix}-{day:%Y%m%d}-stop", sym, float(shares[i]), price, "stop loss"
            )
            orders.append(self._submit(request, now))
            self.state.stopped.add(sym)
            targets[i] = 0.0
        self.state.targets = targets
        return tuple(orders)

    def _submit(self, request, now: dt.datetime) -> Order:
        order = self.broker.submit(request, now)
        self.log.order(order)
        return order
