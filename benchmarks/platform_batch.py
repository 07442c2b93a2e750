"""Platform benchmark: one weekly batch for many client accounts, end to end.

    python benchmarks/platform_batch.py [--accounts 10000] [--workers 2] [--concurrency 4]
        [--limit 10000] [--kill-at 0.3] [--database postgresql+psycopg://...]

What runs: the fake Broker API in its own process (--accounts funded accounts, fills in
the order answers, a gateway that answers 429 past --limit requests a minute), `bot
worker` processes on this machine's RabbitMQ and Redis, a PostgreSQL trade log (a
throwaway database on 127.0.0.1 unless --database), the accounts spread over the three
profiles. It publishes the weekly decision and waits until every account's orders are
sent and recorded. With --kill-at F it SIGKILLs one worker once a share F of the
accounts is done and starts a new one, as a container's restart policy would.

Measured: the decision (three LPs, the batch recorded), the batch from the decision's
start to the last account's commit, broker requests per account, the throughput, and
the checks: no (account, symbol, side) with two orders at the venue, every order sent
recorded once, every account done.

The time model: T = decision + N x k / min(L, X), with N accounts, k requests per account,
L the broker's limit (requests/s), X what the workers can do (requests/s). --limit 0
takes the limit away to measure X; --json prints the figures for the README's table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import sqlalchemy as sa  # noqa: E402

from bot.platform import store  # noqa: E402
from bot.store.tradelog import TradeLog  # noqa: E402
from tests.platform_rig import (  # noqa: E402
    Platform,
    platform_env,
    register_accounts,
    start_venue,
    write_market,
)


def throwaway_database() -> tuple[str, callable]:
    from tests.test_store import throwaway_pg_database

    databases = throwaway_pg_database()
    url = next(databases)
    return url, lambda: next(databases, None)


def cpu_seconds() -> dict[str, float]:
    """CPU time (user + system) used so far by each kind of process on this machine, and
    by their exited children."""
    import os

    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        # its own time and its exited children's (PostgreSQL's backends end with their
        # connections; their time is then the postmaster's)
        used = sum(int(f) for f in fields[11:15]) / tick
        kind = ("workers" if " worker " in cmdline and "bot" in cmdline
                else "venue" if "alpaca_broker_server" in cmdline
                else "postgresql" if stat.split()[1] in ("(postgres)",)
                else "rabbitmq" if "beam.smp" in stat
                else "redis" if "redis-server" in stat
                else None)
        if kind:
            out[kind] = out.get(kind, 0.0) + used
    return out


def consumers(env: dict[str, str]) -> int:
    from kombu import Connection

    with Connection(env["BOT_QUEUE_URL"]) as conn:
        channel = conn.default_channel
        try:
            return channel.queue_declare(env["BOT_QUEUE_NAME"], passive=True).consumer_count
        except Exception:  # noqa: BLE001 - not declared yet: no consumer
            return 0


def wait_for_consumers(env: dict[str, str], count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while consumers(env) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"workers not consuming after {timeout:.0f} s")
        time.sleep(0.3)


def run(args: argparse.Namespace) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="platform-bench-"))
    (tmp / "logs").mkdir()
    prices = write_market(tmp / "market")
    cleanup = None
    url = args.database
    if url is None:
        url, cleanup = throwaway_database()
    limit = args.limit / 60.0 if args.limit else None
    venue = start_venue(tmp, args.accounts, prices, rate_limit=limit * 1.05 if limit else None,
                        burst=max(1, int(limit)) if limit else None)
    env = platform_env(url, venue, tmp / "market",
                       BOT_BROKER_REQUESTS_PER_MINUTE=str(args.limit or 10_000_000),
                       BOT_BROKER_BURST=str(max(1, int(limit or 1000) // 2)))
    platform = Platform(env, tmp / "logs")
    result: dict = {"accounts": args.accounts, "workers": args.workers,
                    "concurrency": args.concurrency, "limit_per_minute": args.limit or None}
    try:
        t = time.perf_counter()
        register_accounts(url, venue.accounts)
        result["register_seconds"] = round(time.perf_counter() - t, 1)
        for _ in range(args.workers):
            platform.start_worker(concurrency=args.concurrency)
        wait_for_consumers(env, args.workers)
        log = TradeLog.open(url)
        requests_before = sum(venue.stats()["answers"].values())
        cpu_before = cpu_seconds()
        published = time.perf_counter()
        platform.publish_decision()
        killed = False
        while True:
            time.sleep(1.0)
            run_id = store.latest_batch(log.engine)
            if run_id is None:
                continue
            summary = store.summarize(log.engine, run_id)
            if args.kill_at and not killed and summary.done >= args.kill_at * args.accounts:
                platform.kill(platform.workers[0])
                platform.start_worker(concurrency=args.concurrency, name="replacement")
                killed = True
                result["killed_at_done"] = summary.done
                print(f"  killed a worker at {summary.done} accounts done; started another",
                      file=sys.stderr)
            if summary.accounts and summary.complete:
                break
            print(f"  {summary.done}/{summary.accounts} done after "
                  f"{time.perf_counter() - published:.0f} s", file=sys.stderr)
        wall = time.perf_counter() - published
        cpu_after = cpu_seconds()
        stats = venue.stats()
        with log.engine.connect() as conn:
            decided = conn.execute(sa.text(  # decided and recorded, its tasks published
                "SELECT min(claimed_at) FROM platform_tasks WHERE run_id = :r"), {"r": run_id}
            ).scalar()
            orders, distinct = conn.execute(sa.text(
                "SELECT count(*), count(DISTINCT client_order_id) FROM orders WHERE run_id = :r"),
                {"r": run_id}).one()
            planned_left = conn.execute(sa.text(
                "SELECT count(*) FROM orders WHERE run_id = :r AND broker_order_id IS NULL"),
                {"r": run_id}).scalar()
            redelivered = conn.execute(sa.text(
                "SELECT count(*) FROM platform_tasks WHERE run_id = :r AND attempts > 1"),
                {"r": run_id}).scalar()
        summary = store.summarize(log.engine, run_id)
        requests = sum(stats["answers"].values()) - requests_before
        batch_seconds = summary.seconds
        decision_seconds = (decided - summary.started_at).total_seconds() if decided else None
        result.update({
            "decision_seconds": round(decision_seconds, 2) if decision_seconds else None,
            "batch_seconds": round(batch_seconds, 1),
            "publish_to_done_seconds": round(wall, 1),
            "done": summary.done, "dead": summary.dead, "retried": summary.retried,
            "redelivered": redelivered,
            "orders_recorded": orders, "orders_distinct": distinct,
            "orders_at_venue": stats["orders"], "repeated_at_venue": stats["repeated"],
            "unsent_in_log": planned_left,
            "requests": requests, "requests_per_account": round(requests / args.accounts, 2),
            "answers": stats["answers"],
            "requests_per_second": round(requests / (batch_seconds - (decision_seconds or 0)), 1),
            # CPU per account, ms, by process kind (a killed worker's time is lost to this
            # count: its process is gone)
            "cpu_ms_per_account": {
                kind: round((cpu_after.get(kind, 0) - cpu_before.get(kind, 0)) / args.accounts * 1000, 2)
                for kind in sorted(cpu_after)
            },
        })
        log.close()
    finally:
        platform.close()
        venue.stop()
        if cleanup is not None:
            cleanup()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4, help="threads per worker")
    parser.add_argument("--limit", type=float, default=10_000,
                        help="the broker's request limit a minute (0: none)")
    parser.add_argument("--kill-at", type=float, default=0.3,
                        help="kill a worker at this share of accounts done (0: never)")
    parser.add_argument("--database", help="trade-log URL (default: a throwaway PostgreSQL database)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON only")
    args = parser.parse_args()
    result = run(args)
    ok = (result["done"] == args.accounts and result["repeated_at_venue"] == 0
          and result["orders_recorded"] == result["orders_distinct"] == result["orders_at_venue"]
          and result["unsent_in_log"] == 0)
    result["checks"] = "passed" if ok else "FAILED"
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>26}: {value}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
