"""The Backend contract: how jobs claimed by the dispatcher get run somewhere.

A backend is one module in this package plus one line in `backends/__init__.py`. It never decides
*which* jobs run (the dispatcher claims them from the catalog) and never records outcomes itself
except through the runtime, which reports to the catalog from wherever the job runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

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
        """Number of jobs accepted by `submit` that have not ended yet."""
        ...

    def shutdown(self, *, kill: bool) -> None:
        """Stop accepting work. kill=False: wait for running jobs to end; kill=True: stop them.

        Jobs accepted but not started, and jobs killed here, must go back to the queue
        (released without spending an attempt), so nothing is lost by a clean shutdown.
        """
        ...
