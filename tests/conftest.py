"""Shared fixtures. Real data is read from ../shared/data beside the repository; it is
never copied into the repo. Without it the tests that need it skip, except in CI
(CI=true), where its absence is a failure."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
CONFIG = REPO / "config" / "diversified_leverage.toml"

# The bot's settings from the user's shell (Alpaca and FRED keys, service URLs, a data
# directory, a live confirmation) must not reach the tests: each test sets what it needs.
# A developer with FRED_API_KEY exported would otherwise send a test's FRED requests to
# the real API instead of the fake one.
for _name in [n for n in os.environ if n.startswith(("APCA_", "BOT_")) or n == "FRED_API_KEY"]:
    del os.environ[_name]

# This run's own cache directory (bot.session_table stores the exchange's sessions there),
# inherited by the commands the tests start: the tests never write to the user's cache.
_CACHE_DIR = tempfile.mkdtemp(prefix="leverbot-tests-cache-")
os.environ["BOT_CACHE_DIR"] = _CACHE_DIR


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_CACHE_DIR, ignore_errors=True)


def require_shared_data() -> Path:
    if (SHARED_DATA / "prices").is_dir():
        return SHARED_DATA
    reason = f"real data not found at {SHARED_DATA} (the ../shared/data folder beside the repo)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must provide it")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return require_shared_data()


@pytest.fixture(scope="session")
def settings():
    from bot.config import load_settings

    return load_settings(CONFIG)


@pytest.fixture(scope="session")
def real_market(shared_data, settings):
    from bot.data.csv_source import load_csv_directory

    return load_csv_directory(shared_data, [*settings.symbols, "SPY", "IEF"])


@pytest.fixture(autouse=True)
def _keep_logging() -> Iterator[None]:
    """main() points structlog at the stderr of the moment (capsys's) and a synthetic
    market binds its label: undo both after every test."""
    import structlog

    saved = structlog.get_config()
    yield
    structlog.configure(**saved)
    structlog.contextvars.clear_contextvars()


@pytest.fixture(scope="session")
def pg_database_url() -> Iterator[str]:
    """A throwaway PostgreSQL database for the session; each test empties it after use."""
    from tests.test_store import throwaway_pg_database

    yield from throwaway_pg_database()


@pytest.fixture
def sleeps() -> list[float]:
    """Backoff sleeps recorded by a test RetryPolicy instead of taken."""
    return []
