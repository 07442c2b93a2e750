"""Notifications: real apprise, real HTTP and SMTP on 127.0.0.1, and the daemon's jobs.

Discord, Slack and Telegram are reached through apprise's own service classes aimed at a
local fake (their hosts are fixed); email goes to an aiosmtpd server with a login.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import time
from collections.abc import Iterator

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from bot.config import parse_settings
from bot.daemon.jobs import DaemonContext, TradingJobs
from bot.daemon.replay import replay
from bot.data.synthetic import synthetic_market
from bot.notify import messages
from bot.notify.sender import (
    Notifier,
    NotifyError,
    build_apprise,
    load_urls,
    repeat_key,
    secret_parts,
)
from bot.store.tradelog import TradeLog
from bot.types import EquityPoint, Fill, Regime, RiskEvent, Side
from tests.fakes.webhooks import FakeWebhooks, Fault, point_apprise_at

DISCORD_TOKEN = "WebhookTokenSecret0123456789abcdef"
TELEGRAM_TOKEN = "123456789:AAHsecretTelegramToken_value"
SLACK_TOKEN = "SlackSecretTokenC3"
MAIL_PASSWORD = "MailPassw0rdSecret"
WEBHOOK = "/api/webhooks/{webhook_id}/{token}"


@pytest.fixture
def hooks(monkeypatch) -> Iterator[FakeWebhooks]:
    fake = FakeWebhooks()
    fake.start()
    point_apprise_at(monkeypatch, fake.url)
    yield fake
    fake.stop()


class Mailbox:
    """An SMTP server on 127.0.0.1 that wants a login and keeps what it receives."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], str]] = []
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.controller = Controller(
            self, hostname="127.0.0.1", port=self.port, auth_require_tls=False,
            authenticator=self.login,
        )

    @staticmethod
    def login(server, session, envelope, mechanism, auth_data) -> AuthResult:
        return AuthResult(success=(auth_data.login, auth_data.password) == (b"bot", MAIL_PASSWORD.encode()))

    async def handle_DATA(self, server, session, envelope) -> str:
        self.messages.append((envelope.mail_from, envelope.rcpt_tos, envelope.content.decode()))
        return "250 OK"


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox()
    box.controller.start()
    yield box
    box.controller.stop()


def service_urls(hooks: FakeWebhooks, mailbox: Mailbox) -> list[str]:
    port = hooks.url.rsplit(":", 1)[1]
    return [
        f"discord://1234567890/{DISCORD_TOKEN}",
        f"slack://T1ABCDEF/B2ABCDEF/{SLACK_TOKEN}",
        f"tgram://{TELEGRAM_TOKEN}/987654",
        f"json://127.0.0.1:{port}/notify",
        f"mailto://bot:{MAIL_PASSWORD}@127.0.0.1:{mailbox.port}?smtp=127.0.0.1"
        "&from=bot@example.com&to=ops@example.com&mode=insecure",
    ]


def test_one_message_reaches_discord_slack_telegram_json_and_email(hooks, mailbox) -> None:
    notifier = Notifier(build_apprise(service_urls(hooks, mailbox)), ["trades"], "[lev paper]")
    notifier.send("trades", "2 fills", "BUY 3 TQQQ @ 50.0000\nSELL 1 TMF @ 7.2500")
    notifier.send("daily", "not wanted", "events lists only trades")
    notifier.close()
    assert notifier.take_failures() == []

    routes = [("POST", WEBHOOK), ("POST", "/services/{a}/{b}/{c}"),
              ("POST", "/bot{token}/sendMessage"), ("POST", "/notify")]
    for route in routes:
        (text,) = hooks.texts(*route)  # exactly one message: the unwanted kind was not sent
        assert "[lev paper] 2 fills" in text and "SELL 1 TMF @ 7.2500" in text, route
    assert hooks.calls(*routes[0])[0].path.endswith(DISCORD_TOKEN)  # the real Discord path
    telegram = hooks.calls(*routes[2])[0]
    assert telegram.path == f"/bot{TELEGRAM_TOKEN}/sendMessage" and telegram.body["chat_id"] == 987654
    ((sender, recipients, mail),) = mailbox.messages
    assert sender == "bot@example.com" and recipients == ["ops@example.com"]
    assert "Subject: [lev paper] 2 fills" in mail and "BUY 3 TQQQ" in mail


