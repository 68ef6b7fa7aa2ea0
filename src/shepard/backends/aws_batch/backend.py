"""The AWS Batch backend: a flock's jobs run as children of Batch array jobs.

It fills the hooks of the array template (backends/arrays.py), which places queued jobs,
writes the manifest, submits one array per chunk (at most `array_size` children, 10,000 by
Batch's rule), adopts a submission that went through despite an error and gives back jobs
whose child ended without running them. What differs from Slurm is who records: a Batch child
never opens the catalog (the catalog may be a SQLite file on the user's machine). It reads
its job from the flock's store (assign.py), runs it through the same runtime as every backend
and writes its outcome to the store; the head (`up`, `submit --wait`) then

- claims the job under the child's name when it sees the child start (so `show` says RUNNING),
- records the child's outcome once the child has ended (`collect`), with the flock's retry
  policy (a retry is placed in a new array; Batch's own retryStrategy is not used),
- with `jobs_per_child` K > 1, each child runs a *pack* of K jobs in turn (short jobs share
  one container start): the head claims the pack's first job when the child starts, and each
  next one when the outcome of the one before appears (one listing of the array's outcomes
  per look), so one job per child is RUNNING at a time, as without packs,
- and leaves to the template what ended without an outcome: a child that vanished (Spot
  reclaim, a host failure, terminated behind the flock's back) is a lost worker, re-run
  without spending an attempt; a child Batch stopped at its time limit spent one.

Every Batch call goes through one rate limiter (api.py).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shepard.backends.arrays import Arrays, Pacer
from shepard.backends.arraytasks import (
    manifest_ids,
    pack_lines,
    split_placement,
    task_of,
    task_worker_id,
    tasks_for,
    token_pack,
)
from shepard.backends.aws_batch import assign
from shepard.backends.aws_batch.api import BatchApi, BatchError, RateLimiter, clients
from shepard.backends.aws_batch.config import BatchConfig
from shepard.backends.base import BackendContext, LogRef, payload_logs
from shepard.errors import ConfigError, ShepardError
from shepard.model import Job, JobStatus

if TYPE_CHECKING:
    from shepard.scheduler_task import TaskSetup

log = logging.getLogger(__name__)

ARRAY_TASK = "aws-batch"  # worker id kind of a Batch child
MANIFESTS = "manifests"
WORKER = "/opt/shepard-worker/bin/shepard-batch-task"  # in the image `deploy` derives
ALIVE = frozenset({"SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING"})
STARTED = frozenset({"STARTING", "RUNNING"})
STATES = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED", "FAILED")
JOB_CAUSED = frozenset({"TIMEOUT", "OUT_OF_MEMORY"})
ENDINGS = {
    "TIMEOUT": "reached its Batch time limit (attemptDurationSeconds)",
    "OUT_OF_MEMORY": "ran out of memory",
    "FAILED": "failed without an outcome (its container or host was lost)",
    "SUCCEEDED": "ended without leaving an outcome",
}
TIMEOUT_MARGIN = 60  # seconds Batch allows beyond the worker's own timeout
MIN_ATTEMPT_DURATION = 60  # Batch's smallest attemptDurationSeconds
CLAIM_LEASE = 7 * 86400.0  # a child's claim: the head's reconciler is its liveness check
_NAME = re.compile(r"[^A-Za-z0-9_-]")
_TOKEN_AT_END = re.compile(r"-(\d{8}-\d{6}-[0-9a-f]{6}(?:-p[1-9][0-9]*)?)$")


def batch_identity(env: Mapping[str, str]) -> tuple[str, int] | None:
    """(array job id, child index) of the Batch child this process runs in: the index from
    AWS_BATCH_JOB_ARRAY_INDEX (real Batch), else from the `<parent>:<index>` suffix of
    AWS_BATCH_JOB_ID (the emulator sets only that); a job that is not an array is child 0."""
    job_id = env.get("AWS_BATCH_JOB_ID", "")
    if not job_id:
        return None
    parent, sep, suffix = job_id.rpartition(":")
    index = env.get("AWS_BATCH_JOB_ARRAY_INDEX", "")
    if sep and suffix.isdigit():
        return parent, int(index) if index.isdigit() else int(suffix)
    return job_id, int(index) if index.isdigit() else 0


def job_name(flock: str, token: str) -> str:
    """The Batch job name of the array submitted as `token` (Batch's pattern: letters,
    digits, - and _, at most 128): a long flock name is cut, never the token."""
    return f"shepard-{_NAME.sub('-', flock)[: 119 - len(token)]}-{token}"


def token_in_name(name: str) -> str | None:
    """The submission token a Batch job name made by `job_name` ends with."""
    match = _TOKEN_AT_END.search(name)
    return match.group(1) if match else None


def _state(summary: Mapping[str, Any], duration: float | None = None) -> str:
    """The state of a job summary, FAILED refined by its reason (TIMEOUT, OUT_OF_MEMORY).

    A child that FAILED with no reason and no exit code after running at least `duration`
    seconds (its array's attemptDurationSeconds) reached its time limit: AWS gives a reason,
    the emulator none, and a lost host does not keep a child exactly that long."""
    status = str(summary.get("status", ""))
    if status != "FAILED":
        return status
    reason = str(summary.get("statusReason") or "").lower()
    container = summary.get("container") or {}
    reason += " " + str(container.get("reason") or "").lower()
    if "timeout" in reason or "duration" in reason:
        return "TIMEOUT"
    if "outofmemory" in reason or "out of memory" in reason:
        return "OUT_OF_MEMORY"
    if duration and not reason.strip() and container.get("exitCode") is None:
        started, stopped = summary.get("startedAt"), summary.get("stoppedAt")
        if started and stopped and (float(stopped) - float(started)) / 1000 >= duration:
            return "TIMEOUT"
    return status


def _duration(job: Mapping[str, Any]) -> float | None:
    """The attemptDurationSeconds a described job was submitted with, if any."""
    found = (job.get("timeout") or {}).get("attemptDurationSeconds")
    return float(found) if found else None


@dataclass
class BatchTasks:
    """What Batch said about some arrays at one moment (arrays.TaskList)."""

    states: dict[tuple[str, int], str] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)  # array id -> children
    names: dict[str, str] = field(default_factory=dict)  # array id -> job name

    def alive(self, array_id: str, index: int) -> bool:
        return self.states.get((array_id, index)) in ALIVE

    def state(self, array_id: str, index: int) -> str | None:
        return self.states.get((array_id, index))

    def arrays(self) -> set[str]:
        return set(self.sizes)

    def arrays_of(self, token: str) -> set[str]:
        return {a for a, name in self.names.items() if name.endswith(f"-{token}")}


class BatchScheduler:
    """The hooks of the array template (arrays.ArrayScheduler), with Batch's API."""

    name = ARRAY_TASK
    title = "AWS Batch"
    job_caused = JOB_CAUSED
    endings: Mapping[str, str] = ENDINGS

    def __init__(self, ctx: BackendContext, cfg: BatchConfig, api: BatchApi) -> None:
        self.ctx, self.cfg, self.api = ctx, cfg, api
        self.manifests = ctx.store(MANIFESTS)
        self._job_definition: str | None = None
        self.handed: dict[str, float] = {}  # token -> hand-over time
        self._cached: tuple[frozenset[str], BatchTasks] | None = None

    @property
    def queue(self) -> str:
        if not self.cfg.queue:
            raise ConfigError(
                "backend.aws-batch.queue is not set: give `shepard init --batch-queue QUEUE` "
                f"or set queue in [backend.aws-batch] of {self.ctx.folder / 'flock.toml'}"
            )
        return self.cfg.queue

    def room(self, now: float) -> int:
        """Children the next array may have: `array_size`, and what `max_in_flight` leaves
        (the children in flight counted as the jobs handed over, in packs)."""
        placed = sum(self.ctx.catalog.placements().values())
        running = self.ctx.catalog.counts().get(JobStatus.RUNNING, 0)
        children = tasks_for(placed + running, self.cfg.jobs_per_child)
        return max(0, min(self.cfg.array_size, self.cfg.max_in_flight - children))

    def submit_array(self, token: str, size: int) -> str:
        jobs = self.ctx.catalog.placed_in([token])
        toml = (self.ctx.folder / "flock.toml").read_text()
        at = self.ctx.clock()
        assign.write_assignment(self.manifests, token, jobs, toml, at)
        command = [WORKER, "--store", self.manifests.location, "--token", token,
                   "--folder", str(self.ctx.folder)]  # fmt: skip
        request: dict[str, Any] = {
            "jobName": job_name(self.ctx.name, token),
            "jobQueue": self.queue,
            "jobDefinition": self.job_definition(),
            "containerOverrides": {"command": command},
        }
        if size > 1:
            request["arrayProperties"] = {"size": size}
        duration = self.attempt_duration(jobs, token_pack(token))
        if duration is not None:
            request["timeout"] = {"attemptDurationSeconds": duration}
        array_id = self.api.submit(**request)
        assign.write_array(self.manifests, token, array_id, at)
        self.handed[token] = at
        return array_id

    def handed_at(self, token: str) -> float | None:
        """When `token`'s array was handed over (the START_TIME its children use)."""
        if token not in self.handed:
            found = assign.read_array(self.manifests, token)
            if found is None:
                return None
            self.handed[token] = found[1]
        return self.handed[token]

    def attempt_duration(self, jobs: Sequence[Job], pack: int = 1) -> int | None:
        """Batch's time limit for the array's children: the longest pack's timeouts added up
        (one job's, without packs), plus a margin (the worker enforces each job's own first);
        None when a job has none."""
        flock_timeout = self.ctx.runtime().timeout
        longest = 0.0
        for child in range(tasks_for(len(jobs), pack)):
            total = 0.0
            for line in pack_lines(pack, child, len(jobs)):
                limit = jobs[line].timeout or flock_timeout
                if not limit:
                    return None
                total += limit
            longest = max(longest, total)
        return max(MIN_ATTEMPT_DURATION, int(longest) + TIMEOUT_MARGIN)

    def list_tasks(self, array_ids: Sequence[str], *, all_arrays: bool) -> BatchTasks:
        wanted = frozenset(array_ids)
        if self._cached is not None and not all_arrays and wanted <= self._cached[0]:
            tasks = self._cached[1]
            self._cached = None
            return tasks
        tasks = BatchTasks()
        for parent in self.api.describe(sorted(wanted)):
            self._read_parent(parent, tasks)
        if all_arrays:
            prefix = job_name(self.ctx.name, "")
            filters = [{"name": "JOB_NAME", "values": [prefix + "*"]}]
            for summary in self.api.list_jobs(jobQueue=self.queue, filters=filters):
                name = str(summary.get("jobName", ""))
                if name.startswith(prefix) and summary["jobId"] not in tasks.sizes:
                    tasks.names[summary["jobId"]] = name
                    tasks.sizes[summary["jobId"]] = 0
        return tasks

    def list_for_round(self, array_ids: Sequence[str]) -> BatchTasks:
        """`list_tasks`, kept for the template's reconcile of the same round (one listing)."""
        tasks = self.list_tasks(array_ids, all_arrays=False)
        self._cached = (frozenset(array_ids), tasks)
        return tasks

    def _read_parent(self, parent: Mapping[str, Any], tasks: BatchTasks) -> None:
        array_id = str(parent["jobId"])
        tasks.names[array_id] = str(parent.get("jobName", ""))
        size = int((parent.get("arrayProperties") or {}).get("size") or 0)
        duration = _duration(parent)
        if not size:  # a job of one: child 0 is the job itself
            tasks.sizes[array_id] = 1
            tasks.states[(array_id, 0)] = _state(parent, duration)
            return
        tasks.sizes[array_id] = size
        # every status is asked (ListJobs without one lists only RUNNING children): the
        # parent's statusSummary could skip the empty ones, but the emulator's lags behind
        for status in STATES:
            for child in self.api.list_jobs(arrayJobId=array_id, jobStatus=status):
                index = _child_index(child, array_id)
                if index is not None:
                    tasks.states[(array_id, index)] = _state(child, duration)

    def cancel_tasks(self, tasks: Mapping[str, AbstractSet[int]]) -> None:
        """Whole arrays with one CancelJob and one TerminateJob of the parent; single children
        with CancelJob while they wait and TerminateJob once started."""
        reason = "cancelled with shepard cancel"
        listed = self.list_tasks(sorted(a for a, i in tasks.items() if i), all_arrays=False)
        for array_id, indexes in tasks.items():
            size = listed.sizes.get(array_id)
            if not indexes or size is None:
                continue
            alive = {i for i in indexes if listed.alive(array_id, i)}
            log.info("stopping %d of %d children of Batch array %s (%d alive)", len(indexes),
                     size, array_id, len(alive))  # fmt: skip
            if size == 1 or len(indexes) >= size:
                self.api.cancel(array_id, reason)
                self.api.terminate(array_id, reason)
                continue
            for index in sorted(alive):
                child = f"{array_id}:{index}"
                if listed.state(array_id, index) in STARTED:
                    self.api.terminate(child, reason)
                else:
                    self.api.cancel(child, reason)
                    self.api.terminate(child, reason)  # in case it started meanwhile

    def task_state(self, array_id: str, index: int | None) -> str | None:
        target = array_id if index is None else f"{array_id}:{index}"
        found = self.api.describe([target])
        if not found and index == 0:  # a job of one
            found = self.api.describe([array_id])
        return _state(found[0], _duration(found[0])) if found else None

    def alive(self, state: str) -> bool:
        return state in ALIVE

    def task_identity(self, env: Mapping[str, str]) -> tuple[str, int] | None:
        return batch_identity(env)

    # -- the job definition ---------------------------------------------------------------------

    def definition_name(self) -> str:
        return self.cfg.job_definition or f"shepard-{_NAME.sub('-', self.ctx.name)}"[:128]

    def job_definition(self) -> str:
        """The ARN of the flock's job definition for its current image and resources:
        the latest active revision when it matches, else a new revision."""
        if self._job_definition is None:
            self._job_definition = ensure_job_definition(self.api, self.definition_name(),
                                                         self.cfg, self.ctx.folder)  # fmt: skip
        return self._job_definition


def _child_index(summary: Mapping[str, Any], array_id: str) -> int | None:
    index = (summary.get("arrayProperties") or {}).get("index")
    if isinstance(index, int):
        return index
    parent, _, suffix = str(summary.get("jobId", "")).rpartition(":")
    return int(suffix) if parent == array_id and suffix.isdigit() else None


def definition_request(name: str, cfg: BatchConfig, folder: Any) -> dict[str, Any]:
    """RegisterJobDefinition's arguments for the flock's image and resources."""
    if not cfg.image:
        raise ConfigError(
            "no worker image for AWS Batch: run `shepard deploy ./code` (it builds and "
            f"registers one), or set image in [backend.aws-batch] of {folder}/flock.toml"
        )
    resources = [
        {"type": "VCPU", "value": f"{cfg.vcpus:g}"},
        {"type": "MEMORY", "value": str(cfg.memory)},
    ]
    if cfg.gpus:
        resources.append({"type": "GPU", "value": str(cfg.gpus)})
    container: dict[str, Any] = {
        "image": cfg.image,
        "command": [WORKER],
        "resourceRequirements": resources,
        "environment": [{"name": k, "value": v} for k, v in sorted(cfg.worker_env.items())],
    }
    if cfg.job_role:
        container["jobRoleArn"] = cfg.job_role
    if cfg.execution_role:
        container["executionRoleArn"] = cfg.execution_role
    if cfg.efs:
        volumes, mounts = [], []
        for i, (path, fs) in enumerate(sorted(cfg.efs.items())):
            volumes.append({"name": f"efs{i}", "efsVolumeConfiguration": {"fileSystemId": fs}})
            mounts.append({"sourceVolume": f"efs{i}", "containerPath": path})
        container["volumes"], container["mountPoints"] = volumes, mounts
    if cfg.fargate:
        container["networkConfiguration"] = {"assignPublicIp": "ENABLED"}
    return {
        "jobDefinitionName": name,
        "type": "container",
        "containerProperties": container,
        "platformCapabilities": ["FARGATE" if cfg.fargate else "EC2"],
    }


def ensure_job_definition(api: BatchApi, name: str, cfg: BatchConfig, folder: Any) -> str:
    """The ARN of an active revision of `name` registered as the flock wants it now."""
    wanted = definition_request(name, cfg, folder)
    found = api.call(api.batch, "DescribeJobDefinitions", jobDefinitionName=name,
                     status="ACTIVE").get("jobDefinitions", [])  # fmt: skip
    for known in sorted(found, key=lambda d: -int(d.get("revision", 0)))[:1]:
        if _same_definition(known, wanted):
            return str(known["jobDefinitionArn"])
    made = api.call(api.batch, "RegisterJobDefinition", **wanted)
    log.info("registered Batch job definition %s", made["jobDefinitionArn"])
    return str(made["jobDefinitionArn"])


def _same_definition(known: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    have, want = known.get("containerProperties") or {}, wanted["containerProperties"]
    keys = ("image", "command", "jobRoleArn", "executionRoleArn", "mountPoints")
    if any(have.get(k) for k in keys if k not in want):
        return False
    env = {e["name"]: e["value"] for e in have.get("environment") or []}
    reqs = {r["type"]: str(r["value"]) for r in have.get("resourceRequirements") or []}
    return (
        all(have.get(k) == want[k] for k in keys if k in want)
        and env == {e["name"]: e["value"] for e in want["environment"]}
        and reqs == {r["type"]: r["value"] for r in want["resourceRequirements"]}
    )


class BatchBackend:
    """Hands a flock's queued jobs to AWS Batch and records their outcomes (module docstring)."""

    name = "aws-batch"
    scheduler = True  # a SchedulerBackend: see backends/base.py

    def __init__(self, ctx: BackendContext, *, api: BatchApi | None = None) -> None:
        if not isinstance(ctx.settings, BatchConfig):
            raise TypeError("the aws-batch backend needs its [backend.aws-batch] section")
        self.ctx, self.catalog, self.clock = ctx, ctx.catalog, ctx.clock
        self.cfg: BatchConfig = ctx.settings
        if api is None:
            batch, logs = clients(self.cfg.region, self.cfg.endpoint_url)
            api = BatchApi(batch, logs, RateLimiter(self.cfg.submit_rate))
        self.api = api
        self.batch = BatchScheduler(ctx, self.cfg, api)
        self.manifests = self.batch.manifests
        self.arrays = Arrays(
            self.batch, ctx.catalog, self.manifests, ctx.store("logs"), ctx.store("errors"),
            ctx.policy, Pacer(self.cfg.submit_rate), pack=self.cfg.jobs_per_child,
            forget=self._forget,
        )  # fmt: skip
        self._next_reconcile = float("-inf")
        self._settled: set[tuple[str, int]] = set()  # (array id, line): claimed or not ours
        self._me = task_worker_id(ARRAY_TASK, None).split(" ")[0]

    @classmethod
    def from_context(cls, ctx: BackendContext) -> BatchBackend:
        """The flock's Batch backend. A dispatcher (a context with a worker id) checks the
        queue, region and credentials first, so a mistake is said before anything is placed."""
        backend = cls(ctx)
        if ctx.worker_id:
            from shepard.backends.aws_batch.checks import check_queue, check_storage

            check_storage(ctx.store(MANIFESTS).location)
            check_queue(backend.api, backend.cfg)
        return backend

    @classmethod
    def task_setup(cls, ctx: BackendContext) -> TaskSetup:
        """Batch children do not use the catalog-claiming task setup (they run
        shepard.batch_task); this one serves `shepard worker serve` started by hand."""
        from shepard.scheduler_task import handmade_setup

        return handmade_setup(ctx)

    # -- SchedulerBackend -----------------------------------------------------------------------

    def dispatch(self, now: float) -> int:
        if now >= self._next_reconcile:
            self._next_reconcile = now + self.cfg.reconcile
            try:
                self.collect(now)
            except BatchError as exc:
                log.warning("could not compare with AWS Batch this time: %s", exc)
            self.arrays.reconcile(now)
        return self.arrays.hand_over(now)

    def hand_over_until(
        self, deadline: float, *, sleep: Callable[[float], None] = time.sleep
    ) -> int:
        """Hand queued jobs to Batch until none is left (or no room) or this backend's clock
        reaches `deadline`, comparing nothing with Batch (Arrays.hand_over_until): a
        serverless flock's scheduler does this, its reconciler the rest."""
        return self.arrays.hand_over_until(deadline, self.clock, sleep)

    def collect(self, now: float) -> int:
        """Claim the jobs of children that started and record the outcomes children left
        (read from the store); returns the outcomes recorded. What ended without an outcome
        is left to the template's reconcile (a lost child, or Batch's time limit)."""
        placed: dict[str, tuple[str, str]] = {}  # array id -> (token, placement)
        for placement in self.catalog.placements():
            token, array_id = split_placement(placement)
            if array_id is not None:
                placed[array_id] = (token, placement)
        holding: dict[tuple[str, int], Job] = {}  # (array id, child) -> the job it runs
        for job, task in self.arrays._running():
            if task is not None and task.kind == ARRAY_TASK:
                holding[(task.array_id, task.index)] = job
        ids = set(placed) | {array_id for array_id, _ in holding}
        self._settled = {(a, line) for a, line in self._settled if a in ids}
        if not ids:
            return 0
        tasks = self.batch.list_for_round(sorted(ids))
        recorded = 0
        for array_id in sorted(ids):
            known = placed.get(array_id)
            of_array = known[0] if known else token_in_name(tasks.names.get(array_id, ""))
            if of_array is not None:
                recorded += self._collect_array(array_id, of_array, known and known[1], tasks,
                                                holding, now)  # fmt: skip
        return recorded

    def _collect_array(
        self, array_id: str, token: str, placement: str | None, tasks: BatchTasks,
        holding: Mapping[tuple[str, int], Job], now: float,
    ) -> int:  # fmt: skip
        """`collect` for one array: each started child's pack, line by line, until the line
        the child runs now (the one without an outcome)."""
        ids, pack = self.arrays._manifest(token), token_pack(token)
        at = self.batch.handed_at(token) if placement is not None else None
        written: set[int] | None = None  # lines with an outcome (packs: listed once)
        recorded = 0
        for child in range(tasks_for(len(ids), pack)):
            state = tasks.state(array_id, child)
            if state is None or (state in ALIVE and state not in STARTED):
                continue
            ended = state not in ALIVE
            if pack > 1 and written is None:
                written = assign.outcome_lines(self.manifests, array_id)
            for line in pack_lines(pack, child, len(ids)):
                job = holding.get((array_id, child))
                if job is None or job.id != ids[line]:
                    job = self._claim(array_id, child, line, ids[line], placement, at, now)
                    if job is None:
                        continue  # recorded already, cancelled, given back: not ours now
                has_outcome = ended if written is None else line in written
                if not (has_outcome and self._record(job, array_id, line, now)):
                    break  # the line the child runs now, or one it left no outcome for
                recorded += 1
        return recorded

    def _claim(self, array_id: str, child: int, line: int, job_id: str, placement: str | None,
               at: float | None, now: float) -> Job | None:  # fmt: skip
        """Claim the job on `line` under the child's name, as of the hand-over (the
        START_TIME the child already uses); once per line."""
        if placement is None or at is None or (array_id, line) in self._settled:
            return None
        self._settled.add((array_id, line))
        return self.catalog.claim_placed(
            self._worker(array_id, child), job_id, [placement], now=at,
            lease=max(self.ctx.lease, CLAIM_LEASE) + max(0.0, now - at),
        )  # fmt: skip

    def _forget(self, token: str) -> None:
        """What an array left in the store, dropped when the template sweeps its manifest."""
        assign.remove(self.manifests, token, manifest_ids(self.manifests, token))

    def _worker(self, array_id: str, index: int) -> str:
        return f"{self._me} {ARRAY_TASK} {array_id}_{index}"

    def _record(self, job: Job, array_id: str, line: int, now: float) -> int:
        from shepard.sheep import report

        found = assign.read_outcome(self.manifests, array_id, line)
        if found is None:
            return 0
        job_id, attempt, outcome = found
        if job_id != job.id or attempt != job.attempt:
            log.warning("Batch array %s left an outcome for job %s attempt %d on line %d, not "
                        "for job %s attempt %d: ignored", array_id, job_id, attempt, line,
                        job.id, job.attempt)  # fmt: skip
            return 0
        report(self.catalog, job, outcome, self.ctx.policy, now, self.ctx.store("outputs"))
        return 1

    def cancel(self, job_ids: Sequence[str]) -> None:
        """Stop the Batch children of these (cancelled) jobs: a handful of calls per array.

        In packs, a child is stopped when it runs one of them now or when every job of its
        pack is cancelled (the rest of a stopped pack is handed over again); a cancelled job
        still waiting in a pack whose child goes on is marked (`cancelled/JOBID`) for the
        child to skip."""
        targets: dict[str, set[int]] = {}  # array id -> children to stop
        packed: dict[tuple[str, str, int], set[int]] = {}  # (array, token, child) -> lines
        manifests: dict[str, list[str]] = {}  # token -> job ids in manifest order
        lines: dict[str, dict[str, int]] = {}  # token -> job id -> manifest line
        for job_id in job_ids:
            job = self.catalog.get(job_id)
            if job is None:
                continue
            if job.placement:
                token, array_id = split_placement(job.placement)
                if array_id is None:
                    continue
                if token not in lines:
                    manifests[token] = ids = manifest_ids(self.manifests, token)
                    lines[token] = {found: line for line, found in enumerate(ids)}
                line = lines[token].get(job_id)
                if line is None:
                    continue
                pack = token_pack(token)
                if pack == 1:
                    targets.setdefault(array_id, set()).add(line)
                else:
                    packed.setdefault((array_id, token, line // pack), set()).add(line)
                continue
            task = task_of(job.worker, {ARRAY_TASK})
            if task is not None:
                targets.setdefault(task.array_id, set()).add(task.index)
        for (array_id, token, child), wanted in packed.items():
            ids = manifests[token]
            if len(wanted) == len(pack_lines(token_pack(token), child, len(ids))):
                targets.setdefault(array_id, set()).add(child)
                continue
            for job_id in (ids[line] for line in sorted(wanted)):
                try:
                    self.manifests.put_bytes(assign.cancelled_key(job_id), b"")
                except (OSError, ShepardError) as exc:
                    log.warning("could not mark job %s as cancelled for its Batch child: %s",
                                job_id, exc)  # fmt: skip
        if not targets:
            return
        try:
            self.batch.cancel_tasks(targets)
        except BatchError as exc:
            log.warning("could not stop the Batch children of cancelled jobs: %s", exc)

    def logs(self, job: Job, attempt: int) -> list[LogRef]:
        """The payload's streams (the flock's store); Batch's own log of the child is read by
        `engine_log` (CloudWatch Logs, `shepard logs JOB --engine`)."""
        return payload_logs(self.ctx.store("logs"), job, attempt)

    def engine_log(self, job: Job) -> str:
        """The CloudWatch Logs stream of the Batch child that ran the job's latest attempt."""
        task = task_of(job.worker, {ARRAY_TASK})
        if task is None:
            raise ConfigError(f"job {job.id} has not run on AWS Batch (yet)")
        child = f"{task.array_id}:{task.index}"
        found = self.api.describe([child]) or self.api.describe([task.array_id])
        stream = ((found[0].get("container") or {}).get("logStreamName")) if found else None
        if not stream:
            raise ConfigError(
                f"Batch has no log stream for child {child} yet (Batch writes it as the "
                "container runs; the emulator only once it has exited)"
            )
        return "".join(line + "\n" for line in self.api.log_lines(self.cfg.log_group, stream))

    def shutdown(self, *, kill: bool) -> None:
        """Children handed to Batch stay there (the next head records them); submissions that
        never went through are given back."""
        self.arrays.abandon(self.clock(), "its submission to AWS Batch was abandoned: the head "
                            "stopped")  # fmt: skip


__all__ = ["BatchBackend", "BatchScheduler", "batch_identity", "job_name"]
