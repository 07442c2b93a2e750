"""API keys of the allocation API: made, hashed (argon2), listed, revoked and checked.

A key reads `lvb_<key id>_<secret>`. The key id is public: it names the key in
`bot api-keys list`, in log lines and in the trade log's `api_keys` row, which holds an
argon2id hash of the whole key and never the key itself; the key is printed once, when it
is made. Checking a key looks its row up by the key id, then verifies the hash. Argon2 is
slow on purpose (~0.1-0.2 s and 64 MiB), so a process remembers a SHA-256 digest of each
key it has verified against that row's hash: later requests compare digests, while the
row is still read on every request, so a revocation takes effect at once.

A key reads every client account, or only the accounts it was made for
(`api_key_accounts`): the allocation API answers a scoped key's request for any other
account as it answers for an account that does not exist.

Every check that may fail (any key but one verified before) first takes one failure from
the caller's budget and gives it back if the key was right: however many wrong keys
arrive at once, no more argon2 verifications run than the budget allows.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from bot.arguments import MAX_ID
from bot.errors import BotError
from bot.store.models import METADATA

API_KEYS, API_KEY_ACCOUNTS = METADATA.tables["api_keys"], METADATA.tables["api_key_accounts"]
PREFIX = "lvb"
_KEY = re.compile(rf"^{PREFIX}_([0-9a-f]{{12}})_([A-Za-z0-9_-]{{43}})$")
_KEY_ID = re.compile(r"^(?:lvb_)?([0-9a-f]{12})_?$")
MAX_NAME = 100
MAX_RATE = 100_000  # requests per minute; more is no limit at all

_hasher = PasswordHasher()  # argon2id, RFC 9106's low-memory profile (t=3, 64 MiB, p=4)
#: argon2 checks run at once: each takes 64 MiB, and 30 wrong secrets for a real key id
#: (ids are public) took the server from 135 MB to 2 GB
SLOW_CHECKS_AT_ONCE = 2
_slow_checks = threading.BoundedSemaphore(SLOW_CHECKS_AT_ONCE)


@dataclass(frozen=True)
class ApiKey:
    """One `api_keys` row, without its hash (safe to show)."""

    id: int
    key_id: str
    name: str
    rate_per_minute: int | None
    created_at: dt.datetime
    revoked_at: dt.datetime | None
    all_accounts: bool = True  # False: only the accounts of api_key_accounts

    @property
    def shown(self) -> str:
        """How the key is named wherever it is shown: its public part only."""
        return f"{PREFIX}_{self.key_id}_***"


def new_key() -> tuple[str, str]:
    """A fresh (key id, whole key): 48 bits of public id, 256 bits of secret."""
    key_id = secrets.token_hex(6)
    return key_id, f"{PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"


def parse_key(text: str) -> str | None:
    """The key id of a well-formed key; None for anything else."""
    match = _KEY.match(text)
    return match.group(1) if match else None


def check_name(text: str) -> str:
    name = text.strip()
    if not name or len(name) > MAX_NAME or not name.isprintable():
        raise BotError(f"name: expected 1-{MAX_NAME} printable characters, got {text!r}")
    return name


def check_rate(value: int | None) -> int | None:
    if value is not None and not 1 <= value <= MAX_RATE:
        raise BotError(f"--rate-limit: expected requests per minute from 1 to {MAX_RATE}, got {value}")
    return value


class ApiKeyStore:
    """The `api_keys` table of a trade-log database."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def create(
        self, name: str, rate_per_minute: int | None, now: dt.datetime,
        accounts: Sequence[int] | None = None,
    ) -> tuple[ApiKey, str]:
        """Make and store a key; returns its row and the key, which nothing else keeps.
        `accounts`: the registry ids of the only client accounts it may read (None: all)."""
        if accounts is not None and not accounts:
            raise BotError("accounts: a scoped key needs at least one client account")
        key_id, key = new_key()
        row = {
            "key_id": key_id, "name": check_name(name), "key_hash": _hasher.hash(key),
            "rate_per_minute": check_rate(rate_per_minute), "created_at": now, "revoked_at": None,
            "all_accounts": accounts is None,
        }
        with self.engine.begin() as conn:
            key_row = conn.execute(sa.insert(API_KEYS).values(**row)).inserted_primary_key[0]
            if accounts is not None:
                conn.execute(sa.insert(API_KEY_ACCOUNTS), [
                    {"api_key_id": key_row, "account_id": a} for a in sorted(set(accounts))
                ])
        return self.get(key_id), key

    def accounts_of(self, key: ApiKey) -> list[int] | None:
        """The registry ids of the accounts a key may read; None for every account."""
        if key.all_accounts:
            return None
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(API_KEY_ACCOUNTS.c.account_id)
                .where(API_KEY_ACCOUNTS.c.api_key_id == key.id)
                .order_by(API_KEY_ACCOUNTS.c.account_id)
            ).scalars()
            return [int(r) for r in rows]

    def may_read(self, key: ApiKey, account_id: int) -> bool:
        """Whether `key` may read the client account with this registry id: read from the
        table on every request, like the key's own row."""
        if key.all_accounts:
            return True
        with self.engine.connect() as conn:
            found = conn.execute(
                sa.select(API_KEY_ACCOUNTS.c.account_id).where(
                    API_KEY_ACCOUNTS.c.api_key_id == key.id,
                    API_KEY_ACCOUNTS.c.account_id == account_id,
                )
            ).first()
        return found is not None

    def list(self) -> list[ApiKey]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(API_KEYS).order_by(API_KEYS.c.id)).all()
        return [_api_key(r) for r in rows]

    def find(self, ref: str) -> ApiKey | None:
        """A key by its key id (with or without the `lvb_` prefix) or its row id. A key
        id is 12 hex digits, and about one in 300 has no letter: it is looked up as a
        key id first (read as a row id only, `create` could not find its own key)."""
        ref = ref.strip()
        match = _KEY_ID.match(ref) or _KEY.match(ref)
        wheres = [API_KEYS.c.key_id == match.group(1)] if match is not None else []
        if ref.isdigit() and int(ref) <= MAX_ID:  # a larger number overflows the column
            wheres.append(API_KEYS.c.id == int(ref))
        with self.engine.connect() as conn:
            for where in wheres:
                row = conn.execute(sa.select(API_KEYS).where(where)).first()
                if row is not None:
                    return _api_key(row)
        return None

    def get(self, ref: str) -> ApiKey:
        key = self.find(ref)
        if key is None:
            raise BotError(f"no API key {ref!r} (expected its id or key id); see `bot api-keys list`")
        return key

    def revoke(self, ref: str, now: dt.datetime) -> ApiKey:
        """Revoke a key for good; revoking twice is an error."""
        key = self.get(ref)
        if key.revoked_at is not None:
            raise BotError(f"API key {key.shown} is already revoked ({key.revoked_at:%Y-%m-%d %H:%M} UTC)")
        with self.engine.begin() as conn:
            conn.execute(sa.update(API_KEYS).where(API_KEYS.c.id == key.id).values(revoked_at=now))
        return self.get(str(key.id))

    def row_with_hash(self, key_id: str) -> tuple[ApiKey, str] | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(API_KEYS).where(API_KEYS.c.key_id == key_id)).first()
        return None if row is None else (_api_key(row), row.key_hash)

    def active_count(self) -> int:
        with self.engine.connect() as conn:
            stmt = sa.select(sa.func.count()).select_from(API_KEYS).where(API_KEYS.c.revoked_at.is_(None))
            return int(conn.execute(stmt).scalar_one())