def test_a_failed_delivery_is_reported_masked_and_the_sender_carries_on(hooks, mailbox, capsys) -> None:
    hooks.inject("POST", WEBHOOK, Fault.error(500, message=f"bad token {DISCORD_TOKEN}"))
    hooks.inject("POST", "/services/{a}/{b}/{c}", Fault.passthrough(), Fault.error(403))
    notifier = Notifier(build_apprise(service_urls(hooks, mailbox)), ["failures"], "[lev live]")
    notifier.send("failures", "job 'open' failed", "boom")
    notifier.send("failures", "job 'close' failed", "boom again")
    notifier.close()
    failures = notifier.take_failures()
    assert [f.title for f in failures] == ["[lev live] job 'open' failed", "[lev live] job 'close' failed"]
    assert "Discord" in failures[0].error and "Slack" not in failures[0].error
    assert "Slack" in failures[1].error and "Discord" not in failures[1].error  # Discord recovered
    assert len(hooks.texts("POST", WEBHOOK)) == 2 and len(hooks.texts("POST", "/notify")) == 2
    assert len(mailbox.messages) == 2  # the other services got both
    printed = capsys.readouterr()
    everything = printed.out + printed.err + " ".join(f.error for f in failures)
    assert "notification not delivered" in printed.out + printed.err
    for secret in (DISCORD_TOKEN, MAIL_PASSWORD, SLACK_TOKEN, TELEGRAM_TOKEN.split(":")[1]):
        assert secret not in everything


def test_urls_come_from_the_environment_or_the_secrets_file(tmp_path) -> None:
    secrets = tmp_path / "secrets"
    secrets.write_text("APCA_API_KEY_ID=x\nBOT_NOTIFY_URLS=json://127.0.0.1:9/a  discord://1/2\n")
    secrets.chmod(0o600)
    assert load_urls({"BOT_SECRETS_FILE": str(secrets)}) == ["json://127.0.0.1:9/a", "discord://1/2"]
    assert load_urls({"BOT_NOTIFY_URLS": "json://127.0.0.1:9/b", "BOT_SECRETS_FILE": str(secrets)}) == [
        "json://127.0.0.1:9/b"]
    assert load_urls({}) == []
    with pytest.raises(NotifyError) as bad:
        build_apprise(["json://127.0.0.1:9/a", "nosuchservice://user:Sup3rSecretTok@host/x"])
    assert "BOT_NOTIFY_URLS item 2 (nosuchservice://...)" in str(bad.value)
    assert "Sup3rSecretTok" not in str(bad.value)


def test_the_secret_parts_of_a_url_are_what_its_privacy_form_hides() -> None:
    url = f"discord://1234567890/{DISCORD_TOKEN}/?avatar=no"
    service = build_apprise([url])[0]
    parts = secret_parts(url, service.url(privacy=True))
    assert DISCORD_TOKEN in parts and "1234567890" in parts and "avatar" not in parts
    assert secret_parts("json://127.0.0.1:8080/hook", "json://127.0.0.1:8080/hook") == []
    # a query's parameter names are words, not secrets: "token" was masked in every message
    dropped = "json://127.0.0.1:8080/hook?method=POST"
    assert secret_parts("json://127.0.0.1:8080/hook?token=SeCrEtVaLuE123", dropped) == ["SeCrEtVaLuE123"]


