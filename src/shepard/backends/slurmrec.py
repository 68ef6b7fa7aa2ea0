"""Reconciling a slurm flock's catalog with what Slurm says (`squeue -t all`, `scontrol`).

Tasks report to the catalog themselves; this catches the ones that cannot:
- a placed job whose task ended without claiming it (cancelled while pending, failed to
  start, lost its node) is given back to the queue (`unplace`), counting as a lost worker;
- a running job whose task ended without reporting (scancel from outside, node failure, time
  limit, out of memory) ends its attempt with Slurm's reason: a time limit or memory exhausted
  by a one-task-per-job task is the job's own doing and costs an attempt, retried per the
  retry policy (with an error bundle holding the payload's logs); anything else, and any end
  of a sheep, is a lost worker: the job runs again without spending an attempt.
- a submission whose dispatcher died before recording the array id is adopted (found by its
  `--comment`) or given back after STALE seconds.

Order matters: the catalog is read *before* Slurm is asked, so every array the catalog names
is one Slurm already had; every change is fenced (placement, attempt), so a task that claimed
or reported meanwhile is never overridden. Only tasks that are no longer alive lead to catalog
work (their jobs found through the manifest), each once, so arrays waiting in Slurm's queue
cost nothing but their line in `squeue`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from shepard.backends import slurmtasks as tasks
from shepard.backends.slurmctl import ALIVE, SlurmBusy, SlurmCtl, Snapshot
from shepard.model import Job, JobStatus, Outcome
from shepard.runtime import log_key
from shepard.runtime.errorbundle import AttemptReport, error_bundle_key, write_error_bundle

if TYPE_CHECKING:
    from shepard.flock import Flock

log = logging.getLogger(__name__)

STALE = 120.0  # seconds after which a submission with no array id is looked into
SWEEP_EVERY = 60.0  # seconds between two clean-ups of finished manifests
KEEP_MANIFESTS = 86400.0  # seconds a manifest is kept once no placed job names it


@dataclass(frozen=True)
class Names:
    """The Slurm job names of a flock's arrays (unique per catalog)."""

    array: str
    sheep: str


def flock_names(flock: Flock) -> Names:
    key = hashlib.sha256(flock.dir.catalog_url.encode()).hexdigest()[:8]
    base = f"shepard-{flock.config.name}-{key}"
    return Names(base, f"{base}-sheep")


