"""The soak harness: trading sessions of the live daemon (a child process, see child.py)
against the simulated venue (venue.py), with random faults, SIGKILLs at chosen points
and restarts, and the invariants (checks.py) after every close and at the end.

Time is the venue's and the bot's simulated clock: the harness asks the bot for its next
job (from the daemon's own triggers), moves the venue there (prices, fills, FRED), and
lets the bot run it. A kill point is armed for one kind of job: either the venue holds
its reply to a matching request (the bot waits as for a reply lost in the network) and
the harness kills the bot once the venue has handled the request, or the bot pauses at
a point of its own code (child.PAUSES) and is killed there. Kills are SIGKILL of the bot
process; the bot is restarted a couple of simulated minutes later, as systemd or Docker
would, and goes through its start-up reconciliation.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from bot.daemon.live import instance_name
from bot.data.base import MarketData
from tests.fakes import Fault, RandomFaults, Request, Response
from tests.soak.checks import Invariants, check, read_ledger
from tests.soak.child import PAUSES, ChildSpec, child_main
from tests.soak.venue import Execution, SoakVenue

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "config" / "diversified_leverage.toml"
#: a killed or crashed bot comes back this much later (systemd RestartSec, Docker restart)
RESTART_DELAY = dt.timedelta(minutes=2)
#: real seconds a job may take before the harness calls the bot hung and kills it
JOB_TIMEOUT = 300.0
#: equity rows may differ from the venue by the cents the account's JSON rounds cash to
EQUITY_TOLERANCE = 0.011


# --- kill points ------------------------------------------------------------------------------


def _post(side: str, nth: int) -> Callable[[], Callable[[Request], bool]]:
    """A predicate factory: the nth order POST of `side` after arming."""

    def make() -> Callable[[Request], bool]:
        seen = [0]

        def accepts(request: Request) -> bool:
            body = request.body if isinstance(request.body, dict) else {}
            if request.method == "POST" and request.route == "/v2/orders" and body.get("side") == side:
                seen[0] += 1
                return seen[0] == nth
            return False

        return accepts

    return make


def _get(route: str) -> Callable[[], Callable[[Request], bool]]:
    def make() -> Callable[[Request], bool]:
        return lambda request: request.method == "GET" and request.route == route

    return make


@dataclass(frozen=True)
class KillPoint:
    """Where in a rebalance the bot is killed, and during which job it is armed."""

    name: str
    job: str  # regime | open | poll | close | start (reconciliation) | once
    what: str
    pause: str | None = None  # a pause in the bot's code (child.PAUSES) ...
    held: Callable[[], Callable[[Request], bool]] | None = None  # ... or a held reply
    lose_first: Callable[[], Callable[[Request], bool]] | None = None  # a lost answer before it


KILL_POINTS = {
    k.name: k
    for k in (
        KillPoint("sell_post", "open", "held reply to the first sell POST", held=_post("sell", 1)),
        KillPoint("second_sell_post", "open", "held reply to the second sell POST",
                  held=_post("sell", 2)),
        KillPoint("direct_buy_post", "open", "held reply to a buy POST sent at once "
                  "(first allocation, nothing to sell)", held=_post("buy", 2)),
        KillPoint("released_buy_post", "poll", "held reply to the first buy POST of the poll "
                  "that releases the buys", held=_post("buy", 1)),
        KillPoint("later_released_buy_post", "poll", "held reply to the third buy POST of "
                  "that poll", held=_post("buy", 3)),
        KillPoint("answers_not_logged", "open", "after the venue answered every order, "
                  "before the trade log writes them", pause="answers_not_logged"),
        KillPoint("mid_flush", "open", "inside the trade log's transaction (orders written, "
                  "their events not)", pause="mid_flush"),
        KillPoint("after_release", "poll", "after the poll sent the queued buys, before it "
                  "records them", pause="after_release"),
        KillPoint("lost_post_lookup", "open", "a sell POST whose answer is lost, killed while "
                  "looking the order up", held=_get("/v2/orders:by_client_order_id"),
                  lose_first=_post("sell", 1)),
        KillPoint("close_job", "close", "in the close job, after its poll, before marking "
                  "equity and positions", pause="close_job"),
        KillPoint("close_flush", "close", "inside the close job's transaction",
                  pause="close_flush"),
        KillPoint("reconcile", "start", "during reconciliation at start, before its "
                  "catch-up poll", pause="reconcile"),
        KillPoint("reconcile_held", "start", "held reply to the open-orders list read by "
                  "reconciliation at start", held=_get("/v2/orders")),
        KillPoint("once_sell_post", "once", "`bot once --execute`: held reply to its first "
                  "sell POST", held=_post("sell", 1)),
    )
}
assert all(k.pause is None or k.pause in PAUSES for k in KILL_POINTS.values())


@dataclass(frozen=True)
class Kill:
    """A kill point armed from session `session` (0-based) on, until it fires."""

    point: str
    session: int = 0


# --- configuration and results ----------------------------------------------------------------


@dataclass
class SoakConfig:
    name: str
    market: MarketData
    days: list[dt.date]  # the soak's sessions, consecutive
    database_url: str
    workdir: Path
    seed: int = 1
    faults: dict[str, float] = field(default_factory=dict)  # RandomFaults rates
    slow_seconds: float = 0.3
    kills: list[Kill] = field(default_factory=list)
    random_kills: int = 0  # SIGKILLs at random moments of random jobs
    cash: float = 100_000.0
    holdings: dict[str, float] = field(default_factory=dict)  # dollars held at the start
    execution: Execution = field(default_factory=Execution)
    once_first: bool = False  # the first decision by `bot once --execute`, then the daemon


@dataclass
class SessionRecord:
    day: dt.date
    failures: list[str] = field(default_factory=list)  # failed jobs, kills, failed starts
    failed_job: bool = False  # a job failed (not a kill): it may have missed its work
    decided: bool = False  # an open job completed (the day's decision was taken)
    clean: bool | None = None  # trade log and venue agreed after its close job
    problems: list[str] = field(default_factory=list)
    venue_equity: float | None = None  # cash + positions at the close, at the venue


@dataclass
class SoakResult:
    name: str
    backend: str
    sessions: list[SessionRecord]
    invariants: Invariants
    kills: list[tuple[str, dt.datetime]]
    failed_jobs: list[tuple[str, dt.datetime]]
    failed_starts: list[tuple[str, dt.datetime]]
    crashes: list[tuple[str, dt.datetime]]  # the bot died or hung without being killed
    jobs_run: int
    orders: int
    fills_at_venue: int
    faults: Counter
    resent_ids: int
    min_cash: float
    negative_cash: int
    missed_closes: list[dt.date]  # sessions without an equity row
    equity_differences: list[str]  # equity rows against the venue at the close
    false_defensive: list[str]  # defensive mode entered on a drawdown the venue did not have
    seconds: float
    runs_left_running: list[int] = field(default_factory=list)  # after the last clean stop
    # planned kill points the bot never reached: the scenario did not test what it names
    kills_missed: list[str] = field(default_factory=list)

    @property
    def undecided(self) -> list[dt.date]:
        return [s.day for s in self.sessions if not s.decided]

    def unexplained(self, days: list[dt.date]) -> list[dt.date]:
        """Of `days` (a missing close or decision), those in sessions where no job failed:
        a failed job (retries exhausted) explains its own missing work; a kill must not."""
        failed = {s.day for s in self.sessions if s.failed_job}
        return [d for d in days if d not in failed]

    @property
    def failed_sessions(self) -> list[int]:
        return [i for i, s in enumerate(self.sessions) if s.failures]

    def recovered_next(self) -> tuple[int, int]:
        """(sessions with a failure whose next session ended clean, sessions with a failure);
        a failure in the last session is judged by the final check. Clean: the invariants
        held after its close job, and it recorded its equity (unless its own close job
        failed: that is its failure, judged by the session after it)."""
        failed = self.failed_sessions
        ok = 0
        for i in failed:
            if i + 1 < len(self.sessions):
                ok += bool(self.sessions[i + 1].clean)
            else:
                ok += self.invariants.clean
        return ok, len(failed)

    @property
    def passed(self) -> bool:
        ok, failed = self.recovered_next()
        return (self.invariants.clean and ok == failed and self.negative_cash == 0
                and not self.crashes and not self.runs_left_running and not self.kills_missed
                and not self.equity_differences and not self.false_defensive
                and not self.unexplained(self.missed_closes)
                and not self.unexplained(self.undecided))


# --- the bot process --------------------------------------------------------------------------


def _context():
    """Bot processes fork from a server that has imported the bot once (a fresh
    interpreter per restart would spend seconds on imports)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["tests.soak.child"])
    return ctx


