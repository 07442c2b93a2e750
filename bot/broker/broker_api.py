"""Alpaca's Broker API: many client accounts under one broker key pair, through alpaca-py's
BrokerClient.

Each client account is traded through the same `AlpacaBroker` as the single-account
daemon (submit with lookup-before-retry, fills from average prices, cancel, polling),
given an `AccountClient`: the trading calls AlpacaBroker makes, answered by the Broker
API's per-account endpoints. So the sells-first sequencing (bot.broker.sequenced), the
restart reconciliation (bot.daemon.reconcile) and the planner's deterministic client
order ids hold per account with no second implementation.

`BrokerPlatform` owns the one BrokerClient (basic auth, our timeout and retry policy, no
SDK retry) and hands out a broker per account. `prefetch_positions()` reads every
account's positions in one call (GET /v1/accounts/positions); each account's first
refresh then uses its entry instead of a call of its own. Alpaca reports those positions
as of the last close, so prefetch only before the day's first orders.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import requests
from alpaca.broker.client import BrokerClient
from alpaca.trading.models import Position
from alpaca.trading.requests import GetCalendarRequest, GetOrdersRequest, MarketOrderRequest

from bot.broker.alpaca import AlpacaBroker
from bot.broker.alpaca_orders import (
    parse_number,
    sdk_call,
    to_utc,
)
from bot.broker.base import MarketClock
from bot.net import RetryPolicy, take_over_sdk_retries
from bot.secrets import Credentials, load_broker_credentials, load_broker_endpoint

#: called before every HTTP attempt (a shared request budget, e.g. a token bucket)
Throttle = Callable[[], None]


def make_broker_client(
    credentials: Credentials,
    base_url: str,
    sandbox: bool,
    policy: RetryPolicy,
    throttle: Throttle | None = None,
) -> BrokerClient:
    """A BrokerClient whose session has our timeout/retry adapter and no SDK retry (an
    order POST must never be repeated blindly; see bot.broker.alpaca)."""
    client = BrokerClient(
        api_key=credentials.key_id,
        secret_key=credentials.secret,
        sandbox=sandbox,
        url_override=base_url,
    )
    take_over_sdk_retries(
        client, replace(policy, throttle=throttle) if throttle else policy, "Alpaca Broker API"
    )
    settle_environment(client._session, base_url)
    return client


def settle_environment(session: requests.Session, base_url: str) -> None:
    """Read the proxy and CA-bundle variables once for the one host this session talks
    to, instead of on every request: requests scans the whole environment (and stats
    ~/.netrc) per request, a tenth of a platform worker's time per account."""
    session.proxies.update(requests.utils.get_environ_proxies(base_url))
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        session.verify = bundle
    session.trust_env = False


class PositionsSnapshot:
    """Every account's positions from one bulk call, each handed out once."""

    def __init__(self, as_of: dt.datetime, positions: dict[str, list[Position]]) -> None:
        self.as_of = as_of
        self._positions = positions
        self._taken: set[str] = set()
        self._lock = threading.Lock()

    def take(self, account_id: str) -> list[Position] | None:
        """The account's positions (an empty list for one that holds nothing), or None
        once taken: later refreshes read the account's own, current positions."""
        with self._lock:
            if account_id in self._taken:
                return None
            self._taken.add(account_id)
            return list(self._positions.get(account_id, []))

    def __len__(self) -> int:
        """The accounts in it (counted without reading their positions: one client's
        malformed quantity must fail that client's task only)."""
        return len(self._positions)

    def quantities(self) -> dict[str, dict[str, float]]:
        """account id -> symbol -> quantity, for reports and checks."""
        return {
            account: {p.symbol: parse_number(p.qty, f"positions[{account}][{p.symbol}].qty")
                      for p in held}
            for account, held in self._positions.items()
        }


