"""Which process holds a run, and whether it is gone.

A run is marked 'running' when it starts and 'finished' or 'failed' when it ends; a
process killed outright (SIGKILL, the OOM killer, a power cut) never writes its end, and
its run would read 'running' for ever. So a run records its holder, "host:pid:start"
(the start being the process's start time in clock ticks since boot, from
/proc/<pid>/stat: a pid the system gave to a new process since does not match it).
On the same host, a holder whose pid is gone, or belongs to a process started at
another time, is known dead; on another host, or where there is no /proc, nothing is
known and nothing is done.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path


def _start_ticks(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat (after the parenthesised name, which may hold spaces)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def this_process() -> str | None:
    """This process as a run's holder, or None where it cannot be checked later (no /proc).
    Read each time, not cached: a forked child must name itself, not its parent."""
    ticks = _start_ticks(os.getpid())
    return None if ticks is None else f"{socket.gethostname()}:{os.getpid()}:{ticks}"


def is_gone(holder: str | None) -> bool:
    """Whether `holder` is known to have ended: on this host, its pid runs no process
    started at its time. False when that cannot be known (no holder, another host)."""
    return holder_state(holder) == "gone"


def holder_state(holder: str | None) -> str:
    """'alive' or 'gone' for a holder of this host; 'unknown' for one of another host,
    where /proc cannot tell, or no holder at all."""
    parts = (holder or "").rsplit(":", 2)  # the host name comes first and has no colon
    if len(parts) != 3 or not parts[1].isdigit():
        return "unknown"
    host, pid, ticks = parts
    if host != socket.gethostname() or _start_ticks(os.getpid()) is None:
        return "unknown"
    return "alive" if _start_ticks(int(pid)) == ticks else "gone"
