"""The one decision path: regime -> target model -> planner -> broker -> trade log.

Backtests, replay and the live daemon all call `Engine.step` once per trading day after
the close they decide on, and hand executions back through `Engine.on_execution`. Only
the adapters differ (data, broker, clock); every decision is made here, once. The
engine's memory between days is `EngineState`, which the daemon saves to the trade log
after every job and restores after a restart.
"""

from __future__ import annotations

import datetime as dt
import math
from operator import mul
from typing import NamedTuple
from zoneinfo import ZoneInfo

import numpy as np
import structlog

from bot.broker.base import Broker, BrokerError
from bot.calendar import week_ends, week_number, week_numbers
from bot.config import Settings
from bot.data.base import MarketData
from bot.engine_state import EngineState, PendingTargets
from bot.planner import client_order_id, current_weights, plan_exit, plan_orders, rebalance_due
from bot.risk import update_drawdown
from bot.store.tradelog import TradeLog
from bot.strategy.base import DecisionContext, TargetDecision, TargetModel
from bot.strategy.leverage import LeverageModel
from bot.strategy.regime import decide_regime
from bot.types import (
    EquityPoint,
    Fill,
    Order,
    OrderRequest,
    Regime,
    RegimeDecision,
    RiskEvent,
    Side,
    new_record,
)

log = structlog.get_logger(__name__)

NEW_YORK = ZoneInfo("America/New_York")


