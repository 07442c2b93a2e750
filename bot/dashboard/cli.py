"""`bot dashboard`: serve the read-only trade-log page on 127.0.0.1."""

from __future__ import annotations

import argparse
from pathlib import Path

from bot.store.locate import add_database_arguments, database_url


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("dashboard", help="read-only web page of a run on 127.0.0.1")
    add_database_arguments(parser)
    parser.add_argument("--port", type=int, default=8050, help="port on 127.0.0.1 (default 8050)")
    parser.add_argument("--run", type=int, help="run id (default: the latest run, followed live)")
    parser.add_argument("--refresh", type=int, default=30, help="seconds between page reloads")
    parser.add_argument(
        "--allow-host", action="append", default=[], metavar="NAME",
        help="also answer requests for this host name (besides 127.0.0.1, localhost, ::1)",
    )
    parser.set_defaults(func=_cmd_dashboard)


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from bot.dashboard.server import HOST, make_server
    from bot.store.engines import mask_url

    url = database_url(args.config, args.database)
    server = make_server(
        url, port=args.port, run=args.run, refresh=max(args.refresh, 2), config_path=Path(args.config),
        allowed_hosts=frozenset(args.allow_host),
    )
    print(f"dashboard of {mask_url(url)} on http://{HOST}:{server.server_address[1]}/ (Ctrl-C stops)")
    try:
        server.serve_forever()
    finally:
        server.server_close()
        server.tradelog.engine.dispose()
    return 0