class AccountClient:
    """The trading calls AlpacaBroker makes (TradingClient's names), for one Broker API
    account: orders, positions and the trade account under /v1/trading/accounts/{id}."""

    def __init__(
        self, client: BrokerClient, account_id: str, snapshot: PositionsSnapshot | None = None
    ) -> None:
        self._client = client
        self.account_id = account_id
        self._snapshot = snapshot
        self._base_url = client._base_url
        self._last_account: Any = None
        self._last_positions: list[Position] | None = None
        self._reuse: set[str] = set()

    def reuse_last_read(self) -> None:
        """Answer the next account read and the next positions read (once each) with the
        last answers, if nothing was sent since: for a caller that planned on them a
        moment ago and would otherwise ask again for the same numbers (the platform's
        send phase sizes its buys on the cash its plan was made on)."""
        self._reuse = {"account", "positions"}

    def submit_order(self, order_data: MarketOrderRequest) -> Any:
        self._reuse.clear()  # the account changes: read it again
        return self._client.submit_order_for_account(self.account_id, order_data)

    def get_order_by_client_id(self, client_id: str) -> Any:
        return self._client.get_order_for_account_by_client_id(self.account_id, client_id)

    def get_order_by_id(self, order_id: str) -> Any:
        return self._client.get_order_for_account_by_id(self.account_id, order_id)

    def get_orders(self, filters: GetOrdersRequest | None = None) -> Any:
        return self._client.get_orders_for_account(self.account_id, filters)

    def cancel_order_by_id(self, order_id: str) -> None:
        self._reuse.clear()
        self._client.cancel_order_for_account_by_id(self.account_id, order_id)

    def cancel_orders(self) -> Any:
        self._reuse.clear()
        return self._client.cancel_orders_for_account(self.account_id)

    def get_account(self) -> Any:
        if "account" in self._reuse and self._last_account is not None:
            self._reuse.discard("account")
            return self._last_account
        self._last_account = self._client.get_trade_account_by_id(self.account_id)
        return self._last_account

    def get_all_positions(self) -> list[Position]:
        if "positions" in self._reuse and self._last_positions is not None:
            self._reuse.discard("positions")
            return list(self._last_positions)
        prefetched = self._snapshot.take(self.account_id) if self._snapshot is not None else None
        if prefetched is None:
            prefetched = self._client.get_all_positions_for_account(self.account_id)
        self._last_positions = list(prefetched)
        return prefetched

    def get_clock(self) -> Any:
        return self._client.get_clock()

    def get_asset(self, symbol: str) -> Any:
        return self._client.get_asset(symbol)  # /v1/assets: the broker's, no account

    def get_calendar(self, filters: GetCalendarRequest | None = None) -> Any:
        return self._client.get_calendar(filters)


class BrokerPlatform:
    """One Broker API connection; a LiveBroker per client account."""

    def __init__(self, client: BrokerClient, *, sandbox: bool = True,
                 policy: RetryPolicy | None = None) -> None:
        self.client = client
        self.sandbox = sandbox
        self.policy = policy or RetryPolicy()

    @classmethod
    def connect(
        cls,
        credentials: Credentials,
        *,
        base_url: str,
        sandbox: bool = True,
        policy: RetryPolicy | None = None,
        throttle: Throttle | None = None,
    ) -> BrokerPlatform:
        policy = policy or RetryPolicy()
        client = make_broker_client(credentials, base_url, sandbox, policy, throttle)
        return cls(client, sandbox=sandbox, policy=policy)

    @classmethod
    def from_env(
        cls,
        *,
        live: bool = False,
        policy: RetryPolicy | None = None,
        throttle: Throttle | None = None,
    ) -> BrokerPlatform:
        """Keys from APCA_BROKER_API_KEY / APCA_BROKER_API_SECRET; the sandbox unless
        live=True and BOT_LIVE_CONFIRM=yes (bot.secrets.load_broker_endpoint)."""
        url, sandbox = load_broker_endpoint(live=live)
        return cls.connect(
            load_broker_credentials(), base_url=url, sandbox=sandbox, policy=policy,
            throttle=throttle,
        )

    def __repr__(self) -> str:
        return f"BrokerPlatform(url={self.client._base_url!s}, sandbox={self.sandbox})"

    def account_broker(
        self, account_id: str, snapshot: PositionsSnapshot | None = None
    ) -> AlpacaBroker:
        """The LiveBroker of one client account (wrap it in SellsFirst to trade, as the
        daemon does). Its first refresh takes `snapshot`'s entry, if given."""
        return self.broker_for(self.account_client(account_id, snapshot))

    def account_client(
        self, account_id: str, snapshot: PositionsSnapshot | None = None
    ) -> AccountClient:
        """One account's trading calls; its first positions read takes `snapshot`'s entry
        if one is given (a batch's first plan of the account), else the account's own
        positions. Never a prefetch by default: the snapshot is as of the last close, and
        a close, a poll or a retried task after another process traded the account
        valued it on positions it no longer held."""
        return AccountClient(self.client, str(account_id), snapshot)

    def broker_for(self, view: AccountClient) -> AlpacaBroker:
        """The LiveBroker over one account's calls."""
        return AlpacaBroker(view, paper=self.sandbox, policy=self.policy)  # type: ignore[arg-type]

    def clock(self) -> MarketClock:
        """The venue's clock (no account involved)."""
        return self.account_broker("").clock()

    def require_tradable(self, symbols: tuple[str, ...], fractional: bool) -> None:
        """BotError if every account's orders of `symbols` would be refused
        (AlpacaBroker.require_tradable)."""
        self.account_broker("").require_tradable(symbols, fractional)

    def prefetch_positions(self) -> PositionsSnapshot:
        """Every account's positions in one call, used by each account's first refresh."""
        raw = sdk_call("all accounts' positions", self.client.get_all_accounts_positions)
        return PositionsSnapshot(to_utc(raw.as_of), dict(raw.positions))

