"""Which trade log a command works on: --database, else BOT_DATABASE_URL, else the config's store.url."""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_CONFIG = "config/diversified_leverage.toml"


def database_argument(text: str) -> str:
    """argparse type for --database: an unparsable URL is a usage error, before any work
    (a backtest would otherwise load its data first). The message never shows a password."""
    from bot.errors import BotError
    from bot.store.engines import parse_database_url

    try:
        parse_database_url(text)
    except BotError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_database_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", default=DEFAULT_CONFIG, help=f"TOML file naming store.url (default {DEFAULT_CONFIG})"
    )
    parser.add_argument(
        "--database", type=database_argument, help="trade-log URL (default BOT_DATABASE_URL or store.url)"
    )


def database_url(config: str | Path, database: str | None) -> str:
    """The URL to use; the config file is read only when neither override is given.

    BOT_DATABASE_URL goes through bot.config.env_store_url, as in `bot backtest` and
    `bot run`, so a relative SQLite path names the same file for every command."""
    from bot.config import env_store_url

    if database:
        return database
    env = env_store_url()
    if env:
        return env
    from bot.config import load_settings, resolve_store_url

    return resolve_store_url(load_settings(config), Path(config))
