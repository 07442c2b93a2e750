"""Run a command under what deploy/bot.service confines the daemon to, without systemd.

The unit's `ProtectSystem=strict` with `ReadWritePaths`, `MemoryDenyWriteExecute` and
`ProtectHome`, approximated with what Linux offers an unprivileged test:

- a private mount namespace (`unshare -m`) in which / is remounted read-only, after the
  writable folders were bound onto themselves (each bind keeps its own, writable flags);
- prctl(PR_SET_MDWE), which systemd itself uses for MemoryDenyWriteExecute where the
  kernel has it (Linux 6.3 and later): no memory both writable and executable;
- HOME pointing nowhere, TMPDIR at a writable folder (the unit's private /tmp).

Where the machine allows neither (no CAP_SYS_ADMIN for the namespace, an older kernel),
`available()` says why, and tests skip.
"""

from __future__ import annotations

import ctypes
import functools
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1  # linux/prctl.h


def deny_write_execute() -> None:
    """In a child before exec: refuse writable-and-executable memory from now on."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_MDWE)")


def write_execute_denied() -> str | None:
    """None if the kernel takes PR_SET_MDWE, else why not."""
    if not sys.platform.startswith("linux"):
        return "not Linux"
    probe = subprocess.run([sys.executable, "-c", "pass"], preexec_fn=deny_write_execute,
                           capture_output=True, text=True)
    return None if probe.returncode == 0 else "the kernel has no prctl(PR_SET_MDWE) (Linux 6.3+)"


@functools.cache  # asked by each test's skip condition and its reason
def available() -> str | None:
    """None if commands can run sandboxed here, else the reason they cannot."""
    reason = write_execute_denied()
    if reason:
        return reason
    if shutil.which("unshare") is None:
        return "no unshare (util-linux)"
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount --make-rprivate / && mount -o remount,bind,ro /"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"no private mount namespace here: {probe.stderr.strip()[:200]}"
    return None


def command(argv: Sequence[str], writable: Sequence[Path]) -> list[str]:
    """`argv` (argv[0] a path) run with / read-only except `writable`, and under MDWE."""
    binds = "".join(f"mount --bind {shlex.quote(str(d))} {shlex.quote(str(d))} && " for d in writable)
    exec_with_mdwe = (
        "import os, sys; sys.path.insert(0, sys.argv[1]); import unit_sandbox; "
        "unit_sandbox.deny_write_execute(); os.execv(sys.argv[2], sys.argv[2:])"
    )
    script = (
        f"mount --make-rprivate / && {binds}mount -o remount,bind,ro / && "
        f'exec {shlex.quote(sys.executable)} -c {shlex.quote(exec_with_mdwe)} "$@"'
    )
    return ["unshare", "-m", "sh", "-c", script, "sh", str(Path(__file__).parent), *argv]
