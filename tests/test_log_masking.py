"""Secrets are masked wherever the process writes text: its log lines (tracebacks and
nested values included), the lines of libraries that log through Python's logging with
no handler set up (APScheduler, SQLAlchemy's pool, urllib3 in the daemon), and the
traceback of a crash."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest
import structlog

from bot.logs import configure_logging, register_secret

SECRET = "s3cretLogValue-Zq8vN2xR"  # noqa: S105 - a test value, looked for in the output
TOKEN = "WebhookTok-7tLwPq2"  # noqa: S105 - registered at run time, as a webhook token is


@pytest.fixture
def json_lines(monkeypatch, capsys):
    monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET)
    register_secret(TOKEN)
    configure_logging("INFO", fmt="json")
    capsys.readouterr()

    def lines() -> list[dict]:
        return [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]

    yield lines
    structlog.reset_defaults()


def test_a_logged_traceback_is_masked(json_lines) -> None:
    """Before: masking ran before format_exc_info, so the exception's text went out whole."""
    log = structlog.get_logger("t")
    try:
        raise RuntimeError(f"refused with {SECRET} and {TOKEN}")
    except RuntimeError:
        log.exception("job failed")
    (line,) = json_lines()
    assert line["exception"].endswith("RuntimeError: refused with *** and ***")


def test_nested_values_and_objects_are_masked(json_lines) -> None:
    structlog.get_logger("t").error("x", context={"url": f"discord://1/{TOKEN}"},
                                    items=[SECRET], error=RuntimeError(SECRET))
    (line,) = json_lines()
    assert line["context"] == {"url": "discord://1/***"} and line["items"] == ["***"]
    assert SECRET not in json.dumps(line) and TOKEN not in json.dumps(line)


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_a_secret_that_escaping_changes_is_masked_nested_too(monkeypatch, capsys, fmt) -> None:
    """JSON and repr escape `"`, `\\` and non-ASCII letters: a generated password holding
    them was matched only as a top-level string, and leaked from a dict, a list or an
    exception logged as it is."""
    awkward = 'Sec"ret\\pässw0rd-9'
    register_secret(awkward)
    configure_logging("INFO", fmt=fmt)
    capsys.readouterr()
    log = structlog.get_logger("t")
    log.info("nested", value={"pw": awkward}, items=[awkward], error=ValueError(awkward))
    log.info("top", value=awkward)
    err = capsys.readouterr().err
    structlog.reset_defaults()
    assert err.count("***") >= 4
    for leaked in ("pässw0rd", "p\\u00e4ssw0rd", "ssw0rd-9"):
        assert leaked not in err, err


def test_a_librarys_warning_with_no_handler_is_a_masked_log_line(json_lines) -> None:
    """The daemon sets up no handler for Python's logging: before, APScheduler's warnings
    and tracebacks reached stderr as raw text (a JSON log stream broken, secrets not
    masked) through logging's handler of last resort."""
    library = logging.getLogger("leverbot.test.library")
    library.propagate = False  # no handler anywhere above it: the last resort is used
    library.info("below the last resort's level")
    try:
        raise ConnectionError(f"lost {SECRET}")
    except ConnectionError:
        library.exception("Job %r raised an exception", "poll")
    (line,) = json_lines()
    assert line["event"] == "Job 'poll' raised an exception" and line["level"] == "error"
    assert line["logger"] == "leverbot.test.library"
    assert line["exception"].endswith("ConnectionError: lost ***")


def test_the_traceback_of_a_crash_is_masked() -> None:
    """An exception nobody catches, in the process or in a thread, prints its traceback:
    before, with the secret in it."""
    script = (
        "import sys, threading\n"
        "from bot.cli import main\n"
        "sys.argv = ['bot', 'health', '--max-age', '1']\n"
        "main()\n"
        "def fail(): raise RuntimeError('thread ' + __import__('os').environ['APCA_API_SECRET_KEY'])\n"
        "thread = threading.Thread(target=fail, name='notify'); thread.start(); thread.join()\n"
        "raise RuntimeError('crash ' + __import__('os').environ['APCA_API_SECRET_KEY'])\n"
    )
    env = {**os.environ, "APCA_API_SECRET_KEY": SECRET, "BOT_HEARTBEAT_FILE": os.devnull}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 1
    assert "Exception in thread notify:" in proc.stderr and "RuntimeError: crash ***" in proc.stderr
    assert "RuntimeError: thread ***" in proc.stderr
    assert SECRET not in proc.stderr


@pytest.mark.parametrize("variable", ["APCA_BROKER_API_KEY", "POSTGRES_PASSWORD", "RABBITMQ_PASSWORD",
                                      "REDIS_PASSWORD"])
