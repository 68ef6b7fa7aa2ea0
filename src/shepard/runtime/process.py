"""Running a payload as a child process in its own process group.

The payload's stdout and stderr go straight to log files (the child inherits the descriptors;
no pipes, no pumping threads), so the logs can be read while it runs. When the payload exits,
times out, is stopped, or the runtime itself raises, the whole process group is killed, so no
stray child outlives its attempt (processes that leave the group with setsid escape this).
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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from shepard.errors import PayloadError
from shepard.runtime.workspace import SetupError

SHELL = "/bin/sh"
KILL_GRACE = 5.0  # seconds between SIGTERM and SIGKILL
STOP_POLL = 0.1  # longest wait between two looks at the stop event
_LOG_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC


class Ending(enum.Enum):
    EXITED = "exited"  # the payload ended by itself (returncode tells how)
    TIMED_OUT = "timed out"  # killed at the deadline
    STOPPED = "stopped"  # killed because the stop event was set


@dataclass(frozen=True, slots=True)
class ProcessResult:
    """How the payload ended. `returncode` follows Popen: negative N means killed by signal N."""

    ending: Ending
    returncode: int


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
    proc = _spawn(command, cwd, env, stdout, stderr)
    with _ExitWatch(proc) as watch:
        try:
            ending = _wait(watch, deadline, stop)
            if ending is not Ending.EXITED:
                _killpg(proc.pid, signal.SIGTERM)
                watch.wait(grace)
        finally:
            _killpg(proc.pid, signal.SIGKILL)  # leftovers of the group, or all of it on error
            returncode = proc.wait()
    return ProcessResult(ending, returncode)


class _EnvSnapshot:
    """os.environ decoded into a plain dict once and reused while os.environ is unchanged.

    Reading os.environ item by item decodes every name and value on each access (tens of
    microseconds per job); comparing its raw dict with a saved copy takes well under one.
    """

    current: ClassVar[tuple[dict[Any, Any], dict[str, str]] | None] = None


def inherited_env() -> Mapping[str, str]:
    """The current os.environ as a plain mapping, shared between calls: do not modify it."""
    raw = getattr(os.environ, "_data", None)
    if not isinstance(raw, dict):  # not CPython's os.environ: no shortcut
        return dict(os.environ)
    snapshot = _EnvSnapshot.current
    if snapshot is None or snapshot[0] != raw:
        snapshot = (dict(raw), dict(os.environ))  # raw first: a change in between shows next time
        _EnvSnapshot.current = snapshot
    return snapshot[1]


def _spawn(
    command: str, cwd: Path, env: Mapping[str, str], stdout: Path, stderr: Path
) -> subprocess.Popen[bytes]:
    out_fd, err_fd = _open_logs(stdout, stderr)
    try:
        return subprocess.Popen(
            [SHELL, "-c", command],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out_fd,
            stderr=err_fd,
            start_new_session=True,
        )
    except (OSError, ValueError) as exc:
        raise PayloadError(f"cannot start the payload ({SHELL} -c ...): {exc}") from exc
    finally:
        os.close(out_fd)
        os.close(err_fd)


def _open_logs(stdout: Path, stderr: Path) -> tuple[int, int]:
    """Create (truncate) both log files; raise SetupError naming the one that failed."""
    fds: list[int] = []
    try:
        for folder in {stdout.parent, stderr.parent}:
            _make_folder(folder)
        for path in (stdout, stderr):
            fds.append(os.open(path, _LOG_FLAGS, 0o644))
    except OSError as exc:
        for fd in fds:
            os.close(fd)
        raise SetupError(f"cannot open the log file {exc.filename}: {exc.strerror}") from exc
    return fds[0], fds[1]


def _make_folder(folder: Path) -> None:
    """Create `folder` if missing: one system call in the usual cases."""
    try:
        os.mkdir(folder)
    except FileExistsError:
        pass
    except FileNotFoundError:
        os.makedirs(folder, exist_ok=True)


def _wait(watch: _ExitWatch, deadline: float | None, stop: threading.Event) -> Ending:
    """Block until the payload exits, the deadline passes or `stop` is set."""
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

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.pid = proc.pid
        self._poll: select.poll | None = None
        self._fd = -1
        with contextlib.suppress(AttributeError, OSError):
            self._fd = os.pidfd_open(proc.pid)
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
