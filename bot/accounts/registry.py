"""The client-account registry: which broker account trades which risk profile, and why.

One row per client account in the trade log's `accounts` table. The platform's jobs read
the active accounts of each profile from here; orders, fills, positions and equity rows
point at their account's id. A closed account keeps its row and its history.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from bot.arguments import MAX_ID
from bot.errors import BotError, ConfigError
from bot.store.lookup import rows_where_in
from bot.store.models import ACCOUNT_STATUSES, METADATA

if TYPE_CHECKING:
    from bot.config import Settings

ACCOUNTS = METADATA.tables["accounts"]
#: the longest profile (a config path) the registry's column holds
PROFILE_MAX = ACCOUNTS.c.profile.type.length

#: the three MiFID II risk profiles and the config each trades
PROFILES: dict[str, str] = {
    "conservative": "config/robo_conservative.toml",
    "balanced": "config/robo_balanced.toml",
    "aggressive": "config/robo_aggressive.toml",
}


@dataclass(frozen=True)
class Account:
    """One registry row."""

    id: int
    broker_account_id: str
    profile: str
    status: str
    suitability: dict[str, Any] | None
    created_at: dt.datetime
    closed_at: dt.datetime | None
    updated_at: dt.datetime
    subscription_id: str | None

    @property
    def active(self) -> bool:
        return self.status == "active"


@dataclass(frozen=True)
class AccountSpec:
    """An account as the user describes it (`bot accounts add`, a CSV row), checked.
    `status` None keeps a registered account's status (a new one is active), so importing
    a file without a status column again never reopens a closed account; `source` says
    where the spec came from (`FILE row N`) for the errors about it."""

    broker_account_id: str
    profile: str
    suitability: dict[str, Any] | None = None
    status: str | None = None
    created_at: dt.datetime | None = None
    source: str | None = None


@dataclass(frozen=True)
class ImportResult:
    added: int
    updated: int
    unchanged: int
    closed: int


# ---------------------------------------------------------------------- field checks


def parse_broker_account_id(text: str) -> str:
    """Alpaca's account id (a UUID), lower-cased and hyphenated."""
    try:
        return str(uuid.UUID(text.strip()))
    except (ValueError, AttributeError):
        raise ValueError(
            f"expected a broker account id (a UUID like 8f2c1e5a-0b7d-4c3e-9a61-2d5f0e8b7c44), "
            f"got {text!r}"
        ) from None


def normalise_profile(text: str) -> str:
    """A profile as the registry stores it: a named one lower-cased; a config file by its
    name if it is a named profile's packaged file, else by its path from the repository
    when inside it, else by its absolute path. Written as given, one file became several
    profiles (`balanced`, `./config/robo_balanced.toml`, its absolute path), each decided
    and pushed on its own, and a relative path resolved only from the folder it was added
    in (a worker started elsewhere dead-lettered its accounts)."""
    name = text.strip()
    if name.lower() in PROFILES:
        return name.lower()
    if not name:
        return name
    from bot.store.locate import REPO_ROOT

    path = Path(name).expanduser()
    if not path.is_absolute() and not path.exists():  # typed here: this folder's file first
        path = Path(profile_config(name))
    path = path.resolve()
    for named, packaged in PROFILES.items():
        if path == (REPO_ROOT / packaged).resolve():
            return named
    try:
        return path.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return str(path)


def check_profile(text: str) -> str:
    """A profile name, or a config file that exists and validates (kept as written, so
    it must fit the registry's column and be text PostgreSQL stores)."""
    name = normalise_profile(text)
    if name in PROFILES:
        return name
    if not name:
        raise ValueError(f"expected {', '.join(PROFILES)} or a config file, got nothing")
    if len(name) > PROFILE_MAX:
        raise ValueError(f"expected a config path of at most {PROFILE_MAX} characters, "
                         f"got one of {len(name)}")
    _check_text(name, "the config path")
    path = profile_config(name)
    if not path.is_file():
        raise ValueError(f"expected {', '.join(PROFILES)} or a config file, got {text!r}")
    from bot.config import load_settings

    try:
        settings = load_settings(path)
    except ConfigError as exc:
        raise ValueError(f"config file {name} is invalid: {'; '.join(exc.problems[:3])}") from None
    problem = not_a_robo_profile(settings, name)
    if problem:
        raise ValueError(problem)
    return name


