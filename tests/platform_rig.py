"""A platform on this machine for tests and benchmarks/platform_batch.py: the fake Broker API in
its own process, `bot worker` processes on the real RabbitMQ and Redis, a trade log, a
market written as CSV, and the client accounts registered.

Every rig has its own queue and Redis namespace (BOT_QUEUE_NAME), so rigs never see each
other's tasks; `close()` deletes both.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from base64 import b64encode
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from bot.accounts import PROFILES, AccountRegistry, AccountSpec
from bot.platform import store
from bot.platform.settings import DEFAULT_QUEUE_URL, DEFAULT_REDIS_URL
from bot.store.tradelog import TradeLog
from tests.fakes.alpaca_broker_server import BROKER_KEY, BROKER_SECRET

REPO = Path(__file__).resolve().parents[1]
#: the fake venue's clock: Wednesday 2024-11-27 10:00 New York (a session is open)
VENUE_NOW = dt.datetime(2024, 11, 27, 15, 0, tzinfo=dt.UTC)
#: the close the weekly decision is made on: Friday 2024-11-22, the last session of the
#: week before the venue's
DECISION_DAY = dt.date(2024, 11, 22)


def require_services(rabbitmq: bool = True) -> None:
    """Skip the calling test when Redis (and RabbitMQ) are not on 127.0.0.1; under CI=true
    fail instead (.ci/run starts them)."""
    import pytest
    import redis

    try:
        redis.Redis(socket_connect_timeout=2).ping()
        if rabbitmq:
            from kombu import Connection

            with Connection(DEFAULT_QUEUE_URL, connect_timeout=3) as conn:
                conn.ensure_connection(max_retries=1)
    except Exception as exc:  # noqa: BLE001 - only to say why the test cannot run
        reason = f"{'RabbitMQ or ' if rabbitmq else ''}Redis unreachable on 127.0.0.1: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (required when CI=true; .ci/run starts them)")
        pytest.skip(reason)


def profile_symbols() -> dict[str, tuple[str, ...]]:
    from bot.accounts import profile_config
    from bot.config import load_settings

    return {name: load_settings(profile_config(name)).symbols for name in PROFILES}


def write_market(directory: Path, start: str = "2016-01-04", end: str = "2024-12-31") -> dict[str, float]:
    """The three profiles' ETFs as a seeded synthetic market in CSV files (the workers
    load them in a blink); returns each symbol's close on DECISION_DAY, the venue's prices."""
    from bot.data.alpaca import write_csv_directory
    from bot.data.synthetic import synthetic_market

    symbols = [s for symbols in profile_symbols().values() for s in symbols]
    market = synthetic_market(symbols, start, end)
    write_csv_directory(market.prices, market.macro, directory)
    t = int(np.searchsorted(market.prices.dates, np.datetime64(DECISION_DAY)))
    return {s: round(float(p), 4) for s, p in zip(symbols, market.prices.close[t], strict=True)}


@dataclass
class Venue:
    """The fake Broker API in its own process."""

    process: subprocess.Popen
    url: str
    accounts: list[str]
    failing: list[str]

    def stats(self, orders: bool = False) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.url}/fake/stats{'?orders=1' if orders else ''}",
            headers={"Authorization": "Basic " + b64encode(f"{BROKER_KEY}:{BROKER_SECRET}".encode()).decode()},
        )
        with urllib.request.urlopen(request, timeout=60) as answer:
            return json.loads(answer.read())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()


def start_venue(tmp: Path, accounts: int, prices: dict[str, float], *, failing: int = 0,
                fill_on_submit: float = 1.0, rate_limit: float | None = None,
                burst: int | None = None, record_times: bool = False) -> Venue:
    ids = tmp / "venue-accounts.txt"
    command = [
        sys.executable, "-m", "tests.fakes.alpaca_broker_server", "--accounts", str(accounts),
        "--ids", str(ids), "--prices", ",".join(f"{s}={p}" for s, p in prices.items()),
        "--fill-on-submit", str(fill_on_submit), "--failing-accounts", str(failing),
    ]
    if rate_limit:
        command += ["--rate-limit", str(rate_limit)]
    if burst:
        command += ["--burst", str(burst)]
    if record_times:
        command.append("--record-times")
    errors = (tmp / "venue.log").open("ab")  # a client that went away (a killed worker)
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=errors, text=True)
    url = process.stdout.readline().strip()
    if not url.startswith("http://127.0.0.1:"):
        process.kill()
        raise RuntimeError(f"the fake Broker API did not start (said {url!r})")
    listed = ids.read_text().split()
    return Venue(process, url, listed, listed[len(listed) - failing:] if failing else [])


def register_accounts(url: str, broker_ids: list[str]) -> dict[str, str]:
    """Each broker account registered under the three profiles in turn; returns
    broker id -> profile."""
    log = TradeLog.open(url)
    try:
        names = list(PROFILES)
        specs = [AccountSpec(a, names[i % len(names)]) for i, a in enumerate(broker_ids)]
        AccountRegistry(log.engine).upsert(specs, dt.datetime.now(dt.UTC))
    finally:
        log.close()
    return {s.broker_account_id: s.profile for s in specs}


@dataclass
class Platform:
    """Workers and what they share; `env` is every worker's (and the publisher's)."""

    env: dict[str, str]
    logs: Path
    workers: list[subprocess.Popen] = field(default_factory=list)

    @property
    def queue(self) -> str:
        return self.env["BOT_QUEUE_NAME"]

    def start_worker(self, concurrency: int = 4, pool: str = "threads", name: str | None = None
                     ) -> subprocess.Popen:
        name = name or f"w{len(self.workers) + 1}"
        stderr = (self.logs / f"{name}.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "bot", "--log-level", "WARNING", "worker", "--pool", pool,
             "--concurrency", str(concurrency), "--name", name],
            cwd=REPO, env=self.env, stdout=stderr, stderr=stderr, start_new_session=True,
        )
        self.workers.append(process)
        return process

    def publish_decision(self, day: dt.date = DECISION_DAY, mode: str = "paper") -> None:
        from bot.platform import tasks
        from bot.platform.settings import PlatformSettings

        tasks.configure(PlatformSettings.from_env(self.env))
        tasks.app.send_task("leverbot.platform.decide", args=[day.isoformat(), mode])

    def kill(self, worker: subprocess.Popen) -> None:
        """SIGKILL the worker's whole process group: no chance to ack or clean up."""
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)

    def stop(self) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGTERM)
        for worker in self.workers:
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(timeout=10)

    def close(self) -> None:
        """Stop the workers, delete the queue and the Redis keys."""
        self.stop()
        from kombu import Connection

        with Connection(self.env["BOT_QUEUE_URL"]) as conn:
            conn.default_channel.queue_delete(self.queue)
            conn.default_channel.exchange_delete(self.queue)  # Celery's, named as the queue
        import redis

        client = redis.Redis.from_url(self.env["BOT_REDIS_URL"])
        keys = list(client.scan_iter(f"{self.queue}:*"))
        if keys:
            client.delete(*keys)

    def worker_logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-4000:] for p in sorted(self.logs.glob("*.log")))


