"""The weekly decision of a platform batch: each profile's targets decided once, recorded
once, and one task row per active account.

A batch is a run in the trade log (strategy "platform", the profiles' configs in its
config) holding the profiles' targets (`targets`, with every signal, score and the LP's
reason), one `platform_decisions` row per profile and one `platform_tasks` row per
account, all committed together with the `platform_batches` row that makes it the batch of its
(day, mode). Deciding a day that already has a batch returns that batch: a decision task
delivered twice decides once, and of two deliveries deciding at the same time only the
first to commit makes the batch (the other's run is closed as superseded).

A profile that cannot be decided (its config file gone, no data for the day) fails
alone: its active accounts get rebalance tasks that are dead from the start, with the
error, and an incident of kind `profile_failed` names the profile; the other profiles'
accounts trade. Only if no profile is decided does the decision fail as a whole.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import sqlalchemy as sa
import structlog

from bot.daemon.feeds import index_of_day
from bot.daemon.live import instance_name
from bot.engine import Engine
from bot.engine_state import EngineState
from bot.errors import BotError
from bot.logs import mask_text
from bot.platform.context import Profile, WorkerContext
from bot.platform.profile_targets import stored_stops, stored_weights
from bot.platform.store import (
    ACCOUNTS,
    DECISIONS,
    INCIDENTS,
    PLATFORM_STRATEGY,
    PROFILE_FAILED,
    TASKS,
    StoredDecision,
    batch_of_day,
    claim_day,
    decision_rows,
    failed_profiles,
)
from bot.platform.tasks import is_transient
from bot.runner import code_version
from bot.store.tradelog import ClaimTaken, TradeLog

log = structlog.get_logger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Batch:
    run_id: int
    day: dt.date
    decisions: dict[str, StoredDecision]
    accounts: int
    created: bool  # False: the day's batch existed already
    failed: dict[str, str] = field(default_factory=dict)  # profiles not decided -> error
    dead: int = 0  # accounts of those profiles, dead-lettered with the batch


class NoAccount:
    """The broker of a profile's decision engine: the decision trades no account."""

    def _refuse(self, *_args: Any) -> Any:
        raise BotError("a profile's weekly decision holds no account and sends no order")

    cash = holdings = open_order_count = submit = _refuse


def decide_batch(ctx: WorkerContext, day: dt.date) -> Batch:
    """The batch deciding on `day`'s close: created with each profile's targets if it
    does not exist yet, else the existing one. A profile that cannot be decided (its
    config gone, its data missing) fails alone: its accounts are dead-lettered with the
    error and the other profiles' accounts trade."""
    existing = batch_of_day(ctx.engine, day, ctx.mode)
    if existing is not None:
        return _existing(ctx, existing, day)
    now = ctx.clock.now()  # the batch's start: its data, its LPs, its task rows
    grouped = ctx.registry.active_by_profile()
    if not grouped:
        raise BotError("no active account in the registry: nothing to decide "
                       "(add some with `bot accounts add` or `bot accounts import`)")
    failed: dict[str, str] = {}
    profiles: dict[str, Profile] = {}
    for name in sorted(grouped):
        loaded = _isolated(failed, name, lambda n=name: ctx.profile(n))
        if loaded is not None:
            profiles[name] = loaded
    if not profiles:
        raise _none_decided(day, failed)
    tradelog = TradeLog(ctx.engine)
    run_id = _start_run(tradelog, ctx, profiles, day, now)
    try:
        decisions = _decide_profiles(ctx, tradelog, run_id, profiles, failed, day, now)
        hashes = {name: profiles[name].settings.fingerprint() for name in decisions}
        decided_at = ctx.clock.now()
        tradelog.flush(
            sa.insert(DECISIONS).values(decision_rows(run_id, decisions.values(), hashes, decided_at)),
            _task_rows(run_id, day, list(decisions)),
            *_failed_rows(run_id, day, failed, decided_at),
            claim=claim_day(ctx.engine, run_id, day, ctx.mode, decided_at),
        )
    except ClaimTaken:
        # Another delivery of this decision committed the day's batch first: that one is
        # the batch, this run is closed as superseded and its records dropped.
        winner = batch_of_day(ctx.engine, day, ctx.mode)
        _end_run(ctx, run_id, {"superseded_by": winner})
        log.warning("batch decided twice: the first one stands", run=winner, dropped=run_id,
                    day=str(day))
        return _existing(ctx, winner, day)
    except BaseException as exc:
        # No batch was committed: this run must not stay 'running' with none (a retry
        # starts a run of its own; a worker killed outright leaves it to the poll round).
        _end_quietly(ctx, run_id, day, exc, failed)
        raise
    count, dead = _task_count(ctx, run_id)
    log.info("batch decided", run=run_id, day=str(day), profiles=len(decisions), accounts=count,
             failed_profiles=failed or None,
             seconds=round((ctx.clock.now() - now).total_seconds(), 3))
    return Batch(run_id, day, decisions, count, created=True, failed=failed, dead=dead)


def _decide_profiles(ctx: WorkerContext, tradelog: TradeLog, run_id: int,
                     profiles: dict[str, Profile], failed: dict[str, str], day: dt.date,
                     now: dt.datetime) -> dict[str, StoredDecision]:
    """Each profile's targets under run `run_id`; a profile that fails is kept in
    `failed`. BotError if none could be decided."""
    decisions: dict[str, StoredDecision] = {}
    for name, profile in profiles.items():
        def decide(p: Profile = profile) -> StoredDecision:
            with tradelog.dropped_on_error():  # a profile failing half-way records nothing
                return _decide_profile(ctx, tradelog, run_id, p, day, now)

        decided = _isolated(failed, name, decide)
        if decided is not None:
            decisions[name] = decided
    if not decisions:
        raise _none_decided(day, failed)
    return decisions


