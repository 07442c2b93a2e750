"""Full backtests pinned to the bit: the equity, holdings, targets (every weight, stop
and reason) and fills of the code before its speed work, as digests. A faster path that
changed one float anywhere fails here; a deliberate change of behaviour updates them."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from bot.backtest import run_backtest, scratch_tradelog
from bot.config import load_settings, parse_settings
from tests.conftest import REPO

SPAN = {"start": "2010-03-01", "end": "2024-12-31"}

# name -> (final equity, equity, holdings, targets, fills digests)
PINNED = {
    "inverse_vol": ("716459.8575216059", "4fd5a2e4bbfdbf0f", "f3ca9f930a8cd00d", "44921acf8b51d4c7", "bc15d9e98027d6b8"),
    "erc": ("695911.2362666498", "677e5490015b7b98", "871982e14323b89b", "f0786316023a6b3f", "30a0280968fdcc8d"),
    "mean_variance": ("999722.2808521742", "f80691d57804e12a", "8ca6219910a45ea4", "612077079e07830f", "da343b2a85adfcb5"),
    "strategic": ("946533.0738138439", "e1ca3ba3f112e2d8", "2ca0431d03518395", "35e399b1f4a358a2", "6a84273f4f68fefa"),
    "robo_balanced": ("358776.36295061884", "3b6731ece9e7f463", "57fa7ac9ce4cbeb0", "420b49c16cd6f5b1", "87919f18368c1e1d"),
    "robo_conservative": ("159553.03437894327", "da939e2c956f83df", "574718c4f823fad7", "3cc6d9dc3f4d3ccb", "de5837881ab4f133"),
    "robo_aggressive": ("400843.171319744", "71a025844ed41446", "e4336099df7b763e", "6a958534c74acb48", "066831efe0ff8c58"),
    "synthetic": ("648112.2110867094", "91c43f195150b83b", "0092123c627c669b", "31b70d2a0c58445c", "c3fb28fca34f7c27"),
}


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def fingerprint(settings, market) -> tuple[str, ...]:
    log = scratch_tradelog("pin")
    result = run_backtest(settings, market, log)
    log.flush()
    targets = log.load_targets(log.run_id).astype(str).to_csv(index=False)
    fills = [(f.client_order_id, f.quantity, f.price) for f in result.fills]
    return (
        repr(float(result.equity[-1])),
        _digest(result.equity),
        _digest(result.holdings),
        hashlib.sha256(targets.encode()).hexdigest()[:16],
        hashlib.sha256(repr(fills).encode()).hexdigest()[:16],
    )


def _variant(settings, **sections):
    raw = settings.model_dump(mode="json")
    for section, fields in sections.items():
        raw[section].update(fields)
    return parse_settings(raw, "pinned")


@pytest.mark.parametrize("weighting", ["inverse_vol", "erc", "mean_variance", "strategic"])
def test_the_leverage_strategy_is_pinned(settings, real_market, weighting):
    cfg = _variant(settings, backtest=SPAN) if weighting == "inverse_vol" else _variant(
        settings, strategy={"weighting": weighting}, backtest=SPAN
    )
    assert fingerprint(cfg, real_market) == PINNED[weighting]


@pytest.mark.parametrize("profile", ["balanced", "conservative", "aggressive"])
def test_the_robo_profiles_are_pinned(shared_data, profile):
    from bot.data.csv_source import load_csv_directory

    cfg = load_settings(REPO / "config" / f"robo_{profile}.toml")
    market = load_csv_directory(shared_data, list(cfg.symbols))
    assert fingerprint(cfg, market) == PINNED[f"robo_{profile}"]


def test_the_synthetic_market_run_is_pinned(settings):
    from bot.data.synthetic import synthetic_market

    market = synthetic_market(list(settings.symbols), "2008-01-02", "2024-12-31", seed=7)
    assert fingerprint(settings, market) == PINNED["synthetic"]
