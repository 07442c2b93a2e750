"""The soak's runs: the long soak with random faults, the crash matrix (one kill point
per scenario), and the table their invariants are printed in."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tests.soak.harness import (
    KILL_POINTS,
    Kill,
    SoakConfig,
    SoakResult,
    database,
    run_soak,
    soak_days,
    synthetic,
)
from tests.soak.harness import market as market_for
from tests.soak.venue import Execution

FIRST_DAY = dt.date(2024, 5, 20)  # a Monday; 60 sessions reach August (holidays, a half day)
#: random faults per request of the soak: rate limits, server errors, lost and slow answers
SOAK_FAULTS = {"429": 0.03, "500": 0.03, "lost": 0.02, "slow": 0.02}
#: a book far from its targets: the first decision sells TQQQ and DIG and buys the rest
SKEWED = {"TQQQ": 42_000.0, "DIG": 30_000.0}
#: orders are answered unfilled and fill at the next ticks: sells work while buys wait
PATIENT = Execution(answered_filled=((0.0, 1.0),), sticky_sells=0.0)
#: every order is answered filled (a liquid market): the buys go out at once
PROMPT = Execution(answered_filled=((1.0, 1.0),), sticky_sells=0.0)


@dataclass(frozen=True)
class Crash:
    """A crash-matrix scenario: its kill points in order and the market it meets."""

    points: tuple[str, ...]
    holdings: dict[str, float] = field(default_factory=lambda: dict(SKEWED))
    execution: Execution = PATIENT
    once_first: bool = False  # the first decision by `bot once --execute`


CRASHES: dict[str, Crash] = {
    "sell_post": Crash(("sell_post",)),
    "second_sell_post": Crash(("second_sell_post",)),
    "direct_buy_post": Crash(("direct_buy_post",), holdings={}),
    "released_buy_post": Crash(("released_buy_post",)),
    "later_released_buy_post": Crash(("later_released_buy_post",)),
    "answers_not_logged": Crash(("answers_not_logged",)),
    # every order filled in its answer, none logged: the day is decided again, its ids
    # are re-sent (422) and adopted
    "answers_not_logged_filled": Crash(("answers_not_logged",), execution=PROMPT),
    "mid_flush": Crash(("mid_flush",)),
    "after_release": Crash(("after_release",)),
    "lost_post_lookup": Crash(("lost_post_lookup",)),
    "close_job": Crash(("close_job",)),
    "close_flush": Crash(("close_flush",)),
    "reconcile": Crash(("sell_post", "reconcile")),
    "reconcile_held": Crash(("after_release", "reconcile_held")),
    "once_sell_post": Crash(("once_sell_post",), once_first=True),
}


def soak(backend: str, sessions: int, seed: int, workdir: Path, *,
         faults: dict[str, float] | None = None, random_kills: int = 0,
         first_day: dt.date = FIRST_DAY, name: str | None = None,
         data_dir: Path | None = None) -> SoakResult:
    """`sessions` consecutive sessions with random faults (and random SIGKILLs), on the
    synthetic market or the CSV files in `data_dir`."""
    days = soak_days(first_day, sessions)
    name = name or f"soak {sessions} sessions"
    with database(backend, workdir, f"soak-{backend}") as url:
        return run_soak(SoakConfig(
            name, market_for(days, data_dir), days, url, _dir(workdir, f"soak-{backend}"),
            seed=seed, faults=SOAK_FAULTS if faults is None else faults,
            random_kills=random_kills,
        ))


def crash_matrix(backend: str, seed: int, workdir: Path, *, sessions: int = 3,
                 only: Iterable[str] | None = None, faults: dict[str, float] | None = None,
                 data_dir: Path | None = None) -> list[SoakResult]:
    """One scenario per kill point: killed there in the first session, restarted, then
    the following sessions; the invariants after each."""
    days = soak_days(FIRST_DAY, sessions)
    market = market_for(days, data_dir)
    results = []
    for name in only or CRASHES:
        crash = CRASHES[name]
        with database(backend, workdir, f"crash-{name}") as url:
            results.append(run_soak(SoakConfig(
                name, market, days, url, _dir(workdir, f"crash-{name}"), seed=seed,
                faults=faults or {}, kills=[Kill(p) for p in crash.points],
                holdings=crash.holdings, execution=crash.execution, once_first=crash.once_first,
            )))
    return results


def short_run(backend: str, seed: int, workdir: Path) -> SoakResult:
    """The CI soak: 5 sessions with faults and 3 kills (a held sell POST and the poll
    that releases the buys in the first session, the close job of the third)."""
    days = soak_days(FIRST_DAY, 5)
    kills = [Kill("sell_post"), Kill("after_release"), Kill("close_job", session=2)]
    with database(backend, workdir, "short") as url:
        return run_soak(SoakConfig(
            "short: 5 sessions, 3 kills", synthetic(days), days, url, _dir(workdir, "short"),
            seed=seed, faults={"429": 0.02, "500": 0.02, "lost": 0.01, "slow": 0.01},
            kills=kills, holdings=SKEWED, execution=PATIENT,
        ))


def _dir(root: Path, name: str) -> Path:
    path = root / name
    path.mkdir(parents=True, exist_ok=True)
    return path


# --- the table --------------------------------------------------------------------------------

COLUMNS = (
    "scenario", "db", "sessions", "jobs", "orders", "faults", "kills", "failed jobs",
    "crashes", "ids re-sent", "dup ids", "missing in log", "fill diff", "symbol diff", "position diff", "status diff",
    "left open", "negative cash", "equity diff", "false defensive", "no close",
    "no decision", "runs left running", "recovered", "ok",
)


def row(result: SoakResult) -> list[str]:
    inv = result.invariants
    ok, failed = result.recovered_next()
    return [
        result.name, result.backend, str(len(result.sessions)), str(result.jobs_run),
        str(result.orders), str(sum(result.faults.values())), _kills(result),
        str(len(result.failed_jobs) + len(result.failed_starts)), str(len(result.crashes)),
        str(result.resent_ids), str(len(inv.duplicate_ids)),
        str(len(inv.missing_from_log)), str(len(inv.fill_differences)),
        str(len(inv.symbol_differences)), str(len(inv.position_differences)),
        str(len(inv.status_differences)), str(len(inv.left_open)), str(result.negative_cash),
        str(len(result.equity_differences)), str(len(result.false_defensive)),
        _missed(result, result.missed_closes), _missed(result, result.undecided),
        str(len(result.runs_left_running)), f"{ok}/{failed}", "yes" if result.passed else "NO",
    ]


def _kills(result: SoakResult) -> str:
    """Kills done, and the planned ones never reached (if any)."""
    missed = len(result.kills_missed)
    return f"{len(result.kills)} ({missed} never reached)" if missed else str(len(result.kills))


def _missed(result: SoakResult, days: list) -> str:
    """How many, and how many of them no failed job explains (if any)."""
    unexplained = len(result.unexplained(days))
    return f"{len(days)} ({unexplained} unexplained)" if unexplained else str(len(days))


def table(results: list[SoakResult]) -> str:
    """One line per scenario, GitHub markdown."""
    head = "| " + " | ".join(COLUMNS) + " |"
    rule = "| " + " | ".join("---" if i == 0 else "---:" for i in range(len(COLUMNS))) + " |"
    lines = [head, rule]
    lines += ["| " + " | ".join(row(r)) + " |" for r in results]
    return "\n".join(lines)


LEGEND = """\
sessions: trading sessions driven; jobs: daemon jobs run; orders: orders at the venue;
faults: random faults drawn (429, 500, lost and slow answers); kills: SIGKILLs of the bot (and planned kill points never reached, which fail the run);
failed jobs: jobs that failed (retries exhausted) and starts that failed. Invariants
(targets 0): crashes: the bot died or hung without being killed; (ids re-sent: POSTs of a
client id the venue already had, refused with 422 and the order adopted: not an
invariant, it shows that path ran); dup ids: client ids with more than one order at the venue; missing in log:
venue orders the trade log lacks; fill diff: orders whose filled quantity at the venue
differs from the fills recorded (or from orders.filled_quantity); symbol diff: the same
per symbol; position diff: venue positions against the starting book plus the recorded
fills; status diff: final at both but not the same; left open: open in the log but final
or unknown at the venue, or still working after the close; negative cash: times the
account showed cash below zero; equity diff: equity rows that differ from the venue's
cash + positions at the close; false defensive: defensive mode entered on a drawdown the
venue's account did not have; no close / no decision: sessions without an equity row /
without a completed decision (explained when a job of that session failed after its
retries; a kill must never cause one); runs left running: runs still marked 'running'
after the last clean stop (a killed run must be marked failed by the start after it);
recovered: sessions with a failure or a kill whose
next session ended with the trade log and the venue in agreement (the last session: the
final check). ok: every invariant 0, every session recovered."""


def details(result: SoakResult) -> str:
    """What went wrong, if anything, for the report under the table."""
    lines = []
    for problem in result.invariants.problems():
        lines.append(f"  {result.name}: {problem}")
    for i, s in enumerate(result.sessions):
        if s.failures or s.problems:
            lines.append(f"  {result.name} session {i + 1} {s.day}: failures={s.failures} "
                         f"problems={s.problems}")
    for text, when in result.crashes:
        lines.append(f"  {result.name}: crash at {when:%Y-%m-%d %H:%M}: {text}")
    for text in result.equity_differences + result.false_defensive:
        lines.append(f"  {result.name}: {text}")
    if result.missed_closes:
        lines.append(f"  {result.name}: no equity row for {[str(d) for d in result.missed_closes]}")
    if result.undecided:
        lines.append(f"  {result.name}: no decision on {[str(d) for d in result.undecided]}")
    if result.kills_missed:
        lines.append(f"  {result.name}: kill points never reached: {result.kills_missed}")
    return "\n".join(lines)


def describe_points() -> str:
    return "\n".join(f"  {k.name:24} {k.job:6} {k.what}" for k in KILL_POINTS.values())
