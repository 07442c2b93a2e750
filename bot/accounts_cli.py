"""`bot accounts add|list|show|close|import`: the client-account registry.

add, close and import write the trade log (the schema is created on first use, like a
backtest does); list and show only read it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from dataclasses import replace
from pathlib import Path

from bot.store.locate import add_database_arguments, database_url


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("accounts", help="client accounts: add, list, show, close, import")
    sub = parser.add_subparsers(dest="accounts_command", required=True)

    add = sub.add_parser("add", help="register a client account")
    add.add_argument("broker_account_id", help="the Alpaca account id (a UUID)")
    add.add_argument(
        "--profile", required=True,
        help="conservative, balanced, aggressive, or a config file",
    )
    add.add_argument(
        "--suitability",
        help="the suitability assessment behind the profile, a JSON object "
        "(e.g. '{\"answers\": {...}, \"score\": 7}'), or @FILE to read it from a file",
    )
    add.add_argument("--created", help="the account's opening day, YYYY-MM-DD (default: now)")
    add.set_defaults(func=_cmd_add)

    listing = sub.add_parser("list", help="registered accounts")
    listing.add_argument("--status", choices=["active", "suspended", "closed"],
                         help="only accounts in this status (default: all)")
    listing.add_argument("--profile", help="one profile (a named one in any case)")
    listing.add_argument("--format", choices=["table", "csv", "json"], default="table",
                         help="output format (default table)")
    listing.set_defaults(func=_cmd_list)

    show = sub.add_parser("show", help="one account: registry row, last equity, holdings, orders")
    show.add_argument("account", help="registry id or broker account id")
    show.set_defaults(func=_cmd_show)

    close = sub.add_parser("close", help="mark an account closed (its history stays)")
    close.add_argument("account", help="registry id or broker account id")
    close.set_defaults(func=_cmd_close)

    imp = sub.add_parser(
        "import", help="add or update many accounts from a CSV file (all rows checked first)"
    )
    imp.add_argument("file", help="CSV with columns broker_account_id, profile "
                     "[, suitability, status, created_at]")
    imp.set_defaults(func=_cmd_import)

    for command in (add, listing, show, close, imp):
        add_database_arguments(command)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _writer(args: argparse.Namespace):
    from bot.accounts import AccountRegistry
    from bot.store.tradelog import TradeLog

    log = TradeLog.open(database_url(args.config, args.database))
    return log, AccountRegistry(log.engine)


def _reader(args: argparse.Namespace):
    from bot.accounts import AccountRegistry
    from bot.store.tradelog import TradeLog

    log = TradeLog.open_readonly(database_url(args.config, args.database))
    return log, AccountRegistry(log.engine)


def _field(name: str, parse, text: str):
    """Parse one command-line value; a bad one is a BotError naming the option."""
    from bot.errors import BotError

    try:
        return parse(text)
    except ValueError as exc:
        raise BotError(f"{name}: {exc}") from None


def _cmd_add(args: argparse.Namespace) -> int:
    from bot.accounts import AccountSpec
    from bot.accounts.registry import (
        check_profile,
        parse_broker_account_id,
        parse_created,
        parse_suitability,
    )

    suitability = None
    if args.suitability:
        text = _suitability_text(args.suitability)
        suitability = _field("--suitability", parse_suitability, text)
    spec = AccountSpec(
        broker_account_id=_field("broker_account_id", parse_broker_account_id, args.broker_account_id),
        profile=_field("--profile", check_profile, args.profile),
        suitability=suitability,
        created_at=_field("--created", parse_created, args.created) if args.created else None,
    )
    log, registry = _writer(args)
    try:
        account = registry.add(spec, _now())
    finally:
        log.engine.dispose()
    print(f"account {account.id}: {account.broker_account_id} ({account.profile}, active)")
    return 0


def _suitability_text(value: str) -> str:
    from bot.errors import BotError

    if not value.startswith("@"):
        return value
    path = Path(value[1:])
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BotError(f"--suitability: cannot read {path}: {exc.strerror}") from None


def _cmd_list(args: argparse.Namespace) -> int:
    import pandas as pd

    from bot.store.engines import mask_url
    from bot.store.export import write

    log, registry = _reader(args)
    try:
        accounts = registry.list(status=args.status, profile=args.profile)
    finally:
        log.engine.dispose()
    columns = ["id", "broker_account_id", "profile", "status", "created_at", "closed_at",
               "subscription_id", "suitability"]
    frame = pd.DataFrame([{c: getattr(a, c) for c in columns} for a in accounts], columns=columns)
    if args.format == "table":
        frame = frame.drop(columns=["suitability", "subscription_id"])
    url = database_url(args.config, args.database)
    write(frame, args.format, title=f"accounts — {mask_url(url)}", truncate=False)
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from bot.errors import BotError
    from bot.store import queries

    log, registry = _reader(args)
    try:
        account = registry.get(args.account)
        with log.engine.connect() as conn:
            try:  # the newest run that traded the account
                run: int | None = queries.latest_run(conn, account.id)
            except BotError:
                run = None
            mine = queries.Filters(run=run, account=account.id)
            equity = queries.equity(conn, replace(mine, limit=1)).frame()
            held = queries.positions(conn, mine).frame()
            open_orders = queries.orders(conn, mine, status="open").frame()
    finally:
        log.engine.dispose()
    print(f"account {account.id}: {account.broker_account_id}")
    print(f"  profile:      {account.profile}")
    print(f"  status:       {account.status}")
    print(f"  created:      {account.created_at:%Y-%m-%d %H:%M} UTC")
    if account.closed_at is not None:
        print(f"  closed:       {account.closed_at:%Y-%m-%d %H:%M} UTC")
    if account.subscription_id:
        print(f"  rebalancing:  subscription {account.subscription_id}")
    suitability = json.dumps(account.suitability, sort_keys=True) if account.suitability else "-"
    print(f"  suitability:  {suitability}")
    if equity.empty:
        print("  equity:       none recorded yet")
    else:
        last = equity.iloc[-1]
        print(f"  equity:       {last['equity']} on {last['day']} (cash {last['cash']})")
    if not held.empty:
        holdings = ", ".join(f"{r.symbol} {r.quantity.normalize():f}" for r in held.itertuples())
        print(f"  holdings:     {holdings} (snapshot {held['day'].iloc[0]})")
    print(f"  open orders:  {len(open_orders)}")
    return 0


def _cmd_close(args: argparse.Namespace) -> int:
    log, registry = _writer(args)
    try:
        account = registry.close(args.account, _now())
    finally:
        log.engine.dispose()
    print(f"account {account.id}: {account.broker_account_id} closed")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from bot.accounts.csv_import import read_accounts_csv

    specs = read_accounts_csv(Path(args.file))  # every row checked before the database
    log, registry = _writer(args)
    try:
        result = registry.upsert(specs, _now())
    finally:
        log.engine.dispose()
    print(
        f"{args.file}: {len(specs)} account(s): {result.added} added, {result.updated} updated, "
        f"{result.closed} closed, {result.unchanged} unchanged"
    )
    return 0
