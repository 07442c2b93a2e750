"""One client account's jobs on a platform worker: the rebalance of a batch, the order
polls after it, the close. Each is the single-account daemon's job (bot.daemon.jobs) on
the account's own broker, state and trade-log tag; only the target model differs (the
profile's stored decision, bot.platform.profile_targets).

A rebalance runs in two phases so that a worker killed at any moment never causes an
order to be sent twice or lost:

1. plan: the engine's step on the account's holdings and cash, with a broker that records
   the orders it is given instead of sending them (`PlanOnly`); the plan, the engine's
   state and the task's phase "planned" are committed in one transaction. Nothing has
   been sent, so a task stopped before this commit starts again from nothing.
2. send: the planned orders go out through the daemon's sells-first broker in plan order;
   their new state, the fills in the answers and the task's "done" are committed in one
   transaction. A task stopped in between is delivered again: it finds its plan, looks
   each planned order up at the broker by its client_order_id (deterministic per account
   and decision), adopts those that went out and sends only the rest, sized on the cash
   the broker reports then (open buys reserve theirs), never on a second plan.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import structlog

from bot.accounts.registry import Account, account_order_prefix
from bot.broker.alpaca import AlpacaBroker
from bot.broker.base import BrokerError
from bot.broker.broker_api import AccountClient, PositionsSnapshot
from bot.broker.sequenced import CUT, SellsFirst, buys_refused_after_the_close
from bot.daemon.jobs import DaemonContext, TradingJobs
from bot.daemon.reconcile import follow, is_queued_buy, reconcile
from bot.errors import AccountCannotTrade, BotError
from bot.platform.context import REBALANCE_CUTOFF, Profile, WorkerContext
from bot.platform.lease import keep_current
from bot.platform.profile_targets import ProfileTargets
from bot.platform.store import (
    PLANNED,
    TaskRow,
    fence,
    has_open_orders,
    mark_done,
    newest_decision_day,
    set_phase,
    unfinished_rebalances,
)
from bot.store.readers import RecordedOrder
from bot.store.tradelog import TradeLog
from bot.types import Fill, Order, OrderRequest, OrderStatus, Side

log = structlog.get_logger(__name__)

SENT = "sent after its plan was recorded"
SENT_BEFORE = "sent before its task stopped; found at the broker by its client_order_id"


class PlanOnly:
    """The engine's broker while an account's orders are planned: holdings, cash and
    open orders are the account's (through `broker`); an order submitted is kept and
    returned as planned (status new, nothing sent), for the caller to record first."""

    def __init__(self, broker: SellsFirst) -> None:
        self.broker = broker
        self.planned: list[Order] = []
        self.extra_cash = 0.0  # proceeds of sells planned beside the engine's (outside funds)

    def submit(self, request: OrderRequest, now: dt.datetime) -> Order:
        order = Order(request, OrderStatus.NEW, now, None, status_message=PLANNED)
        self.planned.append(order)
        return order

    def cash(self) -> float:
        return self.broker.cash()

    def cash_balance(self) -> float:
        return self.broker.cash_balance() + self.extra_cash

    def holdings(self, symbols: tuple[str, ...]) -> np.ndarray:
        return self.broker.holdings(symbols)

    def open_order_count(self) -> int:
        return self.broker.open_order_count()

    def refresh(self) -> None:
        self.broker.refresh()

    def trading_refusal(self) -> str | None:
        return self.broker.trading_refusal()

    def take_reports(self) -> list[tuple[Order, Fill | None]]:
        return self.broker.take_reports()


@dataclass
class AccountSession:
    """One account on this worker for one task: its broker, trade log and daemon jobs."""

    account: Account
    profile: Profile
    prefix: str
    tradelog: TradeLog
    view: AccountClient
    venue: AlpacaBroker
    broker: SellsFirst

    def jobs(self, ctx: WorkerContext, broker: Any = None, model: Any = None) -> TradingJobs:
        return TradingJobs(DaemonContext(
            settings=self.profile.settings, feed=self.profile.feed,
            broker=broker or self.broker, tradelog=self.tradelog, clock=ctx.clock,
            calendar=ctx.calendar, instance=self.prefix, mode=ctx.mode,
            order_prefix=self.prefix, model=model,
        ))


def _skip(ctx: WorkerContext, row: TaskRow, account: Account, why: str,
          unsent_because: str | None = None) -> dict[str, Any]:
    """A rebalance that must not trade (`why`: the account closed or suspended since the
    decision, or a newer decision superseded its batch): its task is done (its batch can
    finish). A plan recorded by an earlier run of the task is looked up at the broker
    order by order: one that went out before that run stopped is adopted and followed
    (its fills are the account's), the rest closed as not sent."""
    now = ctx.clock.now()
    outcome: dict[str, Any] = {"skipped": why}
    if row.phase != "planned":
        tradelog = ctx.tradelog(row.run_id)
        tradelog.account_id = account.id
        tradelog.flush(mark_done(row.id, now, outcome), claim=fence(row))
        return outcome
    session = open_session(ctx, row.run_id, account)
    unsent = [rec.order for rec in session.tradelog.recorded_orders(session.prefix)
              if rec.run_id == row.run_id and is_unsent_plan(rec.order)]
    try:
        found = [(o, session.venue.find_order(o.request.client_order_id)) for o in unsent]
    except BrokerError as exc:  # a closed account's orders may not be readable any more
        from bot.platform.tasks import is_transient

        if is_transient(exc):
            raise  # a 429 or 5xx: the task is retried
        session.tradelog.incident(
            now, "plan_not_looked_up",
            f"account {account.broker_account_id}: the {len(unsent)} planned orders of a skipped "
            f"rebalance could not be looked up ({exc}); closed as not sent: one that went out "
            "is adopted by the next reconciliation", {"account": account.id, "run_id": row.run_id})
        found = [(o, None) for o in unsent]
    went_out = [order for order, at_venue in found if at_venue is not None]
    for order, at_venue in found:
        if at_venue is not None:
            _adopt(session, order, at_venue, now)
    _close_not_sent(session.tradelog, [o for o, at in found if at is None], unsent_because or why, now)
    if went_out:
        _record_poll(session, now)
    outcome.update(not_sent=len(unsent) - len(went_out), **({"adopted": len(went_out)} if went_out else {}))
    session.tradelog.flush(mark_done(row.id, now, outcome), claim=fence(row))
    return outcome


def _record_poll(session: AccountSession, now: dt.datetime) -> None:
    """What the venue reports of the orders it follows (the fills of those just adopted)."""
    for order, fill in session.venue.poll(now):
        session.tradelog.execution(order, fill, now)


def _adopt(session: AccountSession, order: Order, found: Order, now: dt.datetime) -> None:
    """A planned order found at the broker (sent before its task stopped): recorded as
    sent, and followed from its recorded fills (none) by the venue's poll."""
    order.broker_order_id = found.broker_order_id
    order.status_message = SENT_BEFORE
    session.tradelog.execution(order, None, now)
    session.venue.track(order, (0.0, None))


def _close_not_sent(
    tradelog: TradeLog, orders: list[Order], why: str, now: dt.datetime
) -> None:
    """Orders that will not go out (`why`), recorded as canceled: nothing will send them."""
    for order in orders:
        order.status = OrderStatus.CANCELED
        order.status_message = f"not sent: {why}"
        tradelog.execution(order, None, now)


def _inactive(account: Account) -> str:
    return f"the account was {account.status} before it went out"


def open_session(
    ctx: WorkerContext, run_id: int, account: Account, snapshot: PositionsSnapshot | None = None
) -> AccountSession:
    profile = ctx.profile(account.profile)
    platform = ctx.broker_platform()
    view = platform.account_client(account.broker_account_id, snapshot)
    venue = platform.broker_for(view)
    venue.send_gate = buys_refused_after_the_close(
        lambda now: ctx.market_open(now, before_close=dt.timedelta(0)), ctx.clock.now)
    tradelog = ctx.tradelog(run_id)
    tradelog.account_id = account.id
    feed = profile.feed
    prefix = account_order_prefix(ctx.settings.name, account.broker_account_id)
    broker = SellsFirst(venue, incident=tradelog.incident, market_open=ctx.market_open,
                        prices=feed.sizing_prices,
                        whole_shares=not profile.settings.rebalance.fractional,
                        order_prefix=prefix, clock=ctx.clock.now)
    return AccountSession(account, profile, prefix, tradelog, view, venue, broker)


def rebalance(ctx: WorkerContext, row: TaskRow, account: Account) -> dict[str, Any]:
    """Plan and send one account's orders for its profile's decision of the batch."""
    if not account.active:  # closed or suspended since the decision
        return _skip(ctx, row, account, f"the account is {account.status}", _inactive(account))
    newest = newest_decision_day(ctx.engine, ctx.mode)
    if newest is not None and newest > row.day:  # workers were down past the next decision
        return _skip(ctx, row, account, f"the decision on the close of {newest} superseded "
                                        f"this batch's, of {row.day}")
    if row.phase != "planned" and not ctx.market_open(ctx.clock.now(), REBALANCE_CUTOFF):
        # Late (workers down for hours, a retry of the dead letters): sells sent now
        # would fill after the close or leave the account in cash overnight. Nothing
        # was sent yet; the next batch trades (the daemon's rule for a late decision).
        return _skip(ctx, row, account, "the market is closed or closes within "
                     f"{REBALANCE_CUTOFF.total_seconds() / 60:.0f} minutes: no rebalance starts "
                     "this late; the next batch trades")
    decision = None
    if row.phase != "planned":  # a recorded plan is sent as recorded, whatever changed since
        decision = ctx.decided(row.run_id, account.profile)
        if decision is None:  # re-profiled after the decision (this dead-lettered the task)
            return _skip(ctx, row, account, f"the account's profile changed to {account.profile} "
                         f"after batch {row.run_id} was decided, which has no decision for it: "
                         "the next batch trades the new profile")
    resumed = row.attempts > 1
    # A task run before may have sent orders: its positions come from the account itself.
    snapshot = None if resumed else ctx.positions_snapshot(row.run_id)
    session = open_session(ctx, row.run_id, account, snapshot)
    now = ctx.clock.now()
    if row.phase == "planned":
        plan = _recorded_plan(session, row.run_id, row.day)
        outcome = {"resumed": "send"}
    else:
        assert decision is not None
        try:
            plan, outcome = _plan(ctx, session, decision, resumed or has_open_orders(ctx.engine, account.id), now)
        except AccountCannotTrade as exc:  # often passing (an account being updated): the next batch trades
            outcome = {"skipped": str(exc).replace("the next session tries again", "the next batch trades")}
            session.tradelog.flush(mark_done(row.id, ctx.clock.now(), outcome), claim=fence(row))
            return outcome
        session.tradelog.flush(set_phase(row.id, "planned", outcome), claim=fence(row))
        session.view.reuse_last_read()  # phase 2 sizes its buys on the cash just planned on
    sent = _send(session, plan, now, look_up=row.phase == "planned")
    outcome = {**outcome, **sent}
    session.tradelog.flush(mark_done(row.id, ctx.clock.now(), outcome), claim=fence(row))
    return outcome


def _plan(
    ctx: WorkerContext, session: AccountSession, decision: Any, catch_up: bool, now: dt.datetime
) -> tuple[list[Order], dict[str, Any]]:
    """Phase 1: the daemon's decision job on this account, its orders only recorded.
    An account with open orders in the log, or whose task ran before, is reconciled
    with the broker first (the daemon's restart rule, per account)."""
    if catch_up:
        reconcile(session.tradelog, session.broker, session.prefix,
                  session.profile.settings.symbols, now, ctx.mode)
    symbols = session.profile.settings.symbols
    outside = session.venue.positions_outside(symbols)  # the account's first read...
    session.view.reuse_last_read()  # ...is the one the engine's step plans on, too
    # Sold with this rebalance (when nothing is outstanding): the engine plans on their
    # value as cash to come, and the sells go first, so the buys wait for their proceeds.
    selling = (any(q > 0 for q, _v in outside.values()) and ctx.settings.sell_outside_profile
               and not session.broker.open_order_count())  # a short is only reported
    planner = PlanOnly(session.broker)
    if selling:  # a value Alpaca did not give is left out: those proceeds wait a week
        planner.extra_cash = sum(v for q, v in outside.values() if q > 0 and math.isfinite(v))
    model = ProfileTargets(decision, symbols, session.profile.history_calendar_days)
    step = session.jobs(ctx, broker=planner, model=model).decide(decision.day)
    if selling:
        exits = [_exit(session, s, q, v, decision.day, now)
                 for s, (q, v) in sorted(outside.items()) if q > 0]
        planner.planned[:0] = exits
    outcome = {
        "rebalance": step.rebalance,
        "equity": round(step.equity, 2),
        "planned": len(planner.planned),
        "events": [e.rule for e in step.events],
    }
    if outside:
        _report_outside(session, outside, now, sold=selling)
        outcome["outside_profile"] = sorted(outside)
    return planner.planned, outcome


def _exit(session: AccountSession, symbol: str, quantity: float, value: float, day: dt.date,
          now: dt.datetime) -> Order:
    """The planned sell of a whole position outside the account's profile, recorded as
    the engine records its own orders (same rebalance id, so a resumed task sends it)."""
    rebalance_id = f"{session.prefix}-{day:%Y%m%d}-rb"
    price = value / quantity if math.isfinite(value) and quantity > 0 else 0.0
    request = OrderRequest(
        f"{rebalance_id}-{symbol}-sell", rebalance_id, symbol, Side.SELL, quantity,
        f"not in profile {session.account.profile}: sold to trade the profile's funds", price,
    )
    order = Order(request, OrderStatus.NEW, now, None, status_message=PLANNED)
    session.tradelog.order(order)
    return order


def _report_outside(session: AccountSession, outside: dict[str, tuple[float, float]],
                    now: dt.datetime, *, sold: bool) -> None:
    """An incident for funds the account holds outside its profile (a client moved to
    another profile keeps the old one's funds): sold with this rebalance, or (selling
    off, or orders outstanding) neither traded nor valued by the batch engine."""
    account, profile = session.account, session.account.profile
    held = ", ".join(f"{q:g} {s}" for s, (q, _v) in sorted(outside.items()))
    what = ("their sale goes out first with this rebalance, its proceeds planned into the "
            "profile's funds (`bot orders` shows how it went)" if sold
            else "the batch engine neither trades nor values them; sell them, or assign the "
                 "profile that holds them")
    session.tradelog.incident(
        now, "positions_outside_profile",
        f"account {account.broker_account_id} holds {held} outside profile {profile}: {what}",
        {"account": account.id, "profile": profile, "sold": sold,
         "positions": {s: q for s, (q, _v) in outside.items()}},
    )


class PlanLost(BotError):
    """A resumed rebalance found orders of its plan closed without being sent (by a job
    that should have left them alone): sending the rest would trade half a plan."""


def _recorded_plan(session: AccountSession, run_id: int, day: dt.date) -> list[Order]:
    """The planned orders of this account's rebalance on `day` not yet sent, in plan
    order (sells first), as phase 1 recorded them. PlanLost if any of them was closed
    meanwhile without going out: the task must fail where it can be seen, not report
    done with its plan unsent."""
    rebalance_id = f"{session.prefix}-{day:%Y%m%d}-rb"
    decided = (rebalance_id, f"{session.prefix}-{day:%Y%m%d}-stop")  # the rebalance, its stop sells
    mine = [rec.order for rec in session.tradelog.recorded_orders(session.prefix)
            if rec.run_id == run_id and rec.order.request.rebalance_id in decided]
    lost = [o for o in mine if o.broker_order_id is None and o.status.is_final]
    if lost:
        closed = ", ".join(f"{o.request.client_order_id} ({o.status.value}: {o.status_message})"
                           for o in lost)
        raise PlanLost(f"rebalance {rebalance_id}: {len(lost)} of its {len(mine)} planned orders "
                       f"were closed before this task sent them: {closed}; nothing was sent")
    plan = [o for o in mine if is_unsent_plan(o)]
    return [o for o in plan if o.request.side is Side.SELL] + [
        o for o in plan if o.request.side is Side.BUY]


def is_unsent_plan(order: Order) -> bool:
    """An order phase 1 recorded that no one has sent yet."""
    return (order.broker_order_id is None and order.status is OrderStatus.NEW
            and order.status_message == PLANNED)


def _send(session: AccountSession, plan: list[Order], now: dt.datetime, look_up: bool
          ) -> dict[str, Any]:
    """Phase 2: each planned order through sells-first, recorded; with `look_up`, an
    order the broker already has (sent before the task stopped) is adopted instead, and
    what it filled is recorded before the rest go out: an adopted sell still working
    holds the buys back, one filled does not."""
    tradelog, broker, venue = session.tradelog, session.broker, session.venue
    placed: list[Order] = []
    adopted = 0
    to_send = plan
    if look_up:
        to_send = []
        for order in plan:
            found = venue.find_order(order.request.client_order_id)
            if found is None:
                to_send.append(order)
            else:  # as reconcile adopts an order it finds
                _adopt(session, order, found, now)
                adopted += 1
        if adopted:
            _record_poll(session, now)
    for order in to_send:
        sent = broker.submit(order.request, now)
        if sent.status_message is None:
            sent.status_message = SENT
        elif sent.status_message.startswith(CUT):  # sent at once, cut to the budget
            sent.status_message = f"{SENT}; {sent.status_message}"
        placed.append(sent)
    reports = broker.take_reports()
    reported = {o.request.client_order_id for o, _ in reports}
    for sent in placed:
        if sent.request.client_order_id not in reported:
            tradelog.execution(sent, None, now)
    for order, fill in reports:
        tradelog.execution(order, fill, now)
    statuses: dict[str, int] = {}
    for order in placed:
        statuses[order.status.value] = statuses.get(order.status.value, 0) + 1
    return {"sent": len(placed), "adopted": adopted, "statuses": statuses}


def poll(ctx: WorkerContext, run_id: int, account: Account) -> int:
    """Follow the account's open orders (fills, cancels; queued buys go out once its
    sells filled and the market is open), as the daemon's poll job does."""
    session = open_session(ctx, run_id, account)
    followed = _follow(ctx, session)
    if not followed:
        session.tradelog.flush()  # what _follow closed (an inactive account's queued buys)
        return 0
    updates = session.jobs(ctx).poll()
    keep_current()  # no fence guards a poll's records: still this account's holder?
    session.tradelog.flush()
    return updates


def _follow(ctx: WorkerContext, session: AccountSession) -> int:
    """The account's open orders followed (bot.daemon.reconcile.follow), except the plan
    of a rebalance task not final yet: a poll would find those orders absent at the venue
    and close them as never placed, and the task's retry would then send nothing. An
    account closed or suspended meanwhile sends nothing more: its queued buys are closed
    as not sent, and only the orders already sent are followed."""
    waiting = unfinished_rebalances(ctx.engine, session.account.id)
    active = session.account.active
    if not active:
        queued = [rec.order for rec in session.tradelog.recorded_orders(session.prefix)
                  if rec.mode == ctx.mode and is_queued_buy(rec.order)]
        _close_not_sent(session.tradelog, queued, _inactive(session.account), ctx.clock.now())

    def left(rec: RecordedOrder) -> bool:
        return (rec.run_id in waiting and is_unsent_plan(rec.order)) or (
            not active and is_queued_buy(rec.order))

    return follow(session.tradelog, session.broker, session.prefix, ctx.mode, leave=left)


def close(ctx: WorkerContext, row: TaskRow, account: Account) -> dict[str, Any]:
    """The day's equity and positions of the account, after a last poll."""
    opened = _session_opened_since(ctx, row.day)
    if opened is not None:
        return _close_too_late(ctx, row, account, opened)
    session = open_session(ctx, row.run_id, account)
    jobs = session.jobs(ctx)
    if _follow(ctx, session):
        jobs.poll()
    point = jobs.mark_close(row.day)
    outcome = {"equity": round(point.equity, 2), "cash": round(point.cash, 2)}
    session.tradelog.flush(mark_done(row.id, ctx.clock.now(), outcome), claim=fence(row))
    return outcome


def _session_opened_since(ctx: WorkerContext, day: dt.date) -> dt.date | None:
    """The first session after `day` that has opened by the venue's clock, if any."""
    now = ctx.venue_now()
    later = ctx.calendar.between(day + dt.timedelta(days=1), max(now.date(), day + dt.timedelta(days=1)))
    return next((s.day for s in later if s.open <= now), None)


def _close_too_late(ctx: WorkerContext, row: TaskRow, account: Account, opened: dt.date) -> dict[str, Any]:
    """A close task run after the next session opened (workers down overnight, a retry
    late): the account's holdings are no longer that close's, and valuing them at its
    prices would record a wrong equity point and engine state under it. Skipped, with an
    incident; the next close records the account."""
    why = (f"the close of {row.day} was not recorded: the session of {opened} opened "
           "before this task ran, so the account's holdings are no longer that close's; "
           "the next close records the account")
    now = ctx.clock.now()
    tradelog = ctx.tradelog(row.run_id)
    tradelog.account_id = account.id
    tradelog.incident(now, "close_skipped", why, {"account_id": account.id, "day": row.day.isoformat(),
                                                  "opened": opened.isoformat()})
    outcome = {"skipped": why}
    tradelog.flush(mark_done(row.id, now, outcome), claim=fence(row))
    return outcome
