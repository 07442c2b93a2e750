"""Speed benchmark, peer side: numpy loop vs vectorbt vs bt on one fixed-weight case.

Run with the separate benchmark virtualenv (bt and vectorbt are not project deps):

    /work/benchvenv/bin/python benchmarks/run_peers.py [--data-dir DIR] [--repeat N]

Checks that the three equity curves agree (final value within 1e-6 relative, and
prints the max relative difference over the whole daily curve), then prints the
best-of-N warm wall time of each and its ratio to the numpy loop.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers import (  # noqa: E402
    fixed_weight_bt,
    fixed_weight_numpy,
    fixed_weight_vectorbt,
    load_prices,
    time_warm,
)

WEIGHTS = {"TQQQ": 0.20, "UPRO": 0.20, "UDOW": 0.10, "TMF": 0.25, "UGL": 0.10, "DIG": 0.15}
START, END = "2010-03-01", "2024-12-31"
EVERY = 4
CASH = 100_000.0
RTOL = 1e-6

# ../shared/data next to the repository (see shared/data/PROVENANCE.md); never copied in.
DEFAULT_DATA_DIR = Path(
    os.environ.get(
        "BENCH_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "prices"
    )
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)

    import bt
    import pandas as pd
    import vectorbt as vbt

    prices = load_prices(args.data_dir, WEIGHTS, START, END)
    print(
        f"data: {prices.shape[0]} days x {prices.shape[1]} symbols, "
        f"{prices.index[0].date()} .. {prices.index[-1].date()}; rebalance every {EVERY} days "
        f"({len(range(0, len(prices), EVERY))} rebalances)"
    )
    print(
        f"versions: numpy {np.__version__}, pandas {pd.__version__}, "
        f"vectorbt {vbt.__version__}, bt {bt.__version__}"
    )

    impls = {
        "numpy": fixed_weight_numpy,
        "vectorbt": fixed_weight_vectorbt,
        "bt": fixed_weight_bt,
    }
    curves = {name: fn(prices, WEIGHTS, every=EVERY, cash=CASH) for name, fn in impls.items()}

    ref = curves["numpy"]
    ok = True
    for name, eq in curves.items():
        if not eq.index.equals(ref.index):
            print(f"FAIL {name}: index differs from the reference")
            ok = False
            continue
        final_rel = abs(eq.iloc[-1] / ref.iloc[-1] - 1.0)
        curve_rel = float(np.max(np.abs(eq.to_numpy() / ref.to_numpy() - 1.0)))
        print(
            f"{name:>9}: final equity {eq.iloc[-1]:,.6f}  final rel diff {final_rel:.2e}  max curve rel diff {curve_rel:.2e}"
        )
        ok &= final_rel <= RTOL and curve_rel <= RTOL
    assert ok, f"implementations disagree beyond {RTOL:g} relative"

    times = {
        name: time_warm(fn, prices, WEIGHTS, EVERY, CASH, repeat=args.repeat)
        for name, fn in impls.items()
    }
    base = times["numpy"]
    print(f"warm wall time, best of {args.repeat} after 1 warm-up:")
    for name, t in times.items():
        print(f"{name:>9}: {t * 1e3:10.2f} ms   x{t / base:8.2f} vs numpy")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
