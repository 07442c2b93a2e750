"""Where a sweep's combinations run: a process pool on this machine (the default) or a
Dask distributed cluster (`--cluster tcp://host:8786`). Both take the market once per
worker, never a file path to reload, and hand back each outcome as it completes; a
combination that fails, or whose worker dies, comes back as a failed outcome. A local
pool that breaks (a worker killed) runs what it left undone in a fresh pool, once.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from collections.abc import Generator, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import structlog

from bot.data.base import MarketData
from bot.errors import BotError
from bot.sweep.variant import VariantOutcome, VariantTask, failed_outcome, run_variant

log = structlog.get_logger(__name__)

CONNECT_TIMEOUT_S = 10
WORKERS_TIMEOUT_S = 30


class Executor(Protocol):
    label: str

    def outcomes(self, market: MarketData, tasks: Sequence[VariantTask]) -> Iterator[VariantOutcome]:
        """Run every task; yield each outcome as it completes."""
        ...

    def close(self) -> None: ...


def default_workers() -> int:
    """The cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# --------------------------------------------------------------------- local processes

_MARKET: MarketData | None = None  # a pool worker's copy, set once by _init_worker
_STARTED: Any = None  # the pool's shared flags: _STARTED[i] = 1 once task i has started


# How much lower a pool worker's CPU priority is than the sweep's own process. That
# process writes every combination's records one after another (--record full): with as
# many workers as cores it would get a share of a core, and the workers would wait on
# it; a lower priority for them lets it run when it has work. 10 combinations with
# --record full on 2 cores: 7.8 s at equal priority, 7.0 s with this (its writes 6.4 s
# to 4.0 s). The summary mode, whose main process has next to nothing to do, is unchanged.
WORKER_NICENESS = 10


def _init_worker(market: MarketData, started: Any) -> None:
    """In each pool process: keep the market (inherited by fork, not reloaded) and the
    started flags, leave Ctrl-C to the parent, die with it, and yield the CPU to it
    (WORKER_NICENESS)."""
    global _MARKET, _STARTED
    _MARKET, _STARTED = market, started
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(os, "nice"):  # not on Windows
        os.nice(WORKER_NICENESS)
    if sys.platform.startswith("linux"):
        from bot.runner import _die_with_parent

        _die_with_parent()


def _run_in_pool(index: int, task: VariantTask) -> VariantOutcome:
    """Run task `index` of the pool's list, flagged as started first: when a worker dies
    the pool says only that it broke, and the flags tell what was running then."""
    assert _MARKET is not None, "pool worker started without its market"
    _STARTED[index] = 1
    return run_variant(_MARKET, task)


# What a combination that a broken pool left undone is failed with, by whether it was
# running when the first pool broke and when the retry's pool broke.
WORKER_DIED = "a worker process died running it, in both pools (killed, or out of memory?)"
DIED_BESIDE = ("did not finish: a worker process died while it ran (it, or a combination "
               "running beside it, was killed)")
POOL_BROKE = "not run: the worker pool broke (a worker process died running another combination)"


@dataclass(frozen=True)
class Broken:
    """What a pool that broke left undone: the tasks running then (one of them, or one
    that had just finished, killed its worker) and those not started."""

    running: list[VariantTask]
    not_started: list[VariantTask]

    @property
    def undone(self) -> list[VariantTask]:
        return self.not_started + self.running

    def was_running(self, task: VariantTask) -> bool:
        return any(task is t for t in self.running)


def why_undone(task: VariantTask, first: Broken, second: Broken) -> str:
    """The error of a combination left undone by both pools."""
    if first.was_running(task) and second.was_running(task):
        return WORKER_DIED
    if first.was_running(task) or second.was_running(task):
        return DIED_BESIDE
    return POOL_BROKE