def _existing(ctx: WorkerContext, run_id: int | None, day: dt.date) -> Batch:
    if run_id is None:  # a claim is only ever lost to a committed batch
        raise BotError(f"the batch of {day} was claimed but is not in the trade log")
    decisions = {n: ctx.decision(run_id, n) for n in _profiles_of(ctx, run_id)}
    count, dead = _task_count(ctx, run_id)
    return Batch(run_id, day, decisions, count, created=False,
                 failed=failed_profiles(ctx.engine, run_id), dead=dead)


def _isolated(failed: dict[str, str], name: str, step: Callable[[], T]) -> T | None:
    """`step` for profile `name`; its error is kept in `failed` instead of raised, unless
    a retry of the whole decision may fix it (a timeout, a lost connection)."""
    try:
        return step()
    except Exception as exc:  # noqa: BLE001 - one profile's failure is its accounts' alone
        if is_transient(exc):
            raise
        failed[name] = mask_text(f"{type(exc).__name__}: {exc}")[:1000]
        log.error("profile not decided", profile=name, error=failed[name])
        return None


def _none_decided(day: dt.date, failed: dict[str, str]) -> BotError:
    reasons = "; ".join(f"profile {n}: {e}" for n, e in failed.items())
    return BotError(f"no profile could be decided for {day}: {reasons}")


def _end_quietly(ctx: WorkerContext, run_id: int, day: dt.date, exc: BaseException,
                 failed: dict[str, str]) -> None:
    """Close a decide's run as failed with its error, if the database lets us, unless it
    is the day's batch after all (the connection dropped while its COMMIT succeeded)."""
    summary: dict[str, Any] = {"error": mask_text(f"{type(exc).__name__}: {exc}")[:1000]}
    if failed:
        summary["failed_profiles"] = failed
    try:
        if batch_of_day(ctx.engine, day, ctx.mode) == run_id:
            return
        _end_run(ctx, run_id, summary)
    except Exception as closing:  # noqa: BLE001 - the decide's own error is the one to raise
        log.warning("decide run not closed", run=run_id, error=mask_text(str(closing)))


def _end_run(ctx: WorkerContext, run_id: int, summary: dict[str, Any]) -> None:
    """Close a run that did not become a batch (failed), without its buffered records."""
    closer = ctx.tradelog(run_id)
    closer.finish_run("failed", ctx.clock.now(), summary)


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
            "profiles": {n: p.settings.stored_dict() for n, p in profiles.items()},  # no password
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
    # every order of a fund Alpaca cannot trade as configured would fail, in every account
    ctx.broker_platform().require_tradable(settings.symbols, settings.rebalance.fractional)
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


def _failed_rows(run_id: int, day: dt.date, failed: dict[str, str], now: dt.datetime
                 ) -> list[sa.Executable]:
    """For each profile not decided: its active accounts' rebalance tasks, dead from the
    start with the error, and one incident naming the profile and the error."""
    out: list[sa.Executable] = []
    for name, error in failed.items():
        text = f"profile {name} was not decided for {day}: {error}"
        accounts = sa.select(
            sa.literal(run_id, sa.BigInteger), ACCOUNTS.c.id, sa.literal("rebalance"),
            sa.literal(day, sa.Date), sa.literal("dead"), sa.literal(0), sa.literal(0),
            sa.literal(now, TASKS.c.finished_at.type), sa.literal(text, sa.Text),
        ).where(ACCOUNTS.c.status == "active", ACCOUNTS.c.profile == name)
        columns = ["run_id", "account_id", "kind", "day", "status", "attempts", "retries",
                   "finished_at", "error"]
        out.append(sa.insert(TASKS).from_select(columns, accounts))
        out.append(sa.insert(INCIDENTS).values(
            run_id=run_id, at=now, kind=PROFILE_FAILED,
            message=f"{text}; its accounts are dead-lettered in batch {run_id}",
            context={"profile": name, "day": day.isoformat(), "error": error},
        ))
    return out


def _task_count(ctx: WorkerContext, run_id: int) -> tuple[int, int]:
    """The batch's rebalance tasks, and how many of them were dead from the start (their
    profile was not decided)."""
    never_run = sa.and_(TASKS.c.status == "dead", TASKS.c.attempts == 0)
    with ctx.engine.connect() as conn:
        row = conn.execute(
            sa.select(sa.func.count(), sa.func.count().filter(never_run))
            .where(TASKS.c.run_id == run_id, TASKS.c.kind == "rebalance")
        ).one()
    return int(row[0]), int(row[1])


def _profiles_of(ctx: WorkerContext, run_id: int) -> list[str]:
    with ctx.engine.connect() as conn:
        return list(conn.execute(sa.select(DECISIONS.c.profile).where(DECISIONS.c.run_id == run_id)).scalars())


def _source(profile: Profile) -> str:
    history = getattr(profile.feed, "market", None)
    return history.label if history is not None else "alpaca+fred"


def _synthetic(profile: Profile) -> bool:
    history = getattr(profile.feed, "market", None)
    return bool(history is not None and history.synthetic)
