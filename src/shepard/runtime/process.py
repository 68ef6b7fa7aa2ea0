"""Running a payload as a child process in its own process group.

The payload's stdout and stderr go straight to log files (the child inherits the descriptors;
no pipes, no pumping threads), so the logs can be read while it runs. When the payload exits,
times out, is stopped, or the runtime itself raises, the whole process group is killed, so no
stray child outlives its attempt (processes that leave the group with setsid escape this).

Payloads start with `subprocess.Popen(cwd=...)`, which is safe in any process. A runner
process (one that exists only to run payloads in one folder: a local runner, a scheduler's
task or sheep) may instead make that folder its working directory with `work_in`; payloads
started there go through `os.posix_spawn`, which converts the environment and starts the shell
in C. The file actions of Python's os.posix_spawn (open, close, dup2) include no chdir, hence
the process-wide chdir, which a threaded server must never see: `work_in` refuses to run
until the process's own entry point has called `become_runner_process`. Measured with
bench/runner_phases.py (1,500 trivial jobs, both ways alternated three times in one sitting
on 2 shared cores, medians): starting, waiting for and reaping a payload costs the runner
0.15 ms of CPU per job with posix_spawn against 0.20 ms with Popen, the runner's whole loop
0.57 against 0.60 ms (5%). Both give the payload the same descriptors,
session and signal dispositions, except that glibc's posix_spawn leaves its two internal
signals (32 and 33) ignored; programs that use them set their own handlers.
"""

from __future__ import annotations

import contextlib
import enum
import math
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

from shepard.errors import PayloadError
from shepard.runtime.workspace import SetupError

SHELL = "/bin/sh"
KILL_GRACE = 5.0  # seconds between SIGTERM and SIGKILL
STOP_POLL = 0.1  # longest wait between two looks at the stop event
_LOG_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
# what subprocess's restore_signals resets: a payload must not inherit Python's SIG_IGN
_DEFAULT_SIGNALS = tuple(
    getattr(signal, n) for n in ("SIGPIPE", "SIGXFZ", "SIGXFSZ") if hasattr(signal, n)
)


class Ending(enum.Enum):
    EXITED = "exited"  # the payload ended by itself (returncode tells how)
    TIMED_OUT = "timed out"  # killed at the deadline
    STOPPED = "stopped"  # killed because the stop event was set


@dataclass(frozen=True, slots=True)
class ProcessResult:
    """How the payload ended. `returncode` follows Popen: negative N means killed by signal N.
    `detail` is a fact for the job's history (e.g. which image ran), or None."""

    ending: Ending
    returncode: int
    detail: str | None = None


def run_payload(
    command: str,
    *,
    cwd: Path,
    env: Mapping[str, str],
    stdout: Path,
    stderr: Path,
    deadline: float | None,
    stop: threading.Event,
    grace: float = KILL_GRACE,
) -> ProcessResult:
    """Run `/bin/sh -c command` in `cwd` with exactly `env` and stdin from /dev/null.

    stdout/stderr are truncated and written by the child directly (parent folders are created).
    `deadline` is a time.monotonic() value, or None for no limit. On timeout or `stop`, the
    group gets SIGTERM, then SIGKILL after `grace` seconds. Raises PayloadError when the
    process cannot be started (no shell, bad environment), SetupError when a log file cannot
    be opened.
    """
    pid, reap = _spawn(command, cwd, env, stdout, stderr)
    with _ExitWatch(pid) as watch:
        try:
            ending = wait_for_end(watch, deadline, stop)
            if ending is not Ending.EXITED:
                _killpg(pid, signal.SIGTERM)
                watch.wait(grace)
        finally:
            _killpg(pid, signal.SIGKILL)  # leftovers of the group, or all of it on error
            returncode = reap()
    return ProcessResult(ending, returncode)


class _Workdir:
    """`current`: the folder `work_in` made this process's working directory, as (path,
    st_dev, st_ino); `runner`: whether this process's entry point declared it a runner."""

    current: ClassVar[tuple[str, int, int] | None] = None
    runner: ClassVar[bool] = False


def become_runner_process() -> None:
    """Declare that this process exists to run payloads, so that `work_in` may change its
    working directory. Only the body of such a process calls it (backends/procs.py's runner,
    `python -m shepard.task`, `shepard worker serve`), never library code."""
    _Workdir.runner = True


def is_runner_process() -> bool:
    """Whether `become_runner_process` was called in this process."""
    return _Workdir.runner


