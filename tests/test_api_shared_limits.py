"""Request budgets shared through Redis: several `bot serve` processes behind one address
count a key's requests together (before, each counted its own, so N servers let N times
the budget through), and a server whose Redis stops answering keeps serving on its own
count. Against the machine's Redis on 127.0.0.1:6379."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator

import httpx
import pytest
import redis
from structlog.testing import capture_logs

from bot.api.keys import ApiKeyStore
from bot.api.ratelimit import RedisTokenBuckets
from bot.store import TradeLog
from tests.test_api import Server, _cli

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(REDIS_URL)
    try:
        conn.ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis on 127.0.0.1:6379 is needed (.ci/run starts it): {exc}")
    yield conn
    conn.close()


@pytest.fixture
def prefix(client: redis.Redis) -> Iterator[str]:
    name = f"test:{uuid.uuid4().hex}"
    yield name
    for key in client.scan_iter(f"{name}:*"):
        client.delete(key)


def test_two_servers_draw_on_one_bucket(client, prefix) -> None:
    first, second = RedisTokenBuckets(client, prefix), RedisTokenBuckets(client, prefix)
    assert [first.take("k", 3), second.take("k", 3), first.take("k", 3)] == [0.0, 0.0, 0.0]
    assert second.wait("k", 3) == pytest.approx(20.0, abs=0.5)  # 3 a minute: one every 20 s
    assert first.take("k", 3) == pytest.approx(20.0, abs=0.5)  # refused: nothing spent
    assert second.wait("other", 3) == 0.0 and second.wait("other", 3) == 0.0  # wait spends nothing
    assert RedisTokenBuckets(client, prefix + "x").take("k", 3) == 0.0  # another prefix


def test_without_redis_a_server_counts_alone_and_says_so() -> None:
    dead = redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    buckets = RedisTokenBuckets(dead, "test")
    with capture_logs() as logs:
        answers = [buckets.take("k", 2) for _ in range(3)]
    assert answers[:2] == [0.0, 0.0] and answers[2] == pytest.approx(30.0, abs=0.5)
    warnings = [e for e in logs if e["event"] == "api.rate_limit_local"]
    assert len(warnings) == 1  # once a minute, not once a request


def test_serve_with_redis_counts_a_keys_requests_across_servers(tmp_path, client) -> None:
    url = f"sqlite:///{tmp_path / 'tradelog.sqlite'}"
    log = TradeLog.open(url)
    _, key = ApiKeyStore(log.engine).create("shared", 3, dt.datetime.now(dt.UTC))
    log.close()
    servers = [Server(url, tmp_path, "--redis", REDIS_URL) for _ in range(2)]
    try:
        headers = {"X-API-Key": key}
        codes = [httpx.get(f"{servers[i % 2].base}/v1/profiles", headers=headers).status_code
                 for i in range(4)]
        assert codes == [200, 200, 200, 429]
    finally:
        for server in servers:
            server.stop()
        for name in client.scan_iter("leverbot:api:requests:*"):
            client.delete(name)


def test_serve_refuses_a_redis_it_cannot_reach(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'tradelog.sqlite'}"
    assert _cli("api-keys", "create", "x", "--all-accounts", "--database", url)[0] == 0
    code, _out, err = _cli("serve", "--database", url, "--synthetic",
                           "--redis", "redis://:hunter2@127.0.0.1:1/0")
    assert code == 2
    assert "--redis redis://:***@127.0.0.1:1/0: cannot reach Redis" in err
    assert "hunter2" not in err