class LocalPool:
    """A process pool of `workers` processes. On Linux they fork from this process after
    the data is loaded and share it copy-on-write; elsewhere each gets one pickled copy."""

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise BotError(f"--workers {workers}: expected 1 or more")
        self.workers = workers
        self.label = f"local process pool, {workers} worker(s)"
        self._pool: ProcessPoolExecutor | None = None
        self._pending: dict[Future[VariantOutcome], tuple[int, VariantTask]] = {}

    def outcomes(self, market: MarketData, tasks: Sequence[VariantTask]) -> Iterator[VariantOutcome]:
        """Every task's outcome. A worker that dies breaks the whole pool, failing every
        future in it, though most of those never started: what it left undone runs again
        in a fresh pool (the ones not started first, the suspects last). If that pool
        breaks too, what is still undone is failed, each saying whether it was running
        when a worker died (WORKER_DIED, DIED_BESIDE) or never ran (POOL_BROKE)."""
        first = yield from self._round(market, list(tasks))
        if first is None:
            return
        log.warning("sweep worker pool broke: a worker process died; the combinations left "
                    "undone run again in a fresh pool", running=len(first.running),
                    not_started=len(first.not_started))
        second = yield from self._round(market, first.undone)
        if second is None:
            return
        log.warning("sweep worker pool broke again: the combinations left undone are failed",
                    undone=len(second.undone))
        for task in second.undone:
            yield failed_outcome(task, why_undone(task, first, second))

    def _round(
        self, market: MarketData, tasks: list[VariantTask]
    ) -> Generator[VariantOutcome, None, Broken | None]:
        """Run `tasks` in a new pool, yielding each outcome; returns what a broken pool
        left undone, or None if none broke."""
        method = "fork" if sys.platform.startswith("linux") else "spawn"
        context = multiprocessing.get_context(method)
        started = context.RawArray("b", max(len(tasks), 1))  # written by the workers
        self._pool = ProcessPoolExecutor(
            max_workers=min(self.workers, max(len(tasks), 1)),
            mp_context=context,
            initializer=_init_worker,
            initargs=(market, started),
        )
        pending = self._pending = {
            self._pool.submit(_run_in_pool, i, task): (i, task) for i, task in enumerate(tasks)
        }
        undone: list[tuple[int, VariantTask]] = []
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                i, task = pending.pop(future)
                if isinstance(future.exception(), BrokenProcessPool):
                    undone.append((i, task))
                else:
                    yield _result(future, task)
        if not undone:
            return None
        undone.sort(key=lambda pair: pair[0])  # grid order, not the order the futures failed in
        pool, self._pool = self._pool, None
        pool.shutdown(wait=True)  # its workers are gone: nothing to wait for
        return Broken(running=[t for i, t in undone if started[i]],
                      not_started=[t for i, t in undone if not started[i]])

    def close(self) -> None:
        """After every outcome: wait for the idle workers to exit (not waiting raced
        Python's own clean-up at exit, which printed "Bad file descriptor" now and then).
        Stopped early (Ctrl-C, SIGTERM): drop what has not started, each future cancelled
        by name (shutdown's cancel_futures cancels nothing once the pool is dropped, and
        the exit then waited for every queued combination); a running one finishes, or
        dies with us."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        left = [future for future in self._pending if not future.done()]
        for future in left:
            future.cancel()
        self._pending = {}
        pool.shutdown(wait=not left, cancel_futures=True)


def _result(future: Future[VariantOutcome], task: VariantTask) -> VariantOutcome:
    try:
        return future.result()
    except Exception as exc:  # e.g. an outcome that could not be pickled
        return failed_outcome(task, exc)


# --------------------------------------------------------------------- Dask distributed


def _check_address(address: str) -> None:
    """A scheduler address as Dask writes it (tcp://host:port, tls://host:port), checked
    before any connection: a malformed one left a half-made client that hung the exit
    for 20 s and printed a traceback."""
    from urllib.parse import urlsplit

    expected = "expected tcp://host:port (or tls://, or host:port), e.g. tcp://127.0.0.1:8786"
    try:
        parts = urlsplit(address if "://" in address else f"tcp://{address}")  # Dask's default
        scheme, host, port = parts.scheme, parts.hostname, parts.port
    except ValueError:  # an unclosed IPv6 bracket, a port out of range
        scheme, host, port = "", None, None
    if scheme not in ("tcp", "tls") or not host or port is None:
        raise BotError(f"--cluster {address!r}: not a scheduler address; {expected}")


class DaskCluster:
    """A Dask distributed cluster at `address` (a `dask scheduler`, with `dask worker`s
    that have this same version of the bot installed). The market is scattered to every
    worker once; each combination is one task."""

    def __init__(self, address: str) -> None:
        try:
            from distributed import Client
        except ImportError:
            raise BotError(
                "--cluster needs Dask distributed: pip install 'leverbot[cluster]'"
            ) from None
        _check_address(address)
        try:
            self.client = Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            raise BotError(
                f"--cluster {address}: cannot reach a Dask scheduler there within "
                f"{CONNECT_TIMEOUT_S} s ({exc}); expected e.g. tcp://host:8786"
            ) from None
        try:
            self._check_workers(address)
        except BaseException:
            self.client.close()
            raise
        workers = len(self.client.scheduler_info(n_workers=-1)["workers"])
        self.address = address
        self.label = f"dask {address}, {workers} worker(s)"

    def _check_workers(self, address: str) -> None:
        """At least one worker, each running this exact version of the bot: results must
        be those `bot backtest` gives here."""
        try:
            self.client.wait_for_workers(1, timeout=WORKERS_TIMEOUT_S)
        except TimeoutError:
            raise BotError(
                f"--cluster {address}: no Dask worker joined the scheduler within "
                f"{WORKERS_TIMEOUT_S} s (start one with `dask worker {address}`)"
            ) from None
        here = _worker_version()
        try:
            versions: dict[str, Any] = self.client.run(_worker_version)
        except Exception as exc:
            raise BotError(
                f"--cluster {address}: the workers cannot run the bot ({type(exc).__name__}: "
                f"{exc}); install this version of leverbot on every worker"
            ) from None
        wrong = {worker: v for worker, v in versions.items() if v != here}
        if wrong:
            listed = ", ".join(f"{w} has {v}" for w, v in sorted(wrong.items()))
            raise BotError(
                f"--cluster {address}: every worker needs leverbot {here} (this one): {listed}"
            )

    def outcomes(self, market: MarketData, tasks: Sequence[VariantTask]) -> Iterator[VariantOutcome]:
        from distributed import as_completed

        shared = self.client.scatter(market, broadcast=True, hash=False)
        futures = {
            self.client.submit(run_variant, shared, task, pure=False): task for task in tasks
        }
        self._futures = list(futures)
        done = 0
        for future in as_completed(futures, loop=self.client.loop):
            task = futures[future]
            try:
                yield future.result()
            except Exception as exc:  # KilledWorker, a lost connection...
                if self.client.status != "running" or "scheduler-connection-lost" in str(exc):
                    # Not this combination's failure: every one still to come would fail
                    # the same way, and a ranking of the few done would pass for the sweep.
                    raise BotError(
                        f"--cluster {self.address}: lost the Dask scheduler after {done} of "
                        f"{len(futures)} combinations; the sweep is recorded as failed "
                        "(run it again once the scheduler is back)"
                    ) from None
                yield failed_outcome(task, exc)
            finally:
                future.release()
                done += 1

    def close(self) -> None:
        """Cancel what is left and disconnect; a client whose scheduler is gone logs its
        lost connection's tracebacks while closing, which say nothing the error did not."""
        import logging

        quiet = [logging.getLogger(name) for name in ("distributed", "tornado", "asyncio")]
        levels = [logger.level for logger in quiet]
        if self.client.status != "running":
            for logger in quiet:
                logger.setLevel(logging.CRITICAL + 1)
        try:
            futures = getattr(self, "_futures", [])
            if futures and self.client.status == "running":
                self.client.cancel(futures)
            self.client.close()
        finally:
            for logger, level in zip(quiet, levels, strict=True):
                logger.setLevel(level)


def _worker_version() -> str:
    """The bot's version as this process runs it: the package version and commit, and a
    hash of its source files and numeric libraries (a commit says nothing of uncommitted
    edits, nor of another numpy: a worker with either gave other results, recorded under
    the same version)."""
    from bot.runner import code_version

    return f"{code_version()} (source {source_digest(Path(__file__).resolve().parents[1])})"


def source_digest(package: Path) -> str:
    """A short hash of `package`'s Python files and of the numeric libraries' versions."""
    import hashlib
    from importlib.metadata import version

    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())
    for library in ("numpy", "pandas", "scipy"):
        digest.update(f"{library}={version(library)}".encode())
    return digest.hexdigest()[:12]


def open_executor(cluster: str | None, workers: int | None) -> Executor:
    """The executor the options ask for; --workers is for the local pool only."""
    if cluster:
        if workers is not None:
            raise BotError("--workers sizes the local pool; a --cluster has its own workers")
        return DaskCluster(cluster)
    return LocalPool(workers if workers is not None else default_workers())
