"""What an engine's task executes: `python -m shepard.task run|serve ...` (see shepard.remote).

A one-task-per-job task is a short-lived process, so two things make it start and leave
faster (together about a third of a trivial task's time): the cyclic garbage collector stays
off while it imports and runs one job (a sheep, which lives long, turns it back on), and once
its work is recorded, its output flushed and its connections closed it leaves with os._exit,
skipping the interpreter's teardown.
"""

import gc

gc.disable()

import os  # noqa: E402
import sys  # noqa: E402

from shepard.remote import main  # noqa: E402

if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
