"""The weekly decision of a platform batch: each profile's targets decided once, recorded
once, and one task row per active account.

A batch is a run in the trade log (strategy "platform", the profiles' configs in its
config) holding the profiles' targets (`targets`, with every signal, score and the LP's
reason), one `platform_decisions` row per profile and one `platform_tasks` row per
account, all committed together. Deciding a day that already has a batch returns that
batch: a decision task delivered twice decides once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
import structlog

from bot.daemon.feeds import index_of_day
from bot.daemon.live import instance_name
from bot.engine import Engine
from bot.engine_state import EngineState
from bot.errors import BotError
from bot.platform.context import Profile, WorkerContext
from bot.platform.profile_targets import stored_stops, stored_weights
from bot.platform.store import (
    ACCOUNTS,
    DECISIONS,
    PLATFORM_STRATEGY,
    TASKS,
    StoredDecision,
    batch_of_day,
    decision_rows,
)
from bot.runner import code_version
from bot.store.tradelog import TradeLog

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Batch:
    run_id: int
    day: dt.date
    decisions: dict[str, StoredDecision]
    accounts: int
    created: bool  # False: the day's batch existed already


class NoAccount:
    """The broker of a profile's decision engine: the decision trades no account."""

    def _refuse(self, *_args: Any) -> Any:
        raise BotError("a profile's weekly decision holds no account and sends no order")

    cash = holdings = open_order_count = submit = _refuse


def decide_batch(ctx: WorkerContext, day: dt.date) -> Batch:
    """The batch deciding on `day`'s close: created with each profile's targets if it
    does not exist yet, else the existing one."""
    existing = batch_of_day(ctx.engine, day, ctx.mode)
    if existing is not None:
        decisions = {n: ctx.decision(existing, n) for n in _profiles_of(ctx, existing)}
        return Batch(existing, day, decisions, _task_count(ctx, existing), created=False)
    now = ctx.clock.now()  # the batch's start: its data, its LPs, its task rows
    grouped = ctx.registry.active_by_profile()
    if not grouped:
        raise BotError("no active account in the registry: nothing to decide "
                       "(add some with `bot accounts add` or `bot accounts import`)")
    profiles = {name: ctx.profile(name) for name in sorted(grouped)}
    tradelog = TradeLog(ctx.engine)
    run_id = _start_run(tradelog, ctx, profiles, day, now)
    decisions = {name: _decide_profile(ctx, tradelog, run_id, profile, day, now)
                 for name, profile in profiles.items()}
    hashes = {name: p.settings.fingerprint() for name, p in profiles.items()}
    decided_at = ctx.clock.now()
    tradelog.flush(
        sa.insert(DECISIONS).values(decision_rows(run_id, decisions.values(), hashes, decided_at)),
        _task_rows(run_id, day, list(profiles)),
    )
    count = _task_count(ctx, run_id)
    log.info("batch decided", run=run_id, day=str(day), profiles=len(profiles), accounts=count,
             seconds=round((ctx.clock.now() - now).total_seconds(), 3))
    return Batch(run_id, day, decisions, count, created=True)


def _start_run(tradelog: TradeLog, ctx: WorkerContext, profiles: dict[str, Profile],
               day: dt.date, now: dt.datetime) -> int:
    fingerprints = "".join(f"{n}={p.settings.fingerprint()};" for n, p in sorted(profiles.items()))
    sources = sorted({_source(p) for p in profiles.values()})
    return tradelog.start_run(
        mode=ctx.mode,
        strategy=PLATFORM_STRATEGY,
        config_hash=hashlib.sha256(fingerprints.encode()).hexdigest()[:32],
        config={
            "platform": ctx.settings.name,
            "decision_day": day.isoformat(),
            "profiles": {n: p.settings.model_dump(mode="json") for n, p in profiles.items()},
        },
        code_version=code_version(),
        data_source=", ".join(sources)[:200],
        synthetic=any(_synthetic(p) for p in profiles.values()),
        started_at=now,
    )


def _decide_profile(ctx: WorkerContext, tradelog: TradeLog, run_id: int, profile: Profile,
                    day: dt.date, now: dt.datetime) -> StoredDecision:
    """One profile's targets on `day`'s close through the engine (its model, the risk
    guard, the regime if the config needs one), recorded under the batch's run."""
    settings = profile.settings
    market = profile.feed.history(day)
    t = index_of_day(market, day, f"market data of profile {profile.name}")
    prefix = f"{ctx.settings.name}-{instance_name(settings)}"
    raw = tradelog.load_state(prefix, ctx.mode)
    state = EngineState.from_dict(raw, settings.symbols) if raw else EngineState()
    engine = Engine(settings, market, NoAccount(), tradelog, prefix, state)  # type: ignore[arg-type]
    decision = engine.decide_targets(t, f"weekly decision of profile {profile.name}")
    tradelog.save_state(prefix, ctx.mode, engine.state.to_dict(settings.symbols), now)
    weights = stored_weights(settings.symbols, decision.weights)
    log.info("profile decided", profile=profile.name, day=str(day),
             weights={s: round(w, 4) for s, w in weights.items()})
    return StoredDecision(run_id, profile.name, day, engine.rebalance_id(day), weights,
                          stored_stops(settings.symbols, decision.stops))


def _task_rows(run_id: int, day: dt.date, profiles: list[str]) -> sa.Executable:
    """One pending rebalance task per active account of the decided profiles, taken from
    the registry inside the batch's transaction."""
    accounts = sa.select(
        sa.literal(run_id, sa.BigInteger), ACCOUNTS.c.id, sa.literal("rebalance"),
        sa.literal(day, sa.Date), sa.literal("pending"), sa.literal(0), sa.literal(0),
    ).where(ACCOUNTS.c.status == "active", ACCOUNTS.c.profile.in_(profiles))
    columns = ["run_id", "account_id", "kind", "day", "status", "attempts", "retries"]
    return sa.insert(TASKS).from_select(columns, accounts)


def _task_count(ctx: WorkerContext, run_id: int) -> int:
    with ctx.engine.connect() as conn:
        return int(conn.execute(
            sa.select(sa.func.count()).where(TASKS.c.run_id == run_id, TASKS.c.kind == "rebalance")
        ).scalar_one())


def _profiles_of(ctx: WorkerContext, run_id: int) -> list[str]:
    with ctx.engine.connect() as conn:
        return list(conn.execute(sa.select(DECISIONS.c.profile).where(DECISIONS.c.run_id == run_id)).scalars())


def _source(profile: Profile) -> str:
    history = getattr(profile.feed, "market", None)
    return history.label if history is not None else "alpaca+fred"


def _synthetic(profile: Profile) -> bool:
    history = getattr(profile.feed, "market", None)
    return bool(history is not None and history.synthetic)