def build_model(settings: Settings) -> TargetModel:
    """The target model a config asks for (strategy.kind)."""
    if settings.strategy.kind == "factor":
        from bot.strategy.factor import FactorModel

        return FactorModel(settings)
    return LeverageModel(settings)


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
        state: EngineState | None = None,
        model: TargetModel | None = None,
    ) -> None:
        """`model` replaces the config's target model: the platform gives each client
        account the targets its profile decided once (bot.platform.profile_targets), and
        those were recorded then, so the engine does not record them again."""
        self.settings = settings
        self.symbols = settings.symbols
        prices = market.prices.select(self.symbols)
        self.dates = prices.dates
        self.close = prices.close
        self._mark = carried_marks(prices.close)
        self._mark_rows: list[list[float]] = self._mark.tolist()  # read twice a day, as floats
        self._days: list[dt.date] = prices.dates.astype("datetime64[D]").astype(object).tolist()
        self._week = week_numbers(prices.dates).tolist()
        self._week_ends: np.ndarray | None = None  # computed on first need (calendar import)
        self.macro = market.macro
        self.broker = broker
        self.log = log
        self.order_prefix = order_prefix
        self.model = model or build_model(settings)
        self.records_targets = model is None
        self._risk = settings.risk
        self._rebalance_cfg = settings.rebalance  # read every day: a pydantic read costs more
        rules = set(settings.risk.rules)
        self._drawdown_rule = "drawdown" in rules
        self._stops_rule = "stops" in rules
        self._needs_regime = settings.strategy.overlay_enabled or self._stops_rule
        self._lagged = settings.rebalance.execution_lag_days > 0
        self._weekly = settings.rebalance.schedule == "weekly"
        self.state = state or EngineState()
        self._filled_since_snapshot = False
        self._sizing: np.ndarray | None = None
        # (t, cash, quantities, their value) as the last step valued them
        self._stepped_book: tuple[int, float, list[float], float] | None = None
        self._day_indices: dict[dt.date, int] = {}
        # state.stops in this engine's price basis, and the array they were rebased from
        self._rebased_stops: np.ndarray | None = None
        self._rebased_from: np.ndarray | None = None

    # ----------------------------------------------------------------- daily step
    def step(
        self, t: int, now: dt.datetime, sizing_prices: np.ndarray | None = None
    ) -> StepOutcome:
        """Decide at the close of trading day t, using data up to and including t.

        Orders are sized on the close of t unless `sizing_prices` are given: live, the
        latest trade prices when the orders go out (the decision itself stays on closes)."""
        day = self._days[t]
        state = self.state
        self._sizing = sizing_prices
        shares = self.broker.holdings(self.symbols)
        held = shares.tolist()
        # the cash held, not the cash still spendable: buys working at the venue reserve
        # part of it, and valuing without it shows a drawdown that is not there
        cash, positions = self.broker.cash_balance(), _book_value(held, self._mark_rows[t])
        self._stepped_book = (t, cash, held, positions)
        equity = cash + positions
        if not equity > 0.0:  # before anything is decided, logged or sent
            _refuse_equity(equity, cash)
        events: list[RiskEvent] = []
        # A defensive switch that had to wait for open orders is still owed a rebalance.
        forced = self._update_drawdown(t, day, equity, events) or state.owed_rebalance

        if self._needs_regime:
            self._regime_for_week(t, day)

        # Stops first, on a rebalance or an execution day too: a position that closed
        # below its stop is sold and stays out until the next rebalance; nothing sent at
        # this close buys it back or sells it twice.
        hit, sold_before = self._stops_hit(t, shares) if state.stops is not None else ([], [])
        out = hit + sold_before
        orders: tuple[Order, ...] = ()
        executing = bool(state.pending) and day >= state.pending[0].execute_on
        if executing:
            open_orders = self.broker.open_order_count()  # before this close's own orders
            if hit:
                # Sells first: live, a buy sent before any sell is working goes out at
                # once, cut to the cash there is before the stopped fund's sale.
                orders = self._sell_stopped(t, day, now, shares, hit, events)
                hit = []
            orders += self._execute_pending(day, now, shares, equity, t, events, out, open_orders)

        last = state.last_rebalance_day
        due, reason = rebalance_due(  # unpacked: a field read by name is a descriptor call
            None if last is None else t - self._day_index(last),
            lambda: current_weights(shares, self._mark[t], equity),
            state.pending[-1].weights if state.pending else state.targets,  # latest decision
            # A lagged decision only records targets; the execution checks open orders.
            0 if self._lagged else self.broker.open_order_count(),
            self._rebalance_cfg,
            forced,
            self._weekly and self._is_week_end(t),
            # While a decision waits for its day the holdings are bound to differ from it:
            # drift is measured against executed targets only, and not on the day they
            # are sent (the holdings have not moved yet).
            drift_check=not state.pending and not executing,
        )
        if reason.startswith("skipped"):  # orders outstanding: no stop orders either
            state.owed_rebalance = forced
            self._risk_event(RiskEvent(day, "outstanding_orders", reason), events)
            return StepOutcome(day, equity, None, orders, tuple(events))
        if hit:
            orders += self._sell_stopped(t, day, now, shares, hit, events)
        if sold_before:
            self._note_sold_before(t, day, sold_before, events)
        if due:
            state.owed_rebalance = None
            orders += self._rebalance(t, day, now, reason, shares, equity, events, out)
        return new_record(StepOutcome, (
            day, equity, reason if due else None, orders, tuple(events) if events else ()
        ))

    def record_close(
        self, t: int, snapshot: bool | None = None, unchanged_since_step: bool = False
    ) -> EquityPoint:
        """Mark the portfolio at the close of day t (after that day's fills) and log it;
        snapshot the positions on days with fills (or when `snapshot` says so).

        `unchanged_since_step`: the caller knows nothing filled since this engine's step
        on day t (a simulation does), so the book that step valued is the close's."""
        marks = self._mark_rows[t]
        stepped = self._stepped_book
        if unchanged_since_step and stepped is not None and stepped[0] == t:
            _, cash, held, positions = stepped
        else:
            held = self.broker.holdings(self.symbols).tolist()
            cash = self.broker.cash_balance()
            positions = _book_value(held, marks)
        if snapshot or (snapshot is None and self._filled_since_snapshot):
            self._filled_since_snapshot = False
            # Every symbol, zeros included: a snapshot of held positions only would show
            # nothing on the day the book goes flat, and readers would keep the old one.
            self.log.snapshot(self._days[t], self.symbols, held, marks)
        equity = cash + positions
        state = self.state
        # The record's drawdown is from the strategy's all-time high-water mark (its
        # state, saved per instance, carries it into the next session: not this run's
        # peak); the guard's own peak may have been re-based after a defensive time-out.
        state.equity_peak = max(state.equity_peak, equity)
        drawdown = 1.0 - equity / state.equity_peak if state.equity_peak > 0 else 0.0
        point = new_record(EquityPoint, (self._days[t], equity, cash, positions, drawdown, state.regime))
        self.log.equity(point)
        return point

    def on_execution(self, order: Order, fill: Fill | None, at: dt.datetime) -> None:
        """Record an order's new state and its fill (or, without one, the change seen at
        `at`), whichever venue produced them."""
        self.log.execution(order, fill, at)
        if fill is not None:
            self._filled_since_snapshot = True
        if not self.state.stopped:  # no fund out for a stop (nearly every order): none to arm
            return
        event = rearm_unsold_stop(self.state, order, at)
        if event is not None:
            self.log.risk_event(event)

    def decide_targets(self, t: int, reason: str) -> TargetDecision:
        """The model's targets at the close of day t, recorded as that rebalance's
        targets, without trading them: what a due rebalance decides in `step`, for a
        caller that trades them elsewhere (the platform decides once per profile, then
        trades every client account of it). The week's regime is decided first if the
        config needs one and it was not yet."""
        day = self._days[t]
        self._regime_for_week(t, day)
        decision = self.model.decide(self._context(t))
        self.log.targets(day, self.rebalance_id(day), decision.rows, reason)
        for event in decision.events:
            self.log.risk_event(event)
        return decision

    def enter_week(self, t: int) -> None:
        """Put the regime of day t's week in force, as the step on t does first (the one
        decided ahead by the weekly job, or decided now): the daemon records a close in
        the evening, before the step on it runs the next morning, and the close of a
        week's first session is that week's, as in a backtest."""
        if self._needs_regime:
            self._regime_for_week(t, self._days[t])

    def rebalance_id(self, day: dt.date) -> str:
        """The id of the rebalance decided at the close of `day`: the start of its orders'
        client_order_ids and the key of its targets rows."""
        return f"{self.order_prefix}-{day.year:04d}{day.month:02d}{day.day:02d}-rb"

    def decide_regime_for(self, day: dt.date) -> Regime:
        """Decide (and log) the regime of an upcoming first trading day of the week ahead
        of time, as the daemon's weekly job does. It takes effect at that day's step, as
        if decided there: decisions before it keep the regime in force."""
        decision = self._regime_decision(np.datetime64(day))
        self.state.upcoming_regime = (decision.day, decision.regime)
        return decision.regime

    # ----------------------------------------------------------------- decisions
    def _update_drawdown(
        self, t: int, day: dt.date, equity: float, events: list[RiskEvent]
    ) -> str | None:
        """Daily drawdown bookkeeping; returns a reason to rebalance now if defensive mode
        was entered or left (and the config asks for that)."""
        state = self.state
        before = state.drawdown
        entered = before.entered_day
        days_defensive = 0 if entered is None else t - self._day_index(entered)
        state.drawdown, event = update_drawdown(before, equity, day, days_defensive, self._risk)
        if event is None or not self._drawdown_rule:
            return None
        self._risk_event(event, events)
        if state.drawdown.defensive != before.defensive and self.settings.rebalance.on_defensive_change:
            return event.action
        return None

    def _regime_for_week(self, t: int, day: dt.date) -> None:
        if self._needs_regime and (
            self.state.regime_day is None or self._week[t] != week_number(self.state.regime_day)
        ):
            # The first step of each week; also a later day of it when that step did not
            # run (the daemon was down): last week's regime must not stay in force.
            self._decide_regime(t, day)

    def _decide_regime(self, t: int, day: dt.date) -> None:
        state = self.state
        upcoming = state.upcoming_regime
        if upcoming is not None and upcoming[0] == day:
            state.regime = upcoming[1]  # decided ahead by the weekly job, logged then
        else:
            state.regime = self._regime_decision(self.dates[t]).regime
        state.regime_day = day
        state.upcoming_regime = None

    def _regime_decision(self, day: np.datetime64) -> RegimeDecision:
        state = self.state
        decision = decide_regime(
            day, self.macro, state.regime, self.settings.regime, state.regime_outcomes
        )
        state.regime_outcomes = decision.outcomes  # a rule fresh data cannot decide keeps these
        self.log.regime(decision)
        if decision.warning:
            log.warning("regime inputs incomplete", day=str(decision.day), detail=decision.warning)
        return decision

    def _context(self, t: int) -> DecisionContext:
        return decision_context(
            self.model, self.symbols, self.dates, self.close, t,
            self.state.regime or self.settings.regime.initial, self.state.drawdown.defensive,
            self._days[t],
        )

    def _rebalance(
        self,
        t: int,
        day: dt.date,
        now: dt.datetime,
        reason: str,
        shares: np.ndarray,
        equity: float,
        events: list[RiskEvent],
        stopped: list[int] | None = None,
    ) -> tuple[Order, ...]:
        """Decide and send (or queue, with an execution lag) a rebalance. `stopped`: the
        assets whose stops were hit at this close and sold just before it, which it
        keeps out (weight 0, their shares as sold) until the next rebalance."""
        state = self.state
        decision: TargetDecision = self.model.decide(self._context(t))
        if stopped:
            decision = _keep_out(decision, stopped)
        rebalance_id = self.rebalance_id(day)  # its targets' key and its orders' id prefix
        if self.records_targets:
            self.log.targets(day, rebalance_id, decision.rows, reason)
        for event in decision.events:
            self._risk_event(event, events)
        state.stops = decision.stops
        # The closes the stops were set on: a later history adjusted for a split or a
        # dividend shows these days at other prices, and the stops move with them.
        state.stop_basis = None if decision.stops is None else self.close[t].copy()
        self._rebased_from = self._rebased_stops = decision.stops  # set on this history
        state.stopped = {self.symbols[i] for i in stopped or ()}
        state.last_rebalance_day = day
        self._day_indices[day] = t  # asked every day from now on: known here, not searched
        lag = self._rebalance_cfg.execution_lag_days
        if lag > 0:
            execute_on = self._days[t + lag] if t + lag < len(self._days) else _add_sessions(day, lag)
            state.pending.append(PendingTargets(day, execute_on, decision.weights, reason))
            return ()
        state.targets = decision.weights
        return self._send(rebalance_id, now, decision.weights, shares, equity, t, reason, stopped)

    def _execute_pending(
        self, day: dt.date, now: dt.datetime, shares: np.ndarray, equity: float, t: int,
        events: list[RiskEvent], stopped: list[int], open_orders: int,
    ) -> tuple[Order, ...]:
        """Send the decision whose day has come (decisions queue up when the lag is longer
        than the period: each executes `lag` sessions after it was taken), without the
        assets whose stops were hit at this close (`stopped`: sold by their own orders).
        `open_orders`: the orders working before this close sent any."""
        state = self.state
        if open_orders:
            self._risk_event(
                RiskEvent(day, "outstanding_orders", f"skipped: {open_orders} order(s) outstanding"),
                events,
            )
            return ()
        due = [p for p in state.pending if p.execute_on <= day]
        state.pending = [p for p in state.pending if p.execute_on > day]
        latest = due[-1]
        for stale in due[:-1]:  # delayed by open orders until a newer decision came due
            self._risk_event(
                RiskEvent(day, "superseded",
                          f"decision of {stale.decided} not sent: the one of {latest.decided} is due too"),
                events,
            )
        weights = latest.weights
        # Out: the funds stopped at this close, and those stopped since the decision (a
        # lag of 2 or more sessions has closes in between): bought back at the weight
        # decided before their stop, they were "out until the next rebalance" in name only.
        out = sorted({*stopped, *(i for i, s in enumerate(self.symbols) if s in state.stopped)})
        if out:
            weights = weights.copy()
            weights[out] = 0.0
        state.targets = weights
        reason = f"{latest.reason} (decided {latest.decided.isoformat()})"
        return self._send(self.rebalance_id(day), now, weights, shares, equity, t, reason, stopped)

    def _send(
        self, rebalance_id: str, now: dt.datetime, weights: np.ndarray, shares: np.ndarray,
        equity: float, t: int, reason: str, stopped: list[int] | None = None,
    ) -> tuple[Order, ...]:
        """Plan and submit the orders from `shares` to `weights` of `equity`. `stopped`:
        assets sold at their stops by orders of their own at this close, planned as gone
        but still counted in the equity the others are sized on (their sale's cash has
        not arrived yet)."""
        prices = self.close[t]
        if self._sizing is not None:  # live: sized on the latest trades, checked again on them
            prices = np.where(np.isfinite(self._sizing), self._sizing, prices)
            cash = self.broker.cash_balance()
            equity = cash + float(shares @ np.nan_to_num(prices))
            if not equity > 0.0:
                _refuse_equity(equity, cash)
        if stopped:
            shares = shares.copy()
            shares[stopped] = 0.0
        requests = plan_orders(
            rebalance_id,
            self.symbols,
            weights,
            shares,
            prices,
            equity,
            self._rebalance_cfg,
            reason,
        )
        # each request sent and recorded here, not through _submit: a call less per order
        submit, record = self.broker.submit, self.log.order
        orders = []
        for request in requests:
            order = submit(request, now)
            record(order)
            orders.append(order)
        return tuple(orders)

    def _stops_hit(self, t: int, shares: np.ndarray) -> tuple[list[int], list[int]]:
        """The assets that closed below their stop at day t and are not out for it
        already: (held, to sell now; sold before), the second being positions a stop
        order of this period already sold when a crash lost the engine's state of it (a
        re-run decision must keep them out, not buy them back)."""
        stops = self._stops()
        stopped = self.state.stopped
        to_sell, sold_before = [], []
        # plain floats: most days nothing is hit, and numpy's calls cost more
        for i, (close, stop, held) in enumerate(
            zip(self.close[t].tolist(), stops.tolist(), shares.tolist(), strict=True)
        ):
            if close < stop and self.symbols[i] not in stopped:
                if held > 0:
                    to_sell.append(i)
                elif self._stop_sent_this_period(t, self.symbols[i]):
                    sold_before.append(i)
        return to_sell, sold_before

    def _stops(self) -> np.ndarray:
        """The stops in the price basis of this engine's history. Live, each job downloads
        history adjusted for every split and dividend up to today (Alpaca's
        adjustment=all), while the stops are prices of the day they were set: after a
        2-for-1 split every close is half the price its stop was set against, and the
        fund would be sold for a fall that never happened (a reverse split would switch
        its stop off). Each stop moves by its fund's close on the day it was set, as that
        history shows it now, over the close it was set on (`state.stop_basis`)."""
        stops = self.state.stops
        assert stops is not None
        if self._rebased_from is not stops:
            self._rebased_from = stops
            self._rebased_stops = self._rebase(stops)
        assert self._rebased_stops is not None
        return self._rebased_stops

    def _rebase(self, stops: np.ndarray) -> np.ndarray:
        """`stops` times each fund's adjustment since they were set; `stops` itself when
        nothing was adjusted (every backtest), or when the day they were set is not in
        this history (a state saved without its basis, or older than the download)."""
        basis, day = self.state.stop_basis, self.state.last_rebalance_day
        if basis is None or day is None:
            return stops
        t = self._day_index(day)
        if t >= len(self._days) or self._days[t] != day:
            return stops
        now = self.close[t]
        valid = np.isfinite(now) & np.isfinite(basis) & (now > 0) & (basis > 0)
        factor = np.divide(now, basis, out=np.ones_like(now), where=valid)
        if np.all(np.abs(factor - 1.0) <= 1e-9):
            return stops
        moved = {s: round(float(f), 6) for s, f in zip(self.symbols, factor, strict=True)
                 if abs(f - 1.0) > 0.01}
        if moved:
            log.warning("stops rebased: the history was adjusted since they were set "
                        "(a split or a dividend)", set_on=day.isoformat(), factors=moved)
        return stops * factor

    def _stop_sent_this_period(self, t: int, symbol: str) -> bool:
        """Whether a stop order for `symbol` was recorded since the last rebalance (the
        trade log holds it, or reconciliation adopted it from the venue at start)."""
        last = self.state.last_rebalance_day
        first = 0 if last is None else self._day_index(last)
        return any(
            self.log.knows_order(client_order_id(self._stop_id(self._days[k]), symbol, Side.SELL))
            for k in range(t, max(first, t - 10) - 1, -1)
        )

    def _stop_id(self, day: dt.date) -> str:
        """The rebalance id of the stop orders sent at `day`'s close."""
        return f"{self.order_prefix}-{day:%Y%m%d}-stop"

    def _note_sold_before(
        self, t: int, day: dt.date, sold: list[int], events: list[RiskEvent]
    ) -> None:
        """Keep out the assets a stop order sold before a restart, and say so."""
        for i in sold:
            self.state.stopped.add(self.symbols[i])
            self._stop_event(t, day, i, "stop hit: sold by its stop order before a restart, "
                             "in cash until the next rebalance", events)

    def _stop_event(self, t: int, day: dt.date, i: int, action: str, events: list[RiskEvent]) -> None:
        """The risk event of asset i's stop hit at day t's close: its close, its stop."""
        stops = self._stops()
        inputs = {"price": float(self.close[t, i]), "stop": float(stops[i]),
                  "regime": str(self.state.regime)}
        if stops is not self.state.stops:  # rebased: say from what
            inputs["stop_as_set"] = float(self.state.stops[i])  # type: ignore[index]
        self._risk_event(RiskEvent(day, "stop", action, inputs, symbol=self.symbols[i]), events)

    def _sell_stopped(
        self, t: int, day: dt.date, now: dt.datetime, shares: np.ndarray, hit: list[int],
        events: list[RiskEvent],
    ) -> tuple[Order, ...]:
        """Sell each asset whose stop was hit; it stays in cash (target 0) until the next
        rebalance."""
        orders = []
        targets = None if self.state.targets is None else self.state.targets.copy()
        for i in hit:
            sym = self.symbols[i]
            self._stop_event(t, day, i, "stop hit: position sold, in cash until the next rebalance",
                             events)
            request = plan_exit(self._stop_id(day), sym, float(shares[i]), float(self.close[t, i]),
                                "stop loss")
            orders.append(self._submit(request, now))
            self.state.stopped.add(sym)
            if targets is not None:
                targets[i] = 0.0
        self.state.targets = targets
        return tuple(orders)

    # ----------------------------------------------------------------- helpers
    def _submit(self, request: OrderRequest, now: dt.datetime) -> Order:
        order = self.broker.submit(request, now)
        self.log.order(order)
        return order

    def _risk_event(self, event: RiskEvent, events: list[RiskEvent]) -> None:
        events.append(event)
        self.log.risk_event(event)

    def _day_index(self, day: dt.date) -> int:
        """Index of a trading day in this engine's calendar (cached: asked every day)."""
        t = self._day_indices.get(day)
        if t is None:
            t = self._day_indices[day] = int(np.searchsorted(self.dates, np.datetime64(day)))
        return t

    def _is_week_end(self, t: int) -> bool:
        if self._week_ends is None:
            self._week_ends = week_ends(self.dates)
        return bool(self._week_ends[t])


