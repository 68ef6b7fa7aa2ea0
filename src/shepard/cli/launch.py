"""Entry point of the `shepard` command (and of `python -m shepard`).

Two things make a command start and leave sooner, together over 0.1 s of every call.
The cyclic garbage collector is paused while the command's modules are imported (they
create many objects and no garbage), and what they made is then left out of its passes for
good. Once the command is over, the interpreter's teardown is skipped: open flocks are
closed, exit handlers run and output is flushed, then the process leaves with os._exit.

A command that runs jobs here (`submit --wait`, `up`) forks its spare runner processes
between the runner's own imports and the command line's (backends/spares.py): each runner
then holds a copy of the first only.
"""

import gc
import sys

gc.disable()
try:
    # the embedded default catalog too: the catalog registry imports it on first use, which
    # would otherwise be after this window, with the collector running through SQLAlchemy
    import shepard.catalog.sql
    from shepard.backends import spares

    if spares_wanted := spares.wanted(sys.argv[1:]):
        # what a runner needs, and its setup names (payload kind, store), imported first
        import shepard.payloads.command
        import shepard.storage.local  # noqa: F401
        from shepard.backends import procs
finally:
    # What the imports made lives as long as the process: set it aside for good instead of
    # having the collector go through all of it at its next pass (some 40 ms).
    gc.freeze()
    gc.enable()

if spares_wanted:
    procs.prefork_spares(spares_wanted)

gc.disable()
try:
    from shepard.cli.main import app_main
finally:
    gc.freeze()
    gc.enable()

import atexit  # noqa: E402
import os  # noqa: E402
import threading  # noqa: E402


def run() -> None:
    """Run the command line, then leave at once (see the module's docstring)."""
    leave(app_main())


def leave(code: int | str | None) -> None:
    """Exit with `code` as sys.exit would, skipping the interpreter's teardown when no
    thread other than daemons is still running (else exit normally, which waits for them)."""
    main = threading.main_thread()
    if any(not t.daemon for t in threading.enumerate() if t is not main):
        sys.exit(code)
    atexit._run_exitfuncs()
    status = exit_status(code)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # e.g. a closed pipe: nothing more can be said
            status = status or 1
    os._exit(status)


def exit_status(code: int | str | None) -> int:
    """The process status sys.exit(code) gives: None is 0, a string is printed and is 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1
