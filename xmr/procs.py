"""Child processes that never outlive xmr, and a SIGTERM that stops cleanly.

A ``ProcessPoolExecutor`` worker waits on a queue whose write end it holds itself,
so when its parent is killed (SIGKILL, the OOM killer, a closed terminal) nothing
wakes it: it stays, and with it multiprocessing's resource tracker, which exits
only once every holder of its pipe (the parent and each worker) is gone.
``die_with_parent`` ends a worker within about a second of its parent:

* on Linux the kernel sends it SIGKILL when the parent dies (``PR_SET_PDEATHSIG``),
  even while it is stuck in a decoder's C code;
* on any POSIX system, a daemon thread polls the parent pid (a process whose
  parent died is reparented) and exits the process when the parent is gone (the
  portable fallback, and the only one on macOS).

Call it first thing in a pool's ``initializer`` (spawned workers only: a pool
whose processes are started from a thread that later ends would lose them,
because Linux ties the death signal to the creating *thread*; such a worker is
replaced like a crashed one).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
POLL_S = 0.5


def _parent_pid() -> int:
    import multiprocessing

    parent = multiprocessing.parent_process()  # the pid at spawn time: right even if it already died
    return parent.pid if parent is not None and parent.pid else os.getppid()


def _set_pdeathsig(sig: int) -> bool:
    """Ask the kernel for ``sig`` when the parent dies (Linux only). True if it took."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch(parent: int, poll_s: float) -> None:
    while True:
        time.sleep(poll_s)
        if os.getppid() != parent:
            os._exit(1)  # not sys.exit: this is a daemon thread, and nothing is left to flush for


def die_with_parent(parent: int | None = None, *, poll_s: float = POLL_S) -> None:
    """Make this process exit soon after ``parent`` (default: the process that spawned it) ends."""
    parent = parent or _parent_pid()
    _set_pdeathsig(signal.SIGKILL)
    if os.getppid() != parent:  # it died before the death signal was armed
        os._exit(1)
    threading.Thread(target=_watch, args=(parent, poll_s), name="xmr-parent-watch", daemon=True).start()


class Terminated(BaseException):
    """Raised in the main thread by SIGTERM or SIGHUP after ``raise_on_terminate``."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(signum)


def raise_on_terminate() -> Callable[[], None]:
    """Make SIGTERM/SIGHUP raise ``Terminated`` (so ``finally`` blocks run); returns the undo.

    Without it their default action kills the process on the spot. uvicorn catches SIGTERM
    for a graceful shutdown and then re-raises it under the handler it found: this one.
    Only the main thread can set handlers; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    sigs = [signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    previous = {s: signal.signal(s, _raise_terminated) for s in sigs}

    def restore() -> None:
        for s, handler in previous.items():
            signal.signal(s, handler)

    return restore
