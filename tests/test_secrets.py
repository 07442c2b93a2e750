"""Credentials, endpoints and live-mode confirmation; keys never leak into output."""

from __future__ import annotations

import datetime as dt
import logging
import os
import traceback

import pytest
import structlog

from bot.broker.alpaca import AlpacaBroker
from bot.data.alpaca import AlpacaMarketData
from bot.errors import BotError
from bot.logs import configure_logging
from bot.net import RetryPolicy
from bot.secrets import (
    LiveModeError,
    SecretsError,
    load_credentials,
    load_endpoints,
)
from bot.types import OrderRequest, Side
from tests.fakes.alpaca_server import KEY_ID, SECRET, FakeAlpaca, Fault


def write_secrets(path, text: str, mode: int = 0o600):
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_credentials_from_environment_are_masked():
    creds = load_credentials({"APCA_API_KEY_ID": KEY_ID, "APCA_API_SECRET_KEY": SECRET})
    assert (creds.key_id, creds.secret) == (KEY_ID, SECRET)
    for shown in (repr(creds), str(creds), f"{creds}", repr([creds])):
        assert SECRET not in shown and KEY_ID not in shown
    assert "***" in repr(creds)


@pytest.mark.parametrize(
    ("env", "missing"),
    [
        ({"APCA_API_KEY_ID": KEY_ID}, "APCA_API_SECRET_KEY"),
        ({"APCA_API_SECRET_KEY": SECRET}, "APCA_API_KEY_ID"),
        ({"APCA_API_KEY_ID": " ", "APCA_API_SECRET_KEY": SECRET}, "APCA_API_KEY_ID"),
    ],
)
def test_missing_variable_is_named_never_the_value(env, missing):
    with pytest.raises(SecretsError, match=f"{missing} is not set") as caught:
        load_credentials(env)
    assert SECRET not in str(caught.value) and KEY_ID not in str(caught.value)


def test_secrets_file_with_comments_export_and_quotes(tmp_path):
    path = write_secrets(
        tmp_path / "alpaca.env",
        f"# paper keys\n\nexport APCA_API_KEY_ID={KEY_ID}\nAPCA_API_SECRET_KEY = '{SECRET}'\n",
    )
    creds = load_credentials({"BOT_SECRETS_FILE": str(path)})
    assert (creds.key_id, creds.secret) == (KEY_ID, SECRET)


def test_an_inline_comment_is_not_part_of_the_key(tmp_path):
    """`KEY=value # my key` read the comment into the key, which passed every check and
    failed at Alpaca as a 401; a quoted value with a comment after it was refused as an
    unbalanced quote. A # with no space before it stays: a password may hold one."""
    path = write_secrets(
        tmp_path / "alpaca.env",
        f"APCA_API_KEY_ID={KEY_ID}   # paper key\nAPCA_API_SECRET_KEY=\"{SECRET}\" # from the dashboard\n"
        "FRED_API_KEY=abc#def123456789\n",
    )
    creds = load_credentials({"BOT_SECRETS_FILE": str(path)})
    assert (creds.key_id, creds.secret) == (KEY_ID, SECRET)
    from bot.secrets import read_secrets_file

    assert read_secrets_file(path)["FRED_API_KEY"] == "abc#def123456789"


def test_a_secrets_file_saved_with_a_bom_is_read(tmp_path):
    """Notepad's UTF-8 starts with a BOM: line 1 read as '\\ufeffAPCA_API_KEY_ID=...' and was
    refused as not KEY=VALUE, though it visibly is."""
    path = write_secrets(
        tmp_path / "bom.env", f"\ufeffAPCA_API_KEY_ID={KEY_ID}\nAPCA_API_SECRET_KEY={SECRET}\n"
    )
    creds = load_credentials({"BOT_SECRETS_FILE": str(path)})
    assert (creds.key_id, creds.secret) == (KEY_ID, SECRET)


def test_environment_wins_over_the_file(tmp_path):
    path = write_secrets(
        tmp_path / "s.env", f"APCA_API_KEY_ID=FROMFILE\nAPCA_API_SECRET_KEY={SECRET}\n"
    )
    creds = load_credentials({"BOT_SECRETS_FILE": str(path), "APCA_API_KEY_ID": KEY_ID})
    assert (creds.key_id, creds.secret) == (KEY_ID, SECRET)


