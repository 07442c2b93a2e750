"""Sweeps in the trade log: the `sweeps` row of a `bot sweep`, and its runs, each tagged
in `sweep_runs` with its place in the grid and the values it set.

A sweep's runs are ordinary `runs` rows (mode backtest, their own full config), so every
command that reads runs reads them. They are all opened in one statement before any
combination starts (their ids name their orders), and each is closed as it completes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import pandas as pd
import sqlalchemy as sa

from bot.errors import BotError
from bot.store.models import METADATA

_T = METADATA.tables
RUNS, SWEEPS, SWEEP_RUNS = _T["runs"], _T["sweeps"], _T["sweep_runs"]


def start_sweep(engine: sa.Engine, row: dict[str, Any]) -> int:
    """Write the sweep's row (status running) now; returns its id."""
    with engine.begin() as conn:
        stmt = sa.insert(SWEEPS).returning(SWEEPS.c.id)
        return int(conn.execute(stmt, {**row, "status": "running"}).scalar_one())


def start_sweep_runs(
    engine: sa.Engine,
    sweep_id: int,
    runs: Sequence[dict[str, Any]],
    params: Sequence[tuple[int, dict[str, Any]]],
) -> list[int]:
    """Open one run per combination (rows of `runs`, status running) and tag each with
    (position, params); returns the run ids in the order given, in one transaction."""
    if not runs:
        return []
    with engine.begin() as conn:
        stmt = sa.insert(RUNS).returning(RUNS.c.id, sort_by_parameter_order=True)
        ids = [int(i) for i in conn.execute(stmt, [{**r, "status": "running"} for r in runs]).scalars()]
        conn.execute(
            sa.insert(SWEEP_RUNS),
            [
                {"run_id": run_id, "sweep_id": sweep_id, "position": position, "params": values}
                for run_id, (position, values) in zip(ids, params, strict=True)
            ],
        )
    return ids


def finish_sweep_runs(engine: sa.Engine, ends: Sequence[dict[str, Any]]) -> None:
    """Close combinations' runs in one transaction; each end is a dict of run_id, status,
    finished_at, summary (None if failed) and error (None unless failed)."""
    if not ends:
        return
    runs = sa.update(RUNS).where(RUNS.c.id == sa.bindparam("run")).values(
        status=sa.bindparam("status"),
        finished_at=sa.bindparam("finished_at"),
        summary=sa.bindparam("summary"),
    )
    errors = sa.update(SWEEP_RUNS).where(SWEEP_RUNS.c.run_id == sa.bindparam("run")).values(
        error=sa.bindparam("error")
    )
    ends = sorted(ends, key=lambda e: e["run_id"])  # rows locked in id order, as a beat does
    with engine.begin() as conn:
        conn.execute(runs, [
            {"run": e["run_id"], "status": e["status"], "finished_at": e["finished_at"],
             "summary": e["summary"]}
            for e in ends
        ])
        failed = [{"run": e["run_id"], "error": e["error"]} for e in ends if e["error"] is not None]
        if failed:
            conn.execute(errors, failed)


def finish_sweep(
    engine: sa.Engine,
    sweep_id: int,
    status: str,
    finished_at: dt.datetime,
    result: dict[str, Any] | None = None,
) -> None:
    """Close the sweep; a failed one also fails the runs it left open (none stays running)."""
    with engine.begin() as conn:
        if status == "failed":
            open_runs = sa.select(SWEEP_RUNS.c.run_id).where(SWEEP_RUNS.c.sweep_id == sweep_id)
            conn.execute(
                sa.update(RUNS)
                .where(RUNS.c.id.in_(open_runs), RUNS.c.status == "running")
                .values(status="failed", finished_at=finished_at)
            )
        conn.execute(
            sa.update(SWEEPS)
            .where(SWEEPS.c.id == sweep_id)
            .values(status=status, finished_at=finished_at, result=result)
        )


def load_sweep(engine: sa.Engine, sweep_id: int) -> dict[str, Any]:
    """The sweep's row as a dict; an error naming the id if there is none."""
    with engine.connect() as conn:
        row = conn.execute(sa.select(SWEEPS).where(SWEEPS.c.id == int(sweep_id))).one_or_none()
    if row is None:
        raise BotError(f"no sweep {sweep_id} in this trade log")
    return dict(row._mapping)


def load_sweep_runs(engine: sa.Engine, sweep_id: int) -> pd.DataFrame:
    """The sweep's runs in grid order: position, run_id, params, status, summary, error."""
    t, r = SWEEP_RUNS, RUNS
    stmt = (
        sa.select(t.c.position, t.c.run_id, t.c.params, r.c.status, r.c.summary, t.c.error)
        .join(r, r.c.id == t.c.run_id)
        .where(t.c.sweep_id == int(sweep_id))
        .order_by(t.c.position)
    )
    with engine.connect() as conn:
        result = conn.execute(stmt)
        return pd.DataFrame(result.all(), columns=list(result.keys()))


def sweep_of_run(engine: sa.Engine, run_id: int) -> tuple[int, dict[str, Any]] | None:
    """(sweep id, parameter values) of a run made by a sweep, else None."""
    stmt = sa.select(SWEEP_RUNS.c.sweep_id, SWEEP_RUNS.c.params).where(
        SWEEP_RUNS.c.run_id == int(run_id)
    )
    with engine.connect() as conn:
        row = conn.execute(stmt).one_or_none()
    return None if row is None else (int(row.sweep_id), dict(row.params))
