"""A sheep runs claimed jobs through the runtime, keeps their leases alive and reports outcomes.

The same code serves every backend: the local backend's runner processes, and `shepard worker run`
on a remote engine (a Slurm task, a Batch container), which is why reporting lives here and not
in the dispatcher.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

from shepard.catalog.base import Catalog
from shepard.errors import CatalogError
from shepard.model import Job, JobStatus, Outcome, RetryPolicy
from shepard.recovery import before_attempt
from shepard.runtime import AttemptControl, RuntimeContext, run_attempt
from shepard.storage import ObjectStore

log = logging.getLogger(__name__)

Clock = Callable[[], float]
SHUTDOWN = "shutdown"


class Runner(Protocol):
    """Runs one attempt: `shepard.runtime.run_attempt` or something that delegates to it."""

    def __call__(
        self, job: Job, ctx: RuntimeContext, control: AttemptControl, *, slot: Path | None = None
    ) -> Outcome: ...  # stop reason: the sheep is going away; the job goes back to the queue


class Heartbeat:
    """Extends the leases of every held attempt with one catalog call per period.

    An attempt the catalog no longer recognises (cancelled, or its lease expired and another
    sheep took the job) gets its control's `stop` set, so the runtime kills the payload.
    """

    def __init__(self, catalog: Catalog, lease: float, clock: Clock = time.time) -> None:
        self.catalog, self.lease, self.clock = catalog, lease, clock
        self._held: dict[str, tuple[int, AttemptControl]] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def hold(self, job: Job) -> AttemptControl:
        # No catalog read before publishing: result names carry START_TIME, unique per
        # attempt, so a stale attempt cannot overwrite anything, and `report` withdraws
        # what it published if the catalog then refuses its outcome.
        control = AttemptControl()
        with self._lock:
            self._held[job.id] = (job.attempt, control)
        return control

    def drop(self, job_id: str) -> None:
        with self._lock:
            self._held.pop(job_id, None)

    def stop(self, job_ids: Iterable[str] | None, reason: str) -> None:
        """Ask the runtime to stop these attempts (all held attempts when job_ids is None)."""
        with self._lock:
            ids = list(self._held) if job_ids is None else [i for i in job_ids if i in self._held]
            controls = [self._held[i][1] for i in ids]
        for control in controls:
            control.stop_reason = reason
            control.stop.set()

    def beat(self) -> None:
        with self._lock:
            held = [(job_id, attempt) for job_id, (attempt, _) in self._held.items()]
        if not held:
            return
        alive = self.catalog.heartbeat(held, now=self.clock(), lease=self.lease)
        lost = [job_id for job_id, _ in held if job_id not in alive]
        for job_id in lost:
            job = self.catalog.get(job_id)
            cancelled = job is not None and job.status is JobStatus.CANCELLED
            self.stop([job_id], "cancelled" if cancelled else "lease lost")

    def close(self) -> None:
        self._closed.set()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        # Beats also carry cancellations to running payloads, so keep them frequent enough
        # for `shepard cancel` to act within seconds even with a long lease.
        period = max(0.2, min(self.lease / 4, 2.0))
        while not self._closed.wait(period):
            try:
                self.beat()
            except Exception:  # a failed beat must not kill the sheep; the next one retries
                log.exception("heartbeat failed")


def run_claimed(
    job: Job,
    ctx: RuntimeContext,
    catalog: Catalog,
    policy: RetryPolicy,
    control: AttemptControl,
    clock: Clock = time.time,
    slot: Path | None = None,
    runner: Runner = run_attempt,
) -> JobStatus | None:
    """Run one claimed attempt and record its outcome; return the job's new status.

    `slot`: the calling worker slot's own folder, reused as the job's root folder.
    `runner`: what runs the attempt (in this process by default).

    None means the catalog refused the report because the attempt is no longer current.
    """
    status, _ = _run(job, ctx, catalog, policy, control, clock, slot, runner, None)
    return status


def run_and_claim(
    job: Job,
    ctx: RuntimeContext,
    catalog: Catalog,
    policy: RetryPolicy,
    control: AttemptControl,
    *,
    worker: str,
    lease: float,
    wanted: Callable[[], bool] = lambda: True,
    clock: Clock = time.time,
    slot: Path | None = None,
    runner: Runner = run_attempt,
) -> tuple[JobStatus | None, Job | None]:
    """`run_claimed`, claiming the sheep's next job (for `worker`, with `lease`) in the same
    transaction that records the outcome (`Catalog.finish_and_claim`); returns the new
    status and the next job, if any. `wanted()` is asked right before recording: False
    claims nothing. An attempt given back to the queue (shutdown) claims nothing either.
    """
    return _run(job, ctx, catalog, policy, control, clock, slot, runner, (worker, lease, wanted))


_Claim = tuple[str, float, Callable[[], bool]]  # worker, lease, wanted


def _run(
    job: Job,
    ctx: RuntimeContext,
    catalog: Catalog,
    policy: RetryPolicy,
    control: AttemptControl,
    clock: Clock,
    slot: Path | None,
    runner: Runner,
    claim: _Claim | None,
) -> tuple[JobStatus | None, Job | None]:
    if control.stop.is_set() and control.stop_reason == SHUTDOWN:
        return release(catalog, job, clock()), None
    if job.attempt > 1:  # an earlier attempt's sheep may have died after publishing
        before_attempt(catalog, job, ctx.outputs)
    outcome = runner(job, ctx, control, slot=slot)
    if outcome.status is JobStatus.CANCELLED and control.stop_reason == SHUTDOWN:
        return release(catalog, job, clock()), None
    return _report(catalog, job, outcome, policy, clock(), ctx.outputs, claim)


def report(
    catalog: Catalog,
    job: Job,
    outcome: Outcome,
    policy: RetryPolicy,
    now: float,
    outputs: ObjectStore,
) -> JobStatus | None:
    """Record `outcome` for `job`'s current attempt, asking for a retry when the policy allows."""
    return _report(catalog, job, outcome, policy, now, outputs, None)[0]


