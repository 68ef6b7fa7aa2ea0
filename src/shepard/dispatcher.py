"""The dispatcher moves queued jobs to a backend and recovers jobs whose worker vanished."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from shepard.backends.base import Backend, SchedulerBackend
from shepard.catalog.base import Catalog
from shepard.model import RetryPolicy

log = logging.getLogger(__name__)

SWEEP_BUDGET = 200_000
"""Rows of dead submissions a dispatcher step removes or publishes at most (a few seconds)."""


class Dispatcher:
    """Claims jobs for `backend` as it has room, and expires leases of lost workers.

    Claiming goes through the catalog, so any number of dispatchers (processes, machines) can
    serve one flock: each job is claimed by exactly one of them. An SchedulerBackend is not given
    claimed jobs: its `dispatch` hands queued jobs to the scheduler itself (see backends/base.py).
    """

    def __init__(
        self,
        catalog: Catalog,
        backend: Backend | SchedulerBackend,
        policy: RetryPolicy,
        *,
        worker_id: str,
        lease: float,
        wakeup: threading.Event | None = None,
        poll: float = 0.5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.catalog, self.backend, self.policy = catalog, backend, policy
        catalog.be_patient()  # a dispatcher outlasts other commands' long transactions
        self.worker_id, self.lease, self.poll, self.clock = worker_id, lease, poll, clock
        self.wakeup = wakeup or threading.Event()
        self._last_expiry = float("-inf")

    def step(self) -> int:
        """Expire stale leases (now and then) and claim as many jobs as the backend takes."""
        now = self.clock()
        if now - self._last_expiry >= self.lease / 4:
            self._last_expiry = now
            expired = self.catalog.expire_leases(now=now, retry_at=now + self.policy.backoff)
            if expired:
                log.warning("%d job(s) lost their worker and were re-queued", len(expired))
            # a submission killed midway: remove its invisible rows (or finish publishing
            # them), a bounded part per step so that claiming goes on meanwhile
            if self.catalog.sweep_submissions(now=now, budget=SWEEP_BUDGET):
                self._last_expiry = float("-inf")  # more to do: carry on at the next step
        if isinstance(self.backend, SchedulerBackend):
            return self.backend.dispatch(now)
        room = self.backend.capacity()
        if room <= 0:
            return 0
        jobs = self.catalog.claim(self.worker_id, now=now, lease=self.lease, limit=room)
        if jobs:
            self.backend.submit(jobs)
        return len(jobs)

    def run(self, stop: threading.Event, until: Callable[[], bool] | None = None) -> None:
        """Dispatch until `stop` is set or `until()` returns True (checked after each step)."""
        while not stop.is_set():
            claimed = self.step()
            if until is not None and until():
                return
            if claimed == 0:
                self.wakeup.wait(self.poll)
                self.wakeup.clear()