def test_group_readable_file_is_refused(tmp_path):
    path = write_secrets(
        tmp_path / "s.env", f"APCA_API_KEY_ID={KEY_ID}\nAPCA_API_SECRET_KEY={SECRET}\n", 0o644
    )
    with pytest.raises(SecretsError, match="chmod 600") as caught:
        load_credentials({"BOT_SECRETS_FILE": str(path)})
    assert "644" in str(caught.value) and SECRET not in str(caught.value)


def test_a_secrets_file_that_is_a_folder_or_not_utf8_is_named_for_what_it_is(tmp_path):
    """A folder (mode 755) drew "run: chmod 600", which cannot help; a UTF-16 file was
    "cannot be read: UnicodeDecodeError"."""
    folder = tmp_path / "secrets"
    folder.mkdir(mode=0o755)
    with pytest.raises(SecretsError, match="is not a file .a directory.*KEY=VALUE"):
        load_credentials({"BOT_SECRETS_FILE": str(folder)})
    utf16 = write_secrets(tmp_path / "s.env", "", 0o600)
    utf16.write_bytes(f"APCA_API_KEY_ID={KEY_ID}\n".encode("utf-16"))
    with pytest.raises(SecretsError, match="is not UTF-8 text"):
        load_credentials({"BOT_SECRETS_FILE": str(utf16)})


@pytest.mark.parametrize("key", [f"'{KEY_ID}'", f'"{KEY_ID}', f"{KEY_ID} x"])
def test_keys_with_quotes_or_spaces_from_the_environment_are_refused(key):
    """The secrets file refused them; from the environment they went to Alpaca, quotes
    and all, and came back a 401 the user had to puzzle out."""
    with pytest.raises(SecretsError, match="APCA_API_KEY_ID holds quotes or spaces") as caught:
        load_credentials({"APCA_API_KEY_ID": key, "APCA_API_SECRET_KEY": SECRET})
    assert KEY_ID not in str(caught.value)


def test_malformed_line_is_named_by_number_not_content(tmp_path):
    path = write_secrets(tmp_path / "s.env", f"APCA_API_KEY_ID={KEY_ID}\n{SECRET}\n")
    with pytest.raises(SecretsError, match="line 2: expected KEY=VALUE") as caught:
        load_credentials({"BOT_SECRETS_FILE": str(path)})
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(("line2", "message"), [
    (f"APCA_API_SECRET_KEY='{SECRET}", "line 2: APCA_API_SECRET_KEY's value has an unbalanced quote"),
    (f'APCA_API_SECRET_KEY={SECRET}"', "line 2: APCA_API_SECRET_KEY's value has an unbalanced quote"),
    (f"APCA_API_KEY_ID={KEY_ID}x", "line 2: APCA_API_KEY_ID is set twice"),
])
def test_a_quote_on_one_side_or_a_key_given_twice_is_named(tmp_path, line2, message):
    """The key became 'SECRET with its quote (a 401 later, nothing said); a key given
    twice silently took its last value."""
    path = write_secrets(tmp_path / "s.env", f"APCA_API_KEY_ID={KEY_ID}\n{line2}\n")
    with pytest.raises(SecretsError, match=message) as caught:
        load_credentials({"BOT_SECRETS_FILE": str(path)})
    assert SECRET not in str(caught.value) and KEY_ID not in str(caught.value)


def test_missing_file_and_missing_key_in_file(tmp_path):
    with pytest.raises(SecretsError, match="cannot be read"):
        load_credentials({"BOT_SECRETS_FILE": str(tmp_path / "absent.env")})
    path = write_secrets(tmp_path / "s.env", f"APCA_API_KEY_ID={KEY_ID}\n")
    with pytest.raises(
        SecretsError, match=f"APCA_API_SECRET_KEY is not set in the environment or {path}"
    ):
        load_credentials({"BOT_SECRETS_FILE": str(path)})


def test_endpoint_defaults_and_overrides():
    default = load_endpoints({})
    assert default.trading_url == "https://paper-api.alpaca.markets"
    assert default.data_url == "https://data.alpaca.markets"
    assert default.fred_url == "https://fred.stlouisfed.org"
    assert default.paper is True
    custom = load_endpoints(
        {
            "APCA_API_BASE_URL": "http://127.0.0.1:9/v2/",
            "APCA_API_DATA_URL": "http://127.0.0.1:8",
            "BOT_FRED_URL": "http://127.0.0.1:7/",
        }
    )
    assert (custom.trading_url, custom.data_url, custom.fred_url) == (
        "http://127.0.0.1:9",
        "http://127.0.0.1:8",
        "http://127.0.0.1:7",
    )