def test_message_texts() -> None:
    at = dt.datetime(2024, 3, 4, 14, 35, tzinfo=dt.UTC)
    fills = [Fill("a", "TQQQ", Side.BUY, 10.5, 50.0, 0.0, 0.1, at), Fill("b", "TMF", Side.SELL, 2, 7.25, 0, 0, at)]
    title, body = messages.trades(fills)
    assert title == "2 fills (539.50)"
    assert body.splitlines() == ["BUY 10.5 TQQQ @ 50.0000 = 525.00 (2024-03-04 14:35 UTC)",
                                 "SELL 2 TMF @ 7.2500 = 14.50 (2024-03-04 14:35 UTC)"]
    title, body = messages.risk(dt.date(2024, 3, 4), [
        RiskEvent(dt.date(2024, 3, 4), "drawdown", "entered defensive mode"),
        RiskEvent(dt.date(2024, 3, 4), "stop", "stop hit", symbol="UPRO"),
        RiskEvent(dt.date(2024, 3, 4), "stop", "stop hit", symbol="TQQQ"),
    ])
    assert title == "risk rules on 2024-03-04: drawdown, stop"
    assert body.splitlines()[1] == "stop UPRO: stop hit"
    point = EquityPoint(dt.date(2024, 3, 4), 105_000.0, 5_000.0, 100_000.0, 0.02, Regime.GROWTH)
    title, body = messages.daily(point, 100_000.0, 3, 1)
    assert title == "close 2024-03-04: 105,000.00 (+5.00% on the day)"
    assert "drawdown 2.00% below the peak" in body and "regime GROWTH" in body
    assert "fills today 3, open orders 1" in body and "invested 95.2%" in body
    assert "on the day" not in messages.daily(point, None, 0, 0)[0]
    many = messages.trades([fills[0]] * 25)[1].splitlines()
    assert len(many) == 21 and many[-1] == "... and 5 more"


def _replay_settings(settings, notify_replay: bool):
    raw = settings.model_dump(mode="json")
    raw["notify"] = {"replay": notify_replay, "events": ["trades", "risk", "daily", "failures"]}
    return parse_settings(raw, "test")


@pytest.fixture(scope="module")
def small_market(settings):
    return synthetic_market(list(settings.symbols), "2023-01-03", "2023-03-31", seed=3)


def _replay(settings, market, tmp_path, notify_replay: bool) -> tuple[TradeLog, int, object]:
    log = TradeLog.open(f"sqlite:///{tmp_path / 'n.sqlite'}")
    run_id = log.start_run(mode="replay", strategy="t", config_hash="-", config={}, code_version="-",
                           data_source="-", synthetic=True, started_at=dt.datetime.now(dt.UTC))
    result = replay(_replay_settings(settings, notify_replay), market, log, run_id,
                    dt.date(2023, 2, 1), dt.date(2023, 2, 28))
    return log, run_id, result


