"""When the daemon's jobs commit what they recorded to the trade log.

Paper and live trading promise durability: what a job decided and sent to the broker is
committed before the job returns, so a crash just after it loses nothing the venue knows
about. A replay is a simulation on a simulated clock with a simulated venue: nothing it
does exists outside the process, and a replay that dies is run again (it cannot resume).
Committing after each of its ~800 jobs a year was most of its time, so it commits every
`jobs` jobs and at its end. A failed job commits at once under either policy, so its
incident always follows the records made before it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CommitPolicy:
    """Commit after every `jobs`-th successful job (1: after each one)."""

    name: str
    jobs: int

    def __post_init__(self) -> None:
        if self.jobs < 1:
            raise ValueError(f"CommitPolicy {self.name}: jobs must be >= 1, got {self.jobs}")

    @property
    def per_job(self) -> bool:
        """Every job's records are committed before it returns."""
        return self.jobs == 1

    def due(self, uncommitted_jobs: int) -> bool:
        """Commit now, with `uncommitted_jobs` finished since the last commit?"""
        return uncommitted_jobs >= self.jobs


#: paper and live: the durability promise, one commit per job
EVERY_JOB = CommitPolicy("every job", 1)
#: replay: a simulation, committed in batches and at the end (bot.daemon.service.run_replay);
#: 64 jobs are about three simulated weeks, ~13 commits a year instead of ~800
REPLAY_BATCH = CommitPolicy("replay batch", 64)