def test_live_needs_the_callers_flag_and_the_confirmation():
    with pytest.raises(LiveModeError, match="BOT_LIVE_CONFIRM=yes"):
        load_endpoints({}, live=True)
    with pytest.raises(LiveModeError, match="BOT_LIVE_CONFIRM=yes"):
        load_endpoints({"BOT_LIVE_CONFIRM": "true"}, live=True)
    live = load_endpoints({"BOT_LIVE_CONFIRM": "yes"}, live=True)
    assert (live.paper, live.trading_url) == (False, "https://api.alpaca.markets")
    assert load_endpoints({"BOT_LIVE_CONFIRM": "yes"}).paper is True  # confirmation alone: paper


def test_paper_and_live_endpoints_cannot_be_crossed():
    with pytest.raises(LiveModeError, match="paper endpoint"):
        load_endpoints(
            {"BOT_LIVE_CONFIRM": "yes", "APCA_API_BASE_URL": "https://paper-api.alpaca.markets"},
            live=True,
        )
    with pytest.raises(LiveModeError, match="live endpoint"):
        load_endpoints({"APCA_API_BASE_URL": "https://api.alpaca.markets/v2"})


def test_from_env_builds_a_paper_broker(monkeypatch):
    with FakeAlpaca() as fake:
        monkeypatch.setenv("APCA_API_KEY_ID", KEY_ID)
        monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET)
        monkeypatch.setenv("APCA_API_BASE_URL", fake.url)
        broker = AlpacaBroker.from_env()
        assert broker.account().paper is True
        assert SECRET not in repr(broker)


def test_keys_never_leak_into_logs_errors_or_tracebacks(tmp_path, monkeypatch, capsys, caplog):
    """Keys come from a secrets file, so the log masker (which scrubs values it finds in
    the environment) cannot hide a leak: anything found here was really written."""
    for var in ("APCA_API_KEY_ID", "APCA_API_SECRET_KEY"):
        monkeypatch.delenv(var, raising=False)
    path = write_secrets(
        tmp_path / "s.env", f"APCA_API_KEY_ID={KEY_ID}\nAPCA_API_SECRET_KEY={SECRET}\n"
    )
    monkeypatch.setenv("BOT_SECRETS_FILE", str(path))
    caplog.set_level(logging.DEBUG)  # urllib3 and requests debug lines included
    configure_logging("DEBUG", fmt="json")
    errors: list[BaseException] = []
    seen: list[str] = []

    def capture(call) -> None:
        try:
            call()
        except BotError as exc:
            errors.append(exc)

    try:
        creds = load_credentials()
        seen += [repr(creds), str(creds)]
        with FakeAlpaca() as fake:
            fake.prices = {"SPY": 500.0}
            policy = RetryPolicy(attempts=2, timeout=0.3, base_delay=0.0, sleep=lambda s: None)
            broker = AlpacaBroker.connect(creds, base_url=fake.url, policy=policy)
            data = AlpacaMarketData.connect(creds, base_url=fake.url, policy=policy)
            seen += [repr(broker), repr(data)]
            order = OrderRequest("leak-SPY-buy", "leak", "SPY", Side.BUY, 1000, "t", 500.0)
            seen.append(repr(broker.submit(order, fake.now)))  # 403 rejection, logged
            # 500, a retried lookup, a timeout, another lookup: BrokerError after 2 attempts.
            fake.inject(
                "POST", "/v2/orders", Fault.error(500, None, "boom"), Fault.slow(30, process=False)
            )
            fake.inject("GET", "/v2/orders:by_client_order_id", Fault.error(500, None, "down"))
            capture(lambda: broker.submit(order._replace(quantity=1), fake.now))
            fake.inject("GET", "/v2/account", Fault.malformed())
            capture(broker.account)
            fake.secret = "rotated-secret-value"  # our secret is now wrong: 403
            capture(broker.refresh)
            capture(lambda: data.daily_history(["SPY"], dt.date(2024, 11, 1)))
        bad_file = write_secrets(tmp_path / "b.env", f"{SECRET}\n")
        capture(lambda: load_credentials({"BOT_SECRETS_FILE": str(bad_file)}))
    finally:
        structlog.reset_defaults()
    kinds = [type(e).__name__ for e in errors]
    assert kinds == ["BrokerError", "BrokerError", "BrokerError", "DataError", "SecretsError"]
    for exc in errors:
        seen += [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    out = capsys.readouterr()
    seen += [out.out, out.err, caplog.text]
    assert "order_rejected" in out.err and "http_retry" in out.err  # log lines were captured
    for text in seen:
        assert SECRET not in text
        assert KEY_ID not in text


@pytest.mark.parametrize(
    "url",
    [
        "https://API.alpaca.markets",
        "https://api.alpaca.markets:443",
        "https://api.alpaca.markets./v2",
        "https://api.alpaca.markets/v2/v2",
        "HTTPS://Api.Alpaca.Markets.:443/v2/",
    ],
)
def test_every_spelling_of_the_live_host_is_refused_in_paper_mode(url):
    with pytest.raises(LiveModeError, match="live endpoint"):
        load_endpoints({"APCA_API_BASE_URL": url})


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com",  # an unknown host
        "http://paper-api.alpaca.markets",  # paper host without TLS
        "https://user:pw@api.alpaca.markets",  # user info: parsers disagree on the host
        "https://api.alpaca.markets\\@paper-api.alpaca.markets",
        "api.alpaca.markets",  # no scheme
    ],
)
def test_paper_mode_allows_only_the_paper_host_or_loopback(url):
    with pytest.raises(LiveModeError) as caught:
        load_endpoints({"APCA_API_BASE_URL": url})
    assert "pw" not in str(caught.value)  # the URL may hold credentials: never echoed


