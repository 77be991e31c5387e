"""Processes that end with their parent, and SIGTERM taken as an interrupt.

``dcsm batch`` decodes images in loader workers and writes outputs in writer processes;
``dcsm train`` decodes in data-loader workers. Two things keep a stopped run from leaving any of
them behind:

* :func:`sigterm_as_interrupt`: while active (the ``dcsm`` command holds it for every command),
  SIGTERM, which ``docker stop``, ``systemctl stop``, ``timeout`` and job schedulers send, raises
  :class:`Terminated` in the main thread. It is a :class:`KeyboardInterrupt`, so it runs exactly
  what Ctrl-C runs: temporary outputs removed, workers and writers stopped, journals closed, the
  run left resumable. ``dcsm`` then exits with status 143 (128 + 15; Ctrl-C: 130). Further
  SIGTERMs while that clean-up runs are ignored, so a second signal cannot cut it short; SIGKILL
  still ends the process at once.
* :func:`follow_parent`: called first thing in each child process, it makes the child end when
  its parent ends, however the parent ends (SIGKILL and an out-of-memory kill included). On
  Linux the kernel does it (``prctl(PR_SET_PDEATHSIG, SIGKILL)``); elsewhere a daemon thread of
  the child checks every half second whether its parent process has changed.

The parent-death signal is tied to the *thread* that started the child: children must be
started from a thread that outlives them (dcsm starts and stops them within one call, in the
calling thread).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator

__all__ = ["EXIT_INTERRUPTED", "EXIT_TERMINATED", "ParentWatch", "Terminated", "follow_parent",
           "sigterm_as_interrupt"]

#: Exit status of ``dcsm`` stopped by Ctrl-C (SIGINT): 128 + 2.
EXIT_INTERRUPTED = 130
#: Exit status of ``dcsm`` stopped by SIGTERM: 128 + 15.
EXIT_TERMINATED = 143
#: How often (seconds) a child without ``prctl`` checks its parent.
POLL_SECONDS = 0.5
_PR_SET_PDEATHSIG = 1


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (see :func:`sigterm_as_interrupt`): a :class:`KeyboardInterrupt`, so every
    clean-up that Ctrl-C runs runs for it too."""


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While active, the first SIGTERM raises :class:`Terminated` in the main thread and later
    ones are ignored; the previous handler is restored afterwards. Does nothing outside the main
    thread (Python delivers signals there only) or where SIGTERM cannot be caught."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    try:
        previous = signal.getsignal(signal.SIGTERM)
    except (AttributeError, ValueError):  # pragma: no cover - no SIGTERM here
        yield
        return
    received = False

    def handler(signum: int, frame: object) -> None:
        nonlocal received
        if received:
            return  # the clean-up of the first one is running: let it finish
        received = True
        raise Terminated

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _set_parent_death_signal() -> bool:
    """``prctl(PR_SET_PDEATHSIG, SIGKILL)`` (Linux); whether it took effect."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)) == 0
    except (OSError, AttributeError, TypeError):  # no libc, or no prctl in it
        return False


def _watch_parent(parent: int) -> None:
    """End this process as soon as its parent is no longer ``parent`` (daemon thread body)."""
    while os.getppid() == parent:
        time.sleep(POLL_SECONDS)
    os._exit(1)


def follow_parent(parent: int, use_prctl: bool = True) -> None:
    """Make this (child) process end when process ``parent``, which started it, ends.

    Call it first thing in the child (a pool's initializer, a data loader's ``worker_init_fn``):
    the kernel's parent-death signal where there is one (``use_prctl``; Linux), else a daemon
    thread that checks :func:`os.getppid` every :data:`POLL_SECONDS`. A child whose parent is
    already gone when it gets here exits at once.
    """
    if not (use_prctl and _set_parent_death_signal()):
        threading.Thread(target=_watch_parent, args=(parent,), name="dcsm-parent-watch",
                         daemon=True).start()
    if os.getppid() != parent:  # the parent died before the watch began
        os._exit(1)


class ParentWatch:
    """A picklable ``worker_init_fn`` / pool initializer: :func:`follow_parent` of the process
    that created it (any arguments it is called with are ignored)."""

    def __init__(self, parent: int | None = None) -> None:
        self.parent = os.getpid() if parent is None else parent

    def __call__(self, *args: object) -> None:
        """Start following the parent (in the child)."""
        follow_parent(self.parent)
