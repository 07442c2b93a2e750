"""The allocation API (`bot serve`) as a client sees it: a real uvicorn process on a free
127.0.0.1 port, driven with httpx. Its answers are checked against the engine itself (a
backtest's recorded targets and orders) and against direct calls of the planner and of
`bot suitability`'s report; keys, budgets, validation and headers against the rules in
bot/api. Runs on the synthetic market, so no data files are needed."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import sqlalchemy as sa

from bot.accounts import AccountRegistry, AccountSpec
from bot.api.keys import ApiKeyStore, Authenticator, Verdict
from bot.api.ratelimit import TokenBuckets, retry_after
from bot.cli import main
from bot.store import TradeLog
from bot.types import EquityPoint, Fill, Order, OrderRequest, OrderStatus, Side
from tests.conftest import REPO
from tests.test_store import backend_url, start

ACCOUNT = "8f2c1e5a-0b7d-4c3e-9a61-2d5f0e8b7c44"
QUIET = "9a3d2f6b-1c8e-4d4f-8b72-3e6f1f9c8d55"  # registered, nothing recorded yet
DAY1, DAY2 = dt.date(2024, 6, 7), dt.date(2024, 6, 14)
T1 = dt.datetime(2024, 6, 7, 20, 5, tzinfo=dt.UTC)
T2 = dt.datetime(2024, 6, 14, 20, 5, tzinfo=dt.UTC)
FRIDAY = "2024-06-07"  # a weekly decision day of the synthetic market
BALANCED = REPO / "config" / "robo_balanced.toml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def _order(cid: str, symbol: str, side: Side, qty: float, status: OrderStatus, at: dt.datetime) -> Order:
    request = OrderRequest(cid, cid.rsplit("-", 2)[0], symbol, side, qty, "weekly", 500.0)
    return Order(request, status, at)


def _record_account(url: str) -> int:
    """Two weekly rebalances of one client account: orders, a fill, equity, positions."""
    log = TradeLog.open(url)
    registry = AccountRegistry(log.engine)
    account = registry.add(AccountSpec(ACCOUNT, "balanced", {"score": 31}), T1).id
    registry.add(AccountSpec(QUIET, "aggressive"), T1)
    start(log, mode="paper")
    prefix = f"plat-{ACCOUNT}"
    with log.recording_for(account):
        log.order(_order(f"{prefix}-20240607-rb-SPY-buy", "SPY", Side.BUY, 10.0, OrderStatus.FILLED, T1))
        log.order(_order(f"{prefix}-20240607-rb-BND-buy", "BND", Side.BUY, 40.0, OrderStatus.NEW, T1))
        log.fill(Fill(f"{prefix}-20240607-rb-SPY-buy", "SPY", Side.BUY, 10.0, 500.25, 0.0, 0.0, T1))
        log.equity(EquityPoint(DAY1, 10_000.0, 2_000.0, 8_000.0, 0.0, None))
        log.positions(DAY1, {"SPY": (10.0, 500.0), "BND": (40.0, 75.0)})
        log.order(_order(f"{prefix}-20240614-rb-IWM-buy", "IWM", Side.BUY, 3.5, OrderStatus.ACCEPTED, T2))
        log.equity(EquityPoint(DAY2, 10_250.5, 2_000.0, 8_250.5, 0.0, None))
        log.positions(DAY2, {"SPY": (10.0, 520.05), "BND": (40.0, 76.0), "VNQ": (0.0, 90.0)})
    log.close()
    return account


class Server:
    """`bot serve` in a subprocess; its log in a file."""

    def __init__(self, url: str, tmp: Path, *extra: str) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / f"serve-{self.port}.log"
        env = {**os.environ, "BOT_LOG_FORMAT": "json"}
        env.pop("BOT_DATABASE_URL", None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bot", "serve", "--port", str(self.port), "--database", url,
             "--synthetic", "--rate-limit", "600", *extra],
            cwd=tmp, env=env, stdout=self.log_path.open("w"), stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"bot serve exited {self.process.returncode}: {self.log()}")
            try:
                if httpx.get(f"{self.base}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        self.stop()
        raise AssertionError(f"bot serve did not answer within 90 s: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def api(tmp_path_factory) -> Iterator[dict]:
    tmp = tmp_path_factory.mktemp("api")
    url = f"sqlite:///{tmp / 'tradelog.sqlite'}"
    account = _record_account(url)
    log = TradeLog.open(url)
    store = ApiKeyStore(log.engine)
    now = dt.datetime.now(dt.UTC)
    keys = {name: store.create(name, rate, now)[1]
            for name, rate in (("main", None), ("limited", 3), ("leaving", None), ("fresh", None))}
    keys["client"] = store.create("client app", None, now, [account])[1]
    log.close()
    server = Server(url, tmp)
    with httpx.Client(base_url=server.base, headers={"Authorization": f"Bearer {keys['main']}"},
                      timeout=60) as client:
        yield {"client": client, "server": server, "keys": keys, "url": url, "account": account}
    server.stop()


# --- the engine's answers -------------------------------------------------------------


def _engine_run(start_day: str, end_day: str):
    """A plain backtest of the balanced profile on the synthetic market (the engine)."""
    from bot.backtest import run_backtest, scratch_tradelog
    from bot.config import load_settings, resolve_data_dir
    from bot.data.history import load_history
    from bot.runner import BacktestOptions, apply_overrides

    options = BacktestOptions(BALANCED, start=start_day, end=end_day, synthetic=True, benchmarks=False)
    settings = apply_overrides(load_settings(BALANCED), options, str(BALANCED))
    market = load_history(settings, resolve_data_dir(settings, BALANCED))
    log = scratch_tradelog("engine")
    result = run_backtest(settings, market, log, order_prefix="bt")
    log.flush()
    return settings, market, log, result


def test_allocation_and_plan_are_what_the_engine_decides_and_sends(api) -> None:
    client = api["client"]
    settings, market, log, _result = _engine_run("2024-06-03", "2024-06-14")
    targets = log.load_targets(log.run_id)
    orders = log.load_orders(log.run_id)
    log.discard()

    got = client.get("/v1/profiles/balanced/allocation", params={"date": FRIDAY})
    assert got.status_code == 200
    body = got.json()
    assert body["day"] == FRIDAY and body["scheduled_rebalance_day"] is True and body["synthetic"]
    recorded = targets[targets["day"] == FRIDAY]
    assert list(recorded["symbol"]) == [a["symbol"] for a in body["assets"]]
    assert [a["weight"] for a in body["assets"]] == list(recorded["final"])  # exactly
    assert [a["reasons"] for a in body["assets"]] == list(recorded["reasons"])
    # The structured explanation says what the reason lines say.
    for asset in body["assets"]:
        assert f"score {asset['score']:+.3f}, rank {asset['rank']} of 4" in asset["reasons"]
        assert asset["lp_reason"] in asset["reasons"]
        assert f"RS {asset['signals']['relative_strength']['z']:+.2f}" in asset["reasons"][1]
        assert set(asset["signals"]) == {"relative_strength", "trend", "mean_reversion", "seasonality"}
    assert body["total"]["invested"] == pytest.approx(sum(recorded["final"]))
    assert settings.factor.total_min <= body["total"]["drawn"] <= settings.factor.total_max

    # The engine's first rebalance spent its starting cash: a client with that cash and
    # nothing held gets the same orders from the API.
    plan = client.post("/v1/plan", json={"profile": "balanced", "cash": settings.backtest.initial_cash,
                                         "date": FRIDAY})
    assert plan.status_code == 200
    sent = orders[orders["client_order_id"].str.startswith("bt-20240607-rb")]
    planned = plan.json()["orders"]
    assert [(o["symbol"], o["side"]) for o in planned] == list(zip(sent["symbol"], sent["side"], strict=True))
    assert [o["quantity"] for o in planned] == pytest.approx(list(sent["quantity"]), rel=1e-12)
    assert [o["reference_price"] for o in planned] == pytest.approx(list(sent["reference_price"]), rel=1e-12)
    assert [o["client_order_id"] for o in planned] == [
        c.replace("bt-", "balanced-", 1) for c in sent["client_order_id"]
    ]


def test_the_decision_in_force_is_the_default_and_matches_the_model_called_directly(api) -> None:
    """Without a date: the weekly profile's last week's decision, the weights its accounts
    hold (before: the latest data day's, a mid-week decision nobody trades), with a
    plan priced on the latest closes."""
    from bot.calendar import week_ends
    from bot.config import load_settings, resolve_data_dir
    from bot.data.history import load_history
    from bot.engine import decision_context
    from bot.planner import plan_orders
    from bot.runner import BacktestOptions, apply_overrides
    from bot.strategy.factor import FactorModel

    client = api["client"]
    path = REPO / "config" / "robo_aggressive.toml"
    settings = apply_overrides(load_settings(path), BacktestOptions(path, synthetic=True), str(path))
    prices = load_history(settings, resolve_data_dir(settings, path)).prices.select(settings.symbols)
    t = len(prices.dates) - 1
    decided = int(np.flatnonzero(week_ends(prices.dates))[-1])
    assert str(prices.dates[t]) == "2024-12-31" and str(prices.dates[decided]) == "2024-12-27"
    model = FactorModel(settings)
    direct = model.decide(decision_context(
        model, settings.symbols, prices.dates, prices.close, decided, settings.regime.initial, False
    ))

    body = client.get("/v1/profiles/aggressive/allocation").json()
    assert body["day"] == "2024-12-27" and body["requested_date"] is None
    assert body["scheduled_rebalance_day"] is True
    assert [a["weight"] for a in body["assets"]] == direct.weights.tolist()
    assert [tuple(a["reasons"]) for a in body["assets"]] == [r.reasons for r in direct.rows]
    # A weekend date means the last trading day before it.
    assert client.get("/v1/profiles/aggressive/allocation", params={"date": "2024-06-09"}).json()["day"] == FRIDAY

    holdings = {"QQQ": 12.5, "XLK": 30.0, "ARKK": 0.0}
    plan = client.post("/v1/plan", json={"profile": "aggressive", "cash": 2500.0, "holdings": holdings})
    assert plan.status_code == 200
    shares = np.array([holdings.get(s, 0.0) for s in settings.symbols])
    equity = 2500.0 + float(shares @ np.nan_to_num(prices.close[t]))
    day = prices.dates[decided].astype(dt.date)
    expected = plan_orders(f"aggressive-{day:%Y%m%d}-rb", settings.symbols, direct.weights, shares,
                           prices.close[t], equity, settings.rebalance, "any")
    answer = plan.json()
    assert (answer["day"], answer["priced_on"]) == ("2024-12-27", "2024-12-31")
    assert answer["equity"] == pytest.approx(equity, rel=1e-12)
    assert [(o["client_order_id"], o["side"], o["quantity"], o["reference_price"]) for o in answer["orders"]] == [
        (o.client_order_id, o.side.value, o.quantity, o.reference_price) for o in expected
    ]
    assert expected and answer["cash_after"] == pytest.approx(
        2500.0 - sum(o.quantity * o.reference_price * (1 if o.side is Side.BUY else -1) for o in expected)
    )


def test_profiles_and_suitability(api) -> None:
    from argparse import Namespace

    from bot.robo_cli import profile_report

    client = api["client"]
    profiles = client.get("/v1/profiles").json()["profiles"]
    assert [p["name"] for p in profiles] == ["conservative", "balanced", "aggressive"]
    assert [p["intended_srri"] for p in profiles] == [[2, 3], [3, 5], [5, 7]]
    assert [u["symbol"] for u in profiles[1]["universe"]] == ["SPY", "IWM", "BND", "VNQ"]
    assert all(p["synthetic"] and "SYNTHETIC" in p["data"] for p in profiles)

    got = client.get("/v1/profiles/conservative/suitability")
    assert got.status_code == 200
    body = got.json()
    direct = profile_report(REPO / "config" / "robo_conservative.toml",
                            Namespace(start=None, end=None, synthetic=True, data_dir=None))
    for part in ("strategy", "static_allocation"):
        assert body[part]["srri"] == direct[part]["srri"]
        assert body[part]["priips"]["mrm_class"] == direct[part]["priips"]["mrm_class"]
        assert body[part]["priips"]["vev"] == pytest.approx(direct[part]["priips"]["vev"], rel=1e-12)
    assert body["config"] == "robo_conservative.toml"  # no server paths
    # one config, one fingerprint: the report's overrides made it another than the allocation's
    assert body["config_hash"] == profiles[0]["config_hash"]


def test_accounts_by_registry_or_broker_id(api) -> None:
    client = api["client"]
    by_id = client.get(f"/v1/accounts/{api['account']}")
    assert by_id.status_code == 200
    body = by_id.json()
    assert client.get(f"/v1/accounts/{ACCOUNT.upper()}").json() == body
    assert body["broker_account_id"] == ACCOUNT and body["profile"] == "balanced"
    assert body["suitability"] == {"score": 31} and body["status"] == "active"
    assert body["equity"] == {"day": "2024-06-14", "run_id": 1, "equity": "10250.5", "cash": "2000",
                              "positions_value": "8250.5", "drawdown": 0.0}
    positions = body["positions"]
    assert positions["day"] == "2024-06-14"
    assert [(h["symbol"], h["quantity"], h["price"]) for h in positions["holdings"]] == [
        ("SPY", "10", "520.05"), ("BND", "40", "76")]  # the sold-out VNQ row is left out
    assert positions["holdings"][0]["weight"] == pytest.approx(5200.5 / 10250.5)
    last = body["last_rebalance"]
    assert last["rebalance_id"] == f"plat-{ACCOUNT}-20240614-rb" and body["open_orders"] == 2
    assert [(o["symbol"], o["status"], o["quantity"]) for o in last["orders"]] == [("IWM", "accepted", "3.5")]

    quiet = client.get(f"/v1/accounts/{QUIET}").json()
    assert quiet["equity"] is None and quiet["positions"] is None and quiet["last_rebalance"] is None
    for ref in ("999", "not-an-account", "00000000-0000-4000-8000-000000000000", "9" * 30, "\u00b2"):
        missing = client.get(f"/v1/accounts/{ref}")
        assert missing.status_code == 404 and "no account" in missing.json()["message"]


def test_a_key_made_for_one_account_reads_that_account_only(api) -> None:
    client, url = api["client"], api["url"]
    scoped = {"Authorization": f"Bearer {api['keys']['client']}"}
    own = client.get(f"/v1/accounts/{ACCOUNT}", headers=scoped)
    assert own.status_code == 200 and own.json() == client.get(f"/v1/accounts/{ACCOUNT}").json()
    assert client.get(f"/v1/accounts/{api['account']}", headers=scoped).status_code == 200
    assert client.get("/v1/profiles/balanced/suitability", headers=scoped).status_code == 200

    # Another client's account answers as an account that does not exist.
    other = client.get(f"/v1/accounts/{QUIET}", headers=scoped)
    assert client.get(f"/v1/accounts/{QUIET}").status_code == 200  # a platform-wide key reads it
    missing = client.get("/v1/accounts/999", headers=scoped)
    assert other.status_code == missing.status_code == 404
    assert other.json()["error"] == missing.json()["error"]
    assert other.json()["message"] == f"no account {QUIET!r} in the registry (expected its id or broker account id)"

    # The scope is read on every request: taking the account away takes effect at once.
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM api_key_accounts"))
    try:
        assert client.get(f"/v1/accounts/{ACCOUNT}", headers=scoped).status_code == 404
    finally:
        with engine.begin() as conn:
            key_row = conn.execute(sa.text("SELECT id FROM api_keys WHERE name = 'client app'")).scalar_one()
            conn.execute(sa.text("INSERT INTO api_key_accounts (api_key_id, account_id) VALUES (:k, :a)"),
                         {"k": key_row, "a": api["account"]})
        engine.dispose()
    assert client.get(f"/v1/accounts/{ACCOUNT}", headers=scoped).status_code == 200


# --- bad requests ---------------------------------------------------------------------


def _fields(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid request"
    return {f["field"]: f["message"] for f in body["fields"]}


def test_invalid_requests_get_a_422_naming_the_field(api) -> None:
    client = api["client"]
    fields = _fields(client.post("/v1/plan", json={
        "profile": "balanced", "cash": 1000, "holdings": {"SPY": -5, "BND": "10", "spy": 1},
        "date": "2024-02-30", "cahs": 1,
    }))
    assert fields["holdings.SPY"] == "Input should be greater than or equal to 0 (got -5)"
    assert fields["holdings.BND"].startswith("Input should be a valid number")
    assert fields["holdings.spy"].startswith("expected an upper-case ticker symbol")
    assert fields["date"].startswith("expected a real calendar date YYYY-MM-DD")
    assert fields["cahs"].startswith("Extra inputs are not permitted")
    headers = {"Content-Type": "application/json"}
    for text, field in (('{"profile": "balanced", "cash": NaN}', "cash"),
                        ('{"profile": "balanced", "cash": 1, "holdings": {"SPY": Infinity}}', "holdings.SPY"),
                        ('{"profile": "balanced", "cash": 1e400}', "cash")):
        assert "finite number" in _fields(client.post("/v1/plan", content=text, headers=headers))[field]
    assert _fields(client.post("/v1/plan", content='{"profile": ', headers=headers))["body"].startswith(
        "not valid JSON")
    assert _fields(client.post("/v1/plan", json={"cash": 1}))["profile"] == "Field required"
    assert "unknown profile 'bold'" in _fields(client.post("/v1/plan", json={"profile": "bold", "cash": 1}))["profile"]
    assert "not in the universe of profile 'balanced'" in _fields(
        client.post("/v1/plan", json={"profile": "balanced", "cash": 1, "holdings": {"TLT": 1}}))["holdings.TLT"]
    assert _fields(client.get("/v1/profiles/balanced/allocation", params={"date": "1700000000"}))["date"] == (
        "expected a date YYYY-MM-DD (got '1700000000')")

    for path in ("/v1/profiles/bold/allocation", "/v1/profiles/bold/suitability"):
        unknown = client.get(path)
        assert unknown.status_code == 404
        assert unknown.json() == {"error": "not found", "message":
                                  "unknown profile 'bold'; expected one of conservative, balanced, aggressive"}
    beyond = client.get("/v1/profiles/balanced/allocation", params={"date": "2031-01-02"})
    assert beyond.status_code == 404 and "has data from" in beyond.json()["message"]
    # `?dat=` or `?Date=` answered today's allocation with a 200, as if no date was asked
    for params, field, message in (
        ({"dat": "2020-03-20"}, "query.dat", "unknown query parameter; expected date"),
        ({"Date": "2020-03-20"}, "query.Date", "unknown query parameter; expected date"),
        ([("date", "2020-03-20"), ("date", "2020-03-27")], "query.date", "given more than once"),
    ):
        assert _fields(client.get("/v1/profiles/balanced/allocation", params=params))[field].startswith(message)
    assert _fields(client.get("/v1/profiles", params={"x": "1"}))["query.x"] == (
        "unknown query parameter; expected none")
    # after the key check, as every 422: no key is a 401, not a list of parameter names
    without_key = httpx.get(f"{api['server'].base}/v1/profiles", params={"x": "1"}, timeout=60)
    assert without_key.status_code == 401


# --- keys, budgets, headers -----------------------------------------------------------


def test_keys_are_required_checked_and_revocable(api) -> None:
    base, keys = api["server"].base, api["keys"]
    path = "/v1/profiles"
    missing = httpx.get(base + path)
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == "Bearer"
    assert missing.json()["message"].startswith("no API key")
    key_id = keys["leaving"].split("_")[1]
    for wrong in ("nonsense", keys["leaving"][:-1] + ("A" if keys["leaving"][-1] != "A" else "B"),
                  f"lvb_{'0' * 12}_{'x' * 43}"):
        refused = httpx.get(base + path, headers={"Authorization": f"Bearer {wrong}"})
        assert refused.status_code == 401 and refused.json()["message"] == "invalid API key"
    basic = httpx.get(base + path, headers={"Authorization": f"Basic {keys['leaving']}"})
    assert basic.status_code == 401
    # An unauthenticated request is refused before its body is read.
    assert httpx.post(base + "/v1/plan", content="{", headers={"Content-Type": "application/json"}).status_code == 401

    assert httpx.get(base + path, headers={"X-API-Key": keys["leaving"]}).status_code == 200
    code, out, _err = _cli("api-keys", "revoke", key_id, "--database", api["url"])
    assert code == 0 and "revoked" in out
    revoked = httpx.get(base + path, headers={"X-API-Key": keys["leaving"]})
    assert revoked.status_code == 403 and revoked.json()["message"].startswith(f"API key lvb_{key_id}_*** was revoked")
    # A wrong secret for the revoked key's id learns nothing about it.
    assert httpx.get(base + path, headers={"X-API-Key": f"lvb_{key_id}_{'y' * 43}"}).status_code == 401


def test_each_key_has_its_own_budget(api) -> None:
    base, keys = api["server"].base, api["keys"]
    limited = {"Authorization": f"Bearer {keys['limited']}"}
    answers = [httpx.get(base + "/v1/profiles", headers=limited) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert 1 <= int(answers[-1].headers["Retry-After"]) <= 20  # one request every 20 s
    assert "rate limit of 3 requests a minute" in answers[-1].json()["message"]
    assert api["client"].get("/v1/profiles").status_code == 200  # other keys are not affected


def test_failed_key_checks_are_limited_per_address(api) -> None:
    """From another loopback address: the failures budget is per client address."""
    base, keys = api["server"].base, api["keys"]
    with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"), base_url=base) as other:
        assert other.get("/v1/profiles", headers={"X-API-Key": keys["main"]}).status_code == 200
        codes = [other.get("/v1/profiles", headers={"X-API-Key": f"lvb_{i:012x}_{'z' * 43}"}).status_code
                 for i in range(31)]
        assert codes == [401] * 30 + [429]
        blocked = other.get("/v1/profiles", headers={"X-API-Key": keys["fresh"]})
        assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) >= 1
        # A key verified before needs no slow check: it still passes (behind one proxy,
        # every client shares the address whose budget junk requests spent).
        assert other.get("/v1/profiles", headers={"X-API-Key": keys["main"]}).status_code == 200
    assert httpx.get(base + "/v1/profiles", headers={"X-API-Key": keys["fresh"]}).status_code == 200


def test_docs_headers_and_logs(api) -> None:
    client, server, keys = api["client"], api["server"], api["keys"]
    spec = client.get("/openapi.json").json()
    assert set(spec["paths"]) >= {
        "/v1/profiles", "/v1/profiles/{profile}/allocation", "/v1/profiles/{profile}/suitability",
        "/v1/plan", "/v1/accounts/{account}",
    }
    assert {"HTTPBearer", "APIKeyHeader"} <= set(spec["components"]["securitySchemes"])
    assert "401" in spec["paths"]["/v1/plan"]["post"]["responses"]
    assert "401" not in spec["paths"]["/healthz"]["get"]["responses"]
    huge = client.post("/v1/plan", content=b"{" + b" " * 70_000 + b"}",
                       headers={"Content-Type": "application/json"})
    assert huge.status_code == 413 and "at most 65536 bytes" in huge.json()["message"]

    def chunks():
        yield b'{"profile": "balanced", "cash": 1}'

    assert client.post("/v1/plan", content=chunks(), headers={"Content-Type": "application/json"}).status_code == 411
    docs = httpx.get(server.base + "/docs")
    assert docs.status_code == 200 and "swagger-ui" in docs.text
    # Swagger UI comes from this server: no CDN, and the page's policy allows no other host
    assert re.findall(r"https?://", docs.text) == []
    assert "script-src 'self' 'unsafe-inline'" in docs.headers["Content-Security-Policy"]
    assets = re.findall(r'(?:src|href)="(/docs-assets/[^"]+)"', docs.text)
    assert {a.rsplit("/", 1)[1] for a in assets} >= {"swagger-ui-bundle.js", "swagger-ui.css"}
    for asset in assets:
        served = httpx.get(server.base + asset)
        assert served.status_code == 200 and len(served.content) > 1000, asset
    answer = client.get("/v1/profiles")
    for header, value in (("X-Content-Type-Options", "nosniff"), ("X-Frame-Options", "DENY"),
                          ("Cache-Control", "no-store"), ("Referrer-Policy", "no-referrer"),
                          ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")):
        assert answer.headers[header] == value
    assert "server" not in answer.headers

    text = server.log()
    for key in keys.values():
        assert key not in text and key.split("_", 2)[2] not in text
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    mine = [r for r in lines if r.get("event") == "api.request" and r["path"] == "/v1/profiles"]
    main_id = keys["main"].split("_")[1]
    assert any(r["caller"] == f"lvb_{main_id}_***" and r["status"] == 200 for r in mine)
    assert "authorization" not in text.lower()


# --- the commands and the parts, without a server ------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from backend_url(request, tmp_path)


def test_api_keys_commands_store_only_a_hash(url) -> None:
    code, out, err = _cli("api-keys", "create", "web platform", "--rate-limit", "120",
                          "--all-accounts", "--database", url)
    assert code == 0 and "shown only once" in err and "reads every client account" in out
    key = out.split()[-1]
    assert key.startswith("lvb_") and len(key) == 4 + 12 + 1 + 43
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT key_id, key_hash, name, rate_per_minute FROM api_keys")).one()
    engine.dispose()
    assert row.key_hash.startswith("$argon2id$") and key not in row.key_hash
    assert (row.key_id, row.name, row.rate_per_minute) == (key.split("_")[1], "web platform", 120)

    code, out, _ = _cli("api-keys", "list", "--format", "json", "--database", url)
    (listed,) = json.loads(out)
    assert listed["key"] == f"lvb_{row.key_id}_***" and listed["revoked_at"] is None
    assert key.split("_", 2)[2] not in out and "argon2" not in out

    assert _cli("api-keys", "revoke", f"lvb_{row.key_id}", "--database", url)[0] == 0
    code, _, err = _cli("api-keys", "revoke", "1", "--database", url)
    assert code == 2 and "already revoked" in err
    code, _, err = _cli("api-keys", "revoke", "lvb_ffffffffffff", "--database", url)
    assert code == 2 and "no API key" in err
    code, _, err = _cli("api-keys", "create", "  ", "--all-accounts", "--database", url)
    assert code == 2 and "name: expected 1-100 printable characters" in err


def test_api_keys_for_some_accounts_name_them_and_refuse_unknown_ones(url) -> None:
    log = TradeLog.open(url)
    registry = AccountRegistry(log.engine)
    first = registry.add(AccountSpec(ACCOUNT, "balanced"), T1).id
    second = registry.add(AccountSpec(QUIET, "aggressive"), T1).id
    log.close()

    with pytest.raises(SystemExit) as usage:  # a key's reach is always said, never assumed
        _cli("api-keys", "create", "app", "--database", url)
    assert usage.value.code == 2
    code, _, err = _cli("api-keys", "create", "app", "--account", "12345", "--database", url)
    assert code == 2 and "no account 12345 in the registry" in err
    code, out, _ = _cli("api-keys", "create", "app", "--account", str(first), "--account", QUIET,
                        "--account", ACCOUNT, "--database", url)
    assert code == 0 and f"reads client accounts {first}, {second}" in out
    assert _cli("api-keys", "create", "back end", "--all-accounts", "--database", url)[0] == 0
    code, out, _ = _cli("api-keys", "list", "--format", "json", "--database", url)
    assert [(k["name"], k["accounts"]) for k in json.loads(out)] == [
        ("app", f"{first}, {second}"), ("back end", "all")]


def test_serve_refuses_other_addresses_without_allow_remote(tmp_path) -> None:
    code, _, err = _cli("serve", "--host", "0.0.0.0", "--database", f"sqlite:///{tmp_path / 'x.sqlite'}")
    assert code == 2 and "--host 0.0.0.0: not a loopback address" in err and "--allow-remote" in err
    code, _, err = _cli("serve", "--database", f"sqlite:///{tmp_path / 'x.sqlite'}")
    assert code == 2 and "create an API key first" in err
    with pytest.raises(SystemExit):
        _cli("serve", "--port", "70000")
    from bot.api.cli import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert is_loopback("[::1]") and not is_loopback("0.0.0.0") and not is_loopback("example.org")


def test_token_buckets_refill_at_their_rate() -> None:
    now = [0.0]
    buckets = TokenBuckets(clock=lambda: now[0])
    assert [buckets.take("k", 3) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("k", 3) == pytest.approx(20.0)  # 3 a minute: one every 20 s
    assert buckets.wait("other", 3) == 0.0 and buckets.take("other", 3) == 0.0  # its own bucket
    now[0] = 10.0
    assert buckets.wait("k", 3) == pytest.approx(10.0) and buckets.take("k", 3) == pytest.approx(10.0)
    now[0] = 20.0
    assert buckets.take("k", 3) == 0.0 and buckets.take("k", 3) == pytest.approx(20.0)
    now[0] = 1000.0  # refills to the bucket's size, no further
    assert [buckets.take("k", 3) for _ in range(4)][-1] > 0
    assert retry_after(0.2) == "1" and retry_after(19.01) == "20"


def test_a_verified_key_is_not_hashed_again_and_a_wrong_one_never_passes(tmp_path, monkeypatch) -> None:
    import bot.api.keys as keys_module

    log = TradeLog.open(f"sqlite:///{tmp_path / 'k.sqlite'}")
    store = ApiKeyStore(log.engine)
    _row, key = store.create("platform", None, dt.datetime.now(dt.UTC))
    calls = []
    real = keys_module._hasher

    class Counting:
        def verify(self, key_hash: str, presented: str) -> bool:
            calls.append(presented)
            return real.verify(key_hash, presented)

    monkeypatch.setattr(keys_module, "_hasher", Counting())
    auth = Authenticator(store)
    assert [auth.check(key).verdict for _ in range(3)] == [Verdict.OK] * 3
    assert len(calls) == 1
    wrong = key[:-2] + ("aa" if not key.endswith("aa") else "bb")
    assert auth.check(wrong).verdict is Verdict.INVALID and len(calls) == 1  # refused by digest
    assert Authenticator(store).check(wrong).verdict is Verdict.INVALID  # and by argon2
    assert auth.check(None).verdict is Verdict.MISSING and auth.check("").verdict is Verdict.MISSING
    log.close()


def test_a_bug_is_answered_as_json_with_the_headers_and_logged(tmp_path, capsys) -> None:
    import asyncio

    from bot.api.app import create_app
    from bot.api.profiles import ProfileBook

    log = TradeLog.open(f"sqlite:///{tmp_path / 'k.sqlite'}")
    _row, key = ApiKeyStore(log.engine).create("platform", None, dt.datetime.now(dt.UTC))
    book = ProfileBook({"broken": object()}, None, False)  # no settings: profile_view fails
    app = create_app(book, log.engine)

    async def ask() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return await client.get("/v1/profiles", headers={"Authorization": f"Bearer {key}"})

    answer = asyncio.run(ask())
    log.close()
    assert answer.status_code == 500
    assert answer.json() == {"error": "internal server error", "message": "the request failed; see the server's log"}
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    logged = capsys.readouterr()
    assert "AttributeError" in logged.out + logged.err and key not in logged.out + logged.err


def test_swagger_ui_renders_offline_under_its_policy(api, tmp_path) -> None:
    """In headless Chromium: the page draws every operation from this server's own
    Swagger UI files, under the page's Content-Security-Policy (nothing from a CDN)."""
    from tests.test_dashboard import chromium

    proc = chromium("--virtual-time-budget=8000", "--dump-dom", api["server"].base + "/docs",
                    tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    paths = set(re.findall(r'class="opblock-summary-path" data-path="([^"]+)"', proc.stdout))
    assert paths >= {"/v1/profiles", "/v1/plan", "/v1/accounts/{account}"}


def _in_process(tmp_path, limits=None):
    """The app in this process over a fresh key store ("main": the default budget,
    "limited": 3 a minute), with no profile loaded (the routes below need none)."""
    from bot.api.app import Limits, create_app
    from bot.api.profiles import ProfileBook

    log = TradeLog.open(f"sqlite:///{tmp_path / 'k.sqlite'}")
    store = ApiKeyStore(log.engine)
    now = dt.datetime.now(dt.UTC)
    keys = {name: store.create(name, rate, now)[1] for name, rate in (("main", None), ("limited", 3))}
    return create_app(ProfileBook({}, None, False), log.engine, limits or Limits()), keys, log


def _ask_at_once(app, requests: list[tuple[str, str, dict, bytes | None]]) -> list[httpx.Response]:
    """(method, path, headers, body) requests sent all at once to the app in this process."""
    import asyncio

    async def ask() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1", timeout=120) as client:
            return await asyncio.gather(*[client.request(m, p, headers=h, content=b) for m, p, h, b in requests])

    return asyncio.run(ask())


def test_concurrent_wrong_keys_run_no_more_argon2_checks_than_the_failures_budget(tmp_path, monkeypatch) -> None:
    """Wrong secrets for a real key id (each one an argon2 verification, 64 MiB), sent
    all at once: each is charged before it is verified, so at most the budget's 10 run."""
    import threading

    import bot.api.keys as keys_module
    from bot.api.app import Limits

    calls, lock, real = [], threading.Lock(), keys_module._hasher

    class Counting:
        def verify(self, key_hash: str, presented: str) -> bool:
            with lock:
                calls.append(presented)
            return real.verify(key_hash, presented)

    app, keys, log = _in_process(tmp_path, Limits(auth_failures_per_minute=10))
    monkeypatch.setattr(keys_module, "_hasher", Counting())
    wrong = f"lvb_{keys['main'].split('_')[1]}_{'A' * 43}"
    answers = _ask_at_once(app, [("GET", "/v1/profiles", {"X-API-Key": wrong}, None)] * 40)
    codes = [a.status_code for a in answers]
    assert len(calls) <= 11 and codes.count(401) == len(calls)  # 10, and one more if a token refilled
    assert codes.count(429) == 40 - len(calls)
    # The right key, never verified by this server yet, waits like any other check.
    assert _ask_at_once(app, [("GET", "/v1/profiles", {"X-API-Key": keys["main"]}, None)])[0].status_code == 429
    log.close()


def test_a_right_key_gives_back_the_failure_it_was_charged(tmp_path) -> None:
    log = TradeLog.open(f"sqlite:///{tmp_path / 'k.sqlite'}")
    store = ApiKeyStore(log.engine)
    _row, key = store.create("platform", None, dt.datetime.now(dt.UTC))
    buckets = TokenBuckets(clock=lambda: 0.0)  # no refill: every token counts

    class Budget:
        def take(self) -> float:
            return buckets.take("127.0.0.9", 2)

        def give_back(self) -> None:
            buckets.give_back("127.0.0.9", 2)

    auth = Authenticator(store)
    assert auth.check(key, Budget()).verdict is Verdict.OK  # argon2: charged, then refunded
    assert auth.check(key, Budget()).verdict is Verdict.OK  # by digest: not charged
    wrong = f"lvb_{'0' * 12}_{'x' * 43}"
    assert [auth.check(wrong, Budget()).verdict for _ in range(3)] == [
        Verdict.INVALID, Verdict.INVALID, Verdict.THROTTLED]
    throttled = Authenticator(store).check(key, Budget())  # a new process: argon2 again
    assert throttled.verdict is Verdict.THROTTLED and throttled.wait == pytest.approx(30.0)
    log.close()


def test_bodies_the_json_parser_refuses_need_a_key_spend_its_budget_and_name_the_body(tmp_path) -> None:
    """An integer of 5000 digits or 5000 nested arrays is JSON text the parser refuses:
    answered like any bad body, after the key check and out of the key's budget."""
    app, keys, log = _in_process(tmp_path)
    long_number = b'{"profile": "balanced", "cash": ' + b"9" * 5000 + b"}"
    deep = b"[" * 5000 + b"]" * 5000
    json_type = {"Content-Type": "application/json"}
    for body in (long_number, deep):
        (anonymous,) = _ask_at_once(app, [("POST", "/v1/plan", json_type, body)])
        assert anonymous.status_code == 401 and anonymous.json()["message"].startswith("no API key")
    limited = {**json_type, "X-API-Key": keys["limited"]}
    answers = [_ask_at_once(app, [("POST", "/v1/plan", limited, body)])[0]
               for body in (long_number, deep, long_number, deep)]
    assert [a.status_code for a in answers] == [422, 422, 422, 429]
    assert answers[0].json()["fields"] == [
        {"field": "body", "message": f"not valid JSON (a number of more than {sys.get_int_max_str_digits()} digits)"}]
    assert answers[1].json()["fields"] == [{"field": "body", "message": "not valid JSON (nested too deeply)"}]
    assert answers[3].json()["message"].startswith("rate limit of 3 requests a minute")
    log.close()


def test_a_key_id_of_digits_only_is_found_as_a_key_id(tmp_path, monkeypatch) -> None:
    """About one key id in 300 is 12 decimal digits; it was read as a row id, so creating
    such a key failed ("no API key '877902854071'") and it could not be shown or revoked."""
    from bot.api import keys as keys_module

    monkeypatch.setattr(keys_module.secrets, "token_hex", lambda _n: "877902854071")
    log = TradeLog.open(f"sqlite:///{tmp_path / 'digits.sqlite'}")
    store = ApiKeyStore(log.engine)
    row, key = store.create("digits", None, dt.datetime.now(dt.UTC))
    assert row.key_id == "877902854071" and store.get("877902854071").key_id == "877902854071"
    assert store.get(str(row.id)).key_id == "877902854071"  # the row id still works
    assert store.find("99999999999999999999") is None  # no overflow
    assert store.revoke("lvb_877902854071", dt.datetime.now(dt.UTC)).key_id == "877902854071"
    log.close()


def test_a_holding_without_a_price_that_day_is_refused_and_unranked_etfs_have_no_z(shared_data) -> None:
    """Balanced on 2000-01-03, seven years before BND listed: a plan holding 10 BND valued
    them at 0 and planned nothing for them; and an ETF left out of the ranking showed
    z 0.0, which reads as "average" rather than "missing"."""
    from bot.api.profiles import FieldProblem, ProfileBook, allocation_view, default_specs

    book = ProfileBook.load([s for s in default_specs() if s.name == "balanced"], shared_data)
    with pytest.raises(FieldProblem) as problem:
        book.plan("balanced", {"BND": 10.0, "SPY": 1.0}, 1000.0, dt.date(2000, 1, 3))
    assert problem.value.field == "holdings.BND"
    assert "BND has no price on 2000-01-03 (not listed yet" in problem.value.message
    body = allocation_view(book.decision("balanced", dt.date(2000, 1, 3)), dt.date(2000, 1, 3))
    bnd = next(a for a in body["assets"] if a["symbol"] == "BND")
    assert not bnd["ranked"] and all(s["z"] is None for s in bnd["signals"].values())
    ranked = [a for a in body["assets"] if a["ranked"]]
    assert all(s["z"] is not None for a in ranked for s in a["signals"].values())


def test_serve_beyond_this_machine_refuses_a_synthetic_market(tmp_path, monkeypatch) -> None:
    """With no price data the profiles fall back to the synthetic market: fine on the
    loopback (answers say `synthetic`), but `--allow-remote` would serve clients made-up
    allocations; it refuses unless --synthetic asks for them."""
    monkeypatch.delenv("BOT_DATA_DIR", raising=False)
    url = f"sqlite:///{tmp_path / 'x.sqlite'}"
    assert _cli("api-keys", "create", "app", "--all-accounts", "--database", url)[0] == 0
    code, _, err = _cli("serve", "--host", "0.0.0.0", "--allow-remote", "--database", url)
    assert code == 2
    assert "SYNTHETIC market" in err and "bot data fetch" in err and "--synthetic" in err


def test_a_first_burst_of_the_right_key_runs_argon2_once_and_is_never_throttled(tmp_path, monkeypatch) -> None:
    """40 requests of a key this process had not verified yet: each ran its own argon2
    (64 MiB each, 2 GB for the burst), and the failures charged meanwhile answered 9 of
    them 429. Checks of one key id now wait for the first, and argon2 runs at most
    SLOW_CHECKS_AT_ONCE at a time whatever the keys."""
    import threading

    import bot.api.keys as keys_module

    log = TradeLog.open(f"sqlite:///{tmp_path / 'k.sqlite'}")
    store = ApiKeyStore(log.engine)
    _row, key = store.create("platform", None, dt.datetime.now(dt.UTC))
    real, running, most, calls = keys_module._hasher, [0], [0], []
    guard = threading.Lock()

    class Counting:
        def verify(self, key_hash: str, presented: str) -> bool:
            with guard:
                running[0] += 1
                most[0] = max(most[0], running[0])
                calls.append(presented)
            try:
                return real.verify(key_hash, presented)
            finally:
                with guard:
                    running[0] -= 1

    others = [store.create(f"k{i}", None, dt.datetime.now(dt.UTC))[1] for i in range(4)]
    monkeypatch.setattr(keys_module, "_hasher", Counting())
    buckets = TokenBuckets(clock=lambda: 0.0)

    class Budget:  # three failures a minute for the address
        def take(self) -> float:
            return buckets.take("addr", 3)

        def give_back(self) -> None:
            buckets.give_back("addr", 3)

    auth = Authenticator(store)
    verdicts: list[Verdict] = []
    threads = [threading.Thread(target=lambda: verdicts.append(auth.check(key, Budget()).verdict))
               for _ in range(16)]
    threads += [threading.Thread(target=lambda k=k: Authenticator(store).check(k)) for k in others]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert verdicts == [Verdict.OK] * 16
    assert calls.count(key) == 1
    assert most[0] <= keys_module.SLOW_CHECKS_AT_ONCE
    log.close()


def test_what_the_fuzzer_got_through_is_refused(api) -> None:
    """Found by schemathesis and by hand against `bot serve`: a chunked body beside a
    Content-Length was read whole past the 64 KiB limit (300 MB parsed), a text/plain
    body drew "Input should be a valid dictionary", 6,000 bad holdings a 958 KB answer,
    and a plan whose small sell was dropped spent more cash than the client had."""
    import contextlib
    import socket

    client, server = api["client"], api["server"]
    key = client.headers["Authorization"]
    body = b'{"profile":"balanced","cash":1' + b" " * 200_000 + b"}"
    head = (f"POST /v1/plan HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {key}\r\n"
            "Content-Type: application/json\r\nContent-Length: 10\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode()
    chunk = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head)
        with contextlib.suppress(OSError):  # refused before the body was read
            sock.sendall(chunk)
        answer = sock.recv(4096).decode(errors="replace")
    assert answer.startswith("HTTP/1.1 400"), answer[:200]

    text = client.post("/v1/plan", content=b'{"profile":"balanced","cash":100}',
                       headers={"Content-Type": "text/plain"})
    assert text.status_code == 415 and "application/json" in text.json()["message"]

    many = client.post("/v1/plan", json={"profile": "balanced", "cash": 100,
                                         "holdings": {f"X{i}": "a" for i in range(5000)}})
    assert many.status_code == 422 and len(many.json()["fields"]) == 20
    assert many.json()["message"].endswith("more") and len(many.content) < 20_000

    plan = client.post("/v1/plan", json={"profile": "balanced", "cash": 10_000, "holdings": {"SPY": 0.1}})
    assert plan.status_code == 200
    assert plan.json()["cash_after"] >= 0
    assert all(o["side"] == "buy" for o in plan.json()["orders"])  # the small sell dropped


def test_a_key_given_twice_in_a_json_body_is_refused(api) -> None:
    """`{"cash": 100, "cash": 200}` planned with 200 (the parser keeps the last), where a
    query parameter given twice is refused."""
    client = api["client"]
    for body in (b'{"profile":"balanced","cash":100,"cash":200}',
                 b'{"profile":"balanced","cash":100,"holdings":{"SPY":1,"SPY":2}}'):
        got = client.post("/v1/plan", content=body, headers={"Content-Type": "application/json"})
        assert got.status_code == 422, got.text
        assert "is given more than once in one object" in got.json()["message"]
    anonymous = httpx.post(f"{api['server'].base}/v1/plan", content=b'{"cash":1,"cash":2}',
                           headers={"Content-Type": "application/json"})
    assert anonymous.status_code == 401  # after the key check, as every bad body
    assert client.post("/v1/plan", json={"profile": "balanced", "cash": 100}).status_code == 200


def test_the_review_of_the_fuzzing_fixes(api) -> None:
    """What a review of the fixes above found: float noise labelled plans as cut (and left
    cash_after at -2e-13), a cut buy fell below the $50 minimum trade, +json types and an
    empty POST drew 415 (before the key check), and a repeated key named "digits" was
    reported as a huge number."""
    client, server = api["client"], api["server"]
    exact = client.post("/v1/plan", json={"profile": "conservative", "cash": 100,
                                          "holdings": {"VYM": 5}}).json()  # buys = cash + sells
    assert exact["cash_after"] >= 0
    assert not any("cut to the cash" in o["reason"] for o in exact["orders"])
    cut = client.post("/v1/plan", json={"profile": "balanced", "cash": 100,  # a $49 sell dropped
                                        "holdings": {"SPY": 0.1, "BND": 34.17635762929787}}).json()
    assert cut["cash_after"] >= 0 and any("cut to the cash" in o["reason"] for o in cut["orders"])
    small = client.post("/v1/plan", json={"profile": "balanced", "cash": 10,
                                          "holdings": {"BND": 1, "VNQ": 0.3}}).json()
    assert all(o["notional"] >= 50 for o in small["orders"] if o["side"] == "buy")
    assert small["cash_after"] >= 0

    payload = b'{"profile":"balanced","cash":100}'
    for media in ("application/vnd.api+json", "application/json; charset=utf-8"):
        assert client.post("/v1/plan", content=payload, headers={"Content-Type": media}).status_code == 200
    empty = httpx.post(f"{server.base}/v1/plan", headers={"Content-Length": "0"})
    assert empty.status_code == 401  # the key check first, as for any bad body
    digits = client.post("/v1/plan", content=b'{"profile":"balanced","cash":1,"digits":1,"digits":2}',
                         headers={"Content-Type": "application/json"})
    assert digits.status_code == 422 and "'digits' is given more than once" in digits.json()["message"]


def test_a_verified_key_never_waits_behind_another_check_of_its_id(tmp_path) -> None:
    """Checks of one key id are taken one at a time; a verified key's digest comparison
    was queued behind a wrong secret's failure charge (a Redis call when shared)."""
    import threading
    import time as clock

    log = TradeLog.open(f"sqlite:///{tmp_path / 'k.sqlite'}")
    store = ApiKeyStore(log.engine)
    _row, key = store.create("platform", None, dt.datetime.now(dt.UTC))
    auth = Authenticator(store)
    assert auth.check(key).verdict is Verdict.OK  # verified

    class SlowBudget:
        def take(self) -> float:
            clock.sleep(1.5)  # a slow Redis
            return 0.0

        def give_back(self) -> None:
            pass

    wrong = key[:-2] + ("aa" if not key.endswith("aa") else "bb")
    slow = threading.Thread(target=lambda: auth.check(wrong, SlowBudget()))
    slow.start()
    clock.sleep(0.2)
    started = clock.monotonic()
    assert auth.check(key).verdict is Verdict.OK
    assert clock.monotonic() - started < 0.5
    slow.join(10)
    log.close()


def test_head_is_get_without_a_body_and_the_document_is_as_strict_as_the_server(api) -> None:
    client = api["client"]
    head, get = client.head("/v1/profiles"), client.get("/v1/profiles")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == get.headers["content-length"] != "0"
    assert head.headers["X-Content-Type-Options"] == "nosniff"
    assert client.head("/healthz").status_code == 200
    assert httpx.head(api["server"].base + "/v1/profiles").status_code == 401  # the key check runs
    assert client.head("/v1/plan").status_code == 405  # a POST route stays POST only
    spec = client.get("/openapi.json").json()
    assert set(spec["paths"]["/v1/plan"]["post"]["responses"]) >= {"400", "411", "413", "415", "422"}
    plan = spec["components"]["schemas"]["PlanRequest"]["properties"]
    assert plan["profile"]["enum"] == ["conservative", "balanced", "aggressive"]
    assert plan["holdings"]["additionalProperties"] is False
    (profile,) = [p for p in spec["paths"]["/v1/profiles/{profile}/allocation"]["get"]["parameters"]
                  if p["name"] == "profile"]
    assert profile["schema"]["enum"] == ["conservative", "balanced", "aggressive"]