def platform_env(database_url: str, venue: Venue, data_dir: Path, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BOT_", "APCA_"))}
    env.update({
        "PYTHONPATH": str(REPO),
        "BOT_DATABASE_URL": database_url,
        "BOT_QUEUE_URL": DEFAULT_QUEUE_URL,
        "BOT_REDIS_URL": DEFAULT_REDIS_URL,
        "BOT_QUEUE_NAME": f"leverbot-test-{uuid.uuid4().hex[:10]}",
        "BOT_PLATFORM_DATA": str(data_dir),
        "BOT_LOG_FORMAT": "json",
        "APCA_BROKER_API_KEY": BROKER_KEY,
        "APCA_BROKER_API_SECRET": BROKER_SECRET,
        "APCA_BROKER_API_URL": venue.url,
        "BOT_BROKER_REQUESTS_PER_MINUTE": "60000",
        "BOT_PLATFORM_RETRY_DELAY": "0.2",
        "BOT_PLATFORM_RETRY_MAX_DELAY": "1",
        "BOT_HTTP_RETRY_DELAY": "0.05",
    })
    env.update(overrides)
    return env


def wait_for_batch(engine: sa.Engine, timeout: float, at_least_done: int | None = None,
                   poll: float = 0.2) -> store.BatchSummary:
    """The latest batch once it is complete (or has `at_least_done` tasks done)."""
    deadline = time.monotonic() + timeout
    summary = None
    while time.monotonic() < deadline:
        run_id = store.latest_batch(engine)
        if run_id is not None:
            summary = store.summarize(engine, run_id)
            if at_least_done is not None and summary.done >= at_least_done:
                return summary
            if at_least_done is None and summary.accounts and summary.complete:
                return summary
        time.sleep(poll)
    raise TimeoutError(f"batch not done after {timeout:.0f} s: {summary}")
