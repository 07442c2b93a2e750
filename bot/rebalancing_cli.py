"""`bot rebalancing push|subscribe|runs`: Alpaca's Rebalancing API for the client accounts.

push sends a profile's targets (the final weights a run of the engine recorded, or
weights given by hand) to the profile's portfolio; subscribe puts every active account
of each pushed profile on its portfolio (and takes closed ones off); runs records the
rebalancing runs Alpaca made into the trade log. Keys: APCA_BROKER_API_KEY and
APCA_BROKER_API_SECRET; the Broker API sandbox unless --live and BOT_LIVE_CONFIRM=yes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from typing import Any

from bot.store.locate import add_database_arguments, database_url


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "rebalancing", help="Alpaca's Rebalancing API: push profile targets, subscribe accounts, record runs"
    )
    sub = parser.add_subparsers(dest="rebalancing_command", required=True)

    push = sub.add_parser("push", help="send a profile's target weights to its portfolio")
    push.add_argument("--profile", required=True, help="the profile (conservative, balanced, ...)")
    source = push.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", type=int, help="take the latest targets this run recorded")
    source.add_argument("--weights", help="SYMBOL=WEIGHT,... as fractions (the rest is cash)")
    push.set_defaults(func=_cmd_push)

    subscribe = sub.add_parser("subscribe", help="every active account on its profile's portfolio")
    subscribe.set_defaults(func=_cmd_subscribe)

    runs = sub.add_parser("runs", help="record Alpaca's rebalancing runs in the trade log")
    runs.add_argument("--account", help="one account: registry id or broker account id")
    runs.set_defaults(func=_cmd_runs)

    for command in (push, subscribe, runs):
        add_database_arguments(command)
        command.add_argument(
            "--live", action="store_true",
            help="the live Broker API (needs BOT_LIVE_CONFIRM=yes); default: the sandbox",
        )


def _rebalancer(args: argparse.Namespace):
    from bot.broker.broker_api import BrokerPlatform
    from bot.broker.rebalancing import Rebalancer
    from bot.store.tradelog import TradeLog

    platform = BrokerPlatform.from_env(live=args.live)  # keys and URL checked before the database
    log = TradeLog.open(database_url(args.config, args.database))
    return log, Rebalancer(platform.client, log.engine)


def parse_weights(text: str) -> dict[str, float]:
    """SYMBOL=WEIGHT,...; a bad item is a BotError naming it."""
    from bot.errors import BotError

    weights: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        symbol, sep, value = item.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = -1.0
        if not sep or not symbol.strip() or not 0.0 <= weight <= 1.0:
            raise BotError(f"--weights: expected SYMBOL=WEIGHT with a weight in 0..1, got {item!r}")
        symbol = symbol.strip().upper()
        if symbol == "CASH":
            raise BotError(f"--weights: {item!r}: CASH is not a symbol; the cash weight is what "
                           "the other weights leave (e.g. SPY=0.5,AGG=0.3 keeps 20% in cash)")
        if symbol in weights:  # which one was meant? not the last one silently
            raise BotError(f"--weights: {symbol} is given twice")
        weights[symbol] = weight
    if not weights:
        raise BotError("--weights: expected SYMBOL=WEIGHT,... (e.g. SPY=0.6,AGG=0.4)")
    return weights


def _run_targets(log, run_id: int, profile: str) -> tuple[dict[str, float], dt.date]:
    """The targets `profile` decided in run `run_id`, never another profile's: a platform
    batch records every profile's targets under one run and day, so its own decision is
    taken; a single-profile run must have traded the profile (BotError if not)."""
    import sqlalchemy as sa

    from bot.errors import BotError
    from bot.platform.store import PLATFORM_STRATEGY, load_decisions
    from bot.store import queries

    runs = queries.RUNS
    with log.engine.connect() as conn:
        queries.require_run(conn, run_id)
        run = conn.execute(sa.select(runs.c.strategy, runs.c.config, runs.c.synthetic)
                           .where(runs.c.id == run_id)).one()
    if run.synthetic:  # its weights were decided on made-up prices: never a client's portfolio
        raise BotError(f"--run {run_id} traded a SYNTHETIC market: its targets are no decision "
                       "on real prices; push those of a run on real data")
    decisions = load_decisions(log.engine, run_id)
    if decisions or run.strategy == PLATFORM_STRATEGY:
        found = decisions.get(profile)
        if found is None:
            decided = ", ".join(sorted(decisions)) or "none"
            raise BotError(f"--run {run_id}: the platform batch has no decision for profile "
                           f"{profile} (it decided: {decided})")
        return found.weights, found.day
    _require_run_profile(run_id, run.config, profile)
    with log.engine.connect() as conn:
        targets = queries.latest_targets(conn, run_id).frame()
    if targets.empty:
        raise BotError(f"run {run_id} recorded no targets yet: nothing to push")
    weights = {r.symbol: float(r.final) for r in targets.itertuples()}
    return weights, targets["day"].iloc[0]


def _run_profile(config: Any) -> str | None:
    """The factor profile a single-profile run traded (its config's factor.profile), or
    None for a run of another strategy kind."""
    if not isinstance(config, dict):
        return None
    strategy, factor = config.get("strategy") or {}, config.get("factor") or {}
    if not isinstance(strategy, dict) or strategy.get("kind") != "factor" or not isinstance(factor, dict):
        return None
    return factor.get("profile")


def _profile_factor(profile: str) -> str | None:
    """The factor profile `profile` trades: a named profile is itself; a config file's is
    its factor.profile (None if it is not a factor model)."""
    from bot.accounts import PROFILES, profile_config
    from bot.config import load_settings

    if profile in PROFILES:
        return profile
    settings = load_settings(profile_config(profile))  # validated by check_profile
    return settings.factor.profile if settings.strategy.kind == "factor" else None


def _require_run_profile(run_id: int, config: Any, profile: str) -> None:
    """A single-profile run's targets go only to the profile the run traded."""
    from bot.errors import BotError

    traded, wanted = _run_profile(config), _profile_factor(profile)
    if traded is None:
        raise BotError(f"--run {run_id}: the run traded no factor profile (not a robo run); "
                       f"expected a run of profile {profile}")
    if wanted is None or traded != wanted:
        raise BotError(f"--run {run_id}: the run traded profile {traded}, not {profile}; "
                       f"push it with --profile {traded}, or give a run of {profile}")


def _cmd_push(args: argparse.Namespace) -> int:
    from bot.accounts.registry import check_profile
    from bot.errors import BotError

    try:
        profile = check_profile(args.profile)
    except ValueError as exc:
        raise BotError(f"--profile: {exc}") from None
    weights = parse_weights(args.weights) if args.weights else None
    log, rebalancer = _rebalancer(args)
    try:
        decided_on = None
        if weights is None:
            weights, decided_on = _run_targets(log, args.run, profile)
        try:
            result = rebalancer.push_targets(profile, weights, decided_on, dt.datetime.now(dt.UTC))
        except ValueError as exc:
            raise BotError(f"targets of {profile}: {exc}") from None
    finally:
        log.engine.dispose()
    source = "" if decided_on is None else f" with the targets of run {args.run} decided on {decided_on}"
    print(f"{profile}: portfolio {result.portfolio_id} {result.action}{source}")
    return 0


def _cmd_subscribe(args: argparse.Namespace) -> int:
    """Exit 1 when any account failed (the others are synced): a cron job must notice."""
    log, rebalancer = _rebalancer(args)
    try:
        result = rebalancer.sync_subscriptions(dt.datetime.now(dt.UTC))
    finally:
        log.engine.dispose()
    print(f"subscriptions: {result.subscribed} subscribed, {result.unsubscribed} unsubscribed, "
          f"{result.unchanged} unchanged, {len(result.failed)} failed")
    if result.without_portfolio:
        print(f"not subscribed (no portfolio pushed yet): {', '.join(result.without_portfolio)}")
    for failure in result.failed:
        print(f"failed: {failure}", file=sys.stderr)
    return 1 if result.failed else 0


def _cmd_runs(args: argparse.Namespace) -> int:
    log, rebalancer = _rebalancer(args)
    try:
        account = rebalancer.registry.get(args.account) if args.account else None
        result = rebalancer.record_runs(dt.datetime.now(dt.UTC), account)
    finally:
        log.engine.dispose()
    print(f"rebalancing runs: {result.new} new, {result.updated} updated, {result.unchanged} unchanged")
    return 0
