"""The daemon's jobs. Each job restores the engine's state from the trade log, does one
thing, saves the state with its records in one flush, and never lets an exception out:
a failure becomes an incident in the trade log and the daemon carries on. When the
flush happens is the context's commit policy (bot.daemon.commits): after every job
live, in batches in a replay."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from bot.broker.base import LiveBroker
from bot.broker.sequenced import SellsFirst
from bot.clock import Clock
from bot.config import Settings
from bot.daemon.commits import EVERY_JOB, CommitPolicy
from bot.daemon.feeds import MarketFeed, index_of_day
from bot.daemon.sessions import SessionCalendar
from bot.daemon.watch import JobWatch
from bot.data.base import MarketData
from bot.data.plausibility import PlausibilityRules, plausible_sizing_prices
from bot.engine import Engine, StepOutcome, rearm_unsold_stop
from bot.engine_state import EngineState
from bot.errors import AccountCannotTrade
from bot.logs import mask_text
from bot.notify import messages
from bot.notify.sender import Notifier
from bot.store.models import to_plain
from bot.store.tradelog import TradeLog
from bot.strategy.base import TargetModel
from bot.types import EquityPoint, Fill, Order, RiskEvent

log = structlog.get_logger(__name__)


@dataclass
class DaemonContext:
    """What every job shares: one strategy instance trading through one broker."""

    settings: Settings
    feed: MarketFeed
    broker: LiveBroker
    tradelog: TradeLog
    clock: Clock
    calendar: SessionCalendar
    instance: str  # names the state in the trade log (survives restarts)
    mode: str  # replay | paper | live
    order_prefix: str  # start of every client_order_id
    notifier: Notifier | None = None  # trades, risk events, failures, daily summary
    # The engine's target model if not the config's: the platform's client accounts
    # trade the targets their profile decided once (bot.platform.profile_targets).
    model: TargetModel | None = None
    # When the trade log commits a job's records: after each one unless it is a replay.
    commits: CommitPolicy = EVERY_JOB


def rearm_recorded_stops(
    state: EngineState, tradelog: TradeLog, order_prefix: str, now: dt.datetime
) -> list[RiskEvent]:
    """Arm again, in `state`, each fund kept out by a stop whose latest stop order the
    trade log holds as ended unsold (bot.engine.rearm_unsold_stop); the risk events."""
    if not state.stopped:
        return []
    latest: dict[str, Order] = {}
    for rec in tradelog.recorded_orders(order_prefix):
        request = rec.order.request
        if request.symbol in state.stopped and request.rebalance_id.endswith("-stop"):
            latest[request.symbol] = rec.order  # oldest first: the last one stays
    return [e for o in latest.values() if (e := rearm_unsold_stop(state, o, now)) is not None]


class TradingJobs:
    """weekly regime, after-open decision, order polling, after-close marking."""

    def __init__(self, ctx: DaemonContext) -> None:
        self.ctx = ctx
        self._engine: Engine | None = None
        self._engine_market: MarketData | None = None
        self._last_close: float | None = None  # equity at the previous close job
        self._closed: tuple[dt.date, EquityPoint] | None = None  # the last close recorded
        self._fills_since_close = 0
        # The close a decision was last taken on, set before the engine steps: once it
        # has, orders may be out, and a failed decision is not run again that session.
        self.stepped_on: dt.date | None = None
        # Stops checked against what the trade log holds (once: after the start's
        # reconciliation; from then on each poll's updates arm them)
        self._stops_checked = False
        self._uncommitted = 0  # successful jobs since the last commit
        # Batched commits only: the state the last job saved, which the next commit
        # writes; until then the trade log still holds an older one.
        self._saved_state: dict | None = None
        self.watch = JobWatch()  # which job runs, for the heartbeat (bot.daemon.watch)
        # Jobs whose time passed while they could not run, told by the scheduler's
        # thread; the next job records them (the trade log is written from the jobs').
        self._missed: list[tuple[str, dt.datetime]] = []

    # ------------------------------------------------------------------ plumbing
    def run(
        self, name: str, job: Callable[[], None], details: Callable[[], dict] | None = None
    ) -> bool:
        """Run one job; record any failure as an incident (with `details()`, e.g. when
        it is retried) and return False."""
        ctx = self.ctx
        started = ctx.clock.now()
        self._record_missed(started)
        try:
            with self.watch.running(name):
                job()
            self.record_notify_failures()
            self._uncommitted += 1
            if ctx.commits.due(self._uncommitted):
                self.commit()
            return True
        except Exception as exc:  # noqa: BLE001 - a job must never kill the daemon
            log.error("job failed", job=name, error=str(exc), exc_type=type(exc).__name__)
            error = mask_text(f"{type(exc).__name__}: {exc}")  # stored and sent: never a secret
            self.notify("failures", *messages.failed_job(name, started, error))
            try:  # what happened before the failure (orders sent, fills seen) is fact: keep it
                self.commit()
            except Exception as store_exc:  # noqa: BLE001
                log.error("records not stored", job=name, error=str(store_exc))
            try:
                extra = details() if details is not None else {}
                ctx.tradelog.incident(
                    started, f"job:{name}", error,
                    {"job": name, "mode": ctx.mode, "instance": ctx.instance, **extra},
                )
            except Exception as store_exc:  # noqa: BLE001
                log.error("incident not stored", job=name, error=str(store_exc))
            return False

    def note_missed(self, name: str, when: dt.datetime) -> None:
        """A job whose time passed beyond its grace without it running (the machine slept,
        the process was stopped): said now, recorded as an incident by the next job."""
        log.error("job missed", job=name, scheduled=when.isoformat())
        self._missed.append((name, when))

    def _record_missed(self, now: dt.datetime) -> None:
        """The missed jobs as incidents; one that cannot be stored now waits for the next
        job (the job itself runs either way)."""
        while self._missed:
            name, when = self._missed[0]
            try:
                self.ctx.tradelog.incident(
                    now, f"missed:{name}",
                    f"job {name} of {when.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC did not run: "
                    "its time passed while the daemon could not run it (asleep or stopped)",
                    {"job": name, "scheduled": when.isoformat(), "mode": self.ctx.mode,
                     "instance": self.ctx.instance},
                )
            except Exception as exc:  # noqa: BLE001 - kept for the next job to store
                log.error("missed job not stored", job=name, error=str(exc))
                return
            self._missed.pop(0)

    def commit(self) -> None:
        """Write what the jobs since the last commit recorded, in one transaction."""
        self.ctx.tradelog.flush()
        self._uncommitted = 0

    def notify(self, kind: str, title: str, body: str) -> None:
        """Queue a notification (sent on another thread; never raises, never waits)."""
        notifier = self.ctx.notifier
        if notifier is not None:
            notifier.send(kind, title, body)

    def record_notify_failures(self) -> None:
        """Store undelivered notifications as incidents: they were logged when they
        failed, and a notification failure never fails the job that sent it."""
        notifier = self.ctx.notifier
        if notifier is None:
            return
        for failure in notifier.take_failures():
            try:
                # dated on the daemon's clock like every incident (a replay's is simulated);
                # the sender's own wall-clock time of the failure is kept beside it
                self.ctx.tradelog.incident(
                    self.ctx.clock.now(), "notify_failed", f"{failure.kind} notification not "
                    f"delivered: {failure.error}",
                    {"kind": failure.kind, "title": failure.title, "failed_at": failure.at.isoformat()},
                )
            except Exception as store_exc:  # noqa: BLE001
                log.error("incident not stored", kind="notify_failed", error=str(store_exc))

    def close(self) -> None:
        """At shutdown: send what is queued, and record what could not be sent."""
        if self.ctx.notifier is not None:
            self.ctx.notifier.close()
            self.record_notify_failures()

    def saved_state(self) -> EngineState:
        """The engine's state as the last job saved it."""
        ctx = self.ctx
        raw = self._saved_state
        if raw is None:
            raw = ctx.tradelog.load_state(ctx.instance, ctx.mode)
        return EngineState.from_dict(raw, ctx.settings.symbols) if raw else EngineState()

    def engine(self, market: MarketData) -> Engine:
        """An engine on `market` with the state saved by the last job. Reused while the
        feed hands out the same history (replay), rebuilt for fresh downloads (live)."""
        ctx = self.ctx
        state = self.saved_state()
        if self._engine is None or self._engine_market is not market:
            self._engine = Engine(
                ctx.settings, market, ctx.broker, ctx.tradelog, ctx.order_prefix, model=ctx.model
            )
            self._engine_market = market
        self._engine.state = state
        return self._engine

    def save(self, engine: Engine) -> None:
        self.save_state(engine.state)

    def save_state(self, engine_state: EngineState) -> None:
        """Buffer the engine's state for the next commit. Between batched commits the
        next job restores it from here: the plain (JSON) form is what the trade log
        would hand back once it is committed."""
        ctx = self.ctx
        state = to_plain(engine_state.to_dict(ctx.settings.symbols))
        ctx.tradelog.save_state(ctx.instance, ctx.mode, state, ctx.clock.now())
        if not ctx.commits.per_job:
            self._saved_state = state

    def poll(self) -> int:
        """Record every status change and fill the broker reports; returns how many."""
        now = self.ctx.clock.now()
        updates = self.ctx.broker.poll(now)
        self._record(updates, now)
        return len(updates)

    def final_poll(self) -> None:
        """Before the process ends: record the fills and status changes of the orders
        sent, without releasing queued buys (a stopping bot sends nothing new)."""
        broker = self.ctx.broker
        now = self.ctx.clock.now()
        updates = broker.poll_sent(now) if isinstance(broker, SellsFirst) else broker.poll(now)
        self._record(updates, now)

    def record_reports(self) -> None:
        """Record what the broker learned without a poll (fills in the answers to this
        job's submits): the job that sent an order records its fills before it ends,
        even if the process stops before the next poll."""
        now = self.ctx.clock.now()
        self._record(self.ctx.broker.take_reports(), now)

    def _record(self, updates: list[tuple[Order, Fill | None]], now: dt.datetime) -> None:
        """Each order's change and fill into the trade log; the fills are told (`trades`)
        and counted for the day's summary, whichever way they came (a poll, or the
        answer to a submit, which the broker reports only once)."""
        fills: list[Fill] = []
        for order, fill in updates:
            self.ctx.tradelog.execution(order, fill, now)
            if fill is not None:
                fills.append(fill)
        self._rearm_unsold_stops([order for order, _ in updates], now)
        if fills:
            self._fills_since_close += len(fills)
            self.notify("trades", *messages.trades(fills))

    def _rearm_recorded_stops(self, state: EngineState) -> None:
        """Before the first decision of a process: a fund kept out by a stop whose order
        the trade log holds as ended unsold is armed again (the reconciliation at the start
        records a stop that expired or was canceled while the daemon was down, and arms
        nothing). Once only: it reads every order of the instance (1 s over a 2-year
        replay when asked at every decision); later updates arm through each poll's.
        Saved at once: a decision failing after it must not lose it."""
        events = rearm_recorded_stops(state, self.ctx.tradelog, self.ctx.order_prefix,
                                      self.ctx.clock.now())
        self._record_rearmed(state, events)

    def _rearm_unsold_stops(self, orders: list[Order], now: dt.datetime) -> None:
        """A stop order that ended unsold arms its stop again, as in a backtest
        (bot.engine.rearm_unsold_stop): the state is saved with the risk event."""
        if not any(o.request.rebalance_id.endswith("-stop") and o.status.is_final for o in orders):
            return
        state = self.saved_state()
        self._record_rearmed(state, [e for o in orders if (e := rearm_unsold_stop(state, o, now)) is not None])

    def _record_rearmed(self, state: EngineState, events: list[RiskEvent]) -> None:
        """Stops armed again: their risk events, the state that holds them (saved at
        once), and the notification."""
        if not events:
            return
        for event in events:
            self.ctx.tradelog.risk_event(event)
        self.save_state(state)
        self.notify("risk", *messages.risk(events[0].day, events))

    # ------------------------------------------------------------------ jobs
    def regime_job(self) -> None:
        """Before the first session of a week: decide its regime from data published
        before it, so a macro outage shows up before the open."""
        ctx = self.ctx
        now = ctx.clock.now()
        upcoming = [s for s in ctx.calendar.around(now) if s.open > now]
        if not upcoming:
            return
        first = upcoming[0]
        previous = ctx.calendar.previous_session(first.day)
        engine = self.engine(ctx.feed.history(previous.day))
        regime = engine.decide_regime_for(first.day)
        self.save(engine)
        log.info("regime decided", day=str(first.day), regime=regime.value)

    def open_job(self, day: dt.date | None = None) -> None:
        """After the open of session `day` (default: today's): decide on the previous
        session's close and send orders."""
        ctx = self.ctx
        day = day or ctx.clock.now().date()
        today = ctx.calendar.session_on(day)
        if today is None:
            log.info("no session today", day=str(day))
            return
        self.poll()
        self.decide(ctx.calendar.previous_session(today.day).day)

    def decision_retry_refusal(self, day: dt.date) -> str | None:
        """Why the decision of session `day` must not be tried again (None: it may): once
        the engine has stepped on the previous close, orders may have been sent."""
        if self.stepped_on == self.ctx.calendar.previous_session(day).day:
            return "the decision had started (orders may be out); the next session decides again"
        return None

    def decide(self, decided_on: dt.date) -> StepOutcome:
        """The engine's step on `decided_on`'s close, orders sent now, state saved."""
        ctx = self.ctx
        ctx.broker.refresh()
        refusal = ctx.broker.trading_refusal()
        if refusal:  # every order would be refused, one by one, saying nothing of why
            raise AccountCannotTrade(f"no decision taken on the close of {decided_on}: "
                                     f"{refusal}; Alpaca refuses its orders until that is "
                                     "lifted (the next session tries again)")
        market = ctx.feed.history(decided_on)
        t = index_of_day(market, decided_on, "market data")
        engine = self.engine(market)
        if not self._stops_checked:
            self._rearm_recorded_stops(engine.state)
            self._stops_checked = True
        symbols = ctx.settings.symbols
        sizing = plausible_sizing_prices(
            market.prices, t, symbols, ctx.feed.sizing_prices(symbols),
            PlausibilityRules.from_settings(ctx.settings.data),
        )
        self.stepped_on = decided_on
        outcome = engine.step(t, ctx.clock.now(), sizing)
        self.save(engine)  # first: a stop refused at once is armed again on this state
        self.record_reports()
        if outcome.events:
            self.notify("risk", *messages.risk(decided_on, outcome.events))
        log.info(
            "decision",
            day=str(decided_on),
            equity=round(outcome.equity, 2),
            rebalance=outcome.rebalance,
            orders=len(outcome.orders),
            events=[e.rule for e in outcome.events],
        )
        return outcome

    def poll_job(self) -> None:
        """Track orders to their final state (fills, partial fills, cancels, rejects)."""
        if self.ctx.broker.open_order_count():  # sent, adopted or queued orders
            n = self.poll()
            if n:
                log.info("order updates", count=n)

    def close_job(self, day: dt.date | None = None) -> None:
        """After the close of session `day` (default: today's; a retry later in the
        evening names it): last order updates, then the day's equity and positions."""
        ctx = self.ctx
        today = ctx.calendar.session_on(day or ctx.clock.now().date())
        if today is None:
            return
        self.poll()
        repeated = self._recorded_close(today.day) is not None
        point = self.mark_close(today.day)
        if not repeated:  # the first try sent it
            self._daily_summary(point)

    def _recorded_close(self, day: dt.date) -> EquityPoint | None:
        """The close of `day` if this process recorded it already (see mark_close)."""
        return self._closed[1] if self._closed is not None and self._closed[0] == day else None

    def mark_close(self, day: dt.date) -> EquityPoint:
        """The day's equity and positions at its close, recorded once; state saved.

        A retry of a close whose records were made but not stored (its commit failed: a
        locked SQLite file, a database outage) finds them still buffered, or written by
        the failed job's second commit, and does not record the day again: a second
        equity row for the run and day would make the database refuse the whole write."""
        ctx = self.ctx
        ctx.broker.refresh()
        market = ctx.feed.history(day)
        t = index_of_day(market, day, "market data")
        engine = self.engine(market)
        point = self._recorded_close(day)
        if point is not None:
            log.info("close already recorded", day=str(day))
        else:
            engine.enter_week(t)  # a week's first close carries that week's regime
            point = engine.record_close(t, snapshot=True)
            self._closed = (day, point)
        self.save(engine)
        log.info("close", day=str(day), equity=round(point.equity, 2))
        return point

    def _daily_summary(self, point: EquityPoint) -> None:
        if self.ctx.notifier is not None and self.ctx.notifier.wants("daily"):
            open_orders = self.ctx.broker.open_order_count()
            self.notify("daily", *messages.daily(point, self._last_close, self._fills_since_close, open_orders))
        self._last_close, self._fills_since_close = point.equity, 0
