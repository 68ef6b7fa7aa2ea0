"""Pieces shared by the CLI commands: the --flock option, output helpers, signal handling."""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from shepard.flock import Flock

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

FlockOption = Annotated[
    Path,
    typer.Option(
        "--flock",
        "-f",
        envvar="SHEPARD_FLOCK",
        help="Flock folder (holds flock.toml).",
        show_default=True,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def open_flock(folder: Path) -> Flock:
    return Flock.open(folder)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@contextmanager
def interruptible() -> Iterator[threading.Event]:
    """An event set by the first Ctrl-C or SIGTERM; a second Ctrl-C aborts at once."""
    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        err_console.print("[yellow]stopping: running jobs are stopped and re-queued[/]")
        stop.set()

    old_int = signal.signal(signal.SIGINT, handler)
    old_term = signal.signal(signal.SIGTERM, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
