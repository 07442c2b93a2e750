"""Client accounts of the advisory platform: the registry and its CSV import."""

from bot.accounts.registry import (
    PROFILES,
    Account,
    AccountRegistry,
    AccountSpec,
    ImportResult,
    account_order_prefix,
    profile_config,
)

__all__ = [
    "PROFILES",
    "Account",
    "AccountRegistry",
    "AccountSpec",
    "ImportResult",
    "account_order_prefix",
    "profile_config",
]