class BotProcess:
    """One bot process and its command pipe."""

    def __init__(self, spec: ChildSpec) -> None:
        ctx = _context()
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=child_main, args=(child, spec), daemon=True)
        self.process.start()
        child.close()

    def send(self, *message) -> None:
        self.conn.send(message)

    def wait(self, killer: Callable[[], str | None] | None = None,
             timeout: float = JOB_TIMEOUT) -> tuple:
        """The next message; ("killed", why) if `killer` said to kill first (or the bot
        paused at an armed point), ("died", code) if it ended without a word."""
        deadline = time.monotonic() + timeout
        while True:
            if self.conn.poll(0.01):
                try:
                    message = self.conn.recv()
                except EOFError:
                    self.process.join(5)
                    return ("died", self.process.exitcode)
                if message[0] == "paused":
                    self.kill()
                    return ("killed", message[1])
                return message
            why = killer() if killer is not None else None
            if why:
                self.kill()
                return ("killed", why)
            if not self.process.is_alive() and not self.conn.poll(0):
                return ("died", self.process.exitcode)
            if time.monotonic() > deadline:
                self.kill()
                return ("hung", timeout)

    def request(self, *message) -> tuple:
        self.send(*message)
        return self.wait()

    def kill(self) -> None:
        """SIGKILL, as the OOM killer or a power cut would: nothing runs after it."""
        if self.process.is_alive():
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.join(10)
        self.conn.close()


