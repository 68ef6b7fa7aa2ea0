"""What the job commands do differently on a serverless flock (`[aws] stack` set): its
functions are the head (shepard.aws.head). After a submission the scheduler is asked to
dispatch; `--wait` follows the catalog while the reconciler is invoked every few seconds;
`query` shows the dead-letter queue's depth when it is not zero; `up` runs here only with
`--here`."""

from __future__ import annotations

import threading
from collections.abc import Callable

from shepard.errors import ShepardError
from shepard.flock import Flock
from shepard.model import JobStatus

POLL_S = 1.0


def is_serverless(f: Flock) -> bool:
    return bool(f.config.aws.stack)


def after_submit(f: Flock) -> None:
    """Ask the flock's scheduler to hand the new jobs to Batch (serverless flocks only)."""
    if is_serverless(f):
        from shepard.aws.head import Head

        Head(f.config.aws).kick()


def after_cancel(f: Flock) -> None:
    """Have the reconciler stop the cancelled jobs' Batch children (serverless flocks only)."""
    if is_serverless(f):
        from shepard.aws.head import Head

        Head(f.config.aws).reconcile_soon()


def wait(
    f: Flock,
    batch: str,
    stop: threading.Event,
    on_progress: Callable[[dict[JobStatus, int]], None] | None = None,
) -> dict[JobStatus, int]:
    """Until every job of `batch` is terminal (or `stop`): the functions run them; the
    reconciler is invoked every few seconds so that their outcomes are recorded."""
    from shepard.aws.head import Head

    head = Head(f.config.aws)
    while True:
        counts = f.counts(batch)
        if on_progress:
            on_progress(counts)
        if counts[JobStatus.QUEUED] + counts[JobStatus.RUNNING] == 0 or stop.is_set():
            return counts
        head.reconcile_soon()
        stop.wait(POLL_S)


def refuse_up(f: Flock, here: bool) -> None:
    """`up` on a serverless flock runs a head here only when asked for with --here."""
    if is_serverless(f) and not here:
        raise ShepardError(
            f"flock {f.config.name} is serverless: its functions on AWS run its jobs "
            f"(stack {f.config.aws.stack}); `shepard up --here` runs a head on this machine "
            "as well, e.g. to hand jobs over faster than the functions' schedule"
        )


def dead_letters(f: Flock) -> int:
    """The dead-letter queue's depth on a serverless flock (0 elsewhere)."""
    if not is_serverless(f):
        return 0
    from shepard.aws.head import Head

    return Head(f.config.aws).dead_letters()
