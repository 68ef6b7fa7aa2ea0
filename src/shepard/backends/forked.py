"""A child process forked from this one, behind the part of `subprocess.Popen`'s interface the
runner processes use (pid, stdin, stdout, wait, kill).

A fork starts in about a millisecond with every module already imported, where a new
interpreter spends half a second importing SQLAlchemy and the rest. It is only safe while the
forking process has a single thread (a fork copies the locks other threads hold at that
moment, inside SQLite, an I/O buffer or logging, and the child, which has no such threads,
could wait for them forever; `single_threaded()` tells, and callers start a new interpreter
otherwise) and has no database connection open (the caller closes them first: see
procs.start_runners).
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from typing import IO


def single_threaded() -> bool:
    """True when this process runs no other thread (forking it is then safe)."""
    return threading.active_count() == 1


class Forked:
    """Fork now; the child runs `main(stdin)` with `stdin` and its stdout (fd 1) connected to
    this process by pipes and the signal handlers back to their defaults, then exits (status
    1 if `main` returns or raises). The parent keeps `stdin` (to write to the child) and
    `stdout` (to read from it).

    The child keeps the other descriptors it inherits (objects it inherits, e.g. a logging
    handler, may write to them; closing them would let a number be reused for another file
    under such an object), except `close_fds`: pass the pipes of the children forked before,
    or a child would keep another's stdin open and that one would never see its end."""

    def __init__(self, main: Callable[[IO[bytes]], object], close_fds: Sequence[int] = ()) -> None:
        child_in, parent_out = os.pipe()  # this process writes, the child reads
        parent_in, child_out = os.pipe()  # the child writes, this process reads
        for stream in (sys.stdout, sys.stderr):  # or the child would write them out again
            stream.flush()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            # What the parent left for the collector stays uncollected here: a finaliser
            # could otherwise close or write to a descriptor number the child reuses.
            gc.freeze()
            try:
                os.dup2(child_in, 0)
                os.dup2(child_out, 1)
                for fd in (child_in, child_out, parent_out, parent_in, *close_fds):
                    os.close(fd)
                _default_signals()
                main(os.fdopen(0, "rb"))
            except BaseException:
                # straight to descriptor 2, the parent's stderr (sys.stderr may be anything)
                os.write(2, traceback.format_exc().encode(errors="replace"))
            finally:
                os._exit(1)
        os.close(child_in)
        os.close(child_out)
        self.pid = pid
        self.stdin: IO[bytes] = os.fdopen(parent_out, "wb")
        self.stdout: IO[bytes] = os.fdopen(parent_in, "rb")
        self.returncode: int | None = None
        self._lock = threading.Lock()

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the child to end; its exit status, or -N if signal N killed it.
        TimeoutError after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self.returncode is None:
                polling = deadline is not None
                pid, status = os.waitpid(self.pid, os.WNOHANG if polling else 0)
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
                elif deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"process {self.pid} still runs after {timeout} s")
                else:
                    time.sleep(0.05)
            return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):  # ended meanwhile
                os.kill(self.pid, signal.SIGKILL)


def _default_signals() -> None:
    """Give the child the default handlers instead of the parent's Python ones (a SIGTERM
    must end a runner, not set an event of the parent's copy)."""
    for signum in signal.valid_signals():
        try:
            if signal.getsignal(signum) not in (signal.SIG_DFL, signal.SIG_IGN, None):
                signal.signal(signum, signal.SIG_DFL)
        except (OSError, ValueError):
            pass  # SIGKILL, SIGSTOP and the like
