"""`bot once`: one decision now, on the latest completed close, through the daemon's
own job code. Without --execute it runs against a throwaway trade log and a broker
that sends nothing, so the real log and account are untouched."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import numpy as np

from bot.backtest import scratch_tradelog
from bot.broker.base import AccountInfo, LiveBroker, MarketClock, TradingSession
from bot.broker.sequenced import SellsFirst
from bot.daemon.jobs import TradingJobs, rearm_recorded_stops
from bot.data.alpaca import DATA_DELAY
from bot.engine import StepOutcome
from bot.engine_state import EngineState
from bot.store.models import to_plain
from bot.types import Fill, Order, OrderRequest, OrderStatus

#: the status message of an order the dry run did not send
DRY_RUN = "dry run: not sent"


class DryRunVenue:
    """The venue as it is for reading (account, positions, open orders, clock), but an
    order is only echoed back: under SellsFirst (`dry_run_broker`) the dry run sizes,
    cuts and queues each order exactly as `--execute` does, and sends nothing."""

    def __init__(self, inner: LiveBroker) -> None:
        self.inner = inner

    # -- what would be sent: nothing is
    def submit(self, request: OrderRequest, now: dt.datetime) -> Order:
        return Order(request, OrderStatus.NEW, now, None, status_message=DRY_RUN)

    def poll(self, now: dt.datetime) -> list[tuple[Order, Fill | None]]:
        return []  # nothing is sent, so nothing fills

    def take_reports(self) -> list[tuple[Order, Fill | None]]:
        return []

    def cancel(self, client_order_id: str) -> None:
        """Nothing of the dry run's is at the venue, and the real orders are left alone."""

    def track(self, order: Order, fills: tuple[float, float | None] | None = None) -> None:
        """Nothing to follow: the dry run's orders never reach the venue."""

    # -- reads: the real account
    def cash(self) -> float:
        return self.inner.cash()

    def cash_balance(self) -> float:
        return self.inner.cash_balance()

    def holdings(self, symbols: tuple[str, ...]) -> np.ndarray:
        return self.inner.holdings(symbols)

    def open_order_count(self) -> int:
        return self.inner.open_order_count()

    def refresh(self) -> None:
        self.inner.refresh()

    def account(self) -> AccountInfo:
        return self.inner.account()

    def trading_refusal(self) -> str | None:
        return self.inner.trading_refusal()

    def open_orders(self) -> list[Order]:
        return self.inner.open_orders()  # a sell already working holds the buys back

    def find_order(self, client_order_id: str) -> Order | None:
        return self.inner.find_order(client_order_id)

    def followed_orders(self) -> list[Order]:
        return self.inner.followed_orders()  # the real sells working hold the buys back

    def closed_orders(self, after: dt.datetime) -> list[Order]:
        return self.inner.closed_orders(after)

    def clock(self) -> MarketClock:
        return self.inner.clock()

    def calendar(self, start: dt.date, end: dt.date) -> list[TradingSession]:
        return self.inner.calendar(start, end)


def dry_run_broker(broker: LiveBroker | SellsFirst) -> SellsFirst:
    """The trading broker with its venue swapped for one that sends nothing; the daemon's
    SellsFirst keeps its settings (buys sized from one cash budget per rebalance less
    CASH_BUFFER, queued behind open sells or outside the session)."""
    if isinstance(broker, SellsFirst):
        return broker.over(DryRunVenue(broker.inner))
    return SellsFirst(DryRunVenue(broker))


def decision_day(jobs: TradingJobs, now: dt.datetime) -> dt.date:
    """The latest close whose daily bar is final: today's from DATA_DELAY after the
    close, else the previous session's. Market data is asked for up to DATA_DELAY
    before now, so minutes after the close today's bar would miss the session's last
    minutes and its closing auction, and a decision taken on it would stand (the next
    morning's run finds the rebalance done)."""
    cal = jobs.ctx.calendar
    today = cal.session_on(now.date())
    if today is not None and now >= today.close + DATA_DELAY:
        return today.day
    return cal.previous_session(now.date()).day


def decide_once(jobs: TradingJobs, *, execute: bool) -> StepOutcome:
    ctx = jobs.ctx
    now = ctx.clock.now()
    day = decision_day(jobs, now)
    if execute:
        jobs.poll()
        outcome = jobs.decide(day)
        # Orders sent at a liquid open fill within moments: record what filled before this
        # process ends (a failure here is an incident; the daemon's next start records it).
        jobs.run("final poll", jobs.final_poll)
        return outcome
    scratch = scratch_tradelog("once")
    saved = ctx.tradelog.load_state(ctx.instance, ctx.mode)
    if saved:
        # The stops the real run would arm again first (its trade log holds the orders;
        # the scratch one does not), armed in the copy only: nothing is recorded.
        state = EngineState.from_dict(saved, ctx.settings.symbols)
        if rearm_recorded_stops(state, ctx.tradelog, ctx.order_prefix, now):
            saved = to_plain(state.to_dict(ctx.settings.symbols))
        scratch.save_state(ctx.instance, ctx.mode, saved, now)
        scratch.flush()
    # Nothing was sent, so nothing is announced either.
    dry = TradingJobs(replace(ctx, broker=dry_run_broker(ctx.broker), tradelog=scratch, notifier=None))
    outcome = dry.decide(day)
    scratch.discard()
    return outcome
