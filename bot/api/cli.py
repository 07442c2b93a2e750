"""`bot serve` (the allocation API on uvicorn) and `bot api-keys create|list|revoke`.

`bot serve` listens on 127.0.0.1 unless told otherwise. Another address needs
--allow-remote as well: the API answers with client portfolios and its keys travel in a
header, so it belongs behind a TLS-terminating reverse proxy, and binding beyond the
loopback by accident is refused rather than warned about.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import sys

from bot.arguments import directory, interval_seconds, port_number, whole_number
from bot.store.locate import add_database_arguments, database_url


def register(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser(
        "serve", help="the allocation API (FastAPI on uvicorn; docs at /docs)",
        description="Serve the robo profiles' allocations, order plans and suitability, and "
                    "client accounts, over HTTP with API keys (`bot api-keys create`).",
    )
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1; others need --allow-remote)")
    serve.add_argument("--port", type=port_number, default=8000, help="port (default 8000)")
    serve.add_argument("--allow-remote", action="store_true",
                       help="allow a --host beyond the loopback (put a TLS proxy in front)")
    serve.add_argument("--forwarded-allow-ips", metavar="IPS", default=None,
                       help="the proxy addresses whose X-Forwarded-For names the client "
                            "(comma-separated; default 127.0.0.1): failed key checks are "
                            "limited per client address, not per proxy")
    serve.add_argument("--profile", action="append", default=[], metavar="NAME=CONFIG",
                       help="a profile to serve (repeatable; default: conservative, balanced, "
                            "aggressive from config/robo_*.toml)")
    source = serve.add_mutually_exclusive_group()  # both given, one was silently dropped
    source.add_argument("--data-dir", type=directory, help="CSV directory for every profile (default: each "
                                           "config's data.directory, or BOT_DATA_DIR)")
    source.add_argument("--synthetic", action="store_true", help="serve on the seeded synthetic market")
    serve.add_argument("--reload-every", type=interval_seconds, default=60.0, metavar="SECONDS",
                       help="check the data files this often and serve the new closes once "
                            "a fetch has written them (default 60; 0: load once)")
    serve.add_argument("--rate-limit", type=_rate, default=None, metavar="N",
                       help="requests a minute per key without a budget of its own (default 60)")
    serve.add_argument("--redis", metavar="URL", default=None,
                       help="keep the keys' request budgets in this Redis, shared by every "
                            "server (default BOT_REDIS_URL if set, else this process's memory)")
    add_database_arguments(serve)
    serve.set_defaults(func=_cmd_serve)

    keys = subparsers.add_parser("api-keys", help="API keys of `bot serve`: create, list, revoke")
    sub = keys.add_subparsers(dest="api_keys_command", required=True)
    create = sub.add_parser("create", help="make a key (printed once; only its hash is stored)")
    create.add_argument("name", help="who or what uses the key, e.g. 'web platform'")
    create.add_argument("--rate-limit", type=_rate, metavar="N",
                        help="requests a minute for this key (default: the server's --rate-limit)")
    scope = create.add_mutually_exclusive_group(required=True)
    scope.add_argument("--account", action="append", metavar="ID",
                       help="the only client account the key may read, by registry id or "
                            "broker account id (repeatable): for a client's own app")
    scope.add_argument("--all-accounts", action="store_true",
                       help="the key reads every client account: only for the advisory "
                            "platform's own back end")
    create.set_defaults(func=_cmd_create)
    listing = sub.add_parser("list", help="the keys (public ids only), created and revoked dates")
    listing.add_argument("--format", choices=["table", "csv", "json"], default="table",
                         help="output format (default table)")
    listing.set_defaults(func=_cmd_list)
    revoke = sub.add_parser("revoke", help="revoke a key for good (takes effect at once)")
    revoke.add_argument("key", help="its id or key id (as `bot api-keys list` shows them)")
    revoke.set_defaults(func=_cmd_revoke)
    for command in (create, listing, revoke):
        add_database_arguments(command)


def _rate(text: str) -> int:
    from bot.api.keys import MAX_RATE

    return whole_number(text, 1, MAX_RATE, f"requests per minute, a whole number from 1 to {MAX_RATE}")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _cmd_serve(args: argparse.Namespace) -> int:
    import threading
    from pathlib import Path

    import structlog
    import uvicorn

    from bot.api.app import DEFAULT_RATE_PER_MINUTE, Limits, create_app
    from bot.api.keys import ApiKeyStore
    from bot.api.profiles import ProfileBook, default_specs, parse_spec
    from bot.errors import BotError
    from bot.secrets import setting
    from bot.store.engines import mask_url, sqlite_file
    from bot.store.tradelog import TradeLog

    if not is_loopback(args.host) and not args.allow_remote:
        raise BotError(
            f"--host {args.host}: not a loopback address; the API serves client data, so "
            "listening beyond this machine needs --allow-remote (and a TLS proxy in front)"
        )
    url = database_url(args.config, args.database)
    path = sqlite_file(url)
    if path is not None and not path.is_file():
        raise BotError(f"no trade log at {path}: create an API key first "
                       "(`bot api-keys create NAME`), which creates it")
    specs = [parse_spec(s) for s in args.profile] or default_specs()
    book = ProfileBook.load(specs, Path(args.data_dir) if args.data_dir else None, args.synthetic)
    fake = [name for name, profile in book.profiles.items() if profile.market.synthetic]
    if fake and args.allow_remote and not args.synthetic:
        raise BotError(
            f"profile {fake[0]}: no price data (BOT_DATA_DIR, or its config's data.directory), "
            "so it would serve clients beyond this machine a SYNTHETIC market; download the "
            "data with `bot data fetch --config CONFIG`, or pass --synthetic to serve it on purpose"
        )
    tradelog = TradeLog.open_readonly(url)
    log = structlog.get_logger("bot.api")
    stopped = threading.Event()
    try:
        if ApiKeyStore(tradelog.engine).active_count() == 0:
            log.warning("api.no_keys", hint="no active API key: every request will be refused; "
                                            "create one with `bot api-keys create NAME`")
        app = create_app(book, tradelog.engine, Limits(args.rate_limit or DEFAULT_RATE_PER_MINUTE),
                         buckets=_buckets(args.redis or setting("BOT_REDIS_URL")))
        book.watch(args.reload_every, stopped)
        print(f"allocation API on http://{args.host}:{args.port}/ (docs at /docs), "
              f"profiles {', '.join(book.profiles)}, trade log {mask_url(url)} (Ctrl-C stops)",
              flush=True)
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning",
                    access_log=False, server_header=False, log_config=None,
                    proxy_headers=True, forwarded_allow_ips=args.forwarded_allow_ips)
    finally:
        stopped.set()
        tradelog.engine.dispose()
    return 0


def _buckets(redis_url: str | None):
    """The request budgets' maker for create_app: in Redis when a URL is given (checked
    now, so a wrong one fails the start and not every request), else in memory."""
    from bot.api.ratelimit import RedisTokenBuckets, TokenBuckets

    if not redis_url:
        return lambda _purpose: TokenBuckets()
    import redis

    from bot.errors import BotError
    from bot.store.engines import mask_url

    try:
        client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
        client.ping()
    except (redis.RedisError, ValueError) as exc:
        raise BotError(f"--redis {mask_url(redis_url)}: cannot reach Redis ({exc})") from None
    return lambda purpose: RedisTokenBuckets(client, f"leverbot:api:{purpose}")


def _store(args: argparse.Namespace, *, write: bool):
    from bot.api.keys import ApiKeyStore
    from bot.store.tradelog import TradeLog

    url = database_url(args.config, args.database)
    log = TradeLog.open(url) if write else TradeLog.open_readonly(url)
    return log, ApiKeyStore(log.engine)


def _cmd_create(args: argparse.Namespace) -> int:
    from bot.accounts.registry import AccountRegistry
    from bot.api.keys import check_name

    name = check_name(args.name)  # before the database is touched
    log, store = _store(args, write=True)
    try:
        accounts = None
        if args.account:
            registry = AccountRegistry(log.engine)
            accounts = [registry.get(ref.strip()).id for ref in args.account]
        key, secret = store.create(name, args.rate_limit, _now(), accounts)
    finally:
        log.engine.dispose()
    reads = "every client account" if accounts is None else \
        "client account" + ("s " if len(set(accounts)) > 1 else " ") + _id_list(accounts)
    print(f"API key {key.id} ({key.name}, reads {reads}): {secret}")
    print("Keep it now: it is shown only once (the trade log stores its hash).", file=sys.stderr)
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    import pandas as pd

    from bot.store.export import write

    log, store = _store(args, write=False)
    try:
        keys = [(k, store.accounts_of(k)) for k in store.list()]
    finally:
        log.engine.dispose()
    columns = ["id", "key", "name", "accounts", "rate_per_minute", "created_at", "revoked_at"]
    frame = pd.DataFrame(
        [{"id": k.id, "key": k.shown, "name": k.name,
          "accounts": "all" if accounts is None else _id_list(accounts),
          "rate_per_minute": k.rate_per_minute, "created_at": k.created_at,
          "revoked_at": k.revoked_at} for k, accounts in keys],
        columns=columns, dtype=object,
    )
    write(frame, args.format, title="API keys", truncate=False)
    return 0


def _id_list(ids: list[int]) -> str:
    """Registry ids as `bot api-keys` shows them: `3, 7`."""
    return ", ".join(str(i) for i in sorted(set(ids)))


def _cmd_revoke(args: argparse.Namespace) -> int:
    log, store = _store(args, write=True)
    try:
        key = store.revoke(args.key, _now())
    finally:
        log.engine.dispose()
    print(f"API key {key.id} ({key.name}, {key.shown}) revoked")
    return 0
