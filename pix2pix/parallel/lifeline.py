"""The processes of a data-parallel job die with the process that started them, however it dies.

Each process of the chain asks the kernel for SIGKILL when its parent ends (Linux's parent-death
signal, `prctl(PR_SET_PDEATHSIG)`): msrun when `launch.py`, the launcher, ends (SIGKILL included), and
msrun's scheduler and workers (`launch.py` again) when msrun ends. So killing the launcher leaves no
msrun, scheduler or worker behind. msrun is started as `python -m pix2pix.parallel.lifeline PID MODULE
ARGS...`, which ties itself to PID and then runs MODULE as `__main__`.

Without the kernel call (not Linux), nothing changes: msrun's own supervision is all there is.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import runpy
import signal
import sys

PR_SET_PDEATHSIG = 1
LAUNCHER_PID = "PIX2PIX_LAUNCHER_PID"  # set for the workers by the launcher that started the job


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def die_with_parent(parent: int | None = None) -> bool:
    """SIGKILL for this process when its parent ends; exits at once if it has ended already (`parent`: the
    pid it must be, else the parent at this moment). False where the kernel offers no such signal."""
    expected = parent if parent is not None else os.getppid()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        tied = libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        tied = False
    launcher = os.environ.get(LAUNCHER_PID, "")
    orphaned = os.getppid() != expected or expected == 1 or (launcher.isdigit() and not alive(int(launcher)))
    if orphaned:  # the parent ended before the signal was set up: nobody would stop this process
        os._exit(1)
    return tied


def main(argv: list[str]) -> None:
    """python -m pix2pix.parallel.lifeline PID MODULE ARGS...: MODULE as __main__, tied to PID."""
    parent, module, *args = argv
    die_with_parent(int(parent))
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
