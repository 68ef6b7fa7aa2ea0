"""What runs inside a scheduler's task (a Slurm array task): one placed job, or a sheep.

Engine-neutral: the scheduler backend gives a `TaskSetup` (its `task_setup` class method),
which says how a task learns its identity (Slurm: SLURM_ARRAY_JOB_ID / SLURM_ARRAY_TASK_ID),
where the manifests are, and how its worker ids are marked.

- `run_array_task` (`shepard worker run --manifest TOKEN.jobs`): task N of an array reads its
  job id on line N of the manifest and claims that job, provided it is still placed in this
  array (`Catalog.claim_placed`), then runs it.
- `serve` (`shepard worker serve`): a long-lived sheep claims job after job from the catalog,
  until the queue has stayed empty for `idle` seconds or its time limit is near. Like the local
  backend's runners, it runs its jobs in one folder of its own and, while jobs are short,
  claims several at a time and records their outcomes together (`sheep.Recorder`).

Both keep the lease alive with heartbeats (which also carry cancellations), run the job through
the same runtime as every backend, and report the outcome. When the scheduler ends the task
(SIGTERM: scancel, a time limit), the payload's process group is stopped and nothing is
reported: the dispatcher's reconciler records the scheduler's reason (backends/arrays.py).
This module installs no signal handler (library code may run in a threaded server): the
process's entry point (shepard.task, the CLI's `worker` commands) turns SIGTERM into the
`terminate` event that both functions take.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from shepard.backends.arraytasks import manifest_line, task_worker_id
from shepard.backends.base import BackendContext
from shepard.catalog.base import Catalog
from shepard.errors import CatalogError, ShepardError
from shepard.model import Job, JobStatus, Outcome, RetryPolicy
from shepard.recovery import before_attempt
from shepard.runtime import AttemptControl, RuntimeContext, run_attempt
from shepard.runtime.process import STOP_POLL, is_runner_process, work_in
from shepard.runtime.workspace import remove_tree, vacate_slot
from shepard.sheep import MAX_AHEAD, SHORT_JOB, Heartbeat, Recorder, release, report
from shepard.storage import ObjectStore

log = logging.getLogger(__name__)

TERMINATED = "terminated by the scheduler"
IDLE_POLL = 0.2  # seconds between two claims while the queue is empty
LATE_MARGIN = 30.0  # seconds a sheep keeps for storing results after a job's timeout
# Slurm signals every process of a task, the payload included, not all at the same instant:
# a payload killed by a signal may be the first sign that the task itself is being ended.
SIGNAL_GRACE = 2.0

Clock = Callable[[], float]


@dataclass(frozen=True)
class TaskSetup:
    """What a scheduler's task needs of its flock (built by the scheduler backend).

    `identity(env)` is (array id, task index) of the task this process runs in, or None
    outside one; `kind` and `sheep_kind` mark the worker ids of one-job tasks and of sheep
    (backends/arrays.py: the reconciler finds a running job's task through them).
    """

    catalog: Catalog
    lease: float
    policy: RetryPolicy
    runtime: Callable[[], RuntimeContext]
    manifests: ObjectStore
    identity: Callable[[Mapping[str, str]], tuple[str, int] | None]
    kind: str
    sheep_kind: str


def handmade_setup(ctx: BackendContext) -> TaskSetup:
    """The setup of a sheep started by hand, outside any scheduler (`shepard worker serve` on
    a flock whose backend has no tasks): its worker id is plain `host:pid`, and it has no
    manifests to read."""
    return TaskSetup(
        catalog=ctx.catalog, lease=ctx.lease, policy=ctx.policy, runtime=ctx.runtime,
        manifests=ctx.store("manifests"), identity=lambda env: None, kind="task",
        sheep_kind="sheep",
    )  # fmt: skip


def run_array_task(
    setup: TaskSetup,
    manifest: str | Path,
    index: int | None = None,
    *,
    env: Mapping[str, str] | None = None,
    clock: Clock = time.time,
    terminate: threading.Event | None = None,
) -> JobStatus | None:
    """Claim and run the job on line `index` (default: this task's index, from `env`) of
    `manifest` (`TOKEN.jobs`, or a path ending so); its new status, or None when it was not
    claimable here (cancelled, taken by another task, handed over elsewhere) or `terminate`
    was set (the scheduler is ending the task) before the attempt succeeded."""
    env = os.environ if env is None else env
    identity = setup.identity(env)
    if index is None:
        if identity is None:
            raise ShepardError("give --index: this process does not run in an array task")
        index = identity[1]
    token = Path(manifest).name.removesuffix(".jobs")
    job_id = manifest_line(setup.manifests, token, index)
    placements = [token] + ([f"{token}@{identity[0]}"] if identity else [])
    catalog, lease = setup.catalog, setup.lease
    me = task_worker_id(setup.kind, identity)
    job = catalog.claim_placed(me, job_id, placements, now=clock(), lease=lease)
    if job is None:
        return None
    heartbeat = Heartbeat(catalog, lease, clock).start()
    try:
        with _terminable(heartbeat, terminate) as terminated:
            return _run(job, setup.runtime(), catalog, setup.policy, heartbeat, terminated, clock)
    finally:
        heartbeat.close()


def serve(
    setup: TaskSetup,
    *,
    time_limit: float | None,
    idle: float,
    clock: Clock = time.time,
    terminate: threading.Event | None = None,
) -> int:
    """Run queued jobs one after another until the queue stays empty for `idle` seconds,
    `time_limit` (seconds from now) is near or `terminate` is set; return the number of jobs
    run. In a process declared a runner process by its entry point (runtime/process.py), the
    sheep's folder becomes the process's working directory, so that its payloads start the
    cheap way; elsewhere nothing process-wide changes.

    The jobs run in the sheep's own folder, `work/slot-<host>-<pid>-0/`, emptied between jobs,
    left with nothing inside before the sheep records outcomes and looks for more work, and
    removed when the sheep ends (one left by a killed sheep is removed by the next sheep or
    local backend started on its host). While jobs take under SHORT_JOB, the sheep claims
    up to MAX_AHEAD at a time and records their outcomes in the transaction that claims the
    next ones; jobs it claimed but had not started when it stops go back to the queue.
    """
    from shepard.backends.local import slot_folder, sweep_slots

    ctx = setup.runtime()
    started = clock()
    deadline = None if time_limit is None else started + time_limit - claim_margin(time_limit, ctx)
    me = task_worker_id(setup.sheep_kind, setup.identity(os.environ))
    sweep_slots(ctx.workspace_root)
    slot = slot_folder(ctx.workspace_root, 0)
    os.makedirs(slot, exist_ok=True)
    try:
        if is_runner_process():
            work_in(slot)
        return _serve(setup, ctx, me, slot, started, deadline, idle, clock, terminate)
    finally:
        with contextlib.suppress(OSError):
            remove_tree(slot)


def _serve(
    setup: TaskSetup,
    ctx: RuntimeContext,
    me: str,
    slot: Path,
    started: float,
    deadline: float | None,
    idle: float,
    clock: Clock,
    terminate: threading.Event | None,
) -> int:
    """`serve`'s loop, in the sheep's folder."""
    catalog, lease, policy = setup.catalog, setup.lease, setup.policy
    heartbeat = Heartbeat(catalog, lease, clock).start()
    recorder = Recorder(
        catalog, heartbeat, policy, ctx.outputs, worker=me, lease=lease, clock=clock
    )
    ready: collections.deque[tuple[Job, AttemptControl]] = collections.deque()
    ran, idle_since, next_expiry, ahead = 0, started, started, 1
    try:
        with _terminable(heartbeat, terminate) as terminated:
            while not terminated.is_set():
                now = clock()
                if deadline is not None and now >= deadline:
                    break
                if now >= next_expiry:  # lost workers' jobs, also when no dispatcher runs
                    catalog.expire_leases(now=now, retry_at=now + policy.backoff)
                    next_expiry = now + lease / 4
                if not ready:
                    ready.extend(recorder.flush(ahead))
                if not ready:
                    if now - idle_since >= idle:
                        break
                    terminated.wait(IDLE_POLL)
                    continue
                job, control = ready.popleft()
                began = time.monotonic()
                outcome = _attempt(job, ctx, catalog, control, terminated, slot)
                ahead = min(2 * ahead, MAX_AHEAD) if time.monotonic() - began < SHORT_JOB else 1
                if not ready:
                    # before its outcome is recorded, nothing of the job stays in work/,
                    # not even the slot's empty folders (once per claim: a few calls)
                    vacate_slot(slot)
                if outcome is None:
                    heartbeat.drop(job.id, job.attempt)
                else:
                    recorder.add(job, outcome)
                ran += 1
                idle_since = clock()
    finally:
        _give_back(catalog, heartbeat, ready, clock)
        recorder.close()  # records what is still queued
        heartbeat.close()
    return ran


def _give_back(
    catalog: Catalog,
    heartbeat: Heartbeat,
    ready: collections.deque[tuple[Job, AttemptControl]],
    clock: Clock,
) -> None:
    """Return jobs claimed ahead but never started to the queue, attempts unspent."""
    for job, _control in ready:
        with contextlib.suppress(CatalogError):  # logged; its lease runs out instead
            release(catalog, job, clock())
        heartbeat.drop(job.id, job.attempt)
    ready.clear()


def claim_margin(time_limit: float, ctx: RuntimeContext) -> float:
    """Seconds before its time limit at which a sheep stops taking jobs: room for a job that
    runs to the flock's timeout (plus LATE_MARGIN to store its results), else 5% of the
    limit (at least LATE_MARGIN); never more than half the limit."""
    wanted = ctx.timeout + LATE_MARGIN if ctx.timeout else max(LATE_MARGIN, 0.05 * time_limit)
    return min(wanted, time_limit / 2)


def _run(
    job: Job,
    ctx: RuntimeContext,
    catalog: Catalog,
    policy: RetryPolicy,
    heartbeat: Heartbeat,
    terminated: threading.Event,
    clock: Clock,
) -> JobStatus | None:
    """Run one claimed attempt and report it (see `_attempt` for when nothing is reported)."""
    control = heartbeat.hold(job)
    try:
        outcome = _attempt(job, ctx, catalog, control, terminated)
    finally:
        heartbeat.drop(job.id)
    if outcome is None:
        return None
    return report(catalog, job, outcome, policy, clock(), ctx.outputs)


def _attempt(
    job: Job,
    ctx: RuntimeContext,
    catalog: Catalog,
    control: AttemptControl,
    terminated: threading.Event,
    slot: Path | None = None,
) -> Outcome | None:
    """Run one claimed attempt; its outcome, or None when the engine ended the task meanwhile
    and the attempt did not succeed: the reconciler then records the engine's reason."""
    if job.attempt > 1:  # an earlier attempt's task may have died after publishing
        before_attempt(catalog, job, ctx.outputs)
    outcome = run_attempt(job, ctx, control, slot=slot)
    signalled = outcome.exit_code is not None and outcome.exit_code < 0
    if signalled and not control.stop.is_set():
        terminated.wait(SIGNAL_GRACE)  # killed along with this task? then say nothing
    if terminated.is_set() and outcome.status is not JobStatus.SUCCEEDED:
        log.warning("job %s attempt %d: stopped, the task was terminated", job.id, job.attempt)
        return None
    return outcome


@contextlib.contextmanager
def _terminable(
    heartbeat: Heartbeat, terminate: threading.Event | None
) -> Iterator[threading.Event]:
    """While inside, `terminate` being set (the entry point's answer to the SIGTERM a scheduler
    sends on scancel and at a time limit) stops every attempt `heartbeat` holds, without a
    report, within STOP_POLL seconds. Yields `terminate` (a new event if None)."""
    terminated = threading.Event() if terminate is None else terminate
    left = threading.Event()  # set once the block is over

    def watch() -> None:
        while not left.is_set():
            if terminated.wait(STOP_POLL):
                heartbeat.stop(None, TERMINATED)
                return

    watcher = threading.Thread(target=watch, name="terminate-watch", daemon=True)
    watcher.start()
    try:
        yield terminated
    finally:
        left.set()
        watcher.join()