def _report(
    catalog: Catalog,
    job: Job,
    outcome: Outcome,
    policy: RetryPolicy,
    now: float,
    outputs: ObjectStore,
    claim: _Claim | None,
) -> tuple[JobStatus | None, Job | None]:
    retry_at = None
    if (
        outcome.status is JobStatus.FAILED
        and outcome.retryable
        and outcome.exit_code not in policy.no_retry_exit_codes
    ):
        retry_at = now + policy.delay(job.attempt)
    claimed: list[Job] = []
    try:
        if claim is not None and claim[2]():
            status, claimed = catalog.finish_and_claim(
                job.id, job.attempt, outcome, now=now, retry_at=retry_at,
                worker=claim[0], lease=claim[1],
            )  # fmt: skip
        else:
            status = catalog.finish(job.id, job.attempt, outcome, now=now, retry_at=retry_at)
    except CatalogError as exc:
        # Nothing is lost: the lease runs out and the job runs again as a new attempt, which
        # first removes the results this one may have published (see recovery.py).
        log.error(
            "job %s attempt %d: could not record its outcome (%s): %s",
            job.id, job.attempt, outcome.status.value, exc,
        )  # fmt: skip
        raise
    if status is None and outcome.outputs:
        # A newer attempt owns the job (or it was cancelled): withdraw this attempt's results.
        for key in outcome.outputs:
            outputs.delete(key)
    return status, claimed[0] if claimed else None


def release(catalog: Catalog, job: Job, now: float) -> JobStatus | None:
    """Give a claimed attempt back to the queue without spending one of its attempts."""
    return catalog.release(job.id, job.attempt, now=now, detail="released: sheep shut down")