def carried_marks(close: np.ndarray) -> np.ndarray:
    """The price each holding is valued at: its last close, carried over a day without
    one (a missing close valued at 0 halved a book for a day and tripped the drawdown
    rule); 0 before the asset listed, when nothing can be held."""
    rows = np.arange(close.shape[0])[:, None]
    last = np.maximum.accumulate(np.where(np.isfinite(close), rows, -1), axis=0)
    carried = np.take_along_axis(close, np.maximum(last, 0), axis=0)
    return np.where(last >= 0, np.nan_to_num(carried), 0.0)


def _keep_out(decision: TargetDecision, stopped: list[int]) -> TargetDecision:
    """`decision` with the assets just sold at their stops held at 0 (the rest of their
    weight stays in cash), each row saying why."""
    weights = decision.weights.copy()
    weights[stopped] = 0.0
    rows = list(decision.rows)
    for i in stopped:
        row = rows[i]
        rows[i] = row._replace(
            final=0.0, reasons=(*row.reasons, "stop hit at this close: out until the next rebalance")
        )
    return TargetDecision(weights, rows, decision.events, decision.stops)


def decision_context(
    model: TargetModel,
    symbols: tuple[str, ...],
    dates: np.ndarray,
    close: np.ndarray,
    t: int,
    regime: Regime,
    defensive: bool,
    day: dt.date | None = None,
) -> DecisionContext:
    """What `model` sees at the close of day t: history up to t only, the trailing
    returns it asks for (full rows), and which assets have a price that day. Also used
    by the allocation API, so it explains exactly what the engine would decide. `day`:
    dates[t] as a date, if the caller has it (converting costs more than the rest)."""
    lo = max(0, t - model.returns_window)
    closes = close[lo : t + 1]
    if lo == t:  # a model that needs no returns (strategic weights): none to compute
        rets, complete = close[t:t], True
    else:
        rets = closes[1:] / closes[:-1] - 1.0
        # Most windows are complete: one finite sum (NaN and inf carry through a sum)
        # before the per-row check; np.add.reduce, not .sum(), whose wrapper costs more.
        complete = math.isfinite(np.add.reduce(rets, axis=None))
    return DecisionContext(
        t=t,
        day=dates[t].astype("datetime64[D]").astype(object) if day is None else day,
        symbols=symbols,
        dates=dates[: t + 1],
        closes=close[: t + 1],
        returns=rets if complete else rets[np.isfinite(rets).all(axis=1)],
        tradable=np.isfinite(close[t]),
        regime=regime,
        defensive=defensive,
    )


