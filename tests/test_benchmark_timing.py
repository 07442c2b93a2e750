"""benchmarks/run.py times its contestants in interleaved rounds: each runs once per
round, in an order that rotates, and keeps its best time."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

RUN = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"


def _load_run_module():
    spec = importlib.util.spec_from_file_location("benchmark_run", RUN)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("benchmark_run", module)
    spec.loader.exec_module(module)
    return module


def test_rounds_interleave_rotate_and_keep_each_best() -> None:
    run = _load_run_module()
    calls: list[str] = []
    pace = iter([9.0, 9.0, 9.0,   # warm-ups: not counted, however slow
                 5.0, 1.0, 3.0,   # round 1: a, b, c
                 2.0, 4.0, 6.0,   # round 2 starts at b: b, c, a
                 7.0, 0.5, 8.0])  # round 3 starts at c: c, a, b

    def contestant(name: str):
        def once() -> float:
            calls.append(name)
            return next(pace)
        return once

    best = run.best_of_interleaved({n: contestant(n) for n in "abc"}, repeat=3)
    assert calls == list("abc") + list("abc") + list("bca") + list("cab")
    assert best == {"a": 0.5, "b": 1.0, "c": 3.0}
