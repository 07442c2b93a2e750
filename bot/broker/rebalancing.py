"""Alpaca's own rebalancer, the alternative to sending each client's orders ourselves.

Each profile's weekly targets (the weights our engine decided, unchanged) are pushed to a
Rebalancing API portfolio named after the profile; every active account of the profile
is subscribed to it, and Alpaca trades the accounts to those weights. The runs Alpaca
makes are read back into the trade log (`rebalancing_runs`), so the audit trail stays in
one place. Every call is idempotent: pushing the same weights again changes nothing,
subscribing is done once per account, a run is recorded once and updated as it moves.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from typing import Any

import sqlalchemy as sa
import structlog
from alpaca.broker.client import BrokerClient
from alpaca.broker.enums import WeightType
from alpaca.broker.models.rebalancing import RebalancingRun, Subscription
from alpaca.broker.requests import (
    CreatePortfolioRequest,
    CreateSubscriptionRequest,
    GetPortfoliosRequest,
    GetRunsRequest,
    UpdatePortfolioRequest,
    Weight,
)
from alpaca.common.exceptions import APIError

from bot.accounts.registry import Account, AccountRegistry
from bot.broker.alpaca_orders import (
    api_error_parts,
    sdk_call,
    to_utc,
)
from bot.broker.base import BrokerError
from bot.store.lookup import rows_where_in
from bot.store.models import METADATA

log = structlog.get_logger(__name__)

PORTFOLIOS = METADATA.tables["rebalancing_portfolios"]
RUNS = METADATA.tables["rebalancing_runs"]
ACCOUNTS = METADATA.tables["accounts"]
CASH = "CASH"
PERCENT = Decimal("0.01")  # the Rebalancing API keeps two decimals of a percent
_CHANGING = ("status", "reason", "orders", "updated_at", "completed_at", "canceled_at")


def portfolio_name(profile: str) -> str:
    """The portfolio of a profile at Alpaca (names are unique there)."""
    return f"leverbot-{profile}"


def to_percentages(targets: Mapping[str, float]) -> dict[str, Decimal]:
    """Target weights (fractions of equity) as the API's percentages: each asset rounded
    down to 0.01%, so the assets never ask for more than the targets, and the rest as
    CASH, so they add up to exactly 100. Assets below 0.01% are left out (cash)."""
    out: dict[str, Decimal] = {}
    if CASH in targets:  # its weight would overwrite the computed cash line (the API: 422)
        raise ValueError(f"{CASH} is not an asset: the cash weight is what the asset weights leave")
    for symbol, weight in sorted(targets.items()):
        if not 0.0 <= float(weight) <= 1.0 + 1e-9:
            raise ValueError(f"target weight of {symbol} is {weight!r}: expected 0..1")
        percent = (Decimal(repr(float(weight))) * 100).quantize(PERCENT, rounding=ROUND_DOWN)
        if percent > 0:
            out[symbol] = min(percent, Decimal(100))
    invested = sum(out.values(), Decimal(0))
    if invested > 100:
        raise ValueError(f"target weights add up to {invested}% (> 100%)")
    if invested < 100:
        out[CASH] = Decimal(100) - invested
    return out


def _weights(percentages: Mapping[str, Decimal]) -> list[Weight]:
    return [
        Weight(type=WeightType.CASH, percent=float(p))
        if symbol == CASH
        else Weight(type=WeightType.ASSET, symbol=symbol, percent=float(p))
        for symbol, p in percentages.items()
    ]


def _read_weights(weights: list[Any]) -> dict[str, Decimal]:
    return {
        (CASH if w.type == WeightType.CASH else w.symbol): Decimal(repr(float(w.percent))).quantize(PERCENT)
        for w in weights
    }


@dataclass(frozen=True)
class PortfolioPush:
    profile: str
    portfolio_id: str
    action: str  # created | updated | unchanged | adopted


@dataclass(frozen=True)
class SubscriptionSync:
    subscribed: int
    unsubscribed: int
    unchanged: int
    without_portfolio: list[str]  # profiles with active accounts but no pushed portfolio
    failed: list[str]  # "account ID: error", one per account the broker refused


@dataclass(frozen=True)
class RunsRecorded:
    new: int
    updated: int
    unchanged: int


class Rebalancer:
    """Profiles' portfolios, accounts' subscriptions and Alpaca's runs, kept in the trade log."""

    def __init__(self, client: BrokerClient, engine: sa.Engine) -> None:
        self.client = client
        self.engine = engine
        self.registry = AccountRegistry(engine)

    # -- portfolios ---------------------------------------------------------------------

    def push_targets(
        self,
        profile: str,
        targets: Mapping[str, float],
        decided_on: dt.date | None,
        now: dt.datetime,
    ) -> PortfolioPush:
        """Make the profile's portfolio hold `targets` (symbol -> weight): created the first
        time (or adopted by name if an earlier push was not recorded), updated when the
        weights changed, left alone otherwise."""
        percentages = to_percentages(targets)
        known = self._portfolio_row(profile)
        at_alpaca = None if known is None else self._portfolio_at_alpaca(known.portfolio_id)
        if known is not None and at_alpaca is None:
            log.warning("rebalancing portfolio gone at Alpaca: adopted by name or created again",
                        profile=profile, portfolio=known.portfolio_id)
        action = "unchanged"
        if at_alpaca is None:
            found = sdk_call(
                f"portfolio {portfolio_name(profile)}", self.client.get_all_portfolios,
                GetPortfoliosRequest(name=portfolio_name(profile)),
            )
            if found:
                portfolio_id, current, action = str(found[0].id), _read_weights(found[0].weights), "adopted"
            else:
                created = sdk_call(
                    f"create portfolio {portfolio_name(profile)}", self.client.create_portfolio,
                    CreatePortfolioRequest(
                        name=portfolio_name(profile),
                        description=f"leverbot {profile} profile: the engine's weekly targets",
                        weights=_weights(percentages),
                        cooldown_days=0,
                    ),
                )
                portfolio_id, current, action = str(created.id), percentages, "created"
        else:  # Alpaca's weights, not our record: someone may have edited them there
            portfolio_id, current = str(at_alpaca.id), _read_weights(at_alpaca.weights)
        if current != percentages:
            sdk_call(
                f"update portfolio {portfolio_id}", self.client.update_portfolio_by_id,
                portfolio_id, UpdatePortfolioRequest(weights=_weights(percentages)),
            )
            action = "updated" if action == "unchanged" else action
        row = {"profile": profile, "portfolio_id": portfolio_id,
               "weights": {k: str(v) for k, v in percentages.items()},
               "decided_on": decided_on, "updated_at": now}
        with self.engine.begin() as conn:
            if known is None:
                conn.execute(sa.insert(PORTFOLIOS), [row])
            elif action != "unchanged" or portfolio_id != known.portfolio_id:
                conn.execute(sa.update(PORTFOLIOS).where(PORTFOLIOS.c.profile == profile).values(row))
        log.info("rebalancing portfolio", profile=profile, portfolio=portfolio_id, action=action)
        return PortfolioPush(profile, portfolio_id, action)

    def _portfolio_at_alpaca(self, portfolio_id: str) -> Any | None:
        """The portfolio as Alpaca has it now, or None if Alpaca has no such portfolio
        (deleted there): the trade log's row is what was pushed, not what is there."""
        try:
            return sdk_call(f"portfolio {portfolio_id}", self.client.get_portfolio_by_id, portfolio_id)
        except BrokerError as exc:
            refused = exc.__cause__
            if isinstance(refused, APIError) and api_error_parts(refused)[0] == 404:
                return None
            raise

    def _portfolio_row(self, profile: str) -> sa.Row[Any] | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(PORTFOLIOS).where(PORTFOLIOS.c.profile == profile)).first()

    def portfolios(self) -> dict[str, str]:
        """profile -> portfolio id, as pushed."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(PORTFOLIOS.c.profile, PORTFOLIOS.c.portfolio_id))
            return {r.profile: r.portfolio_id for r in rows}

    # -- subscriptions ------------------------------------------------------------------

    def sync_subscriptions(self, now: dt.datetime) -> SubscriptionSync:
        """Every active account subscribed to its profile's portfolio, and nothing else:
        an account that left (closed, suspended) or changed profile is unsubscribed
        first. Alpaca's list of subscriptions is the truth; the registry remembers ids.
        One account the broker refuses (unknown, closed there) is listed in `failed` and
        the others still go through: it must not hold back every account after it."""
        portfolios = self.portfolios()
        at_alpaca = {str(s.account_id): s for s in self._all_subscriptions()}
        counts = {"subscribed": 0, "unsubscribed": 0, "unchanged": 0}
        missing: set[str] = set()
        failed: list[str] = []
        for account in self.registry.list():
            wanted = portfolios.get(account.profile) if account.active else None
            if account.active and wanted is None:
                missing.add(account.profile)
            try:
                self._sync_account(account, at_alpaca.get(account.broker_account_id), wanted, now, counts)
            except BrokerError as exc:
                log.error("subscription not synced", account=account.broker_account_id, error=str(exc))
                failed.append(f"account {account.id}: {exc}")  # the error names the broker id
        return SubscriptionSync(counts["subscribed"], counts["unsubscribed"], counts["unchanged"],
                                sorted(missing), failed)

    def _sync_account(self, account: Account, existing: Subscription | None, wanted: str | None,
                      now: dt.datetime, counts: dict[str, int]) -> None:
        """One account onto `wanted` (None: on no portfolio), counting what was done."""
        if existing is not None and str(existing.portfolio_id) == wanted:
            counts["unchanged"] += 1
            if account.subscription_id != str(existing.id):
                self.registry.set_subscription(account.id, str(existing.id), now)
            return
        if existing is not None:
            sdk_call(f"unsubscribe {account.broker_account_id}",
                     self.client.unsubscribe_account, existing.id)
            self.registry.set_subscription(account.id, None, now)
            counts["unsubscribed"] += 1
        if wanted is not None:
            self._subscribe(account, wanted, now)
            counts["subscribed"] += 1

    def _subscribe(self, account: Account, portfolio_id: str, now: dt.datetime) -> None:
        request = CreateSubscriptionRequest(
            account_id=account.broker_account_id, portfolio_id=portfolio_id
        )
        created = sdk_call(
            f"subscribe {account.broker_account_id}", self.client.create_subscription, request
        )
        self.registry.set_subscription(account.id, str(created.id), now)

    def _all_subscriptions(self) -> list[Subscription]:
        return list(sdk_call("subscriptions", self.client.get_all_subscriptions))

    # -- runs ---------------------------------------------------------------------------

    def record_runs(self, now: dt.datetime, account: Account | None = None) -> RunsRecorded:
        """Alpaca's rebalancing runs (of one account, or all) into `rebalancing_runs`:
        new ones inserted, changed ones (status, orders, times) updated."""
        request = GetRunsRequest(account_id=account.broker_account_id) if account else None
        runs: list[RebalancingRun] = list(sdk_call("rebalancing runs", self.client.get_all_runs, request))
        with self.engine.begin() as conn:
            ids = dict(conn.execute(sa.select(ACCOUNTS.c.broker_account_id, ACCOUNTS.c.id)).all())
            known = _known_runs(conn, [str(r.id) for r in runs])
            new, updated, unchanged = [], 0, 0
            for run in runs:
                row = _run_row(run, ids, now)
                old = known.get(row["alpaca_run_id"])
                if old is None:
                    new.append(row)
                    continue
                changes = {k: row[k] for k in _CHANGING if getattr(old, k) != row[k]}
                if not changes:
                    unchanged += 1
                    continue
                changes["recorded_at"] = now
                conn.execute(sa.update(RUNS).where(RUNS.c.id == old.id).values(changes))
                updated += 1
            if new:
                conn.execute(sa.insert(RUNS), new)
        return RunsRecorded(len(new), updated, unchanged)

    # -- helpers ------------------------------------------------------------------------



def _known_runs(conn: sa.Connection, run_ids: list[str]) -> dict[str, sa.Row[Any]]:
    column = RUNS.c.alpaca_run_id
    return {r.alpaca_run_id: r for r in rows_where_in(conn, sa.select(RUNS), column, run_ids)}


def _run_row(run: RebalancingRun, account_ids: dict[str, int], now: dt.datetime) -> dict[str, Any]:
    broker_id = str(run.account_id)

    def orders(items: list[Any] | None) -> list[dict[str, Any]]:
        return [
            {"id": str(o.id), "client_order_id": o.client_order_id, "symbol": o.symbol,
             "side": getattr(o.side, "value", o.side), "qty": o.qty, "notional": o.notional,
             "status": getattr(o.status, "value", o.status), "filled_qty": o.filled_qty,
             "filled_avg_price": o.filled_avg_price}
            for o in items or []
        ]

    return {
        "alpaca_run_id": str(run.id),
        "account_id": account_ids.get(broker_id),
        "broker_account_id": broker_id,
        "portfolio_id": str(run.portfolio_id) if run.portfolio_id else None,
        "type": getattr(run.type, "value", str(run.type)),
        "status": getattr(run.status, "value", str(run.status)),
        "initiated_from": getattr(run.initiated_from, "value", run.initiated_from),
        "reason": run.reason,
        "weights": [
            {"type": getattr(w.type, "value", w.type), "symbol": w.symbol, "percent": w.percent}
            for w in run.weights
        ],
        "orders": {
            "placed": orders(run.orders),
            "failed": orders(run.failed_orders),
            "skipped": [s.model_dump() for s in run.skipped_orders or []],
        },
        "created_at": to_utc(run.created_at),
        "updated_at": to_utc(run.updated_at),
        "completed_at": to_utc(run.completed_at) if run.completed_at else None,
        "canceled_at": to_utc(run.canceled_at) if run.canceled_at else None,
        "recorded_at": now,
    }
