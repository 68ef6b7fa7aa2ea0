"""`python -m shepard.tasks DOCUMENT`: run a tasks document in the current folder, as a
`tasks` flock's job does (payloads/tasks.py), and exit with its code (docs/tasks.md).

This is a process entry point: it alone sets the SIGTERM handler that passes a stop (a
cancel, the job's timeout) on to the commands it runs, each a process group of its own.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from shepard.tasks import document
from shepard.tasks.runner import INVALID_DOCUMENT, Children, Context, mode_of, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shepard.tasks")
    parser.add_argument("document", type=Path)
    parser.add_argument("--endpoint-url", default=None)
    parser.add_argument("--region", default=None)
    parser.add_argument("--checked", default=None, help="digest of a document found valid")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    cwd = Path.cwd()
    (cwd / "logs").mkdir(exist_ok=True)
    try:
        doc = document.load(args.document, env, checked=args.checked)
    except document.DocumentError as exc:
        print(f"error, cannot validate the tasks document: {exc}", file=sys.stderr, flush=True)
        return INVALID_DOCUMENT
    children = Children()
    _stop_on_sigterm(children)
    ctx = Context(
        env=env, cwd=cwd, mode=mode_of(env), local_mode=env.get("LOCAL_MODE") == "1",
        disk_stats=env.get("DISK_STATS") == "1",
        endpoint_url=args.endpoint_url, region=args.region, cores=_cores(), children=children,
        say=_say,
    )  # fmt: skip
    return run(doc, ctx)


def _say(text: str) -> None:
    print(text, flush=True)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _stop_on_sigterm(children: Children) -> None:
    def on_term(signum: int, _frame: object) -> None:
        children.stopping.set()
        children.signal_all(signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_term)


if __name__ == "__main__":
    sys.exit(main())
