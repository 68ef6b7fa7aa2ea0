"""Spare runner processes: forked as the `shepard` command starts, before the command line's
own modules are imported, and adopted by the first local backend the command opens.

Why: a runner is a fork (backends/forked.py), and a fork's memory is a copy of its parent's
at that moment, counted in full in the runner's resident size even while the pages are
shared. Forked from the finished command line process, each runner held its whole 45-50 MB:
SQLAlchemy and the runtime (what a runner needs, about 30 MB) plus Typer, Rich, pydantic and
the flock's configuration (what it never uses). Forked right after the runner's own imports,
a runner starts at about 33 MB. Measured with bench/peers.py (2,000 trivial jobs, 2 workers):
the peak resident size summed over Shepard's processes fell from 158-162 MB to about 130 MB.

Only the entry point calls `prefork` (cli/launch.py, while the process has one thread and no
database connection), and only for commands that run jobs here (`submit --wait`, `batch
--wait`, `up`). The workers count is not known yet then: `prefork` starts as many spares as
the command line's `--workers` or the machine's cores; `start_runners` adopts what it needs,
forks any more the usual way, and ends the rest. A spare that is never adopted (the command
did not open a local backend) waits for its setup and exits quietly when it reads the end of
its pipe, as the command ends.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from typing import IO

from shepard.backends.forked import Forked, single_threaded

# Commands that run jobs in this process: `up` always, the others with --wait.
_RUNS_JOBS = {"up": False, "submit": True, "batch": True}
_CAP = 16  # never more spares than this, whatever the cores

_spares: list[Forked] = []  # set by the entry point only; see the module docstring


def wanted(args: Sequence[str]) -> int:
    """How many spares the command line `args` (without the program name) may use: 0 unless
    it names a command that runs jobs here, else its `--workers` or the machine's cores."""
    name = next((arg for arg in args if not arg.startswith("-")), None)
    if name not in _RUNS_JOBS:
        return 0
    if _RUNS_JOBS[name] and not any(arg in ("--wait", "-w") for arg in args):
        return 0
    workers = _workers_option(args)
    return min(workers if workers is not None else os.cpu_count() or 1, _CAP)


def _workers_option(args: Sequence[str]) -> int | None:
    for i, arg in enumerate(args):
        value = arg.partition("=")[2] if arg.startswith("--workers=") else None
        if arg == "--workers" and i + 1 < len(args):
            value = args[i + 1]
        if value is not None:
            with contextlib.suppress(ValueError):
                return max(int(value), 1)
    return None


def prefork(count: int, serve: Callable[[IO[bytes]], object]) -> None:
    """Fork `count` spares, each running `serve(stdin)` (it waits for its setup first).
    Does nothing unless this process runs a single thread; never raises."""
    if count <= 0 or _spares or not single_threaded():
        return
    for _ in range(count):
        pipes = [f.fileno() for proc in _spares for f in (proc.stdin, proc.stdout)]
        try:
            _spares.append(Forked(serve, pipes))
        except OSError:
            return


def take() -> Forked | None:
    """A spare still waiting for its setup, or None when none is left."""
    while _spares:
        spare = _spares.pop(0)
        if _alive(spare):
            return spare
        _close(spare)
    return None


def discard() -> None:
    """End the spares not taken. They hold nothing yet (no job, no connection, no file), so
    they are killed and reaped at once rather than waited for."""
    while _spares:
        _close(_spares.pop())


def _alive(spare: Forked) -> bool:
    with contextlib.suppress(TimeoutError):
        spare.wait(timeout=0)
        return False
    return True


def _close(spare: Forked) -> None:
    for stream in (spare.stdin, spare.stdout):
        with contextlib.suppress(OSError):
            stream.close()
    spare.kill()
    spare.wait()
