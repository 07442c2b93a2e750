"""The fault soak and crash matrix: the live daemon's own code, in a child process on a
simulated clock, trading against the fake Alpaca and FRED for many sessions while the
venue injects faults and the harness SIGKILLs the bot at chosen points of a rebalance.

    venue.py     the simulated market around the fakes: calendar, prices, fills, FRED
    child.py     the bot process: build_live + the daemon's schedule, one job per command
    harness.py   sessions, restarts, kill points (held replies and pauses in the child)
    checks.py    the invariants, read from the venue and the trade log
    runs.py      the soak, the crash matrix, the CI run, and the table of results

`benchmarks/soak.py` runs the full soak; tests/test_soak.py a short one in CI.
"""
