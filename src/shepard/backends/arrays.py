"""The array template: how a scheduler with job arrays runs a flock's jobs, written once.

A scheduler backend (Slurm today; AWS Batch or Kubernetes next) fills the few hooks of
`ArrayScheduler` (submit an array, list its tasks, cancel tasks, look up one task, say which
task this process is); `Arrays` does the rest, the same way for every scheduler:

- *place*: queued jobs are marked with a submission *token* (catalog/placing.py), in chunks the
  scheduler has room for (`ArrayScheduler.room`);
- *manifest*: the chunk's job ids are written, in task order, to `TOKEN.jobs` in the
  scheduler's store, one fixed-width line each, so task N reads its job id with one range read;
- *submit*: one array of that many tasks (or, with `pack` K > 1, of one task per K jobs, task
  N running lines N*K to N*K+K-1 in turn); the placement becomes `TOKEN@ARRAYID`;
- *adopt*: a submission that may have gone through despite an error is found by its token
  before it is submitted again (nothing runs twice);
- *give back*: jobs whose submission is abandoned, or whose task ended without claiming them,
  are un-placed (`Catalog.unplace`), so nothing is lost;
- *reconcile*: a running job whose task vanished without reporting ends its attempt with the
  scheduler's reason (`Catalog.finish` when the job caused it, else `Catalog.lose`).

A task's worker id (recorded with each claim) names its task (arraytasks.py): that is how the
reconciler finds the task of a running job. Order matters when reconciling: the catalog is read
*before* the scheduler is asked, so every array the catalog names is one the scheduler already
had; every change is fenced (placement, attempt), so a task that claimed or reported meanwhile
is never overridden. Only tasks that are no longer alive lead to catalog work, each once.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from shepard.backends.arraytasks import (
    TaskRef,
    manifest_ids,
    manifest_key,
    new_token,
    pack_lines,
    split_placement,
    task_of,
    tasks_for,
    token_age,
    token_pack,
    write_manifest,
)
from shepard.catalog.base import Catalog
from shepard.errors import ShepardError
from shepard.model import Job, JobStatus, Outcome, RetryPolicy
from shepard.runtime import log_key
from shepard.runtime.errorbundle import AttemptReport, error_bundle_key, write_error_bundle
from shepard.storage import ObjectStore

log = logging.getLogger(__name__)

STALE = 120.0  # seconds after which a submission with no array id is looked into
SWEEP_EVERY = 60.0  # seconds between two clean-ups of finished manifests
KEEP_MANIFESTS = 86400.0  # seconds a manifest is kept once no placed job names it


class SchedulerError(ShepardError):
    """A scheduler's command or API call failed."""


class SchedulerBusy(SchedulerError):
    """The scheduler could not answer now (busy, unreachable, a timeout): try again later."""


class SchedulerRefused(SchedulerError):
    """The scheduler refused a submission as configured (a bad queue, option, size)."""


class TaskList(Protocol):
    """What a scheduler said about some tasks at one moment (alive, and recently ended)."""

    def alive(self, array_id: str, index: int) -> bool: ...

    def state(self, array_id: str, index: int) -> str | None:
        """The scheduler's state of the task; None when it does not list it (any more)."""
        ...

    def arrays(self) -> set[str]:
        """Ids of the arrays listed."""
        ...

    def arrays_of(self, token: str) -> set[str]:
        """Ids of the arrays submitted with `token`."""
        ...