def rearm_unsold_stop(state: EngineState, order: Order, at: dt.datetime) -> RiskEvent | None:
    """A stop order that ended without selling all (no price that day, refused,
    canceled): the fund is not out, so its stop stays armed and the next close checks it
    again; returns the risk event saying so (None: not such an order, or said already).
    It was kept out as sold, and the rebalance its zero target then forced kept most of
    the position below its stop. Backtests (Engine.on_execution) and the daemon (its
    record of each poll's updates) both apply it."""
    request = order.request
    # The fund being out for a stop first: nearly always false (every rebalance order of
    # a backtest asks), and the cheapest test; the status and side tests cost more.
    if not (request.symbol in state.stopped and order.status.is_final
            and request.side is Side.SELL and request.rebalance_id.endswith("-stop")
            and order.filled_quantity < request.quantity - 1e-9):
        return None
    state.stopped.discard(request.symbol)
    left = request.quantity - order.filled_quantity
    return RiskEvent(
        at.astimezone(NEW_YORK).date(), "stop",
        f"stop order {order.status.value}: {left:.6g} not sold; the stop stays armed for the "
        "next close", {"order": request.client_order_id, "status_message": order.status_message or ""},
        symbol=request.symbol,
    )


def _refuse_equity(equity: float, cash: float) -> None:
    """Refuse a book worth nothing or less: cash and holdings are long only, so it is a
    broker answer that cannot be (targets of a negative equity are short sales)."""
    raise BrokerError(
        f"account equity {equity:,.2f} is not positive (cash {cash:,.2f}): nothing to "
        "allocate; no order sent. Check the account at the broker"
    )


def _book_value(quantities: list[float], marks: list[float]) -> float:
    """Market value of the holdings at these marks, summed over plain floats: asked twice
    a day, and numpy's dot of six numbers costs more than the arithmetic."""
    return sum(map(mul, quantities, marks))


def _add_sessions(day: dt.date, n: int) -> dt.date:
    """The n-th trading day after `day` from the exchange calendar (beyond the data)."""
    from bot.calendar import next_session

    for _ in range(n):
        day = next_session(day)
    return day
