"""A command that reads and prints (`bot orders`) defers the log set-up: structlog is not
even imported unless something logs, and then the first line is set up as any other."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tests.conftest import REPO


def _run(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=True)


def test_a_deferred_set_up_is_applied_by_the_first_line_logged():
    proc = _run("""
        import sys
        from bot.logs import defer_logging, get_logger
        log = get_logger("bot.test")
        defer_logging("WARNING", "json")
        print("structlog" in sys.modules)
        log.info("not shown: below WARNING")
        log.warning("shown", api_key_id="PKSECRET123")
        print("structlog" in sys.modules)
    """)
    assert proc.stdout.split() == ["False", "True"]
    lines = [json.loads(line) for line in proc.stderr.splitlines()]
    assert [(e["event"], e["level"], e["api_key_id"]) for e in lines] == [
        ("shown", "warning", "***")
    ]


def test_deferring_after_structlog_is_loaded_sets_it_up_at_once():
    """A module that imports structlog itself may log any moment: no deferring then."""
    proc = _run("""
        import structlog
        from bot.logs import defer_logging
        defer_logging("INFO", "json")
        structlog.get_logger("bot.test").info("direct")
    """)
    assert json.loads(proc.stderr)["event"] == "direct"
