"""Which trade log a command works on: --database, else BOT_DATABASE_URL, else the config's store.url."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

DEFAULT_CONFIG = "config/diversified_leverage.toml"


def add_database_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", default=DEFAULT_CONFIG, help=f"TOML file naming store.url (default {DEFAULT_CONFIG})"
    )
    parser.add_argument("--database", help="trade-log URL (default BOT_DATABASE_URL or store.url)")


def database_url(config: str | Path, database: str | None) -> str:
    """The URL to use; the config file is read only when neither override is given."""
    if database:
        return database
    env = os.environ.get("BOT_DATABASE_URL")
    if env:
        return env
    from bot.config import load_settings, resolve_store_url

    return resolve_store_url(load_settings(config), Path(config))