def not_a_robo_profile(settings: Settings, name: str) -> str | None:
    """Why the config `name` cannot be a client's profile (None if it can): a profile is
    a robo model with its risk class (the allocation API and `bot suitability` refuse
    any other); the leveraged-ETF strategy is not one."""
    if settings.strategy.kind == "factor":
        return None
    return (f"config file {name} is a {settings.strategy.kind!r} strategy; a client account "
            "trades a robo profile (strategy.kind = \"factor\")")


def profile_config(profile: str) -> Path:
    """The config file a profile trades: the packaged one of a named profile, else the
    file itself. A relative path is the repository's file when there is one (the form
    the registry stores for a file of the repository: a worker started in a folder with
    a config/ of its own must not trade another file), else found from the working
    directory."""
    from bot.store.locate import REPO_ROOT, default_path

    relative = PROFILES.get(profile, profile)
    in_repo = REPO_ROOT / relative
    if not Path(relative).is_absolute() and in_repo.is_file():
        return in_repo.resolve()
    return Path(default_path(relative)).resolve()


def parse_suitability(text: str) -> dict[str, Any]:
    """The suitability assessment as a JSON object (answers, score, ...), in standard
    JSON: NaN and Infinity are refused, also from a number too large for a float such as
    1e400 (they would be stored as text), and so is nesting deeper than the parser's
    stack, a NUL character and a lone surrogate (which PostgreSQL cannot store)."""

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not a JSON number")

    try:
        value = json.loads(text, parse_constant=refuse, parse_float=_finite_float)
    except RecursionError:
        raise ValueError("expected a JSON object, got one nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"expected a JSON object, e.g. '{{\"score\": 7}}': {exc.msg}") from None
    except ValueError as exc:
        raise ValueError(f"expected a JSON object, e.g. '{{\"score\": 7}}': {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, e.g. '{{\"score\": 7}}', got {type(value).__name__}")
    _check_json_text(value, "")
    return value


def _finite_float(text: str) -> float:
    """A JSON number as a float; one that overflows to infinity is refused."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is not a finite number (too large for a float)")
    return value


def _check_json_text(value: Any, where: str) -> None:
    """Every key and string of a parsed JSON value storable as text (see _check_text)."""
    if isinstance(value, str):
        _check_text(value, f"the value at {where}")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key, f"a key at {where or '/'}")
            _check_json_text(item, f"{where}/{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_json_text(item, f"{where}/{index}")


def _check_text(text: str, what: str) -> None:
    """Text PostgreSQL stores: no NUL character, no lone surrogate (not UTF-8)."""
    if "\x00" in text:
        raise ValueError(f"expected text without NUL characters (\\u0000), got one in {what}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"expected valid Unicode text, got a lone surrogate (\\ud800-\\udfff) "
                         f"in {what}") from None


def parse_status(text: str) -> str:
    status = text.strip().lower()
    if status not in ACCOUNT_STATUSES:
        raise ValueError(f"expected one of {', '.join(ACCOUNT_STATUSES)}, got {text!r}")
    return status


def parse_created(text: str) -> dt.datetime:
    """YYYY-MM-DD (midnight UTC) or an ISO timestamp with its zone."""
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"expected YYYY-MM-DD or an ISO timestamp, got {text!r}") from None
    if value.tzinfo is None:
        if len(text.strip()) > 10:
            raise ValueError(f"expected a time zone on the timestamp (e.g. Z), got {text!r}")
        value = value.replace(tzinfo=dt.UTC)
    try:
        return value.astimezone(dt.UTC)
    except OverflowError:  # 0001-01-01 at +01:00 is before year 1 in UTC
        raise ValueError(f"expected a time between the years 1 and 9999 in UTC, got {text!r}") from None


# ---------------------------------------------------------------------- the registry


class AccountRegistry:
    """Reads and writes the `accounts` table of a trade-log database."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    # -- reading ------------------------------------------------------------------------

    def find(self, ref: str | int) -> Account | None:
        """An account by its registry id or its broker account id. A 32-character
        reference is a UUID first (`add` takes one without hyphens, all digits or not); a
        number is a registry id only if it fits the 64-bit id column."""
        where = account_where(ref)
        if where is None:
            return None
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(ACCOUNTS).where(where)).first()
        return None if row is None else _account(row)

    def get(self, ref: str | int) -> Account:
        account = self.find(ref)
        if account is None:
            raise BotError(
                f"no account {ref} in the registry (expected its id or broker account id); "
                "see `bot accounts list`"
            )
        return account

    def list(self, *, status: str | None = None, profile: str | None = None) -> list[Account]:
        """Accounts by id; `profile` is matched as `add` stores it (a name in lower case)."""
        stmt = sa.select(ACCOUNTS).order_by(ACCOUNTS.c.id)
        if status is not None:
            stmt = stmt.where(ACCOUNTS.c.status == status)
        if profile is not None:  # as stored now, or as an account added before that was
            stmt = stmt.where(ACCOUNTS.c.profile.in_({normalise_profile(profile), profile.strip()}))
        with self.engine.connect() as conn:
            return [_account(row) for row in conn.execute(stmt)]

    def active_by_profile(self) -> dict[str, list[Account]]:
        """Active accounts grouped by profile: what the platform's weekly decision trades."""
        grouped: dict[str, list[Account]] = {}
        for account in self.list(status="active"):
            grouped.setdefault(account.profile, []).append(account)
        return grouped

    # -- writing ------------------------------------------------------------------------

    def add(self, spec: AccountSpec, now: dt.datetime) -> Account:
        """Register a new account; one already registered is an error (use import to update)."""
        if self.find(spec.broker_account_id) is not None:
            raise BotError(
                f"account {spec.broker_account_id} is already registered; "
                "`bot accounts show` it, or change it with `bot accounts import`"
            )
        with self.engine.begin() as conn:
            conn.execute(sa.insert(ACCOUNTS), [_new_row(spec, now)])
        return self.get(spec.broker_account_id)

    def close(self, ref: str | int, now: dt.datetime) -> Account:
        """Mark an account closed (its history stays); closing twice is an error."""
        account = self.get(ref)
        if account.status == "closed":
            raise BotError(f"account {account.broker_account_id} is already closed ({account.closed_at:%Y-%m-%d})")
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(ACCOUNTS)
                .where(ACCOUNTS.c.id == account.id)
                .values(status="closed", closed_at=now, updated_at=now)
            )
        return self.get(account.id)

    def set_subscription(self, account_id: int, subscription_id: str | None, now: dt.datetime) -> None:
        """Remember (or forget, with None) the account's Rebalancing API subscription."""
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(ACCOUNTS)
                .where(ACCOUNTS.c.id == account_id)
                .values(subscription_id=subscription_id, updated_at=now)
            )

    def upsert(self, specs: Sequence[AccountSpec], now: dt.datetime) -> ImportResult:
        """Add new accounts and bring registered ones to `specs`, in one transaction:
        importing the same rows again changes nothing (a spec without a status keeps the
        account's). A closed account is never reopened, since its client left: every spec
        that would is named (with its source) in one BotError and nothing is stored."""
        by_id = {s.broker_account_id: s for s in specs}
        added = updated = unchanged = closed = 0
        with self.engine.begin() as conn:
            existing = _existing(conn, list(by_id))
            _refuse_reopening(existing, by_id)
            fresh = [_new_row(s, now) for cid, s in by_id.items() if cid not in existing]
            for cid, spec in by_id.items():
                row = existing.get(cid)
                if row is None:
                    continue
                changes = _changes(row, spec, now)
                if changes is None:
                    unchanged += 1
                    continue
                conn.execute(sa.update(ACCOUNTS).where(ACCOUNTS.c.id == row.id).values(changes))
                if changes.get("status") == "closed":
                    closed += 1
                else:
                    updated += 1
            if fresh:
                conn.execute(sa.insert(ACCOUNTS), fresh)
                added = len(fresh)
        return ImportResult(added, updated, unchanged, closed)


