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
            100000, 136289.906777, 125497.917357, 128144.572581, 193439.991184, 246898.921712,
            371539.50668, 339578.038572, 467157.293457,
        ],
        'share_days': [
            33381003.4408, 7145166.26703, 7745626.98844, 773914.071528, 14786189.4475,
            5057424.48301,
        ],
        'final_holdings': [
            577.274078376, 372.335594603, 694.685112285, 940.672802009, 2371.90041495,
            1497.32908542,
        ],
        'targets': '7d878afd0ba0dae5',
        'target_sums': [
            955, 955, 760.888343347, 187924.574404,
        ],
        'fills': '82a0628ab489c0ab',
        'fill_sums': [
            4266195.79986, 38729171.7742, 19364.6248971,
        ],
    },
    'erc': {
        'days': 3736,
        'equity': [
            100000, 158500.573276, 166306.905157, 220526.962631, 348432.589155, 455422.917588,
            637598.43694, 566064.010952, 828098.370901,
        ],
        'share_days': [
            49705387.0257, 10595004.4527, 12145432.4467, 2083659.77684, 24697695.6233,
            7216101.61031,
        ],
        'final_holdings': [
            1073.06415156, 600.203263695, 1047.91021547, 2326.99995625, 3914.23424989,
            2459.49153001,
        ],
        'targets': '093ee829dbcfdd2a',
        'target_sums': [
            948, 948, 798.894560006, 213389.052206,
        ],
        'fills': 'fa1a6a4386a78a84',
        'fill_sums': [
            5335381.3099, 63148968.2835, 31574.5720208,
        ],
    },
    'mean_variance': {
        'days': 3736,
        'equity': [
            100000, 139020.363565, 157732.934447, 216182.336395, 261483.495409, 322072.030366,
            616675.506841, 730862.124144, 864219.856449,
        ],
        'share_days': [
            64846236.5086, 9424132.96453, 11195280.5487, 1522199.49555, 18500914.4722,
            6706097.61434,
        ],
        'final_holdings': [
            1941.57371338, 896.316475002, 580.287232762, 1424.59979785, 5678.25599619,
            1613.69093367,
        ],
        'targets': '9de59943763d63bf',
        'target_sums': [
            953, 953, 782.552782254, 191900.89317,
        ],
        'fills': 'a4bdcac79ae3f4d3',
        'fill_sums': [
            7602666.55258, 76839853.3131, 38420.0213326,
        ],
    },
    'strategic': {
        'days': 3736,
        'equity': [
            100000, 169158.471369, 182139.559913, 229407.871066, 347260.347547, 447020.801222,
            704985.582632, 561591.672181, 790198.222506,
        ],
        'share_days': [
            73715240.8428, 14014549.718, 7186397.80132, 2408926.69476, 13086944.9533,
            8247261.07505,
        ],
        'final_holdings': [
            1716.37265004, 792.353683443, 641.225419756, 2869.54624262, 1905.84294196,
            1950.25750914,
        ],
        'targets': 'ee681e5bad93017b',
        'target_sums': [
            955, 955, 766.585823834, 218363.821395,
        ],
        'fills': '9db5a2a25e53daca',
        'fill_sums': [
            6050374.83444, 67171946.2237, 33586.0572833,
        ],
    },
    'robo_balanced': {
        'days': 4262,
        'equity': [
            100000, 111284.696428, 147846.19507, 184777.774441, 197125.746822, 263694.365389,
            280824.869855, 303886.660651, 358776.362951,
        ],
        'share_days': [
            1349568.51473, 2153882.31463, 1927268.47775, 4417963.75125,
        ],
        'final_holdings': [
            309.858180714, 827.675402181, 0, 0,
        ],
        'targets': '13b5dd39494dbae0',
        'target_sums': [
            860.876296287, 860.876296287, 860.876296287, 0,
        ],
        'fills': '345294fbebd4f166',
        'fill_sums': [
            719435.541683, 60820222.623, 30410.0939469,
        ],
    },
    'robo_conservative': {
        'days': 4228,
        'equity': [
            100000, 113788.508823, 118224.556954, 142333.63456, 143921.747601, 155524.739317,
            152009.541341, 148770.903988, 159553.034379,
        ],
        'share_days': [
            2044687.72277, 1329165.25058, 4522535.83278, 1227987.63555,
        ],
        'final_holdings': [
            0, 1032.77886589, 646.842144733, 0,
        ],
        'targets': '7cd20c8b85964711',
        'target_sums': [
            865.099734623, 865.099734623, 865.099734623, 0,
        ],
        'fills': '2ba5453196e00e68',
        'fill_sums': [
            861089.472769, 61224206.673, 30612.0859895,
        ],
    },
    'robo_aggressive': {
        'days': 2355,
        'equity': [
            100000, 103538.966287, 159516.811077, 173364.38336, 190266.837296, 345579.386763,
            281187.516127, 305650.855878, 400843.17132,
        ],
        'share_days': [
            608797.813561, 2582793.54352, 1447416.71491, 3724203.97933,
        ],
        'final_holdings': [
            398.714764038, 3489.3313643, 0, 0,
        ],
        'targets': '9cb8664712bb623d',
        'target_sums': [
            470.332403331, 470.332403331, 470.332403331, 0,
        ],
        'fills': '7c8216a3eafa2922',
        'fill_sums': [
            571127.450899, 35956467.9734, 17978.2135876,
        ],
    },
    'synthetic': {
        'days': 3736,
        'equity': [
            100000, 137381.992338, 136519.651822, 117506.897007, 207751.740672, 382476.256626,
            337972.185149, 423930.258997, 632678.375782,
        ],
        'share_days': [
            415579.172878, 953115.115394, 1486659.15432, 12343818.956, 18564978.9327,
            12550245.5627,
        ],
        'final_holdings': [
            14.253847309, 83.9854266921, 271.03183112, 13546.4502906, 8254.22259027, 2953.00050788,
        ],
        'targets': '1d939d3876268088',
        'target_sums': [
            952, 952, 730.040839554, 553565.708614,
        ],
        'fills': '94c20368d1a945bf',
        'fill_sums': [
            3163603.66892, 46398989.8189, 23199.5548201,
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
