"""Keep CPython's garbage collector off the heap a command builds at startup.

Imports leave ~120,000 long-lived objects (pandas, SQLAlchemy, pydantic models), and a
backtest keeps every order, fill and equity point until its trade log is flushed.
CPython runs a full collection each time the heap grows by a quarter and rescans all of
it, finding nothing to free: in a cold `bot backtest` four such scans took 0.28 s of
2.2 s. `gc.freeze()` (made for this) moves what exists into a generation the collector
never scans; reference cycles made afterwards are still collected, and freezing before
a fork also keeps the child from copying the parent's pages. A process that goes on
after the command (a test run, a notebook calling bot.cli.main) `thaw`s them back to
the collector, or a garbage cycle frozen among them would stay for good; `bot` itself
exits frozen, since the collection CPython makes at exit would rescan them all (0.3 s).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def long_lived() -> Iterator[None]:
    """Run a block that builds objects kept for the whole command (its imports, its
    loaded data) without collecting, then freeze everything it built."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def thaw() -> None:
    """Undo every freeze (bot.cli.main calls it after a command it was handed argv for)."""
    gc.unfreeze()
