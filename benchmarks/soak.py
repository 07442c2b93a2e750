"""The fault soak and the crash matrix of the live daemon (tests/soak/).

    python benchmarks/soak.py             # SQLite 60 sessions, PostgreSQL 20 (heavy faults, 6
                                          # random kills each), then the crash matrix
    python benchmarks/soak.py --sessions 120 --seed 7 --backend sqlite --no-crash-matrix
    python benchmarks/soak.py --faults moderate --random-kills 0
    python benchmarks/soak.py --only-matrix --matrix-backend postgresql

The daemon's own code (build_live, its jobs and triggers, reconciliation at start) runs in
a child process on a simulated clock against the fake Alpaca and FRED on 127.0.0.1, which
serve the seeded synthetic market (or --data-dir) and inject 429s, 500s, lost and slow
answers at random. The crash matrix kills the bot (SIGKILL) at each point of a rebalance,
restarts it and carries on. One table row per run; exit 0 when every invariant is zero
and every session recovered. PostgreSQL runs use a throwaway database on 127.0.0.1:5432.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FAULTS = {
    "none": {},
    "moderate": {"429": 0.03, "500": 0.03, "lost": 0.02, "slow": 0.02},
    "heavy": {"429": 0.08, "500": 0.08, "lost": 0.05, "slow": 0.04},
}


def main(argv: list[str] | None = None) -> int:
    from tests.soak.harness import KILL_POINTS
    from tests.soak.runs import CRASHES, LEGEND, crash_matrix, details, soak, table

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=60, help="SQLite soak sessions (60)")
    parser.add_argument("--pg-sessions", type=int, default=20, help="PostgreSQL soak sessions (20)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--faults", choices=sorted(FAULTS), default="heavy")
    parser.add_argument("--random-kills", type=int, default=6,
                        help="SIGKILLs at random instants of random jobs during the soak")
    parser.add_argument("--no-crash-matrix", action="store_true")
    parser.add_argument("--only-matrix", action="store_true")
    parser.add_argument("--matrix-backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--points", help=f"crash scenarios, comma separated: {', '.join(CRASHES)}")
    parser.add_argument("--workdir", help="keep databases and bot logs here (default: a temp dir)")
    parser.add_argument("--data-dir", type=Path,
                        help="prices/ and macro/ CSVs (e.g. ../shared/data; default: synthetic)")
    args = parser.parse_args(argv)

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="leverbot-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"bot logs and SQLite files in {workdir}", flush=True)
    results = []
    if not args.only_matrix:
        runs = {"sqlite": args.sessions, "postgresql": args.pg_sessions}
        backends = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
        for backend in backends:
            print(f"soak: {runs[backend]} sessions on {backend}, {args.faults} faults ...",
                  flush=True)
            result = soak(backend, runs[backend], args.seed, workdir,
                          faults=FAULTS[args.faults], random_kills=args.random_kills,
                          name=f"soak {runs[backend]} sessions, {args.faults} faults",
                          data_dir=args.data_dir)
            print(f"  {result.seconds:.0f} s", flush=True)
            results.append(result)
    if not args.no_crash_matrix:
        only = args.points.split(",") if args.points else None
        print(f"crash matrix on {args.matrix_backend}: kill points\n"
              + "\n".join(f"  {k.name:24} {k.job:6} {k.what}" for k in KILL_POINTS.values()),
              flush=True)
        results += crash_matrix(args.matrix_backend, args.seed, workdir, only=only,
                                data_dir=args.data_dir)
    print()
    print(table(results))
    print()
    print(LEGEND)
    problems = "\n".join(filter(None, (details(r) for r in results)))
    if problems:
        print("\nfailures, kills and differences by session:\n" + problems)
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
