"""A sheep runs claimed jobs through the runtime, keeps their leases alive and reports outcomes.

The same code serves every backend: the local backend's runner processes, and `shepard worker run`
on a remote engine (a Slurm task, a Batch container), which is why reporting lives here and not
in the dispatcher.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Protocol

from shepard.catalog.base import Catalog
from shepard.catalog.states import retry_time
from shepard.errors import CatalogError
from shepard.model import Ended, Job, JobStatus, Outcome, RetryPolicy
from shepard.recovery import before_attempt
from shepard.runtime import AttemptControl, RuntimeContext, run_attempt
from shepard.storage import ObjectStore

log = logging.getLogger(__name__)

Clock = Callable[[], float]
SHUTDOWN = "shutdown"
SHORT_JOB = 0.02
"""Seconds: a sheep whose attempts end quicker than this claims several jobs at a time."""
MAX_AHEAD = 8
"""The most jobs a sheep claims at once (so a claimed job waits at most ~0.15 s to start)."""
RECORD_WITHIN = 0.1
"""Seconds an ended attempt may wait to be recorded together with the next ones."""


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
        catalog.be_patient()  # whoever heartbeats runs long: never die of a busy catalog
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

    def drop(self, job_id: str, attempt: int | None = None) -> None:
        """Stop holding `job_id` (only if its held attempt is `attempt`, when given)."""
        with self._lock:
            held = self._held.get(job_id)
            if held is not None and (attempt is None or held[0] == attempt):
                del self._held[job_id]

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
    outcome = attempt(job, ctx, catalog, control, slot=slot, runner=runner)
    if outcome is None:
        return release(catalog, job, clock())
    return report(catalog, job, outcome, policy, clock(), ctx.outputs)


def attempt(
    job: Job,
    ctx: RuntimeContext,
    catalog: Catalog,
    control: AttemptControl,
    *,
    slot: Path | None = None,
    runner: Runner = run_attempt,
) -> Outcome | None:
    """Run one claimed attempt, unless the sheep is shutting down (then, or when the shutdown
    stopped it, None: the caller gives the attempt back with `release`)."""
    if control.stop.is_set() and control.stop_reason == SHUTDOWN:
        return None
    if job.attempt > 1:  # an earlier attempt's sheep may have died after publishing
        before_attempt(catalog, job, ctx.outputs)
    outcome = runner(job, ctx, control, slot=slot)
    if outcome.status is JobStatus.CANCELLED and control.stop_reason == SHUTDOWN:
        return None
    return outcome


def ended(job: Job, outcome: Outcome, policy: RetryPolicy, now: float) -> Ended:
    """What to record for `job`'s current attempt: `outcome`, with a retry time when the policy
    allows another attempt after it."""
    return Ended(job.id, job.attempt, outcome, retry_time(policy, job.attempt, outcome, now))


def report(
    catalog: Catalog,
    job: Job,
    outcome: Outcome,
    policy: RetryPolicy,
    now: float,
    outputs: ObjectStore,
) -> JobStatus | None:
    """Record `outcome` for `job`'s current attempt, asking for a retry when the policy allows."""
    entry = ended(job, outcome, policy, now)
    try:
        status = catalog.finish(job.id, job.attempt, outcome, now=now, retry_at=entry.retry_at)
    except CatalogError as exc:
        _not_recorded([entry], exc)
        raise
    if status is None:
        _withdraw(outputs, outcome)
    return status


class Recorder:
    """Records a sheep's ended attempts and claims its next jobs, in one transaction
    (`Catalog.finish_and_claim`), batching both when jobs are short.

    `add` queues an ended attempt; `flush(claim)` records everything queued and claims up to
    `claim` jobs, held in `heartbeat` and returned with their controls. An attempt stays held
    (its lease alive) until it is recorded. A thread records what has waited RECORD_WITHIN
    seconds, so attempts queued behind a long one are not kept waiting.
    """

    def __init__(
        self,
        catalog: Catalog,
        heartbeat: Heartbeat,
        policy: RetryPolicy,
        outputs: ObjectStore,
        *,
        worker: str,
        lease: float,
        clock: Clock = time.time,
    ) -> None:
        self.catalog, self.heartbeat, self.policy, self.outputs = (
            catalog,
            heartbeat,
            policy,
            outputs,
        )
        self.worker, self.lease, self.clock = worker, lease, clock
        self._pending: list[tuple[Job, Outcome, float]] = []  # with time.monotonic() at add
        self._changed = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="recorder", daemon=True)
        self._thread.start()

    def add(self, job: Job, outcome: Outcome) -> None:
        with self._changed:
            self._pending.append((job, outcome, time.monotonic()))
            if len(self._pending) == 1:  # the thread times the oldest: wake it only for that
                self._changed.notify()

    def flush(self, claim: int = 0) -> list[tuple[Job, AttemptControl]]:
        """Record every queued attempt and claim up to `claim` jobs. Raises CatalogError
        (logged) when the catalog fails: nothing is lost, the leases of the attempts that
        were not recorded run out and their jobs run again."""
        with self._changed:
            batch, self._pending = self._pending, []
        if not batch and claim < 1:
            return []
        now = self.clock()
        entries = [ended(job, outcome, self.policy, now) for job, outcome, _ in batch]
        try:
            statuses, claimed = self.catalog.finish_and_claim(
                entries, now=now, worker=self.worker, lease=self.lease, limit=claim
            )
        except CatalogError as exc:
            _not_recorded(entries, exc)
            for job, _, _ in batch:
                self.heartbeat.drop(job.id, job.attempt)
            raise
        for (job, outcome, _), status in zip(batch, statuses, strict=True):
            self.heartbeat.drop(job.id, job.attempt)
            if status is None:
                _withdraw(self.outputs, outcome)
        return [(job, self.heartbeat.hold(job)) for job in claimed]

    def close(self) -> None:
        """Stop the thread and record what is still queued."""
        with self._changed:
            self._closed = True
            self._changed.notify()
        self._thread.join()
        with contextlib.suppress(CatalogError):  # logged; the leases run out
            self.flush()

    def _loop(self) -> None:
        while True:
            with self._changed:
                if self._closed:
                    return
                if not self._pending:
                    self._changed.wait()
                    continue
                wait = self._pending[0][2] + RECORD_WITHIN - time.monotonic()
                if wait > 0:
                    self._changed.wait(wait)
                    continue
            try:
                self.flush()
            except CatalogError:
                pass  # logged by flush
            except Exception:  # the thread must outlive one failure; the next flush retries
                log.exception("recording outcomes failed")


def _not_recorded(entries: Sequence[Ended], exc: CatalogError) -> None:
    # Nothing is lost: the lease runs out and the job runs again as a new attempt, which
    # first removes the results this one may have published (see recovery.py).
    for entry in entries:
        log.error(
            "job %s attempt %d: could not record its outcome (%s): %s",
            entry.job_id, entry.attempt, entry.outcome.status.value, exc,
        )  # fmt: skip


def _withdraw(outputs: ObjectStore, outcome: Outcome) -> None:
    """The catalog refused this attempt's outcome (a newer attempt owns the job, or it was
    cancelled): remove the results it published."""
    for key in outcome.outputs:
        outputs.delete(key)


def release(catalog: Catalog, job: Job, now: float) -> JobStatus | None:
    """Give a claimed attempt back to the queue without spending one of its attempts."""
    return catalog.release(job.id, job.attempt, now=now, detail="released: sheep shut down")