def work_in(folder: Path) -> None:
    """Make `folder` this process's working directory, so that payloads run there start the
    cheap way (see the module docstring). Raises RuntimeError unless the process was declared
    a runner process: the working directory is shared by all the threads of a process.

    posix_spawn does not close the descriptors a payload would inherit, as Popen's close_fds
    does: the process's open descriptors beyond 0-2 are made close-on-exec here (Python opens
    its own that way, and so do the catalog's drivers)."""
    if not _Workdir.runner:
        raise RuntimeError("work_in: only a runner process may change its working directory")
    for name in os.listdir("/dev/fd"):
        if int(name) > 2:
            with contextlib.suppress(OSError):  # e.g. the listing's own, closed by now
                os.set_inheritable(int(name), False)
    os.chdir(folder)
    info = os.stat(".")
    _Workdir.current = (str(folder), info.st_dev, info.st_ino)


def _in_workdir(cwd: Path) -> bool:
    """True when `cwd` is this process's working directory (the very folder, not a new one
    made at the same path since)."""
    here = _Workdir.current
    if here is None or str(cwd) != here[0]:
        return False
    try:
        info = os.stat(cwd)
    except OSError:
        return False
    return (info.st_dev, info.st_ino) == here[1:]


def _spawn(
    command: str, cwd: Path, env: Mapping[str, str], stdout: Path, stderr: Path
) -> tuple[int, Callable[[], int]]:
    """Start `/bin/sh -c command` in a new session; return its pid and what reaps it (which
    returns the Popen-style return code)."""
    out_fd, err_fd = _open_logs(stdout, stderr)
    try:
        if _in_workdir(cwd):
            pid = os.posix_spawn(
                SHELL,
                [SHELL, "-c", command],
                env,
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_DUP2, out_fd, 1),
                    (os.POSIX_SPAWN_DUP2, err_fd, 2),
                ],
                setsid=True,
                setsigdef=_DEFAULT_SIGNALS,
            )
            return pid, lambda: os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        proc = subprocess.Popen(
            [SHELL, "-c", command],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out_fd,
            stderr=err_fd,
            start_new_session=True,
        )
        return proc.pid, proc.wait
    except (OSError, ValueError) as exc:
        raise PayloadError(f"cannot start the payload ({SHELL} -c ...): {exc}") from exc
    finally:
        os.close(out_fd)
        os.close(err_fd)


def _open_logs(stdout: Path, stderr: Path) -> tuple[int, int]:
    """Create (truncate) both log files, and their folders if missing; raise SetupError
    naming the one that failed."""
    fds: list[int] = []
    try:
        for path in (stdout, stderr):
            fds.append(_create(path))
    except OSError as exc:
        for fd in fds:
            os.close(fd)
        raise SetupError(f"cannot open the log file {exc.filename}: {exc.strerror}") from exc
    return fds[0], fds[1]


def _create(path: Path) -> int:
    """Open `path` for writing, truncated: one system call when its folder exists."""
    try:
        return os.open(path, _LOG_FLAGS, 0o644)
    except FileNotFoundError:
        os.makedirs(path.parent, exist_ok=True)
        return os.open(path, _LOG_FLAGS, 0o644)


class ExitWatch(Protocol):
    def wait(self, timeout: float) -> bool:
        """True once the payload has ended; False after `timeout` seconds."""
        ...


def wait_for_end(watch: ExitWatch, deadline: float | None, stop: threading.Event) -> Ending:
    """Block until the payload ends (as `watch` tells), the deadline passes or `stop` is set."""
    while True:
        if stop.is_set():
            return Ending.STOPPED
        timeout = STOP_POLL
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return Ending.TIMED_OUT
            timeout = min(timeout, remaining)
        if watch.wait(timeout):
            return Ending.EXITED


class _ExitWatch:
    """Waits for the process to exit WITHOUT reaping it, so its pid (= the process group id)
    cannot be reused before the final group kill. Uses a pidfd (exact wake-up); falls back to
    polling waitid(WNOWAIT) with growing sleeps where pidfds are unavailable."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._poll: select.poll | None = None
        self._fd = -1
        with contextlib.suppress(AttributeError, OSError):
            self._fd = os.pidfd_open(pid)
            self._poll = select.poll()
            self._poll.register(self._fd, select.POLLIN)

    def __enter__(self) -> _ExitWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd >= 0:
            os.close(self._fd)

    def wait(self, timeout: float) -> bool:
        """True once the process has exited (it stays unreaped); False after `timeout` s."""
        if self._poll is not None:
            return bool(self._poll.poll(max(0, math.ceil(timeout * 1000))))
        end, delay = time.monotonic() + timeout, 0.0005
        while not self._exited():
            left = end - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(delay, left))
            delay = min(delay * 2, 0.05)
        return True

    def _exited(self) -> bool:
        flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
        return os.waitid(os.P_PID, self.pid, flags) is not None


def _killpg(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