def _account(row: sa.Row[Any]) -> Account:
    return Account(
        id=int(row.id),
        broker_account_id=row.broker_account_id,
        profile=row.profile,
        status=row.status,
        suitability=row.suitability,
        created_at=row.created_at,
        closed_at=row.closed_at,
        updated_at=row.updated_at,
        subscription_id=row.subscription_id,
    )


def account_where(ref: str | int) -> sa.ColumnElement[bool] | None:
    """What `find` looks up for a reference; None for one that can match no account."""
    if isinstance(ref, int):
        return ACCOUNTS.c.id == ref if 0 < ref <= MAX_ID else None
    text = ref.strip()
    if len(text) == 32:
        try:
            return ACCOUNTS.c.broker_account_id == parse_broker_account_id(text)
        except ValueError:
            pass
    if text.isascii() and text.isdigit():
        number = int(text)
        return ACCOUNTS.c.id == number if 0 < number <= MAX_ID else None
    try:
        return ACCOUNTS.c.broker_account_id == parse_broker_account_id(text)
    except ValueError:
        return None


def _new_row(spec: AccountSpec, now: dt.datetime) -> dict[str, Any]:
    status = spec.status or "active"
    return {
        "broker_account_id": spec.broker_account_id,
        "profile": spec.profile,
        "status": status,
        "suitability": spec.suitability,
        "created_at": spec.created_at or now,
        "closed_at": now if status == "closed" else None,
        "updated_at": now,
    }


