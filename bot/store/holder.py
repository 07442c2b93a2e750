"""Which process holds a run, and whether it is gone.

A run is marked 'running' when it starts and 'finished' or 'failed' when it ends; a
process killed outright (SIGKILL, the OOM killer, a power cut) never writes its end, and
its run would read 'running' for ever. So a run records its holder, "host@ns:pid:start"
(ns the process's PID namespace, the start its start time in clock ticks since boot,
from /proc/<pid>/stat: a pid the system gave to a new process since does not match it).
On the same host and namespace, a holder whose pid is gone, or belongs to a process
started at another time, is known dead; on another host or namespace, where there is
no /proc, or where /proc hides the process, nothing is known and nothing is done.
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


def _this_host() -> str:
    """The host part of a holder: the host name, and the PID namespace where /proc shows
    it. Containers may share a host name (host networking) but not their processes:
    a pid of another namespace must not be looked up in this one."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return socket.gethostname()
    return f"{socket.gethostname()}@{namespace}"


def this_process() -> str | None:
    """This process as a run's holder, or None where it cannot be checked later (no /proc).
    Read each time, not cached: a forked child must name itself, not its parent."""
    ticks = _start_ticks(os.getpid())
    return None if ticks is None else f"{_this_host()}:{os.getpid()}:{ticks}"


def holder_state(holder: str | None) -> str:
    """'alive' or 'gone' for a holder of this host; 'unknown' for one of another host
    (or PID namespace), where /proc cannot tell, or no holder at all."""
    parts = (holder or "").rsplit(":", 2)  # the host part comes first and has no colon
    if len(parts) != 3 or not parts[1].isdigit() or int(parts[1]) <= 0:
        return "unknown"
    host, pid, ticks = parts
    # A holder written before namespaces were recorded names the host alone.
    here = _this_host() if "@" in host else socket.gethostname()
    if host != here or _start_ticks(os.getpid()) is None:
        return "unknown"
    return _pid_state(int(pid), ticks)


def _pid_state(pid: int, ticks: str) -> str:
    """'alive' if `pid` runs the process started at `ticks`, 'gone' if no process or
    another one has it, 'unknown' if it runs but its start cannot be read (/proc mounted
    with hidepid hides other users' processes: absent from /proc is not proof)."""
    found = _start_ticks(pid)
    if found is not None:
        return "alive" if found == ticks else "gone"
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return "gone"
    except OSError:  # PermissionError: it exists, as another user's process
        return "unknown"
    return "unknown"