# --- the soak ---------------------------------------------------------------------------------


class Soak:
    def __init__(self, config: SoakConfig) -> None:
        from bot.config import load_settings

        self.config = config
        self.settings = load_settings(CONFIG)
        self.prefix = instance_name(self.settings)
        self.venue = SoakVenue(
            config.market, self.settings.symbols, config.days, seed=config.seed,
            cash=config.cash, holdings=config.holdings, execution=config.execution,
        )
        self.sessions = [SessionRecord(d) for d in config.days]
        self._opens = [self._session(d).open_utc for d in config.days]
        self._closes = [self._session(d).close_utc for d in config.days]
        self.end = self._closes[-1] + dt.timedelta(minutes=25)
        self.kills: list[tuple[str, dt.datetime]] = []
        self.failed_jobs: list[tuple[str, dt.datetime]] = []
        self.failed_starts: list[tuple[str, dt.datetime]] = []
        self.crashes: list[tuple[str, dt.datetime]] = []
        self.pending = list(config.kills)
        self.jobs_run = 0
        self._starts = 0
        self._rng = random.Random(f"harness-{config.seed}")
        self._random_kills = self._plan_random_kills()
        self._db = sa.create_engine(config.database_url)

    def _session(self, day: dt.date):
        return next(s for s in self.venue.sessions if s.day == day)

    def _plan_random_kills(self) -> set[tuple[int, str]]:
        """(session, job) pairs where the bot is killed at a random instant of the job
        (the open and close jobs: they talk to the venue long enough to be caught)."""
        n = len(self.config.days)
        planned: set[tuple[int, str]] = set()
        while len(planned) < min(self.config.random_kills, 2 * n):
            planned.add((self._rng.randrange(n), self._rng.choice(("open", "close"))))
        return planned

    def session_index(self, when: dt.datetime) -> int:
        for i, close in enumerate(self._closes):
            if when <= close + dt.timedelta(hours=3):
                return i
        return len(self._closes) - 1

    # ------------------------------------------------------------------ running
    def run(self) -> SoakResult:
        started = time.monotonic()
        cfg = self.config
        self.venue.start()
        if cfg.faults:
            self.venue.set_random_faults(RandomFaults(
                cfg.faults, seed=cfg.seed, slow_seconds=cfg.slow_seconds))
        try:
            first = self._opens[0] - dt.timedelta(hours=2, minutes=10)  # before the regime job
            if cfg.once_first:
                self._once(self._opens[0] + dt.timedelta(minutes=5))
                first = self._opens[0] + dt.timedelta(minutes=8)
            bot = self._start(first)
            while True:
                _, when, name = bot.request("next")
                if when > self.end:
                    break
                bot, _ = self._run_job(bot, name, when)
            self.venue.advance(self.end)
            reply = bot.request("stop", self.end)
            assert reply[0] == "stopped", reply
        finally:
            self.venue.stop()
        return self._result(time.monotonic() - started)

    def _run_job(self, bot: BotProcess, name: str, when: dt.datetime) -> tuple[BotProcess, bool]:
        i = self.session_index(when)
        self.venue.advance(when)
        kill, killer = self._arm(bot, name, i)
        bot.send("run", name, when)
        reply = bot.wait(killer)
        self.jobs_run += 1
        self.venue.observe_cash()
        killed = reply[0] != "done"
        if not killed:
            self._disarm(bot, kill)
            if not reply[2]:
                self.failed_jobs.append((name, when))
                self.sessions[i].failures.append(f"{name} failed at {when:%H:%M}")
                self.sessions[i].failed_job = True
            elif name == "open":
                self.sessions[i].decided = True
        else:
            self._fired(kill)
            self._killed(i, name, when, reply)
            bot = self._start(when + RESTART_DELAY)
        if name == "close":
            self._check_session(i, when)
        return bot, not killed

    def _killed(self, i: int, name: str, when: dt.datetime, reply: tuple) -> None:
        """The bot is gone: killed by the harness, or it died or hung on its own (a
        crash: an exception escaped the daemon, or a job never returned)."""
        if reply[0] == "killed":
            self.kills.append((reply[1], when))
            self.sessions[i].failures.append(f"killed in {name} at {when:%H:%M} ({reply[1]})")
        else:
            self.crashes.append((f"{name}: {reply[0]} {reply[1]}", when))
            self.sessions[i].failures.append(f"bot {reply[0]} in {name} at {when:%H:%M}")
        self.venue.traps.disarm()
        self.venue.traps.release_all()  # the venue's held handler threads can finish

    def _spec(self, at: dt.datetime, mode: str = "daemon", pauses: tuple[str, ...] = ()) -> ChildSpec:
        self._starts += 1
        log = self.config.workdir / f"bot-{self._starts:03d}.log"
        return ChildSpec(self.config.database_url, at, self.venue.env(), str(CONFIG), str(log),
                         mode=mode, pauses=pauses)

    def _start(self, at: dt.datetime) -> BotProcess:
        """A bot process started at `at` (reconciled, ready for commands); a start that
        fails or is killed is retried RESTART_DELAY later."""
        while True:
            if at > self.end:
                raise RuntimeError(f"{self.config.name}: the bot never started again; "
                                   f"last: {(self.failed_starts + self.crashes)[-1:]}")
            self.venue.advance(at)
            i = self.session_index(at)
            kill = self._due("start", i)
            pauses: tuple[str, ...] = ()
            killer = None
            if kill is not None:
                point = KILL_POINTS[kill.point]
                if point.pause:
                    pauses = (point.pause,)
                else:
                    killer = self._trap(point)
            bot = BotProcess(self._spec(at, pauses=pauses))
            reply = bot.wait(killer)
            self.venue.traps.disarm()
            if reply[0] == "ready":
                return bot
            if reply[0] == "start_failed":
                self.failed_starts.append((reply[1], at))
                self.sessions[i].failures.append(f"start failed at {at:%H:%M}: {reply[1]}")
                self.sessions[i].failed_job = True
                bot.process.join(30)
            else:
                self._fired(kill)
                self._killed(i, "start", at, reply)
            at = at + RESTART_DELAY

    def _once(self, at: dt.datetime) -> None:
        """`bot once --execute` at `at` in its own process (killed if a point is armed)."""
        self.venue.advance(at)
        i = self.session_index(at)
        kill = self._due("once", i)
        bot = BotProcess(self._spec(at, mode="once"))
        reply = bot.wait()
        if reply[0] != "ready":
            self.failed_starts.append((str(reply), at))
            return
        killer = self._trap(KILL_POINTS[kill.point]) if kill is not None else None
        bot.send("once", at)
        reply = bot.wait(killer)
        self.venue.traps.disarm()
        if reply[0] == "done":
            if not reply[2]:
                self.failed_jobs.append(("once", at))
                self.sessions[i].failures.append(f"once failed: {reply[3]}")
                self.sessions[i].failed_job = True
            else:
                self.sessions[i].decided = True
            bot.process.join(30)
        else:
            self._fired(kill)
            self._killed(i, "once", at, reply)

    # ------------------------------------------------------------------ kill points
    def _due(self, job: str, session: int) -> Kill | None:
        """The next planned kill, if it is armed for this job now."""
        if not self.pending:
            return None
        kill = self.pending[0]
        if KILL_POINTS[kill.point].job == job and session >= kill.session:
            return kill
        return None

    def _fired(self, kill: Kill | None) -> None:
        if kill is not None and kill in self.pending:
            self.pending.remove(kill)

    def _trap(self, point: KillPoint) -> Callable[[], str | None]:
        """Arm the venue for a held-reply kill point; returns the harness's kill test."""
        traps = self.venue.traps
        if point.lose_first is not None:
            lost = traps.arm(f"{point.name}:lost", point.lose_first(),
                             Fault(Response(504, {"message": "gateway timeout"}), process=True))
            held_accepts = point.held()
            accepts = lambda r: lost.answered.is_set() and held_accepts(r)  # noqa: E731
        else:
            accepts = point.held()
        held = traps.arm(point.name, accepts, Fault.held())
        return lambda: point.name if held.answered.is_set() else None

    def _arm(
        self, bot: BotProcess, job: str, session: int
    ) -> tuple[Kill | None, Callable[[], str | None] | None]:
        """Arm the kill point due for this job, if any: (the kill, the harness's test)."""
        kill = self._due(job, session)
        if kill is not None:
            point = KILL_POINTS[kill.point]
            if point.pause:
                reply = bot.request("arm", point.pause)
                assert reply[0] == "armed", reply
                return kill, None
            return kill, self._trap(point)
        if (session, job) in self._random_kills:
            self._random_kills.discard((session, job))
            deadline = time.monotonic() + self._rng.uniform(0.0, 0.25)
            return None, lambda: "random instant" if time.monotonic() >= deadline else None
        return None, None

    def _disarm(self, bot: BotProcess, kill: Kill | None) -> None:
        """After a job the armed point did not fire in: disarm it for other jobs."""
        self.venue.traps.disarm()
        pause = KILL_POINTS[kill.point].pause if kill is not None else None
        if pause is not None:
            reply = bot.request("disarm", pause)
            assert reply[0] == "disarmed", reply

    # ------------------------------------------------------------------ checks
    def _check_session(self, i: int, when: dt.datetime) -> None:
        """After a close job: the invariants, and the day's equity row against the
        venue's cash and positions at the close."""
        ledger = read_ledger(self._db, self.prefix)
        record = self.sessions[i]
        found = check(self.venue.alpaca, ledger, self.prefix, self.venue.holdings_at_start,
                      after_close=True, snapshot_day=record.day)
        record.venue_equity = self.venue.equity()
        record.problems = found.problems()
        recorded = ledger.equity.get(record.day)
        if recorded is not None and abs(float(recorded) - record.venue_equity) > EQUITY_TOLERANCE:
            record.problems.append(f"equity recorded {float(recorded):.2f}, "
                                   f"venue {record.venue_equity:.2f}")
        # A close job that failed (its retries exhausted) explains its own missing row; it
        # counts as that session's failure, not as the previous one's failure to recover.
        explained = record.failed_job
        if recorded is None:
            record.problems.append(f"no equity recorded for {record.day}")
        record.clean = all(p.startswith("no equity") and explained for p in record.problems)

    def _result(self, seconds: float) -> SoakResult:
        ledger = read_ledger(self._db, self.prefix)
        invariants = check(self.venue.alpaca, ledger, self.prefix, self.venue.holdings_at_start,
                           after_close=True, snapshot_day=self.config.days[-1])
        with self._db.connect() as conn:  # killed ones were closed by the start after them
            running = conn.execute(sa.text("SELECT id FROM runs WHERE status = 'running'"))
            runs_left_running = sorted(running.scalars())
        self._db.dispose()
        faults: Counter = Counter()
        for server in self.venue.servers:
            policy = server.fault_policy
            if policy.random_faults is not None:
                faults.update(kind for _, _, kind in policy.random_faults.drawn)
                policy.random_faults.drawn = []
        with self.venue.alpaca.lock:
            orders = [o for o in self.venue.alpaca.orders]
            fills = sum(1 for o in orders if o.filled > 0)
        equity_differences = [
            f"{r.day}: {p}" for r in self.sessions for p in r.problems if p.startswith("equity")
        ]
        return SoakResult(
            equity_differences=equity_differences,
            false_defensive=self._false_defensive(ledger),
            name=self.config.name,
            backend=self.config.database_url.split(":", 1)[0].split("+")[0],
            sessions=self.sessions,
            invariants=invariants,
            kills=self.kills,
            failed_jobs=self.failed_jobs,
            failed_starts=self.failed_starts,
            crashes=self.crashes,
            jobs_run=self.jobs_run,
            orders=len(orders),
            fills_at_venue=fills,
            faults=faults,
            resent_ids=len(self.venue.alpaca.refused_duplicates),
            min_cash=self.venue.min_cash,
            negative_cash=self.venue.negative_cash,
            missed_closes=sorted(set(self.config.days) - set(ledger.equity)),
            seconds=seconds,
            runs_left_running=runs_left_running,
            kills_missed=[kill.point for kill in self.pending],
        )


    def _false_defensive(self, ledger) -> list[str]:
        """Defensive mode entered on a day whose close left the venue's account less than
        half the rule's drawdown below its best close so far (the rule saw a loss that
        was not there)."""
        threshold = self.settings.risk.drawdown_enter / 2
        before = max(s.day for s in self.venue.sessions if s.day < self.config.days[0])
        peak, drawdown = self.venue.equity_at_start, {before: 0.0}  # the start: that close
        for record in self.sessions:
            if record.venue_equity is not None:
                peak = max(peak, record.venue_equity)
                drawdown[record.day] = 1.0 - record.venue_equity / peak
        out = []
        for day, inputs in ledger.defensive_entries:
            at_venue = drawdown.get(day)
            if at_venue is not None and at_venue < threshold:
                out.append(f"{day}: entered at a drawdown of {inputs.get('drawdown', 0):.1%}, "
                           f"the venue's was {at_venue:.1%}")
        return out


