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