@pytest.mark.parametrize(
    "url",
    [
        "https://paper-api.alpaca.markets/v2",
        "https://PAPER-API.alpaca.markets.:443",
        "http://127.0.0.1:8080",
        "http://localhost:9/v2",
        "http://[::1]:9",
    ],
)
def test_paper_host_and_loopback_overrides_are_accepted(url):
    assert load_endpoints({"APCA_API_BASE_URL": url}).paper is True


def test_live_mode_refuses_every_spelling_of_the_paper_host_and_unknown_hosts():
    confirmed = {"BOT_LIVE_CONFIRM": "yes"}
    for url in ("https://PAPER-API.alpaca.markets.", "https://paper-api.alpaca.markets:443"):
        with pytest.raises(LiveModeError, match="paper endpoint"):
            load_endpoints({**confirmed, "APCA_API_BASE_URL": url}, live=True)
    with pytest.raises(LiveModeError, match="not Alpaca's live endpoint"):
        load_endpoints({**confirmed, "APCA_API_BASE_URL": "https://example.com"}, live=True)
    spelled = load_endpoints({**confirmed, "APCA_API_BASE_URL": "https://API.alpaca.markets"}, live=True)
    assert spelled.paper is False


def test_both_missing_keys_are_named_at_once():
    """Before: `bot once` with no keys named APCA_API_KEY_ID, and only once that was set,
    APCA_API_SECRET_KEY."""
    with pytest.raises(SecretsError) as caught:
        load_credentials({})
    text = str(caught.value)
    assert text.startswith("APCA_API_KEY_ID and APCA_API_SECRET_KEY are not set in the environment")
    assert "APCA_API_KEY_ID=... and APCA_API_SECRET_KEY=..." in text
    with pytest.raises(SecretsError, match="^APCA_API_SECRET_KEY is not set in the environment;"):
        load_credentials({"APCA_API_KEY_ID": KEY_ID})


def test_service_urls_in_the_secrets_file_are_used_and_masked(tmp_path, monkeypatch):
    """Before: a BOT_DATABASE_URL put in the secrets file (it holds a password) was
    ignored without a word, and the daemon traded on a new SQLite trade log in var/
    instead of the PostgreSQL one: no memory of its rebalances, orders or state."""
    from bot.logs import mask_text
    from bot.platform.settings import PlatformSettings
    from bot.secrets import setting
    from bot.store.locate import database_url

    db = "postgresql+psycopg://bot:pw-in-file-123@db/leverbot"
    queue = "amqp://bot:queue-pw-456@mq:5672//"
    path = write_secrets(
        tmp_path / "s.env",
        f"APCA_API_KEY_ID={KEY_ID}\nAPCA_API_SECRET_KEY={SECRET}\nBOT_DATABASE_URL={db}\n"
        f"BOT_QUEUE_URL='{queue}'\n",
    )
    for name in ("BOT_DATABASE_URL", "BOT_QUEUE_URL", "BOT_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BOT_SECRETS_FILE", str(path))
    assert database_url("config/diversified_leverage.toml", None) == db
    assert PlatformSettings.from_env().queue_url == queue
    assert setting("BOT_REDIS_URL") is None
    assert mask_text(f"connect {db} failed; key {SECRET}") == "connect *** failed; key ***"
    monkeypatch.setenv("BOT_DATABASE_URL", "postgresql+psycopg://bot@127.0.0.1/env")
    assert database_url("config/diversified_leverage.toml", None).endswith("/env")  # env wins