def _refuse_reopening(existing: dict[str, sa.Row[Any]], specs: dict[str, AccountSpec]) -> None:
    """BotError listing every spec whose status would reopen a closed account."""
    problems = [
        f"{spec.source + ', column status: ' if spec.source else ''}account {cid} is closed "
        f"({existing[cid].closed_at:%Y-%m-%d}), got status {spec.status}: a closed account is not "
        "reopened (register the client's new account; leave status empty to keep it closed)"
        for cid, spec in specs.items()
        if cid in existing and existing[cid].status == "closed" and spec.status not in (None, "closed")
    ]
    if problems:
        raise BotError(f"{len(problems)} problem(s), nothing imported:\n  " + "\n  ".join(problems))


def _existing(conn: sa.Connection, ids: list[str]) -> dict[str, sa.Row[Any]]:
    column = ACCOUNTS.c.broker_account_id
    return {row.broker_account_id: row for row in rows_where_in(conn, sa.select(ACCOUNTS), column, ids)}


def _changes(row: sa.Row[Any], spec: AccountSpec, now: dt.datetime) -> dict[str, Any] | None:
    """What an import changes on a registered account; None if nothing."""
    changes: dict[str, Any] = {}
    if row.profile != spec.profile:
        changes["profile"] = spec.profile
    if spec.suitability is not None and row.suitability != spec.suitability:
        changes["suitability"] = spec.suitability
    if spec.status is not None and row.status != spec.status:
        changes["status"] = spec.status
        if spec.status == "closed":
            changes["closed_at"] = now
    if not changes:
        return None
    changes["updated_at"] = now
    return changes


def account_order_prefix(instance: str, broker_account_id: str) -> str:
    """The start of every client_order_id the platform sends for one account: the
    instance, then the account, so ids are deterministic per account per decision
    (`<instance>-<account>-<YYYYMMDD>-rb-<SYMBOL>-<side>`) and reconciling one account
    never touches another's orders."""
    return f"{instance}-{broker_account_id}"
