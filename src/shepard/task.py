"""What a scheduler's task executes: `python -m shepard.task run|serve ...`.

The task's work itself is in shepard.scheduler_task; this module opens the flock and parses
the arguments, without loading the CLI (a task starts in half the time).

A one-task-per-job task is a short-lived process, so two things make it start and leave
faster (together about a third of a trivial task's time): the cyclic garbage collector stays
off while it imports and runs one job (a sheep, which lives long, turns it back on), and once
its work is recorded, its output flushed and its connections closed it leaves with os._exit,
skipping the interpreter's teardown. Being a process of its own, it is also where SIGTERM
(the scheduler ending the task) is turned into the event the task's work watches, and where
the process is declared a runner process (runtime/process.py).
"""

import gc

gc.disable()

import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """`run|serve ...` (through `python -m shepard.task`): what `shepard worker run --manifest`
    and `shepard worker serve` do, without loading the CLI (a task starts in half the time).
    Returns the exit status, once the flock's catalog connections are closed."""
    import argparse
    import logging
    import signal
    import threading

    from shepard.errors import ShepardError
    from shepard.flock import Flock
    from shepard.runtime.process import become_runner_process
    from shepard.scheduler_task import run_array_task, serve

    parser = argparse.ArgumentParser(prog="python -m shepard.task")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the job on line --index of --manifest")
    run.add_argument("--manifest", required=True)
    run.add_argument("--index", type=int, default=None)
    serve_ = commands.add_parser("serve", help="run queued jobs until the queue stays empty")
    serve_.add_argument("--time-limit", type=float, default=None)
    serve_.add_argument("--idle", type=float, default=5.0)
    for command in (run, serve_):
        command.add_argument(
            "--flock", type=Path, default=Path(os.environ.get("SHEPARD_FLOCK", "."))
        )
    args = parser.parse_args(argv)
    level = os.environ.get("SHEPARD_LOG_LEVEL", "WARNING").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    terminate = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: terminate.set())
    try:
        flock = Flock.open(args.flock)
        try:
            setup = flock.task_setup()
            if args.command == "serve":
                gc.enable()  # a sheep lives long
                become_runner_process()
                ran = serve(setup, time_limit=args.time_limit, idle=args.idle, terminate=terminate)
                print(f"ran {ran} job(s)")
                return 0
            index = args.index
            if index is None:
                identity = setup.identity(os.environ)
                index = None if identity is None else identity[1]
            status = run_array_task(setup, args.manifest, index, terminate=terminate)
        finally:
            flock.close()
    except ShepardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous)
    task = f"task {index} of {Path(args.manifest).name}"
    if status is None:  # normal for a task whose job was cancelled or handed elsewhere
        print(f"{task}: its job was not claimable", file=sys.stderr)
    else:
        print(f"{task}: {status.value}")
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
