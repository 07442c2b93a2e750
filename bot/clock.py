"""Clocks: the wall clock for the live daemon, a settable one for replay and tests."""

from __future__ import annotations

import datetime as dt
from typing import Protocol


class Clock(Protocol):
    def now(self) -> dt.datetime:
        """Aware UTC now."""
        ...


class WallClock:
    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)


class SimulatedClock:
    """Time that moves only when told to: replay jumps from job to job, tests set it."""

    def __init__(self, start: dt.datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("SimulatedClock needs an aware datetime")
        self._now = start.astimezone(dt.UTC)

    def now(self) -> dt.datetime:
        return self._now

    def set(self, when: dt.datetime) -> None:
        if when < self._now:
            raise ValueError(f"time cannot go back: {when.isoformat()} < {self._now.isoformat()}")
        self._now = when.astimezone(dt.UTC)