class Reconciler:
    def __init__(self, flock: Flock, ctl: SlurmCtl, names: Names, manifests: Path) -> None:
        self.flock, self.catalog, self.ctl = flock, flock.catalog, ctl
        self.names, self.manifests = names, manifests
        self.policy = flock.config.retry.policy()
        self._manifests: dict[str, list[str]] = {}  # token -> job ids in task order
        self._settled: dict[str, set[int]] = {}  # placement -> task indexes already handled
        self._next_sweep = float("-inf")

    def run(self, now: float, *, submitting: AbstractSet[str] = frozenset()) -> None:
        """One comparison. `submitting`: tokens this process is still submitting."""
        placements = self.catalog.placements()
        for placement in list(self._settled):
            if placement not in placements:  # nothing of it left to watch
                del self._settled[placement]
        running = [(job, task) for job, task in self._running() if task is not None]
        ids = {task.array_id for _, task in running}
        stale: list[str] = []
        for placement in placements:
            token, array_id = tasks.split_placement(placement)
            if array_id is not None:
                ids.add(array_id)
            elif token not in submitting and tasks.token_age(token, now) >= STALE:
                stale.append(token)
        if ids or stale:
            try:
                snapshot = self.ctl.queue(
                    job_ids=sorted(ids), names=[self.names.array] if stale else []
                )
            except SlurmBusy as exc:
                log.warning("could not compare with Slurm this time: %s", exc)
                return
            for token in stale:
                self._check_submission(token, snapshot, now)
            for placement in placements:
                token, array_id = tasks.split_placement(placement)
                if array_id is not None:
                    self._check_array(token, array_id, snapshot, now)
            self._check_running(running, snapshot, now)
        if now >= self._next_sweep:
            self._next_sweep = now + SWEEP_EVERY
            self._sweep(now, {tasks.split_placement(p)[0] for p in placements})

    # -- placed jobs --------------------------------------------------------------------------

    def _check_array(self, token: str, array_id: str, snapshot: Snapshot, now: float) -> None:
        """Give back the jobs whose task in `array_id` ended (or vanished) without claiming
        them. Only tasks that are not alive are looked at, and each of them once."""
        placement = f"{token}@{array_id}"
        ids = self._manifest(token)
        if not ids:  # no task can tell which job is its own: give them all back
            group = [j.id for j in self.catalog.placed_in([placement])]
            detail = f"the task manifest of slurm array {array_id} is missing"
            self.catalog.unplace(group, placement, now=now, detail=detail, lost=False)
            return
        if array_id not in snapshot.arrays() and not self._gone(array_id):
            return  # squeue did not list it but Slurm knows it: look again next time
        settled = self._settled.setdefault(placement, set())
        ended: dict[str | None, list[tuple[int, str]]] = {}  # Slurm's state -> tasks
        for index, job_id in enumerate(ids):
            if index not in settled and not snapshot.alive(array_id, index):
                record = snapshot.task(array_id, index)
                ended.setdefault(record.state if record else None, []).append((index, job_id))
        for state, ended_tasks in ended.items():
            # fenced: only jobs still placed there, which their task never claimed
            detail = tasks.ended_unstarted(array_id, state)
            job_ids = [job_id for _, job_id in ended_tasks]
            done = self.catalog.unplace(job_ids, placement, now=now, detail=detail)
            settled.update(index for index, _ in ended_tasks)
            if done:
                log.warning("%d job(s) handed over again: %s", len(done), detail)

    def _check_submission(self, token: str, snapshot: Snapshot, now: float) -> None:
        """A placement whose sbatch never recorded an array id: adopt the array or give the
        jobs back."""
        found = snapshot.with_comment(tasks.comment(token))
        if found:
            self.catalog.rename_placement(token, f"{token}@{min(found, key=int)}")
            return
        group = [j.id for j in self.catalog.placed_in([token]) if j.status is JobStatus.QUEUED]
        self.catalog.unplace(
            group, token, now=now, lost=False,
            detail="its submission to Slurm did not complete; handing it over again",
        )  # fmt: skip

    def _gone(self, array_id: str) -> bool:
        """Whether Slurm no longer knows the array at all (asked when squeue omitted it)."""
        try:
            return self.ctl.show_job(array_id) is None
        except SlurmBusy as exc:
            log.warning("could not ask Slurm about array %s: %s", array_id, exc)
            return False

    def _manifest(self, token: str) -> list[str]:
        """The job ids of `token`'s array in task order (read once)."""
        found = self._manifests.get(token)
        if found is None:
            found = self._manifests[token] = tasks.manifest_ids(self.manifests / f"{token}.jobs")
        return found

    # -- running jobs -------------------------------------------------------------------------

    def _running(self) -> Iterable[tuple[Job, tasks.TaskRef | None]]:
        def page(*, limit: int, after_seq: int | None) -> list[Job]:
            return self.catalog.page(
                status=JobStatus.RUNNING, limit=limit, after_seq=after_seq, newest_first=False
            )

        for job in _pages(page):
            yield job, tasks.task_of(job.worker)

    def _check_running(
        self, running: list[tuple[Job, tasks.TaskRef]], snapshot: Snapshot, now: float
    ) -> None:
        known = snapshot.arrays()
        for job, task in running:
            if snapshot.alive(task.array_id, task.index):
                continue
            record = snapshot.task(task.array_id, task.index)
            state = record.state if record else None
            if task.array_id not in known:  # purged, or squeue missed it: ask about the task
                try:
                    info = self.ctl.show_job(str(task))
                except SlurmBusy as exc:
                    log.warning("could not ask Slurm about task %s: %s", task, exc)
                    continue
                state = info.get("JobState") if info else None
                if state in ALIVE:
                    continue
            self._end(job, task, state, now)

    def _end(self, job: Job, task: tasks.TaskRef, state: str | None, now: float) -> None:
        reason = tasks.ended(str(task), state)
        if task.kind == tasks.ARRAY_TASK and state in tasks.JOB_CAUSED:
            bundle = self._error_bundle(job, reason, now)
            outcome = Outcome(JobStatus.FAILED, reason=reason, error_bundle=bundle)
            status = self.catalog.finish(
                job.id, job.attempt, outcome, now=now, retry_at=now + self.policy.delay(job.attempt)
            )
        else:
            status = self.catalog.lose(
                job.id, job.attempt, now=now, reason=reason, retry_at=now + self.policy.backoff
            )
        if status is not None:
            log.warning("job %s attempt %d: %s; now %s", job.id, job.attempt, reason, status.value)

    def _error_bundle(self, job: Job, reason: str, now: float) -> str | None:
        """An error bundle with the payload's logs, as the runtime would have left."""
        start = job.started_at or int(now)
        key = error_bundle_key(job.id, start)
        logs = self.flock.local_store("logs")
        streams = (
            logs.path(log_key(job.id, job.attempt, "stdout")),
            logs.path(log_key(job.id, job.attempt, "stderr")),
        )
        report = AttemptReport(job.id, job.attempt, start, now, reason)
        try:
            write_error_bundle(
                self.flock.store("errors"), key, report, logs=streams, folders=(), secrets=None
            )
        except Exception as exc:
            log.warning("job %s: could not store its error bundle: %s", job.id, exc)
            return None
        return key

    # -- clean-up ------------------------------------------------------------------------------

    def _sweep(self, now: float, in_use: set[str]) -> None:
        """Delete manifests that no placed job names any more (after KEEP_MANIFESTS)."""
        for token in list(self._manifests):
            if token not in in_use:
                del self._manifests[token]
        if not self.manifests.is_dir():
            return
        for path in self.manifests.glob("*.jobs"):
            token = path.stem
            if token not in in_use and tasks.token_age(token, now) >= KEEP_MANIFESTS:
                path.unlink(missing_ok=True)


def _pages(fetch: Callable[..., list[Job]], size: int = 1000) -> Iterable[Job]:
    after: int | None = None
    while page := fetch(limit=size, after_seq=after):
        yield from page
        after = page[-1].seq
