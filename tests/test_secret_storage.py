"""Secrets stay out of the trade log, and keys go only to the hosts meant for them: the
data and FRED URLs follow the trading URL's rule (official host over https, or loopback;
no credentials in the URL)."""

from __future__ import annotations

import datetime as dt
import re

import pytest
import sqlalchemy as sa

from bot import runner
from bot.config import parse_settings
from bot.secrets import EndpointError, load_endpoints
from bot.store.models import RUNS
from bot.store.tradelog import TradeLog
from tests.conftest import CONFIG

PASSWORD = "pw-Zq8vN2xR7tLw"  # noqa: S105 - a test value, looked for in the stored bytes


def settings_with_store(url: str):
    from bot.config import load_settings

    raw = load_settings(CONFIG).model_dump(mode="json")
    raw["store"]["url"] = url
    return parse_settings(raw, "test")


@pytest.mark.parametrize(("url", "masked"), [
    (f"postgresql+psycopg://bot:{PASSWORD}@db.internal:5432/trades",
     "postgresql+psycopg://bot:***@db.internal:5432/trades"),
    (f"postgresql+psycopg://db.internal:5432/trades?user=bot&password={PASSWORD}",
     "postgresql+psycopg://db.internal:5432/trades?user=bot&password=***"),
])
def test_the_store_password_is_masked_in_runs_config(tmp_path, url, masked) -> None:
    settings = settings_with_store(url)
    path = tmp_path / "log.sqlite"
    log = TradeLog.open(f"sqlite:///{path}")
    run_id = runner.start_run(log, settings, "backtest", "synthetic", True)
    with log.engine.connect() as conn:
        stored = conn.execute(sa.select(RUNS.c.config).where(RUNS.c.id == run_id)).scalar_one()
    log.close()  # checkpointed: every byte is in the file now
    assert stored["store"]["url"] == masked
    assert PASSWORD.encode() not in path.read_bytes()
    # The hash names the configuration, not the password: rotating it changes nothing.
    other = settings_with_store(url.replace(PASSWORD, "another"))
    assert other.fingerprint() == settings.fingerprint()


def test_the_masked_stored_config_still_parses_for_reports() -> None:
    settings = settings_with_store(f"postgresql+psycopg://bot:{PASSWORD}@db/x")
    again = parse_settings(settings.stored_dict(), "runs.config")
    assert PASSWORD not in again.store.url


@pytest.mark.parametrize("variable", ["APCA_API_DATA_URL", "BOT_FRED_URL"])
@pytest.mark.parametrize(
    "url",
    [
        f"http://user:{PASSWORD}@other-host",  # credentials, plain http, another host
        f"https://user:{PASSWORD}@data.alpaca.markets",  # credentials on the right host
        "https://data.alpaca.markets@evil.example",  # user info spoofing the host
        "https://data.alpaca.markets\\@evil.example",
        "https://fred.stlouisfed.org.evil.example",
        "https://example.com",
        "https://data.alpaca.markets/v2?token=x",  # a query
        "ftp://127.0.0.1",
    ],
)
def test_data_and_fred_urls_refuse_other_hosts_and_credentials(variable: str, url: str) -> None:
    with pytest.raises(EndpointError, match=variable) as caught:
        load_endpoints({variable: url})
    assert PASSWORD not in str(caught.value)


@pytest.mark.parametrize(
    ("variable", "url"),
    [("APCA_API_DATA_URL", "http://data.alpaca.markets"), ("BOT_FRED_URL", "http://fred.stlouisfed.org")],
)
def test_the_official_data_hosts_need_https(variable: str, url: str) -> None:
    with pytest.raises(EndpointError, match=f"{variable} must use https"):
        load_endpoints({variable: url})


def test_official_hosts_in_any_spelling_and_loopback_are_accepted() -> None:
    endpoints = load_endpoints(
        {"APCA_API_DATA_URL": "https://DATA.alpaca.markets.:443/v2", "BOT_FRED_URL": "http://[::1]:8"}
    )
    assert endpoints.data_url == "https://DATA.alpaca.markets.:443"
    assert endpoints.fred_url == "http://[::1]:8"
    local = load_endpoints({"APCA_API_DATA_URL": "http://localhost:9", "BOT_FRED_URL": "https://fred.stlouisfed.org"})
    assert local.data_url == "http://localhost:9"