def run_soak(config: SoakConfig) -> SoakResult:
    return Soak(config).run()


# --- helpers for runners ----------------------------------------------------------------------


def soak_days(first: dt.date, sessions: int) -> list[dt.date]:
    """`sessions` consecutive NYSE sessions from `first` on."""
    from bot.daemon.sessions import exchange_sessions

    days = [s.day for s in exchange_sessions(first, first + dt.timedelta(days=sessions * 2 + 10))]
    if len(days) < sessions:
        raise ValueError(f"only {len(days)} sessions after {first}")
    return days[:sessions]


def synthetic(days: list[dt.date], seed: int = 3) -> MarketData:
    """The seeded synthetic market, with two years of history before the soak."""
    from bot.config import load_settings
    from bot.data.synthetic import synthetic_market

    settings = load_settings(CONFIG)
    start = days[0] - dt.timedelta(days=800)
    return synthetic_market(list(settings.symbols), start, days[-1] + dt.timedelta(days=5),
                            seed=seed)


def market(days: list[dt.date], data_dir: Path | None = None) -> MarketData:
    """The soak's market: a CSV directory (such as ../shared/data) or the synthetic one."""
    if data_dir is None:
        return synthetic(days)
    from bot.config import load_settings
    from bot.data.csv_source import load_csv_directory

    return load_csv_directory(data_dir, list(load_settings(CONFIG).symbols))


@contextmanager
def database(backend: str, workdir: Path, name: str) -> Iterator[str]:
    """A fresh trade-log database: a SQLite file in `workdir`, or a throwaway PostgreSQL
    database on 127.0.0.1:5432 dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{workdir / f'{name}.sqlite'}"
        return
    from tests.test_store import throwaway_pg_database

    databases = throwaway_pg_database()
    try:
        yield next(databases)
    finally:
        databases.close()
