"""Full backtests pinned: the equity, holdings, targets (every weight, stop and reason),
orders and fills of the code before its speed work. A faster path that changes one
decision, order or fill fails here; a deliberate change of behaviour updates the pins.

Numbers are pinned to 1e-9 relative, not to the bit: numpy's reductions add in an order
that depends on the CPU's vector instructions, so the same code on another machine
differs in the 15th digit (seen: 716459.8575216059 on one CI machine, ...6066 on the
next). Texts (order ids, reasons, triggers) are pinned exactly, as digests.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from bot.backtest import run_backtest, scratch_tradelog
from bot.config import load_settings, parse_settings
from tests.conftest import REPO

SPAN = {"start": "2010-03-01", "end": "2024-12-31"}
RTOL = 1e-9

PINNED: dict[str, dict[str, object]] = {
    'inverse_vol': {
        'days': 3736,
        'equity': [
            100000, 127838.262583, 133416.332857, 154890.904811, 233099.824128, 297915.029384,
            465554.942692, 432703.326504, 601697.068037,
        ],
        'share_days': [
            36194013.5315, 8058358.66833, 8812116.87521, 919325.079424, 17931228.8492,
            6217787.96637,
        ],
        'final_holdings': [
            751.442155894, 484.672138252, 904.277011557, 1192.70761167, 3065.3450304,
            1906.53605544,
        ],
        'targets': 'd68d82c7a9366cb9',
        'target_sums': [
            953, 953, 773.907078202, 186015.446192,
        ],
        'fills': '70f91913d84d188b',
        'fill_sums': [
            4574742.40177, 46617692.8199, 23308.9034576,
        ],
    },
    'erc': {
        'days': 3736,
        'equity': [
            100000, 148468.329999, 152242.441605, 193151.196768, 269265.319971, 351885.468973,
            493404.335278, 413257.078437, 624909.233808,
        ],
        'share_days': [
            42829490.4038, 8942064.35397, 10184296.6256, 1615000.19399, 18805899.0351,
            5527537.09483,
        ],
        'final_holdings': [
            809.768163226, 452.932374733, 790.786207122, 1756.02779915, 2953.80502124,
            1856.01013308,
        ],
        'targets': '6772b57016231d14',
        'target_sums': [
            950, 950, 778.542588404, 213671.173146,
        ],
        'fills': '11824252b49d84d6',
        'fill_sums': [
            4972888.43742, 49552851.8146, 24776.4863267,
        ],
    },
    'mean_variance': {
        'days': 3736,
        'equity': [
            100000, 150429.413615, 171097.327355, 234455.144953, 283585.383764, 349406.62122,
            641914.843311, 709329.416142, 838422.46921,
        ],
        'share_days': [
            69257835.1525, 9921278.10023, 11944445.2349, 1552706.67221, 19053423.0679,
            6813407.69053,
        ],
        'final_holdings': [
            1883.61678429, 869.560987933, 562.965373814, 1382.07479409, 5508.75726542,
            1565.52146662,
        ],
        'targets': '9583649eb4255d99',
        'target_sums': [
            951, 951, 784.612568881, 191599.238892,
        ],
        'fills': '5ff445cc2f734935',
        'fill_sums': [
            7677963.37862, 80681421.2083, 40340.8024747,
        ],
    },
    'strategic': {
        'days': 3736,
        'equity': [
            100000, 169099.858327, 174600.630945, 219647.231395, 332485.344232, 427911.188294,
            678797.346738, 551690.528988, 776296.626536,
        ],
        'share_days': [
            70221938.5245, 13481171.6976, 6892517.22625, 2346877.2531, 12578476.8946,
            7963901.92512,
        ],
        'final_holdings': [
            1686.1772909, 778.414167435, 629.944634179, 2819.06362782, 1872.31431863,
            1915.94752064,
        ],
        'targets': 'a275a527e6ef4b49',
        'target_sums': [
            956, 956, 760.333045484, 218539.276708,
        ],
        'fills': 'ffe2bc929f13a5f7',
        'fill_sums': [
            6155305.34114, 64780635.5988, 32390.3998991,
        ],
    },
    'robo_balanced': {
        'days': 4262,
        'equity': [
            100000, 111284.696428, 147846.19507, 184777.774441, 197125.746822, 263694.365389,
            280824.869855, 303886.660651, 358776.362951,
        ],
        'share_days': [1349568.51473, 2153882.31463, 1927268.47775, 4417963.75125],
        'final_holdings': [309.858180714, 827.675402181, 0, 0],
        'targets': '13b5dd39494dbae0',
        'target_sums': [860.876296287, 860.876296287, 860.876296287, 0],
        'fills': '345294fbebd4f166',
        'fill_sums': [719435.541683, 60820222.623, 30410.0939469],
    },
    'robo_conservative': {
        'days': 4228,
        'equity': [
            100000, 113788.508823, 118224.556954, 142333.63456, 143921.747601, 155524.739317,
            152009.541341, 148770.903988, 159553.034379,
        ],
        'share_days': [2044687.72277, 1329165.25058, 4522535.83278, 1227987.63555],
        'final_holdings': [0, 1032.77886589, 646.842144733, 0],
        'targets': '7cd20c8b85964711',
        'target_sums': [865.099734623, 865.099734623, 865.099734623, 0],
        'fills': '2ba5453196e00e68',
        'fill_sums': [861089.472769, 61224206.673, 30612.0859895],
    },
    'robo_aggressive': {
        'days': 2355,
        'equity': [
            100000, 103538.966287, 159516.811077, 173364.38336, 190266.837296, 345579.386763,
            281187.516127, 305650.855878, 400843.17132,
        ],
        'share_days': [608797.813561, 2582793.54352, 1447416.71491, 3724203.97933],
        'final_holdings': [398.714764038, 3489.3313643, 0, 0],
        'targets': '9cb8664712bb623d',
        'target_sums': [470.332403331, 470.332403331, 470.332403331, 0],
        'fills': '7c8216a3eafa2922',
        'fill_sums': [571127.450899, 35956467.9734, 17978.2135876],
    },
    'synthetic': {
        'days': 3736,
        'equity': [
            100000, 136464.346815, 134563.565771, 115326.896666, 201166.988138, 369202.2015,
            324627.483835, 406340.976934, 608965.471212,
        ],
        'share_days': [
            406602.14652, 931227.089963, 1452880.94838, 11673787.125, 17980945.4857,
            12167368.8415,
        ],
        'final_holdings': [
            13.7676590415, 81.217080936, 256.52542765, 13505.015278, 7943.20281088,
            2785.61951848,
        ],
        'targets': '8963803f327b2952',
        'target_sums': [
            953, 953, 730.486170406, 553628.304295,
        ],
        'fills': '5cf112d5f9c82906',
        'fill_sums': [
            3024868.88783, 44247676.1204, 22123.89473,
        ],
    },
}


def _digest(texts) -> str:
    return hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]


def summary(settings, market) -> dict[str, object]:
    """What a run did, as numbers (compared to RTOL) and digests of its texts."""
    log = scratch_tradelog("pin")
    result = run_backtest(settings, market, log)
    log.flush()
    targets = log.load_targets(log.run_id)
    equity = result.equity
    fills = result.fills
    return {
        "days": len(equity),
        "equity": equity[np.linspace(0, len(equity) - 1, 9).astype(int)].tolist(),
        "share_days": result.holdings.sum(axis=0).tolist(),
        "final_holdings": result.holdings[-1].tolist(),
        "targets": _digest(
            f"{r.rebalance_id} {r.symbol} {r.trigger} {list(r.reasons)}"
            for r in targets.itertuples()
        ),
        "target_sums": [float(np.nansum(targets[c].to_numpy(float)))
                        for c in ("baseline", "overlay", "final", "stop_price")],
        "fills": _digest(f"{f.client_order_id} {f.side.value}" for f in fills),
        "fill_sums": [sum(f.quantity for f in fills), sum(f.quantity * f.price for f in fills),
                      sum(f.commission + f.slippage_cost for f in fills)],
    }


def assert_pinned(got: dict[str, object], name: str) -> None:
    pinned = PINNED[name]
    assert got.keys() == pinned.keys()
    for key, want in pinned.items():
        if isinstance(want, list):
            assert got[key] == pytest.approx(want, rel=RTOL, abs=1e-9), f"{name}: {key}"
        else:
            assert got[key] == want, f"{name}: {key}"


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
    assert_pinned(summary(cfg, real_market), weighting)


@pytest.mark.parametrize("profile", ["balanced", "conservative", "aggressive"])
def test_the_robo_profiles_are_pinned(shared_data, profile):
    from bot.data.csv_source import load_csv_directory

    cfg = load_settings(REPO / "config" / f"robo_{profile}.toml")
    market = load_csv_directory(shared_data, list(cfg.symbols))
    assert_pinned(summary(cfg, market), f"robo_{profile}")


def test_the_synthetic_market_run_is_pinned(settings):
    from bot.data.synthetic import synthetic_market

    market = synthetic_market(list(settings.symbols), "2008-01-02", "2024-12-31", seed=7)
    assert_pinned(summary(settings, market), "synthetic")
