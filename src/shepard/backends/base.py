"""The Backend contracts: how queued jobs get run somewhere.

A backend is one module in this package plus one line in `backends/__init__.py`. It never decides
*which* jobs run (the catalog hands out the oldest claimable ones) and never records outcomes
itself except through the runtime, which reports to the catalog from wherever the job runs.

There are two kinds:
- `Backend` runs jobs from this process (the local worker pool): the dispatcher claims jobs
  for it and hands them over with `submit`.
- `EngineBackend` hands jobs to an engine with a queue of its own (Slurm): jobs may wait
  there for hours, so they are not claimed at submission but *placed* (see
  catalog/placing.py), and the engine's tasks claim them when they start. The dispatcher
  calls its `dispatch` instead of claiming.

Every class registered in BACKENDS also has a `from_flock(flock, *, workers, worker_id,
wakeup)` class method that builds it for a flock (see `backends.open_backend`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from shepard.model import Job


class Backend(Protocol):
    name: str

    def capacity(self) -> int:
        """How many more claimed jobs the backend accepts right now (0 = come back later).

        The dispatcher claims at most this many jobs before calling `submit`.
        """
        ...

    def submit(self, jobs: Sequence[Job]) -> None:
        """Start running `jobs`, which the caller has just claimed (status RUNNING, leased).

        Must not block for the duration of the jobs. From here on the backend keeps their
        leases alive (heartbeats) while they run, and the runtime reports each outcome to the
        catalog. A job the backend cannot start must still end in a recorded outcome.
        """
        ...

    def cancel(self, job_ids: Sequence[str]) -> None:
        """Stop these jobs if this backend runs them (kill the payload); ignore unknown ids."""
        ...

    def active(self) -> int:
        """Number of jobs running now: those accepted by `submit` that have not ended yet,
        and any its workers claimed for themselves since (see `LocalBackend`)."""
        ...

    def shutdown(self, *, kill: bool) -> None:
        """Stop accepting work. kill=False: wait for running jobs to end; kill=True: stop them.

        Jobs accepted but not started, and jobs killed here, must go back to the queue
        (released without spending an attempt), so nothing is lost by a clean shutdown.
        """
        ...


@runtime_checkable
class EngineBackend(Protocol):
    """A backend that hands queued jobs to an engine's own queue; the engine's tasks run
    `shepard worker run` / `shepard worker serve`, which claim, run and report like any sheep.

    An implementation must guarantee:
    - a job is handed over at most once per attempt: only through `Catalog.place`, and a task
      only runs a job it claimed with `Catalog.claim_placed` (or, for long-lived sheep, with
      `Catalog.claim`);
    - no job is lost: a placement whose task ended without claiming its job is given back
      (`Catalog.unplace`), and an attempt whose task vanished while running is ended with the
      engine's reason (`Catalog.lose`, or `Catalog.finish` when the job itself caused it);
    - engine errors that may pass (a busy controller) are retried later with back-off; errors
      that cannot (a submission the engine refuses as configured) raise ShepardError.
    """

    name: str

    def dispatch(self, now: float) -> int:
        """Hand queued work to the engine and reconcile with it; must return quickly.

        Called by the dispatcher every poll interval. Returns the number of jobs handed over
        (0 makes the dispatcher wait a poll interval before calling again).
        """
        ...

    def cancel(self, job_ids: Sequence[str]) -> None:
        """Remove the engine's tasks of these jobs (already cancelled in the catalog).

        Works from any process, not only the one that submitted them; unknown ids are ignored.
        """
        ...

    def shutdown(self, *, kill: bool) -> None:
        """Stop handing over work. Jobs already handed to the engine stay there and keep
        running (`shepard cancel` removes them); submissions not completed are given back."""
        ...
