"""A run's processes and signals: SIGTERM handled as Ctrl-C is, and a worker that never outlives its run (it dies with
the process that started it, holds the run folder's lock while it lives, and takes Ctrl-C and SIGTERM whatever the
user's shell set)."""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

PR_SET_PDEATHSIG = 1  # linux/prctl.h
ORPHAN_POLL_S = 1.0


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is (the workers stopped, the partial report written), with exit status 143."""


def stop_on_sigterm() -> None:
    def terminated(signum, frame):
        raise Terminated

    signal.signal(signal.SIGTERM, terminated)



def die_with_parent() -> Callable[[], None] | None:
    """A Popen preexec_fn: the child is sent SIGKILL the moment this process dies, however it dies (SIGKILL
    included), through Linux's PR_SET_PDEATHSIG, which survives the child's exec. None off Linux, where the worker
    watches its parent instead (watch_parent)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork: the child only calls it
    parent = os.getpid()

    def in_child() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died between fork and prctl: no signal will come
            os._exit(1)

    return in_child


def watch_parent() -> None:
    """In a worker off Linux: leave once the parent is gone (the worker is re-parented, its parent id changes)."""
    if sys.platform.startswith("linux"):
        return
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(ORPHAN_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="twinnets-parent-watch", daemon=True).start()


def default_signals() -> None:
    """In a worker: Ctrl-C raises KeyboardInterrupt even when the shell that started the run ignored SIGINT (a
    background job's `&`, nohup), which the worker would otherwise inherit; SIGTERM is set by stop_on_sigterm."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
