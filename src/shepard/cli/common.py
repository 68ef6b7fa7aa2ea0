"""Pieces shared by the CLI commands: the --flock option, output helpers, signal handling."""

from __future__ import annotations

import json
import math
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console, ConsoleDimensions
from rich.markup import escape

from shepard.config import MAX_WORKERS
from shepard.errors import ShepardError
from shepard.flock import Flock
from shepard.profiles import ProfileStore

PLAIN_WIDTH = 1 << 20
"""Columns of output that is not a terminal: wide enough that no line is ever wrapped."""


class CliConsole(Console):
    """The CLI's console. On a terminal, rich's usual output; anywhere else (a pipe, a file,
    a script) plain lines that are never wrapped, whatever the width or COLUMNS, so ids and
    paths stay whole for grep and cut (rich already leaves colours out there).

    Text from users and libraries printed through it must be escaped (`escape`) or passed
    as rich `Text`, never as markup: `[...]` in it would be taken for a style.
    """

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        return size if self.is_terminal else ConsoleDimensions(PLAIN_WIDTH, size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]


console = CliConsole(highlight=False)
err_console = CliConsole(stderr=True, highlight=False)


def resolve_flock(ctx: typer.Context, param: typer.CallbackParam, value: Path | None) -> Path:
    """The flock folder: --flock > SHEPARD_FLOCK > the profile in effect's flock > '.'."""
    if ctx.resilient_parsing:  # shell completion: no file access
        return Path(".") if value is None else value
    source = ctx.get_parameter_source(param.name) if param.name else None
    if value is not None and (source is None or source.name != "DEFAULT"):
        return value  # given on the command line or through SHEPARD_FLOCK
    found = ProfileStore.from_env().active_flock()  # raises when the profile is unusable
    return found[0] if found else Path(".")


FlockOption = Annotated[
    Path,
    typer.Option(
        "--flock",
        "-f",
        envvar="SHEPARD_FLOCK",
        callback=resolve_flock,
        help="Flock folder (holds flock.toml). Default: SHEPARD_FLOCK, else the flock of the "
        "profile in effect (SHEPARD_PROFILE, else `shepard set-profile`), else '.'.",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def seconds(value: float | None) -> float | None:
    """Callback of the options given in seconds: unset, or a finite number above 0."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise typer.BadParameter(f"{value:g} is not a number of seconds: give a number > 0")
    return value


def between(low: int, high: int) -> Callable[[int | None], int | None]:
    """Callback of an integer option: unset, or from `low` to `high` (both included)."""

    def check(value: int | None) -> int | None:
        if value is not None and not low <= value <= high:
            raise typer.BadParameter(f"{value} is out of range: give a number from {low} to {high}")
        return value

    return check


# `--workers` and `--no-inbox` of the commands that run jobs (`up`, `serve`)
WorkersOption = Annotated[
    int | None,
    typer.Option(
        callback=between(1, MAX_WORKERS),
        help=f"Worker slots, 1 to {MAX_WORKERS} (default: the flock's backend.workers).",
    ),
]
NoInboxOption = Annotated[
    bool, typer.Option("--no-inbox", help="Do not turn bundles dropped into inbox/ into jobs.")
]


def flags_without_type(command: Any) -> None:
    """Show no value type for the flags of `command` (a click command made by
    typer.main.get_command) and of every command under it, in their --help.

    A flag takes no value, so the `<bool>` typer shows for it would only mislead.
    """
    params = list(command.params)
    help_option = command.get_help_option(typer.Context(command))  # --help is a flag too
    if help_option is not None:
        params.append(help_option)
    for param in params:
        if getattr(param, "is_flag", False):
            param.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        flags_without_type(sub)


_opened: list[Flock] = []


def open_flock(folder: Path) -> Flock:
    """Open the flock at `folder` for a command; it is closed when the command is over."""
    flock = Flock.open(folder)
    _opened.append(flock)
    return flock


def close_flocks() -> None:
    """Close the flocks opened by `open_flock` (their catalogs write back what they hold)."""
    while _opened:
        flock = _opened.pop()
        try:
            flock.close()
        except Exception as exc:  # the command's outcome stands; say what went wrong
            err_console.print(
                f"[yellow]warning:[/] closing {escape(str(flock.dir.folder))}: {escape(str(exc))}"
            )


# Which commands take each profile option as their default (aliases included).
PROFILE_DEFAULTS = {
    "workers": ("up",),
    "wait": ("batch", "submit", "batch-via-api", "batch_via_api"),
}


def apply_profile_defaults(ctx: typer.Context) -> None:
    """Make the profile in effect's options (workers, wait) the defaults of the commands.

    Options given on the command line still win. An unusable profile adds nothing here: the
    commands that need its flock report the problem.
    """
    try:
        active = ProfileStore.from_env().active()
    except ShepardError:
        return
    if active is None:
        return
    default_map = dict(ctx.default_map or {})
    for key, value in active.profile.values().items():
        if value is None:
            continue
        for command in PROFILE_DEFAULTS.get(key, ()):
            default_map[command] = {**default_map.get(command, {}), key: value}
    ctx.default_map = default_map


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

    with handling(handler, signal.SIGINT, signal.SIGTERM):
        yield stop


@contextmanager
def terminable() -> Iterator[threading.Event]:
    """An event set by SIGTERM (what a scheduler sends its task on scancel and at a time
    limit), for the `terminate` argument of shepard.scheduler_task's functions."""
    terminate = threading.Event()
    with handling(lambda signum, frame: terminate.set(), signal.SIGTERM):
        yield terminate


@contextmanager
def handling(handler: Callable[[int, Any], None], *signums: signal.Signals) -> Iterator[None]:
    """`handler` for `signums` inside the block, the previous handlers after it.

    Signal handlers belong to the whole process: only a command of the CLI, in the main
    thread of the `shepard` process, installs them (never library code, which may run in a
    server's threads); elsewhere this raises RuntimeError.
    """
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("signal handlers are installed by the main thread of the CLI only")
    previous = [(signum, signal.signal(signum, handler)) for signum in signums]
    try:
        yield
    finally:
        for signum, old in previous:
            signal.signal(signum, old)
