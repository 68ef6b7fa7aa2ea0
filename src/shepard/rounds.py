"""One round of a flock's head, for heads that run now and then instead of all the time:
the functions of a serverless flock (shepard.lambdas).

`up` runs the dispatcher in a loop; a function gets a few minutes at most and must return.
`head_round` does what one of those loops would do once, bounded by a deadline: (when asked)
expire lost workers' leases and compare the catalog with the scheduler (outcomes, lost
tasks, time limits), then hand queued jobs over, array after array at the backend's submit
rate, until nothing is left to hand over or the deadline is near.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shepard.errors import ConfigError

if TYPE_CHECKING:
    from shepard.flock import Flock


@dataclass(frozen=True)
class Round:
    """What one round did."""

    handed: int  # jobs handed to the scheduler
    reconciled: bool  # whether the catalog was compared with the scheduler
    seconds: float


def head_round(
    flock: Flock,
    *,
    reconcile: bool,
    deadline: float,
    sleep: Callable[[float], None] = time.sleep,
) -> Round:
    """One round of the flock's scheduler backend (module docstring); `deadline` is on the
    flock's clock. Reconciling and handing over are safe while other heads do the same:
    the catalog's conditional writes decide who places, claims and records each job.

    ConfigError when the flock's backend hands nothing to a scheduler (the local one runs
    jobs in its own processes, which a round cannot keep).
    """
    from shepard.dispatcher import Dispatcher

    started = flock.clock()
    backend = flock.open_backend()
    hand_over_until = getattr(backend, "hand_over_until", None)
    if not getattr(backend, "scheduler", False) or hand_over_until is None:
        backend.shutdown(kill=False)
        raise ConfigError(
            f"the {flock.config.backend.kind} backend cannot be run one round at a time: "
            "a serverless flock needs backend.kind = aws-batch"
        )
    handed = 0
    try:
        if reconcile:
            dispatcher = Dispatcher(
                flock.catalog, backend, flock.config.retry.policy(), worker_id="",
                lease=flock.config.backend.lease, clock=flock.clock,
            )  # fmt: skip
            handed += dispatcher.step()  # leases, then the backend: compare, then hand over
        handed += int(hand_over_until(deadline, sleep=sleep))
    finally:
        backend.shutdown(kill=False)
    return Round(handed, reconcile, flock.clock() - started)
