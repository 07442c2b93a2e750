"""`bot once`: one decision now, on the latest completed close, through the daemon's
own job code. Without --execute it runs against a throwaway trade log and a broker
that sends nothing, so the real log and account are untouched."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import numpy as np

from bot.backtest import scratch_tradelog
from bot.broker.base import LiveBroker
from bot.daemon.jobs import TradingJobs
from bot.engine import StepOutcome
from bot.types import Fill, Order, OrderRequest, OrderStatus


class DryRunBroker:
    """The account as it is, but orders are only echoed back."""

    def __init__(self, inner: LiveBroker) -> None:
        self.inner = inner

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

    def submit(self, request: OrderRequest, now: dt.datetime) -> Order:
        return Order(request, OrderStatus.NEW, now, None, status_message="dry run: not sent")

    def take_reports(self) -> list[tuple[Order, Fill | None]]:
        return []  # nothing is sent, so nothing fills


def decision_day(jobs: TradingJobs, now: dt.datetime) -> dt.date:
    """The latest close that has happened: today's after the close, else the previous."""
    cal = jobs.ctx.calendar
    today = cal.session_on(now.date())
    if today is not None and now >= today.close:
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
        scratch.save_state(ctx.instance, ctx.mode, saved, now)
        scratch.flush()
    # Nothing was sent, so nothing is announced either.
    dry = TradingJobs(replace(ctx, broker=DryRunBroker(ctx.broker), tradelog=scratch, notifier=None))
    outcome = dry.decide(day)
    scratch.discard()
    return outcome
