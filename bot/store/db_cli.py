"""`bot db upgrade`, `bot db current`, `bot db revision`: the trade log's schema from the shell."""

from __future__ import annotations

import argparse

from bot.store.locate import add_database_arguments, database_url


def _cmd_upgrade(args: argparse.Namespace) -> int:
    from bot.store.engines import mask_url, sqlite_file, writer_engine
    from bot.store.schema import upgrade

    url = database_url(args.config, args.database)
    path = sqlite_file(url)
    new = path is not None and not path.exists()
    engine = writer_engine(url)
    try:
        before, after = upgrade(engine, url=url)
    finally:
        engine.dispose()
    if new:  # a deployment's first start, or a typo: said so, never as "upgraded"
        print(f"{mask_url(url)}: no trade log was at {path}: created a new one at schema "
              f"revision {after} (head)")
    elif before == after:
        print(f"{mask_url(url)}: already at schema revision {after} (head)")
    else:
        print(f"{mask_url(url)}: upgraded from {before or 'no version'} to {after} (head)")
    return 0


def _cmd_current(args: argparse.Namespace) -> int:
    from bot.store.engines import mask_url, reader_engine
    from bot.store.schema import known_revision, missing_layout, schema_state

    url = database_url(args.config, args.database)
    engine = reader_engine(url)
    try:
        with engine.connect() as conn:
            state = schema_state(conn)
            problems = missing_layout(conn) if state.up_to_date else []
    finally:
        engine.dispose()
    if problems:
        print(f"{mask_url(url)}: revision {state.current} (head, but its tables do not match "
              f"it: {'; '.join(problems)}; restore a backup or use a new database)")
        return 1
    if state.up_to_date:
        status = "(head)"
    elif state.empty:
        status = "(empty: created on first use)"
    elif state.current is not None and not known_revision(state.current):
        status = f"(unknown to this version of the bot, whose newest is {state.head}: upgrade the bot)"
    else:
        status = f"(out of date: head is {state.head}; run `bot db upgrade`)"
    print(f"{mask_url(url)}: revision {state.current or 'none'} {status}")
    return 0 if state.up_to_date or state.empty else 1


def _cmd_revision(args: argparse.Namespace) -> int:
    from bot.store.schema import new_revision

    path = new_revision(args.message)
    print(f"wrote {path}: review it (explicit types per dialect) before committing, then set "
          "HEAD_REVISION and run bot.store.schema.write_sqlite_head() for new SQLite logs")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    db = subparsers.add_parser("db", help="trade-log schema: upgrade, current revision")
    sub = db.add_subparsers(dest="db_command", required=True)
    up = sub.add_parser("upgrade", help="migrate the trade log to this version's schema")
    add_database_arguments(up)
    up.set_defaults(func=_cmd_upgrade)
    current = sub.add_parser("current", help="show the trade log's schema revision")
    add_database_arguments(current)
    current.set_defaults(func=_cmd_current)
    revision = sub.add_parser(
        "revision", help="(developers) autogenerate a migration after changing the models"
    )
    revision.add_argument("-m", "--message", required=True, help="what the migration changes")
    revision.set_defaults(func=_cmd_revision)