def test_a_replay_notifies_only_when_asked(settings, small_market, hooks, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("BOT_NOTIFY_URLS", f"json://127.0.0.1:{hooks.url.rsplit(':', 1)[1]}/notify")
    log, _run, result = _replay(settings, small_market, tmp_path / "off", notify_replay=False)
    log.close()
    assert not result.failures and hooks.requests == []  # replays are quiet by default

    log, run_id, result = _replay(settings, small_market, tmp_path, notify_replay=True)
    assert not result.failures
    titles = [json.loads(json.dumps(r.body))["title"] for r in hooks.calls("POST", "/notify")]
    closes = [t for t in titles if " close 2023-02-" in t]
    assert len(closes) == len(log.load_equity(run_id))  # one daily summary per session
    assert all(t.startswith("[diversified_leverage replay] ") for t in titles)
    fills_told = sum(int(t.split(" fill")[0].rsplit(" ", 1)[1]) for t in titles if " fill" in t)
    assert fills_told == len(log.load_fills(run_id)) > 0
    risk_told = [t for t in titles if " risk rules on " in t]
    assert risk_told and len(risk_told) <= len({e for e in log.load_risk_events(run_id)["day"]})
    log.close()


def test_a_dead_webhook_never_fails_a_job_and_becomes_an_incident(settings, small_market, hooks,
                                                                  tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("BOT_NOTIFY_URLS", f"discord://1234567890/{DISCORD_TOKEN}")
    hooks.inject("POST", WEBHOOK, *[Fault.error(500)] * 200)
    log, run_id, result = _replay(settings, small_market, tmp_path, notify_replay=True)
    assert not result.failures and result.jobs_run > 50
    incidents = log.load_incidents(run_id)
    failed = incidents[incidents["kind"] == "notify_failed"]
    assert len(failed) == len(hooks.calls("POST", WEBHOOK)) > 20  # every message, each once
    assert failed["message"].str.contains("Discord").all()
    # dated in the replay's simulated time, as its other incidents (were the wall clock)
    assert all(at.year == 2023 for at in failed["at"])
    text = " ".join(failed["message"]) + json.dumps(list(failed["context"])) + capsys.readouterr().err
    assert DISCORD_TOKEN not in text
    log.close()


def test_a_failed_job_is_announced(hooks, tmp_path) -> None:
    port = hooks.url.rsplit(":", 1)[1]
    notifier = Notifier(build_apprise([f"json://127.0.0.1:{port}/notify"]), ["failures"], "[x paper]")
    jobs, log = _jobs_with(notifier, tmp_path)

    def broken() -> None:
        raise RuntimeError("feed down")

    assert jobs.run("open", broken) is False and jobs.run("poll", lambda: None) is True
    jobs.close()
    (request,) = hooks.calls("POST", "/notify")
    assert request.body["title"] == "[x paper] job 'open' failed"
    assert request.body["message"].startswith("RuntimeError: feed down\nat 2024-03-04 14:35 UTC")
    assert list(log.load_incidents()["kind"]) == ["job:open"]
    log.close()


def test_fills_in_the_answer_to_a_submit_are_announced_and_counted(hooks, tmp_path) -> None:
    """Alpaca often answers a market order already filled; the job that sent it records
    that fill from the answer, and the broker reports it only once. Before, only a poll's
    fills were announced and counted for the day's summary: these never were."""
    from types import SimpleNamespace

    from bot.types import Fill, Order, OrderRequest, OrderStatus, Side

    port = hooks.url.rsplit(":", 1)[1]
    notifier = Notifier(build_apprise([f"json://127.0.0.1:{port}/notify"]), ["trades"], "[x paper]")
    jobs, log = _jobs_with(notifier, tmp_path)
    at = dt.datetime(2024, 3, 4, 14, 35, tzinfo=dt.UTC)
    order = Order(OrderRequest("x-20240301-rb-SPY-buy", "x-20240301-rb", "SPY", Side.BUY, 2.0,
                               "rebalance", 500.0), OrderStatus.FILLED, at, "b-1", 2.0, 500.5)
    log.order(order)
    fill = Fill(order.request.client_order_id, "SPY", Side.BUY, 2.0, 500.5, 0.0, 1.0, at)
    jobs.ctx.broker = SimpleNamespace(take_reports=lambda: [(order, fill)])
    jobs.record_reports()
    assert jobs._fills_since_close == 1
    jobs.close()
    (request,) = hooks.calls("POST", "/notify")
    assert request.body["title"].startswith("[x paper] 1 fill")
    log.flush()
    assert len(log.load_fills(log.run_id)) == 1
    log.close()


def _jobs_with(notifier: Notifier, tmp_path) -> tuple[TradingJobs, TradeLog]:
    """Daemon jobs around `notifier` and a paper run's trade log, nothing else."""
    from bot.clock import SimulatedClock

    log = TradeLog.open(f"sqlite:///{tmp_path / 'jobs.sqlite'}")
    log.start_run(mode="paper", strategy="t", config_hash="-", config={}, code_version="-",
                  data_source="-", synthetic=False, started_at=dt.datetime.now(dt.UTC))
    ctx = DaemonContext(settings=None, feed=None, broker=None, tradelog=log,  # type: ignore[arg-type]
                        clock=SimulatedClock(dt.datetime(2024, 3, 4, 14, 35, tzinfo=dt.UTC)),
                        calendar=None, instance="x", mode="paper", order_prefix="x",  # type: ignore[arg-type]
                        notifier=notifier)
    return TradingJobs(ctx), log


def test_a_failure_that_repeats_is_notified_once_an_hour_and_stored_every_time(hooks, tmp_path) -> None:
    """A broker answering 429s for hours fails the poll job every few minutes. Before, each
    failure was a message: 90 in three hours. Now one an hour per failure title, saying
    how many were held back; every failure is still an incident."""
    port = hooks.url.rsplit(":", 1)[1]
    now = [0.0]
    notifier = Notifier(build_apprise([f"json://127.0.0.1:{port}/notify"]),
                        ["failures", "trades"], "[x paper]", clock=lambda: now[0])
    jobs, log = _jobs_with(notifier, tmp_path)

    def rate_limited() -> None:
        raise RuntimeError("poll: Alpaca trading API answered 429 after 8 tries")

    for _ in range(90):  # three hours of a poll every 2 minutes
        assert jobs.run("poll", rate_limited) is False
        now[0] += 120.0
    jobs.run("open", rate_limited)  # another job's failure is news: sent at once
    notifier.send("trades", "1 fill (10.00)", "BUY 1 X")
    notifier.send("trades", "1 fill (10.00)", "BUY 1 X")  # trades are never held back
    jobs.close()
    bodies = [(r.body["title"], r.body["message"]) for r in hooks.calls("POST", "/notify")]
    polls = [body for title, body in bodies if title == "[x paper] job 'poll' failed"]
    assert len(polls) == 3  # at 0, 60 and 120 minutes
    assert "29 more like it" not in polls[0] and "(29 more like it since the last message" in polls[1]
    assert [title for title, _ in bodies].count("[x paper] job 'open' failed") == 1
    assert [title for title, _ in bodies].count("[x paper] 1 fill (10.00)") == 2
    assert list(log.load_incidents()["kind"]).count("job:poll") == 90
    assert notifier.take_failures() == []
    log.close()


def test_a_new_kind_of_failure_of_a_job_is_sent_at_once(hooks, tmp_path) -> None:
    """The repeat window was keyed on the title alone ("job 'poll' failed"): after an hour
    of 429s, the account being blocked was held back for up to an hour. The error's first
    line counts now, without its numbers (a 429 after 8 tries is the 429 after 9)."""
    port = hooks.url.rsplit(":", 1)[1]
    now = [0.0]
    notifier = Notifier(build_apprise([f"json://127.0.0.1:{port}/notify"]), ["failures"], "[x paper]",
                        clock=lambda: now[0])
    jobs, log = _jobs_with(notifier, tmp_path)

    def failing(text: str):
        def job() -> None:
            raise RuntimeError(text)
        return job

    for text in ("poll: Alpaca trading API answered 429 after 8 tries",
                 "poll: Alpaca trading API answered 429 after 9 tries",  # the same failure
                 "poll: HTTP 403 40310000: account ACCOUNT_BLOCKED"):  # news
        jobs.run("poll", failing(text))
        now[0] += 120
    jobs.close()
    messages = [r.body["message"].split("\n")[0] for r in hooks.calls("POST", "/notify")]
    assert messages == ["RuntimeError: poll: Alpaca trading API answered 429 after 8 tries",
                        "RuntimeError: poll: HTTP 403 40310000: account ACCOUNT_BLOCKED"]
    log.close()


def test_the_count_a_refused_message_carried_goes_with_the_next_one() -> None:
    """The message saying "(3 more like it ...)" was refused: the next went out with no
    count, and the three were never told."""
    class RefusingOnce:
        def __init__(self) -> None:
            self.bodies: list[str] = []

        def notify(self, body: str, **_kwargs) -> bool:
            self.bodies.append(body)
            return len(self.bodies) != 2  # the second message (the one with the count) is refused

    now = [0.0]
    client = RefusingOnce()
    notifier = Notifier(client, ["failures"], "[x paper]", clock=lambda: now[0])
    for _ in range(4):  # one sent, three held back
        notifier.send("failures", "job 'poll' failed", "HTTP 429: slow down")
        now[0] += 120
    now[0] += 3600
    notifier.send("failures", "job 'poll' failed", "HTTP 429: slow down")  # carries 3: refused
    deadline = time.monotonic() + 10
    while not notifier.take_failures() and time.monotonic() < deadline:  # the sender's answer
        time.sleep(0.01)
    notifier.send("failures", "job 'poll' failed", "HTTP 429: slow down")  # goes, with them
    notifier.close()
    assert "(3 more like it" in client.bodies[1] and "(3 more like it" in client.bodies[2]


def test_an_undelivered_failure_does_not_hold_back_the_next_like_it() -> None:
    from bot.notify.sender import Message

    class Refusing:
        def notify(self, **_kwargs) -> bool:
            return False

    now = [0.0]
    notifier = Notifier(Refusing(), ["failures"], "[x paper]", clock=lambda: now[0])
    notifier.send("failures", "job 'close' failed", "RuntimeError: timed out\nat ...")
    notifier.close()
    assert len(notifier.take_failures()) == 1
    now[0] += 60
    assert notifier._held_back(repeat_key("job 'close' failed", "RuntimeError: timed out")) == 0
    assert Message("failures", "t", "b").repeat_key is None
    same = [("answered 429 after 8 tries", "answered 429 after 9 tries"),
            ("order 8f2c1e5a-0b7d-4c3e-9a61-2d5f0e8b7c44 not placed: HTTP 429",
             "order 9a3d2f6b-1c8e-4d4f-8b72-3e6f1f9c8d55 not placed: HTTP 429"),
            ("retry in 120 s", "retry in 240 s"), ("TQQQ at 412.35 refused", "TQQQ at 398.12 refused")]
    for one, other in same:
        assert repeat_key("t", one) == repeat_key("t", other), (one, other)
    assert repeat_key("t", "answered 429 after 8 tries") != repeat_key("t", "answered 403 after 8 tries")
    assert repeat_key("t", "HTTP 429: slow down") != repeat_key("t", "HTTP 403: account blocked")


def test_a_secret_in_a_failed_jobs_error_is_masked_in_the_incident_and_the_message(hooks, tmp_path) -> None:
    port = hooks.url.rsplit(":", 1)[1]
    notifier = Notifier(build_apprise([f"json://127.0.0.1:{port}/notify",
                                       f"discord://1234567890/{DISCORD_TOKEN}"]), ["failures"], "[x paper]")
    jobs, log = _jobs_with(notifier, tmp_path)

    def leaky() -> None:  # e.g. a library quoting the URL it was given
        raise RuntimeError(f"cannot post to https://discord.com/api/webhooks/1234567890/{DISCORD_TOKEN}")

    assert jobs.run("close", leaky) is False
    jobs.close()
    (request,) = hooks.calls("POST", "/notify")
    stored = log.load_incidents()["message"].iloc[0]
    assert stored == "RuntimeError: cannot post to https://discord.com/api/webhooks/***/***"
    assert request.body["message"].startswith(stored)
    assert DISCORD_TOKEN not in json.dumps(request.body) and DISCORD_TOKEN not in stored
    log.close()


class _StuckService:
    """An apprise client whose first delivery hangs until released (a webhook that never
    answers), so the messages behind it are still queued at shutdown."""

    def __init__(self) -> None:
        import threading

        self.release = threading.Event()
        self.sent: list[str] = []

    def notify(self, title: str, **_kw) -> bool:
        self.release.wait(10)
        self.sent.append(title)
        return True


def test_messages_still_queued_at_shutdown_are_recorded_not_dropped() -> None:
    """Before: close() waited, logged that the sender was busy and returned; the queued
    messages were lost with the process and no incident said so. The one being sent
    then was not recorded either: its failure came after the daemon's last records."""
    service = _StuckService()
    notifier = Notifier(service, ["trades", "daily"], "[x paper]")
    notifier.send("trades", "1 fill (10.00)", "BUY 1 X")  # taken by the sender, hangs
    notifier.send("daily", "close 2024-03-04: 100.00", "equity 100.00")
    notifier.send("trades", "2 fills (20.00)", "BUY 2 X")
    notifier.close(timeout=0.3)
    notifier.send("daily", "after the end", "sent after close")
    failures = notifier.take_failures()
    service.release.set()
    assert [f.title for f in failures] == [
        "[x paper] 1 fill (10.00)",  # in flight: its outcome would come after the last records
        "[x paper] close 2024-03-04: 100.00", "[x paper] 2 fills (20.00)", "[x paper] after the end"]
    assert failures[0].error.startswith("not confirmed: still being sent when the daemon stopped")
    assert all(f.error.startswith("not sent:") for f in failures[1:])
    assert "still queued when the daemon stopped" in failures[1].error


def test_urls_joined_by_commas_are_refused_without_showing_a_token() -> None:
    """apprise took "tgram://...,discord://id/token" for one Telegram URL and sent the
    webhook's token to Telegram as a chat id, whose refusal was logged unmasked. And a
    malformed item's text before `://` (perhaps a token) was quoted as its scheme."""
    joined = "tgram://123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/1234567890123," \
             "discord://4174216298/AbCdEfGhIjKlMnOpQrStUvWxYz"
    with pytest.raises(NotifyError) as two:
        build_apprise([joined])
    assert "item 1 (tgram://...): holds more than one URL" in str(two.value)
    assert "AbCdEfGhIjKlMnOpQrStUvWxYz" not in str(two.value)
    with pytest.raises(NotifyError) as odd:
        build_apprise(["AAHdqTcvCH1vGWJxfSeo://x"])
    assert "AAHdqTcvCH1vGWJxfSeo" not in str(odd.value) and "(unknown scheme)" in str(odd.value)