def test_a_daemon_started_with_a_foreign_data_url_stops_before_connecting(monkeypatch) -> None:
    from bot.data.alpaca import AlpacaMarketData

    monkeypatch.setenv("APCA_API_KEY_ID", "PKTESTKEY000000000")
    monkeypatch.setenv("APCA_API_SECRET_KEY", "secret-for-the-test-0000")
    monkeypatch.setenv("APCA_API_DATA_URL", "http://user:pw@other-host")
    with pytest.raises(EndpointError, match="APCA_API_DATA_URL"):
        AlpacaMarketData.from_env()


TOKEN = "123456789:AAHconfigMistakeTok"  # noqa: S105 - a test value, looked for in the output


@pytest.mark.parametrize(("section", "line"), [
    ("[notify]", f'urls = "tgram://{TOKEN}/987654"'),  # the URLs put in the config by mistake
    ("[store]", f'password = "{PASSWORD}"'),
    ("[notify]", f'events = ["discord://1234567890/{TOKEN}"]'),  # a URL where a word is expected
    ("[strategy]", f'name = ["tgram://{TOKEN}/987654"]'),
    ("[store]", f'url = ["postgresql+psycopg://bot:{PASSWORD}@db/x"]'),  # a list, not masked as a URL
])
def test_a_secret_written_in_the_config_by_mistake_is_not_echoed(tmp_path, capsys, section, line) -> None:
    """Before: `bot config check` and `bot run` (whose stderr is the daemon's journal)
    printed `notify.urls: Extra inputs are not permitted (got 'tgram://TOKEN/...')`."""
    from bot.cli import main

    field = line.split(" =")[0]
    text = CONFIG.read_text()
    replaced = re.sub(rf"^{field} = .*$", line, text, count=1, flags=re.M)  # a key it has
    path = tmp_path / "bad.toml"
    path.write_text(replaced if replaced != text else text.replace(section, f"{section}\n{line}", 1))
    assert main(["config", "check", str(path)]) == 1
    assert main(["run", "--config", str(path), "--replay", "2024-01-02:2024-01-10"]) == 2
    printed = capsys.readouterr()
    text = printed.out + printed.err
    assert "INVALID (1 problem(s))" in text and "error: invalid configuration" in text
    assert f".{field}" in text  # the problem is still named by its field
    assert TOKEN not in text and PASSWORD not in text


def test_sweeps_and_platform_batches_store_no_password(tmp_path, capsys) -> None:
    """Sweeps (their own row and each combination's run) and the platform's batch runs
    kept the configs as given, store password included; `bot backtest` masked it."""
    from types import SimpleNamespace

    from bot.platform.decision import _start_run
    from tests.test_cli_errors import run_cli

    url = f"postgresql+psycopg://bot:{PASSWORD}@db.internal:5432/trades"
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.read_text().replace('url = "sqlite:///var/tradelog.sqlite"', f'url = "{url}"'))
    assert PASSWORD in config.read_text()
    path = tmp_path / "log.sqlite"
    code, _, err = run_cli(capsys, "sweep", "--config", str(config), "--synthetic",
                           "--database", f"sqlite:///{path}", "--start", "2016-01-04",
                           "--end", "2016-03-31", "--grid", "risk.vol_high=1.25,2", "--no-charts")
    assert code == 0, err

    log = TradeLog.open(f"sqlite:///{path}")
    profile = SimpleNamespace(settings=settings_with_store(url), feed=None)
    ctx = SimpleNamespace(mode="paper", settings=SimpleNamespace(name="platform"))
    now = dt.datetime(2024, 11, 25, 22, 0, tzinfo=dt.UTC)
    _start_run(log, ctx, {"balanced": profile}, now.date(), now)
    log.flush()
    log.close()  # checkpointed: every byte is in the file now
    for stored in tmp_path.glob("log.sqlite*"):
        assert PASSWORD.encode() not in stored.read_bytes(), stored.name
