"""`bot dashboard`: serve the read-only trade-log page on 127.0.0.1."""

from __future__ import annotations

import argparse
from pathlib import Path

from bot.arguments import refresh_seconds, run_id
from bot.store.locate import add_database_arguments, database_url


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("dashboard", help="read-only web page of a run on 127.0.0.1")
    add_database_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; 0.0.0.0 in a container "
                             "whose port is published on the host's loopback only)")
    parser.add_argument("--port", type=int, default=8050, help="port (default 8050)")
    parser.add_argument("--run", type=run_id, help="run a page opens on (default: the latest run, followed live); "
                             "its run selector's 'latest' follows new runs either way")
    parser.add_argument("--refresh", type=refresh_seconds, default=30,
                        help="seconds between in-place updates of the page, 2 or more (default 30)")
    parser.add_argument(
        "--account", help="one client account: its registry id or broker account id"
    )
    parser.add_argument(
        "--allow-host", action="append", default=[], metavar="NAME",
        help="also answer requests for this host name (besides 127.0.0.1, localhost, ::1 "
             "and the --host address)",
    )
    parser.set_defaults(func=_cmd_dashboard)


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from bot.dashboard.server import browse_url, make_server
    from bot.store.engines import mask_url

    url = database_url(args.config, args.database)
    server = make_server(
        url, port=args.port, run=args.run, refresh=args.refresh,
        config_path=Path(args.config), account=args.account, host=args.host,
        allowed_hosts=frozenset(args.allow_host),
    )
    if args.run is not None:  # refused now, not as a 503 on every request
        from bot.store import queries

        try:
            with server.tradelog.engine.connect() as conn:
                queries.require_run(conn, args.run)
        except BaseException:
            server.server_close()
            server.tradelog.engine.dispose()
            raise
    print(f"dashboard of {mask_url(url)} on {browse_url(args.host, server.server_address[1])} "
          "(Ctrl-C stops)")
    try:
        server.serve_forever()
    finally:
        server.server_close()
        server.tradelog.engine.dispose()
    return 0
