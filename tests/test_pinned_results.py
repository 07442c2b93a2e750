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
            100000, 134145.473409, 142203.051686, 149190.134106, 232844.869682, 297362.523862,
            528215.574639, 509870.836588, 716459.857522,
        ],
        'share_days': [
            38670951.9179, 8670776.81074, 9543639.05113, 1030812.65656, 19539314.9654,
            7052193.03316,
        ],
        'final_holdings': [
            895.144153274, 577.358386681, 1077.20637375, 1420.79498306, 3651.54611064,
            2271.13236813,
        ],
        'targets': 'f760498f8cea9022',
        'target_sums': [953, 953, 791.487617756, 185539.952959],
        'fills': 'b3bea5ce00c753b4',
        'fill_sums': [3997118.23495, 43714900.1992, 21857.5212847],
    },
    'erc': {
        'days': 3736,
        'equity': [
            100000, 160205.960793, 177860.644284, 208913.789809, 296511.257526, 374582.526861,
            643243.467658, 505240.673244, 695911.236267,
        ],
        'share_days': [
            50704772.6976, 10475927.2342, 11992314.061, 1904370.42281, 21828137.7075,
            6687246.79917,
        ],
        'final_holdings': [
            902.551674715, 504.829520241, 881.394759626, 1957.23406148, 3292.25300495,
            2068.67240523,
        ],
        'targets': '93e5b696718983b3',
        'target_sums': [953, 953, 806.723163969, 214438.433797],
        'fills': '012988ac506c524e',
        'fill_sums': [4501339.5402, 48844559.6318, 24422.3490744],
    },
    'mean_variance': {
        'days': 3736,
        'equity': [
            100000, 158922.489555, 175423.516693, 220519.652588, 300851.314386, 369482.968782,
            765943.736177, 816324.97352, 999722.280852,
        ],
        'share_days': [
            77046500.8064, 11011670.7187, 12881789.6459, 1721044.50885, 21035271.852,
            7970133.08661,
        ],
        'final_holdings': [
            2247.62048862, 1037.60123019, 671.756866428, 1649.15690384, 6571.84191429,
            1868.05413558,
        ],
        'targets': 'e636854d8b1a1d2c',
        'target_sums': [950, 950, 803.388239711, 190151.982088],
        'fills': '81f986f5e5820f98',
        'fill_sums': [8117777.0773, 78828719.9557, 39414.4720806],
    },
    'strategic': {
        'days': 3736,
        'equity': [
            100000, 166079.761809, 185402.156268, 218477.320241, 344902.924582, 418521.80383,
            791246.091676, 636657.814394, 946533.073814,
        ],
        'share_days': [
            76153342.78, 14645613.6746, 7589740.21224, 2754932.8773, 14120777.9461, 9511600.05632,
        ],
        'final_holdings': [
            2201.82522971, 999.770887289, 793.408702559, 3393.12001337, 2267.12668006,
            2307.92985091,
        ],
        'targets': '91c610be716b395f',
        'target_sums': [953, 953, 788.84175885, 217705.313989],
        'fills': '0a03cb5f381e2d9d',
        'fill_sums': [5367972.49513, 59624097.7196, 29812.1499558],
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
        'fills': 'dcb30bd2370d19f0',
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
        'fills': 'bde0d06ebe2f850c',
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
        'fills': '8b39aa74717ea5d6',
        'fill_sums': [571127.450899, 35956467.9734, 17978.2135876],
    },
    'synthetic': {
        'days': 3736,
        'equity': [
            100000, 135266.85651, 122060.287579, 112329.737241, 201681.160067, 373458.063941,
            322017.669689, 427798.061964, 648112.211087,
        ],
        'share_days': [
            408179.416464, 934892.428061, 1475158.28263, 12991356.47, 18846194.8317, 12697500.7861,
        ],
        'final_holdings': [
            14.6455902513, 86.3961030125, 272.883450343, 14366.1983131, 8449.72215683,
            2963.25191817,
        ],
        'targets': '9c914a1c274b9da9',
        'target_sums': [955, 955, 749.3502827, 554316.935692],
        'fills': 'ec12f889e2196117',
        'fill_sums': [2577361.69666, 37840884.564, 18920.5030848],
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