class ArrayScheduler(Protocol):
    """The hooks a scheduler fills for `Arrays`. Each raises SchedulerBusy for what may pass
    and SchedulerError (SchedulerRefused for a submission) for what will not."""

    name: str  # the kind in task worker ids (`slurm`) and the word in messages
    title: str  # the scheduler's name in sentences (`Slurm`)
    job_caused: frozenset[str]  # end states the job caused (it spends an attempt)
    endings: Mapping[str, str]  # end state -> words (`ran out of memory`)

    def room(self, now: float) -> int:
        """How many tasks the next array may have (0: none now); with a pack of K, each
        task takes K jobs."""
        ...

    def submit_array(self, token: str, size: int) -> str:
        """Submit an array of `size` tasks tagged with `token`, whose task N runs the job on
        line N of manifest `token`; return the array id."""
        ...

    def list_tasks(self, array_ids: Sequence[str], *, all_arrays: bool) -> TaskList:
        """The tasks of `array_ids` (and of every array of the flock when `all_arrays`)."""
        ...

    def cancel_tasks(self, tasks: Mapping[str, AbstractSet[int]]) -> None:
        """Remove these tasks (array id -> indexes); unknown ones are ignored."""
        ...

    def task_state(self, array_id: str, index: int | None) -> str | None:
        """The state of one task (of the array when `index` is None) that `list_tasks` did not
        show; None when the scheduler no longer knows it."""
        ...

    def alive(self, state: str) -> bool:
        """Whether a task in `state` may still act on the catalog."""
        ...

    def task_identity(self, env: Mapping[str, str]) -> tuple[str, int] | None:
        """(array id, index) of the task this process runs in, from its environment."""
        ...


@dataclass
class PendingArray:
    """An array being handed over: its token and its jobs in task order."""

    token: str
    job_ids: list[str]
    tries: int = 0


class Pacer:
    """Spaces out submissions: at most `rate` per second, and after failures, waits that double
    from 1 s up to `cap` seconds (reset by the next success). Times come from the caller."""

    def __init__(self, rate: float, *, cap: float = 60.0) -> None:
        self.interval = 1.0 / rate
        self.cap = cap
        self._next = float("-inf")
        self._failures = 0

    def ready(self, now: float) -> bool:
        return now >= self._next

    def wait(self, now: float) -> float:
        """Seconds from `now` until the next call may go (0 when it may go now)."""
        return max(0.0, self._next - now)

    def sent(self, now: float) -> None:
        """A call was made at `now`: the next may go `interval` seconds later."""
        self._next = max(self._next, now + self.interval)

    def failed(self, now: float) -> float:
        """The call made at `now` failed; returns the seconds to wait before the next one."""
        self._failures += 1
        delay = min(self.cap, 2.0 ** (self._failures - 1))
        self._next = max(self._next, now + delay)
        return delay

    def succeeded(self) -> None:
        self._failures = 0