def _api_key(row: sa.Row) -> ApiKey:
    return ApiKey(int(row.id), row.key_id, row.name, row.rate_per_minute, row.created_at,
                  row.revoked_at, bool(row.all_accounts))


class Verdict(Enum):
    OK = "ok"
    MISSING = "missing"
    INVALID = "invalid"  # malformed, unknown or wrong: the caller learns nothing more
    REVOKED = "revoked"  # the right key, but revoked
    THROTTLED = "throttled"  # the caller's failures budget is spent: not checked


@dataclass(frozen=True)
class Check:
    verdict: Verdict
    key: ApiKey | None = None
    wait: float = 0.0  # THROTTLED: seconds until the budget allows another check


class FailureBudget(Protocol):
    """The failed checks a caller may still make: `take` one (0.0 if allowed, else the
    seconds to wait, nothing taken), `give_back` the one a right key did not use."""

    def take(self) -> float: ...

    def give_back(self) -> None: ...


class _Unlimited:
    def take(self) -> float:
        return 0.0

    def give_back(self) -> None:
        return None


class Authenticator:
    """Checks presented keys against the store (see the module docstring); thread-safe."""

    def __init__(self, store: ApiKeyStore) -> None:
        self.store = store
        self._verified: dict[str, tuple[str, bytes]] = {}  # key id -> (hash, sha256 of key)
        self._lock = threading.Lock()
        self._per_key: dict[str, threading.Lock] = {}  # one check of a stored key id at a time

    def check(self, presented: str | None, failures: FailureBudget | None = None) -> Check:
        """The presented key's verdict. A key verified before passes on its digest alone;
        any other check is charged to `failures` first (THROTTLED if it is spent) and
        refunded if the key is right, so concurrent wrong keys cannot outrun the budget."""
        if not presented:
            return Check(Verdict.MISSING)
        failures = failures or _Unlimited()
        key_id = parse_key(presented)
        found = None if key_id is None else self.store.row_with_hash(key_id)
        if found is None:
            wait = failures.take()
            return Check(Verdict.THROTTLED, wait=wait) if wait > 0 else Check(Verdict.INVALID)
        known = self._known_check(found[0], found[1], presented, failures)
        if known is not None:  # verified before: no lock, no wait behind others' checks
            return known
        # One slow check of a key id at a time: a first burst of the right key waits for
        # one argon2 run and then passes on its digest (each ran its own, and the failures
        # charged meanwhile refused a right key with 429). The row is read again after the
        # wait: a revocation made meanwhile counts.
        with self._key_lock(found[0].key_id):
            found = self.store.row_with_hash(found[0].key_id)
            if found is None:  # deleted meanwhile
                return Check(Verdict.INVALID)
            known = self._known_check(found[0], found[1], presented, failures)
            return known or self._slow_check(found[0], found[1], presented, failures)

    def _known_check(self, key: ApiKey, key_hash: str, presented: str,
                     failures: FailureBudget) -> Check | None:
        """The verdict on a key this process verified before, or None."""
        if not self._known(key.key_id, key_hash, presented):
            return None
        if key.revoked_at is None:
            return Check(Verdict.OK, key)
        failures.take()  # a revoked key counts as a failure, as always
        return Check(Verdict.REVOKED, key)

    def _slow_check(self, key: ApiKey, key_hash: str, presented: str,
                    failures: FailureBudget) -> Check:
        wait = failures.take()
        if wait > 0:
            return Check(Verdict.THROTTLED, wait=wait)
        if not self._matches(key.key_id, key_hash, presented):
            return Check(Verdict.INVALID)
        if key.revoked_at is not None:
            return Check(Verdict.REVOKED, key)
        failures.give_back()
        return Check(Verdict.OK, key)

    def _key_lock(self, key_id: str) -> threading.Lock:
        with self._lock:
            return self._per_key.setdefault(key_id, threading.Lock())

    def _known(self, key_id: str, key_hash: str, presented: str) -> bool:
        """Whether `presented` is the key this process verified against this hash."""
        digest = self._verified_digest(key_id, key_hash)
        return digest is not None and hmac.compare_digest(digest, _sha256(presented))

    def _verified_digest(self, key_id: str, key_hash: str) -> bytes | None:
        """The digest of the key this process verified against this hash, if any."""
        with self._lock:
            known = self._verified.get(key_id)
        return known[1] if known is not None and known[0] == key_hash else None

    def _matches(self, key_id: str, key_hash: str, presented: str) -> bool:
        """The slow check (argon2) of a key `_known` did not pass; a key id verified
        before with another key is wrong without it."""
        if self._verified_digest(key_id, key_hash) is not None:
            return False
        try:
            with _slow_checks:
                _hasher.verify(key_hash, presented)
        except (VerificationError, InvalidHashError):
            return False
        with self._lock:
            self._verified[key_id] = (key_hash, _sha256(presented))
        return True


def _sha256(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()
