"""Which trade log a command works on: --database, else BOT_DATABASE_URL, else the config's
store.url; and which config file when none is named.

Kept light (no pydantic, no SQLAlchemy at import): `bot --help` builds every parser.
"""

from __future__ import annotations

import argparse
from pathlib import Path

#: the databases a trade log can live in (any driver of theirs SQLAlchemy knows)
SUPPORTED_BACKENDS = ("sqlite", "postgresql")

DEFAULT_CONFIG = "config/diversified_leverage.toml"
# The checkout this package runs from (<repo>/bot/store/locate.py): its config/ is the
# default when the working directory has none.
REPO_ROOT = Path(__file__).resolve().parents[2]


def default_path(relative: str) -> str:
    """A default file, never one the user named: `relative` in the working directory if it
    is there, else the repository's own, so commands work from any directory. With neither
    it stays relative, and the error names the path the user knows."""
    if Path(relative).exists():
        return relative
    packaged = REPO_ROOT / relative
    return str(packaged) if packaged.exists() else relative


def default_config() -> str:
    """The config file used when no --config is given."""
    return default_path(DEFAULT_CONFIG)


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
        "--config", default=default_config(),
        help=f"TOML file naming store.url (default {DEFAULT_CONFIG}, here or in the repository)",
    )
    parser.add_argument(
        "--database", type=database_argument, help="trade-log URL (default BOT_DATABASE_URL or store.url)"
    )


def in_memory(url: str) -> bool:
    """An in-memory SQLite trade log: nothing of it outlives the command."""
    from bot.store.engines import parse_database_url, sqlite_file

    return parse_database_url(url).get_backend_name() == "sqlite" and sqlite_file(url) is None


def where_recorded(run_id: int, url: str, config: str | Path, database: str | None) -> list[str]:
    """The lines a command that recorded run `run_id` prints about it: the trade log and
    how to read it again (an in-memory one: that nothing of it is kept)."""
    from bot.store.engines import mask_url

    if in_memory(url):
        return [f"run {run_id} was kept in an in-memory trade log ({mask_url(url)}): nothing of it "
                "is left now the command ended; give --database sqlite:///FILE to keep it"]
    options = reading_options(config, database)
    return [f"trade log: {mask_url(url)}",
            f"inspect it: bot orders --run {run_id}{options} / bot equity --run {run_id}{options} / "
            f"bot report --run {run_id}{options}"]


def reading_options(config: str | Path, database: str | None) -> str:
    """The options an inspection command needs to read the trade log a run just wrote
    (none for the default config and no --database), for the hints printed after it."""
    import shlex

    from bot.store.engines import mask_url

    given = []
    if Path(config).resolve() != Path(default_config()).resolve():
        given.append(f"--config {shlex.quote(str(config))}")
    if database:
        given.append(f"--database {shlex.quote(mask_url(database))}")
    return "".join(f" {g}" for g in given)


def anchor_sqlite_url(url: str, base: Path) -> str:
    """A SQLite URL with a relative file path made absolute against `base`; any other URL
    (absolute paths, in-memory, file: URIs, other backends) unchanged."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url.startswith(prefix + "/"):
        return url
    path = url[len(prefix):]
    if not path or path.startswith((":memory:", "file:", "~")):
        return url
    return prefix + str((base / path).resolve())


def env_store_url() -> str | None:
    """BOT_DATABASE_URL (from the environment or BOT_SECRETS_FILE), the one place it is
    read. A relative SQLite path in it is taken
    from the working directory, like BOT_DATA_DIR and --database: every command (backtest,
    run, inspection, report, db) then opens the same file."""
    import os

    from bot.errors import BotError
    from bot.secrets import setting
    from bot.store.engines import parse_database_url

    url = setting("BOT_DATABASE_URL")  # the environment, else the secrets file
    if not url:
        return None
    try:
        parse_database_url(url)
    except BotError as exc:  # which setting: the value itself may be masked whole
        where = "the environment" if os.environ.get("BOT_DATABASE_URL") else "the secrets file"
        raise BotError(f"BOT_DATABASE_URL (from {where}): {exc}") from None
    return anchor_sqlite_url(url, Path.cwd())


def database_url(config: str | Path, database: str | None) -> str:
    """The URL to use; the config file is read (with pydantic) only when neither
    override is given. BOT_DATABASE_URL goes through env_store_url, as in `bot backtest`
    and `bot run`, so a relative SQLite path names the same file for every command."""
    if database:
        return database
    env = env_store_url()
    if env:
        return env
    from bot.config import load_settings, resolve_store_url

    return resolve_store_url(load_settings(config), Path(config))


#: the default trade log's file name (var/tradelog.sqlite): its reports keep the short names
DEFAULT_SQLITE_STEM = "tradelog"


def report_dir(url: str, run_id: int) -> Path:
    """Default folder of a run's report files: `reports/run-ID` beside a SQLite trade log
    named tradelog.sqlite (var/reports/run-ID for the default var/tradelog.sqlite), and
    `reports/<file name>-run-ID` beside one named otherwise (a.sqlite: reports/a-run-ID),
    so run 1 of another database, in another folder or the same, never overwrites it;
    var/reports/<database>-run-ID for a server database."""
    return _reports_folder(url, f"run-{run_id}")


def sweep_report_dir(url: str, sweep_id: int) -> Path:
    """Default folder of a sweep's files: `reports/sweep-ID`, placed like report_dir's."""
    return _reports_folder(url, f"sweep-{sweep_id}")


def _reports_folder(url: str, name: str) -> Path:
    from sqlalchemy.engine import make_url

    from bot.store.engines import sqlite_file

    path = sqlite_file(url)
    if path is not None:
        own = name if path.stem == DEFAULT_SQLITE_STEM else f"{path.stem}-{name}"
        return path.parent / "reports" / own
    database = make_url(url).database or "memory"
    return Path("var") / "reports" / f"{database}-{name}"