@dataclass
class Arrays:
    """The array steps of one flock on one scheduler (see the module docstring).

    `manifests` is the store of the manifests (readable by the tasks); `logs` and `errors`
    are the flock's stores (for the error bundle of a job that ended its task); `sheep_kind`
    names the scheduler's long-lived tasks in worker ids, if it has any; `pack` is how many
    jobs each task of a new array runs in turn (arrays keep the pack they were made with: it
    is in their token); `forget` is called with each token whose manifest is swept, before
    the manifest goes, for a scheduler that keeps more per array.
    """

    scheduler: ArrayScheduler
    catalog: Catalog  # both halves: it places jobs (PlacementStore) and ends attempts (JobStore)
    manifests: ObjectStore
    logs: ObjectStore
    errors: ObjectStore
    policy: RetryPolicy
    pacer: Pacer
    sheep_kind: str | None = None
    pack: int = 1
    forget: Callable[[str], None] | None = None  # drops what else a swept token left
    retry: list[PendingArray] = field(init=False, default_factory=list)  # to submit again
    _manifests: dict[str, list[str]] = field(init=False, default_factory=dict)  # token -> ids
    _settled: dict[str, set[int]] = field(init=False, default_factory=dict)  # placement -> done
    _next_sweep: float = field(init=False, default=float("-inf"))

    # -- handing over -------------------------------------------------------------------------

    def hand_over(self, now: float) -> int:
        """Submit at most one array; the number of jobs handed over (the dispatcher calls
        again at once when it is not 0)."""
        if not self.pacer.ready(now):
            return 0
        if self.retry:
            pending = self.retry.pop(0)
        else:
            try:
                room = self.scheduler.room(now)
            except SchedulerBusy as exc:
                log.warning("%s; trying again in %gs", exc, self.pacer.failed(now))
                return 0
            if room <= 0:
                return 0
            token = new_token(now, self.pack)
            ids = self.catalog.place(token, now=now, limit=room * self.pack)
            if not ids:
                return 0
            pending = PendingArray(token, ids)
            self._write_manifest(pending, now)
        return len(pending.job_ids) if self._submit(pending, now) else 0

    def hand_over_until(
        self, deadline: float, clock: Callable[[], float], sleep: Callable[[float], None]
    ) -> int:
        """Hand over array after array, at the pacer's rate, until nothing is left to hand
        over (or the scheduler has no room) or `clock()` reaches `deadline`; a submission
        the scheduler was too busy for is tried again after its back-off while time is left
        (else `abandon` gives it back). For heads that run one round at a time (a serverless
        flock's functions); returns the jobs handed over."""
        total = 0
        while (now := clock()) < deadline:
            pause = self.pacer.wait(now)
            if pause > 0:
                if now + pause >= deadline:
                    break
                sleep(pause)
                continue
            handed = self.hand_over(now)
            total += handed
            if handed == 0 and not self.retry and self.pacer.ready(clock()):
                break  # nothing (more) to hand over, or no room
        return total

    def _write_manifest(self, pending: PendingArray, now: float) -> None:
        try:
            write_manifest(self.manifests, pending.token, pending.job_ids)
        except (OSError, ShepardError) as exc:
            self.give_back(pending, now, "its task manifest could not be written")
            raise ShepardError(
                f"cannot write the task manifest {manifest_key(pending.token)} in "
                f"{self.manifests}: {exc}; the flock's storage must be writable here and "
                "readable by the tasks (shared with the nodes)"
            ) from None

    def _submit(self, pending: PendingArray, now: float) -> bool:
        """Submit one array; True once the scheduler has it, False to try again later."""
        try:
            if pending.tries and self._adopt(pending):  # an earlier try may have gone through
                return True
            self.pacer.sent(now)
            size = tasks_for(len(pending.job_ids), token_pack(pending.token))
            array_id = self.scheduler.submit_array(pending.token, size)
        except SchedulerRefused:
            self.give_back(pending, now, f"{self.scheduler.title} refused its submission")
            raise
        except SchedulerBusy as exc:
            pending.tries += 1
            delay = self.pacer.failed(now)
            self.retry.insert(0, pending)
            log.warning("%s; trying again in %gs", exc, delay)
            return False
        self.pacer.succeeded()
        self.catalog.rename_placement(pending.token, f"{pending.token}@{array_id}")
        log.info(
            "submitted %d job(s) as %s array %s",
            len(pending.job_ids), self.scheduler.title, array_id,
        )  # fmt: skip
        return True

    def _adopt(self, pending: PendingArray) -> bool:
        found = self.scheduler.list_tasks([], all_arrays=True).arrays_of(pending.token)
        if not found:
            return False
        array_id = _first(found)
        self.catalog.rename_placement(pending.token, f"{pending.token}@{array_id}")
        log.info("%s array %s had been submitted after all; keeping it", self.scheduler.title,
                 array_id)  # fmt: skip
        return True

    def give_back(self, pending: PendingArray, now: float, why: str) -> None:
        """Un-place the jobs of a submission that will not go through; drop its manifest."""
        self.catalog.unplace(pending.job_ids, pending.token, now=now, lost=False, detail=why)
        with contextlib.suppress(OSError, ShepardError):
            self.manifests.delete(manifest_key(pending.token))

    def abandon(self, now: float, why: str) -> None:
        """Give back every submission still waiting to be retried."""
        for pending in self.retry:
            self.catalog.unplace(pending.job_ids, pending.token, now=now, lost=False, detail=why)
        self.retry.clear()

    # -- cancelling ---------------------------------------------------------------------------

    def tasks_of(self, tasks: TaskList, array_id: str, token: str, indexes: Iterable[int],
                 wanted: AbstractSet[str]) -> set[int]:  # fmt: skip
        """Those alive task `indexes` of array `array_id` (submitted as `token`) that run a
        job of `wanted`."""
        ids, pack = manifest_ids(self.manifests, token), token_pack(token)
        return {
            i for i in indexes
            if tasks.alive(array_id, i)
            and any(ids[line] in wanted for line in pack_lines(pack, i, len(ids)))
        }  # fmt: skip

    # -- reconciling --------------------------------------------------------------------------

    def reconcile(self, now: float) -> None:
        """One comparison of the catalog with what the scheduler says (module docstring)."""
        submitting = {p.token for p in self.retry}
        placements = self.catalog.placements()
        for placement in list(self._settled):
            if placement not in placements:  # nothing of it left to watch
                del self._settled[placement]
        running = [(job, task) for job, task in self._running() if task is not None]
        ids = {task.array_id for _, task in running}
        stale: list[str] = []
        for placement in placements:
            token, array_id = split_placement(placement)
            if array_id is not None:
                ids.add(array_id)
            elif token not in submitting and token_age(token, now) >= STALE:
                stale.append(token)
        if ids or stale:
            try:
                tasks = self.scheduler.list_tasks(sorted(ids), all_arrays=bool(stale))
            except SchedulerBusy as exc:
                log.warning("could not compare with %s this time: %s", self.scheduler.title, exc)
                return
            for token in stale:
                self._check_submission(token, tasks, now)
            for placement in placements:
                token, array_id = split_placement(placement)
                if array_id is not None:
                    self._check_array(token, array_id, tasks, now)
            self._check_running(running, tasks, now)
        if now >= self._next_sweep:
            self._next_sweep = now + SWEEP_EVERY
            self._sweep(now, {split_placement(p)[0] for p in placements})

    def _check_array(self, token: str, array_id: str, tasks: TaskList, now: float) -> None:
        """Give back the jobs whose task in `array_id` ended (or vanished) without claiming
        them. Only tasks that are not alive are looked at, and each of them once."""
        placement = f"{token}@{array_id}"
        ids = self._manifest(token)
        if not ids:  # no task can tell which job is its own: give them all back
            group = [j.id for j in self.catalog.placed_in([placement])]
            detail = f"the task manifest of {self.scheduler.name} array {array_id} is missing"
            self.catalog.unplace(group, placement, now=now, detail=detail, lost=False)
            return
        if array_id not in tasks.arrays() and not self._gone(array_id):
            return  # not listed, but the scheduler knows it: look again next time
        settled = self._settled.setdefault(placement, set())  # manifest lines
        pack = token_pack(token)
        ended: dict[str | None, list[tuple[int, str]]] = {}  # the scheduler's state -> lines
        for line, job_id in enumerate(ids):
            task = line // pack
            if line not in settled and not tasks.alive(array_id, task):
                ended.setdefault(tasks.state(array_id, task), []).append((line, job_id))
        for state, ended_tasks in ended.items():
            # fenced: only jobs still placed there, which their task never claimed
            detail = self.ended_unstarted(array_id, state)
            job_ids = [job_id for _, job_id in ended_tasks]
            done = self.catalog.unplace(job_ids, placement, now=now, detail=detail)
            settled.update(index for index, _ in ended_tasks)
            if done:
                log.warning("%d job(s) handed over again: %s", len(done), detail)

    def _check_submission(self, token: str, tasks: TaskList, now: float) -> None:
        """A placement whose submission never recorded an array id: adopt the array or give
        the jobs back."""
        found = tasks.arrays_of(token)
        if found:
            self.catalog.rename_placement(token, f"{token}@{_first(found)}")
            return
        group = [j.id for j in self.catalog.placed_in([token]) if j.status is JobStatus.QUEUED]
        self.catalog.unplace(
            group, token, now=now, lost=False,
            detail=f"its submission to {self.scheduler.title} did not complete; "
            "handing it over again",
        )  # fmt: skip

    def _gone(self, array_id: str) -> bool:
        """Whether the scheduler no longer knows the array at all (asked when not listed)."""
        try:
            return self.scheduler.task_state(array_id, None) is None
        except SchedulerBusy as exc:
            log.warning("could not ask %s about array %s: %s", self.scheduler.title, array_id, exc)
            return False

    def _manifest(self, token: str) -> list[str]:
        """The job ids of `token`'s array in task order (read once)."""
        found = self._manifests.get(token)
        if found is None:
            found = self._manifests[token] = manifest_ids(self.manifests, token)
        return found

    def _running(self) -> Iterable[tuple[Job, TaskRef | None]]:
        kinds = {self.scheduler.name} | ({self.sheep_kind} if self.sheep_kind else set())
        after: int | None = None
        while page := self.catalog.page(
            status=JobStatus.RUNNING, limit=1000, after_seq=after, newest_first=False
        ):
            for job in page:
                yield job, task_of(job.worker, kinds)
            after = page[-1].seq

    def _check_running(
        self, running: list[tuple[Job, TaskRef]], tasks: TaskList, now: float
    ) -> None:
        known = tasks.arrays()
        for job, task in running:
            if tasks.alive(task.array_id, task.index):
                continue
            state = tasks.state(task.array_id, task.index)
            if task.array_id not in known:  # purged, or not listed: ask about the task
                try:
                    state = self.scheduler.task_state(task.array_id, task.index)
                except SchedulerBusy as exc:
                    log.warning("could not ask %s about task %s: %s", self.scheduler.title,
                                task, exc)  # fmt: skip
                    continue
                if state is not None and self.scheduler.alive(state):
                    continue
            self._end(job, task, state, now)

    def _end(self, job: Job, task: TaskRef, state: str | None, now: float) -> None:
        reason = self.ended(str(task), state)
        if task.kind == self.scheduler.name and state in self.scheduler.job_caused:
            bundle = self._error_bundle(job, reason, now)
            outcome = Outcome(JobStatus.FAILED, reason=reason, error_bundle=bundle)
            retry_at = now + self.policy.delay(job.attempt)
            status = self.catalog.finish(job.id, job.attempt, outcome, now=now, retry_at=retry_at)
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
        report = AttemptReport(job.id, job.attempt, start, now, reason)
        try:
            with tempfile.TemporaryDirectory(prefix=".shepard-logs-") as tmp:
                logs = _copy_logs(self.logs, job, Path(tmp))
                write_error_bundle(self.errors, key, report, logs=logs, folders=(), secrets=None)
        except Exception as exc:
            log.warning("job %s: could not store its error bundle: %s", job.id, exc)
            return None
        return key

    def _sweep(self, now: float, in_use: set[str]) -> None:
        """Delete manifests that no placed job names any more (after KEEP_MANIFESTS)."""
        for token in list(self._manifests):
            if token not in in_use:
                del self._manifests[token]
        try:
            keys = list(self.manifests.list())
        except (OSError, ShepardError):
            return
        for key in keys:
            token = key.removesuffix(".jobs")
            if key.endswith(".jobs") and "/" not in key and token not in in_use and \
                    token_age(token, now) >= KEEP_MANIFESTS:  # fmt: skip
                with contextlib.suppress(OSError, ShepardError):
                    if self.forget is not None:
                        self.forget(token)
                    self.manifests.delete(key)

    # -- words ----------------------------------------------------------------------------------

    def ended(self, task: str, state: str | None) -> str:
        """Words for a task that ended without reporting: `slurm task 12_3 ran out of memory
        (OUT_OF_MEMORY)`; `state` None means the scheduler no longer knows the task."""
        s = self.scheduler
        if state is None:
            return f"{s.name} task {task} ended (no longer known to {s.title})"
        return f"{s.name} task {task} {s.endings.get(state, 'ended')} ({state})"

    def ended_unstarted(self, array_id: str, state: str | None) -> str:
        """Words for tasks of an array that ended before claiming their jobs."""
        said = state or f"no longer known to {self.scheduler.title}"
        return f"{self.scheduler.name} array {array_id}: its task ended before it started the job ({said})"  # noqa: E501


def _first(array_ids: AbstractSet[str]) -> str:
    """The oldest of several arrays submitted with one token (numeric ids sort as numbers)."""
    return min(array_ids, key=lambda a: (len(a), a))


def _copy_logs(store: ObjectStore, job: Job, folder: Path) -> tuple[Path, Path]:
    """The payload's (stdout, stderr) of the job's attempt, copied from the logs store into
    `folder` (a stream the attempt did not leave is a missing file)."""
    paths = []
    for stream in ("stdout", "stderr"):
        key, path = log_key(job.id, job.attempt, stream), folder / f"{stream}.txt"
        if store.exists(key):
            store.get_file(key, path)
        paths.append(path)
    return paths[0], paths[1]