def test_the_deployments_other_secrets_are_masked_too(json_lines, monkeypatch, variable) -> None:
    """deploy/.env hands these to the containers (env_file) beside the URLs holding them;
    before, only the whole URLs were masked, not the password or the Broker API key alone."""
    monkeypatch.setenv(variable, "pw-alone-0123456789")
    structlog.get_logger("t").warning("x", detail="auth failed for pw-alone-0123456789")
    (line,) = json_lines()
    assert line["detail"] == "auth failed for ***"


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql+psycopg://bot:s3cret-pw%40x@db:5432/leverbot",
     "postgresql+psycopg://bot:***@db:5432/leverbot"),
    ("sqlite:////var/lib/bot/tradelog.sqlite", "sqlite:////var/lib/bot/tradelog.sqlite"),
    # a login name only (trust auth): nothing secret, and "leverbot" in a lock key or
    # a database name stays readable
    ("postgresql+psycopg://leverbot@127.0.0.1/leverbot", "postgresql+psycopg://leverbot@127.0.0.1/leverbot"),
    ("postgresql://bot:abc@db/x", "***"),  # a password too short to mask alone: all of it
    ("postgresql://db/x?password=s3cret-pw", "***"),  # credentials in a query: all of it
    # a generated password holding '/' or '#' (urlsplit ends the host there: it found no
    # password, and nothing was masked)
    ("postgresql+psycopg://leverbot:Zx9kQ2mP/v8Lw4rT@db:5432/leverbot",
     "postgresql+psycopg://leverbot:***@db:5432/leverbot"),
    ("postgresql://bot:ab#cd/ef@db/x", "postgresql://bot:***@db/x"),
    ("redis://:redis-pw-123@redis:6379/0", "redis://:***@redis:6379/0"),
    ("rediss://s3cr3tT0kenABCDEF@host:6380/0", "rediss://***@host:6380/0"),
    ("postgresql://bot@127.0.0.1/test", "postgresql://bot@127.0.0.1/test"),
])
def test_a_database_url_from_the_environment_is_masked_to_its_password(monkeypatch, url, shown):
    """The whole BOT_DATABASE_URL was masked, so an error naming the trade log said
    `Run: bot db upgrade --database ***`, a command nobody could run, though a SQLite path
    holds no secret. Only a URL's password is masked (as written and decoded)."""
    from bot.logs import mask_text

    monkeypatch.setenv("BOT_DATABASE_URL", url)
    assert mask_text(f"Run: bot db upgrade --database {url}") == f"Run: bot db upgrade --database {shown}"
    if "%40" in url:
        assert mask_text("password s3cret-pw@x was refused") == "password *** was refused"


def test_the_error_line_of_a_failed_command_is_masked(monkeypatch, capsys) -> None:
    """A broker answer quoting the request's keys reached stderr in the CLI's last line
    (`error: ... forbidden for PK...:secret`), masked in the log and the incident only."""
    from bot import cli
    from bot.errors import BotError

    monkeypatch.setenv("APCA_API_SECRET_KEY", SECRET)

    def fails(args) -> int:
        raise BotError(f"asset TQQQ: HTTP 403 40310000: forbidden for PKTEST:{SECRET}")

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    args = parser.parse_args(["runs"])
    monkeypatch.setattr(parser, "parse_args", lambda argv=None: args)
    monkeypatch.setattr(args, "func", fails)
    assert cli.main(["runs"]) == 2
    err = capsys.readouterr().err
    assert "forbidden for PKTEST:***" in err and SECRET not in err


def test_config_errors_do_not_quote_a_secret_put_in_the_wrong_table(tmp_path) -> None:
    from bot.config import describe_override, load_settings
    from bot.errors import BotError, ConfigError

    bad = tmp_path / "c.toml"
    for text in ('[universe]\nAPCA_API_SECRET_KEY = "SUPERSECRETVALUE"\nSPY = { weight = 1.0 }\n',
                 '[universe]\nSPY = { weight = 1.0 }\n[overlay.TRANSITION]\n'
                 'APCA_API_SECRET_KEY = "SUPERSECRETVALUE"\n'):
        bad.write_text(text)
        with pytest.raises(ConfigError) as err:
            load_settings(bad)
        assert "APCA_API_SECRET_KEY" in str(err.value) and "SUPERSECRETVALUE" not in str(err.value)
    assert describe_override("store.url=postgresql://u:PW@h/db") == "store.url=(not shown)"
    assert describe_override("notify.events=tgram://TOKEN/1") == "notify.events=(not shown)"
    assert describe_override("risk.vol_high=1.5") == "risk.vol_high=1.5"
    from bot.sweep.grid import parse_axis

    for spec in ("store.url=postgresql://bot:hunter2@db/bot,",
                 "store.url=postgresql://bot:hunter2@db/bot,postgresql://bot:hunter2@db/bot"):
        with pytest.raises(BotError) as err:
            parse_axis(spec)
        assert "hunter2" not in str(err.value) and "(not shown)" in str(err.value)
