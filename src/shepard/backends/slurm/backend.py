"""The Slurm backend: a flock's jobs run as tasks of Slurm job arrays.

Two modes (`backend.slurm.mode`), one runtime contract:
- `array`: one array task per job, through the array template (backends/arrays.py), whose
  hooks `SlurmScheduler` fills with sbatch, squeue, scontrol and scancel: task N runs
  `shepard worker run --manifest TOKEN.jobs`, which claims the job on line N (only if it is
  still placed there) and runs it.
- `sheep`: a few long-lived array tasks run `shepard worker serve`, each claiming job after job
  from the catalog until the queue stays empty or its time limit nears. Their number follows
  the queue: `min(max_sheep, ceil(ready jobs / jobs_per_sheep))`, none when nothing waits.

The dispatcher calls `dispatch` every poll interval; every `backend.slurm.reconcile` seconds it
also compares the catalog with what Slurm says (`Arrays.reconcile`, which also covers sheep).
sbatch calls are spaced by `submit_rate`, and failures that may pass are retried with back-off.
Manifests live in the flock's `manifests` store; Slurm's own output of each task goes to
`<flock folder>/slurm-output/TOKEN/INDEX.log` (sbatch writes it on the node, so it needs a
path the nodes share: the flock folder, which they already share for `--chdir`), whatever
store the logs are in.
"""

from __future__ import annotations

import hashlib
import logging
import math
import shlex
import sys
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from shepard.backends.arrays import Arrays, Pacer
from shepard.backends.arraytasks import new_token, task_of
from shepard.backends.base import BackendContext, LogRef, payload_logs
from shepard.backends.slurm import spec
from shepard.backends.slurm.config import SlurmConfig
from shepard.backends.slurm.ctl import (
    ALIVE,
    SlurmBusy,
    SlurmCtl,
    SlurmError,
    SlurmRefused,
    Snapshot,
    comment,
    token_of,
)
from shepard.model import Job
from shepard.storage import open_store

SLURM_OUTPUT = "slurm-output"  # in the flock folder: sbatch --output of every task


def output_folder(flock_folder: Path) -> Path:
    """Where sbatch writes the tasks' own output: a folder of the flock folder, which the
    nodes share (it is their --chdir), not a store (the stores may be in S3)."""
    return flock_folder / SLURM_OUTPUT


if TYPE_CHECKING:
    from shepard.scheduler_task import TaskSetup

log = logging.getLogger(__name__)

HEADROOM = 0.9  # share of MaxJobCount the flock may fill, leaving room for everyone else
HERD_EVERY = 2.0  # seconds between two looks at the sheep in sheep mode
ARRAY_TASK = "slurm"  # worker id kind of a one-job array task
SHEEP_TASK = "slurm-sheep"  # worker id kind of a sheep
MANIFESTS = "manifests"  # the flock store holding the manifests (every array engine)
_warned_sqlite: set[str] = set()

# Ends caused by the job itself: they cost the job an attempt (like a failed exit would).
JOB_CAUSED = frozenset({"TIMEOUT", "OUT_OF_MEMORY", "DEADLINE"})
ENDINGS = {
    "TIMEOUT": "reached its Slurm time limit",
    "OUT_OF_MEMORY": "ran out of memory",
    "DEADLINE": "reached its deadline",
    "CANCELLED": "was cancelled outside shepard",
    "NODE_FAIL": "lost its node",
    "BOOT_FAIL": "could not boot its node",
    "PREEMPTED": "was preempted",
    "FAILED": "failed",
    "COMPLETED": "ended",
}


@dataclass(frozen=True)
class Names:
    """The Slurm job names of a flock's arrays (unique per catalog)."""

    array: str
    sheep: str


def names_for(flock: str, catalog_url: str) -> Names:
    """The job names of flock `flock`'s arrays and sheep on the catalog at `catalog_url`."""
    key = hashlib.sha256(catalog_url.encode()).hexdigest()[:8]
    base = f"shepard-{flock}-{key}"
    return Names(base, f"{base}-sheep")


def slurm_identity(env: Mapping[str, str]) -> tuple[str, int] | None:
    """(array job id, task index) of the Slurm array task this process runs in, if any."""
    array_id, index = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    if array_id and index and array_id.isdigit() and index.isdigit():
        return array_id, int(index)
    return None


class SlurmScheduler:
    """The hooks of the array template (arrays.ArrayScheduler), with Slurm's commands."""

    name = ARRAY_TASK
    title = "Slurm"
    job_caused = JOB_CAUSED
    endings: Mapping[str, str] = ENDINGS

    def __init__(self, ctx: BackendContext, cfg: SlurmConfig, ctl: SlurmCtl) -> None:
        self.ctx, self.cfg, self.ctl = ctx, cfg, ctl
        self.names = names_for(ctx.name, ctx.catalog_url)
        self._in_slurm: int | None = None  # jobs the controller holds (for MaxJobCount)
        self._count_until = float("-inf")
        self._waiting_for_room = False

    def room(self, now: float) -> int:
        """Tasks the next array may have: MaxArraySize, and what MaxJobCount leaves free."""
        limits = self.ctl.limits()
        if self._in_slurm is None or now >= self._count_until:
            self._in_slurm = self.ctl.job_count()
            self._count_until = now + self.cfg.reconcile
        free = int(limits.max_job_count * HEADROOM) - self._in_slurm
        if free <= 0 and not self._waiting_for_room:
            log.warning(
                "Slurm holds %d jobs, near its MaxJobCount of %d: waiting for room",
                self._in_slurm, limits.max_job_count,
            )  # fmt: skip
        self._waiting_for_room = free <= 0
        return max(0, min(limits.tasks_per_array, free))

    def submit_array(self, token: str, size: int) -> str:
        script = self.script("run", "--manifest", f"{token}.jobs")
        options = self.options(self.names.array, token, size, self.cfg.time)
        try:
            array_id = self.ctl.sbatch(options, script)
        except SlurmRefused as exc:
            raise SlurmRefused(f"{exc} (check [backend.slurm] in {self._toml})") from None
        self._in_slurm = (self._in_slurm or 0) + size
        return array_id

    def list_tasks(self, array_ids: Sequence[str], *, all_arrays: bool) -> Snapshot:
        return self.ctl.queue(job_ids=array_ids, names=[self.names.array] if all_arrays else [])

    def cancel_tasks(self, tasks: Mapping[str, AbstractSet[int]]) -> None:
        targets = [f"{a}_[{spec.format_indexes(i)}]" for a, i in tasks.items() if i]
        self.ctl.scancel(sorted(targets))

    def task_state(self, array_id: str, index: int | None) -> str | None:
        info = self.ctl.show_job(array_id if index is None else f"{array_id}_{index}")
        if info is None:
            return None
        if index is None:  # an array: known, whatever the state of its tasks
            return info.get("JobState") or "UNKNOWN"
        return info.get("JobState")

    def alive(self, state: str) -> bool:
        return state in ALIVE

    def task_identity(self, env: Mapping[str, str]) -> tuple[str, int] | None:
        return slurm_identity(env)

    # -- what sbatch is given -------------------------------------------------------------------

    @property
    def _toml(self) -> str:
        return str(self.ctx.folder / "flock.toml")

    def options(self, name: str, token: str, size: int, limit: str | None) -> list[str]:
        """sbatch options of an array of `size` tasks; Slurm's own output of task N goes to
        `<flock folder>/slurm-output/TOKEN/N.log` (a shared path: sbatch writes it on the node)."""
        logs = output_folder(self.ctx.folder) / token
        logs.mkdir(parents=True, exist_ok=True)
        cfg = self.cfg
        options = [
            f"--array=0-{size - 1}",
            f"--job-name={name}",
            f"--comment={comment(token)}",
            f"--output={logs}/%a.log",
            f"--chdir={self.ctx.folder}",
            f"--cpus-per-task={cfg.cpus_per_job}",
        ]
        for flag, value in (
            ("--mem", cfg.memory),
            ("--time", limit),
            ("--partition", cfg.partition),
            ("--account", cfg.account),
        ):
            if value:
                options.append(f"{flag}={value}")
        return options + list(cfg.sbatch_options)

    def script(self, *args: str) -> str:
        command = [*task_command(self.cfg, *args), "--flock", str(self.ctx.folder)]
        return f"#!/bin/sh\n# shepard flock {self.ctx.name}\nexec {shlex.join(command)}\n"


class SlurmBackend:
    """Hands a flock's queued jobs to Slurm (see the module docstring)."""

    name = "slurm"
    scheduler = True  # a SchedulerBackend: see backends/base.py

    def __init__(self, ctx: BackendContext, *, ctl: SlurmCtl | None = None) -> None:
        if not isinstance(ctx.settings, SlurmConfig):
            raise TypeError("the slurm backend needs its [backend.slurm] section")
        self.ctx, self.catalog, self.clock = ctx, ctx.catalog, ctx.clock
        self.cfg: SlurmConfig = ctx.settings
        self.ctl = ctl or SlurmCtl()
        self.slurm = SlurmScheduler(ctx, self.cfg, self.ctl)
        self.names = self.slurm.names
        self.arrays = Arrays(
            self.slurm, ctx.catalog, ctx.store(MANIFESTS), ctx.store("logs"), ctx.store("errors"),
            ctx.policy, Pacer(self.cfg.submit_rate), sheep_kind=SHEEP_TASK,
        )  # fmt: skip
        self._pacer = self.arrays.pacer  # one pace for every sbatch, arrays and sheep
        self._next_reconcile = float("-inf")
        self._next_herd = float("-inf")

    @classmethod
    def from_context(cls, ctx: BackendContext) -> SlurmBackend:
        """The flock's Slurm backend; `workers` and `wakeup` do not apply (Slurm runs the
        jobs). A dispatcher (a context with a worker id) is warned about a SQLite catalog."""
        if ctx.worker_id:
            warn_if_sqlite(ctx.name, ctx.catalog_url)
        return cls(ctx)

    @classmethod
    def task_setup(cls, ctx: BackendContext) -> TaskSetup:
        """What this flock's array tasks and sheep need (see shepard.scheduler_task)."""
        from shepard.scheduler_task import TaskSetup

        return TaskSetup(
            catalog=ctx.catalog, lease=ctx.lease, policy=ctx.policy, runtime=ctx.runtime,
            manifests=ctx.store(MANIFESTS), identity=slurm_identity, kind=ARRAY_TASK,
            sheep_kind=SHEEP_TASK,
        )  # fmt: skip

    # -- SchedulerBackend -------------------------------------------------------------------------

    def dispatch(self, now: float) -> int:
        if now >= self._next_reconcile:
            self._next_reconcile = now + self.cfg.reconcile
            self.arrays.reconcile(now)
        if self.cfg.mode == "sheep":
            self._herd(now)
            return 0
        return self.arrays.hand_over(now)

    def cancel(self, job_ids: Sequence[str]) -> None:
        """scancel the pending and running array tasks of these (cancelled) jobs. Sheep are
        not cancelled for one job (they stop it and take the next); pending sheep go when
        nothing is left to run."""
        try:
            self._cancel(set(job_ids))
        except SlurmError as exc:
            log.warning("could not remove the Slurm tasks of cancelled jobs: %s", exc)

    def logs(self, job: Job, attempt: int) -> list[LogRef]:
        """The payload's streams, then Slurm's own output of the task that ran the job's
        latest attempt (`slurm`), found through `scontrol show job` while Slurm still knows
        the task (MinJobAge after it ended)."""
        logs = self.ctx.store("logs")
        found = payload_logs(logs, job, attempt)
        task = task_of(job.worker, {ARRAY_TASK, SHEEP_TASK})
        if task is None or attempt != job.attempt:
            return found
        try:
            info = self.ctl.show_job(str(task)) or {}
        except SlurmError as exc:
            log.warning("could not ask Slurm where task %s wrote its output: %s", task, exc)
            return found
        try:
            key = Path(info.get("StdOut", "")).relative_to(output_folder(self.ctx.folder))
        except ValueError:  # not in the flock's output folder (e.g. another install's option)
            return found
        output = open_store(str(output_folder(self.ctx.folder)))
        if key.parts and output.exists(key.as_posix()):
            found.append(LogRef("slurm", output, key.as_posix()))
        return found

    def shutdown(self, *, kill: bool) -> None:
        """Jobs handed to Slurm stay there; submissions that never went through are given
        back to the queue (nothing is lost, nothing runs twice: see catalog/placing.py), and
        sheep still pending go when no job is left for them."""
        now = self.clock()
        self.arrays.abandon(now, "its submission to Slurm was abandoned: the dispatcher stopped")
        if self.cfg.mode == "sheep" and self.catalog.ready(now=now) == 0:
            try:
                pending = self.ctl.queue(names=[self.names.sheep]).tasks(states=["PENDING"])
                if pending:
                    self._cut_pending(pending, sum(len(i) for i in pending.values()))
            except SlurmError as exc:
                log.warning("could not remove pending sheep: %s", exc)

    # -- sheep mode ---------------------------------------------------------------------------

    def _herd(self, now: float) -> None:
        """Keep min(max_sheep, ceil(ready / jobs_per_sheep)) sheep pending or running."""
        if now < self._next_herd:
            return
        self._next_herd = now + HERD_EVERY
        ready = self.catalog.ready(now=now)
        wanted = min(self.cfg.max_sheep, math.ceil(ready / self.cfg.jobs_per_sheep))
        try:
            herd = self.ctl.queue(names=[self.names.sheep])
            pending = herd.tasks(states=["PENDING"])
            alive = herd.count(alive=True)
            if wanted > alive and self._pacer.ready(now):
                self._add_sheep(wanted - alive, now)
            elif alive > wanted and pending:
                self._cut_pending(pending, alive - wanted)
        except SlurmRefused as exc:
            raise SlurmError(f"{exc} (check [backend.slurm] in {self.slurm._toml})") from None
        except SlurmBusy as exc:
            delay = self._pacer.failed(now)
            log.warning("%s; trying again in %gs", exc, delay)

    def _add_sheep(self, count: int, now: float) -> None:
        count = min(count, self.ctl.limits().tasks_per_array)
        limit = spec.time_seconds(self.cfg.sheep_time)
        idle = f"{self.cfg.sheep_idle:g}"
        script = self.slurm.script("serve", "--time-limit", str(limit), "--idle", idle)
        options = self.slurm.options(self.names.sheep, new_token(now), count, self.cfg.sheep_time)
        self._pacer.sent(now)
        array_id = self.ctl.sbatch(options, script)
        self._pacer.succeeded()
        log.info("submitted %d sheep as Slurm array %s", count, array_id)

    def _cut_pending(self, pending: dict[str, set[int]], surplus: int) -> None:
        """scancel up to `surplus` pending sheep, newest first."""
        cut: dict[str, set[int]] = {}
        for array_id in sorted(pending, key=int, reverse=True):
            take = sorted(pending[array_id], reverse=True)[:surplus]
            if take:
                cut[array_id] = set(take)
                surplus -= len(take)
            if surplus <= 0:
                break
        self.slurm.cancel_tasks(cut)

    # -- cancel ---------------------------------------------------------------------------------

    def _cancel(self, wanted: set[str]) -> None:
        snapshot = self.ctl.queue(names=[self.names.array, self.names.sheep])
        targets: dict[str, set[int]] = {}
        sheep: dict[str, set[int]] = {}
        for record in snapshot.records:
            token = token_of(record.comment)
            if record.name == self.names.sheep:
                if record.state == "PENDING":
                    sheep.setdefault(record.array_id, set()).update(record.indexes)
                continue
            if token is None:
                continue
            hits = self.arrays.tasks_of(snapshot, record.array_id, token, record.indexes, wanted)
            if hits:
                targets.setdefault(record.array_id, set()).update(hits)
        if sheep and self.catalog.ready(now=self.clock()) == 0:
            for array_id, indexes in sheep.items():
                targets.setdefault(array_id, set()).update(indexes)
        self.slurm.cancel_tasks(targets)


def task_command(cfg: SlurmConfig, command: str, *args: str) -> list[str]:
    """What a task runs for `command` (run | serve): `<backend.slurm.shepard> worker COMMAND`
    when that is set, else `python -m shepard.task COMMAND` with this installation's own
    interpreter (nodes that share its filesystem run the same install): the same code
    without loading the CLI, so short tasks start faster (see shepard/task.py)."""
    if cfg.shepard:
        return [*shlex.split(cfg.shepard), "worker", command, *args]
    return [sys.executable, "-m", "shepard.task", command, *args]


def warn_if_sqlite(flock: str, url: str) -> None:
    """Say once per catalog and process that SQLite is a poor catalog for a cluster."""
    if url.startswith("sqlite") and url not in _warned_sqlite:
        _warned_sqlite.add(url)
        log.warning(
            "flock %s runs on Slurm with a SQLite catalog (%s): fine for a few nodes on one "
            "shared filesystem, but SQLite's locking over NFS is unreliable; PostgreSQL is "
            "recommended for clusters (catalog.url = \"postgresql://USER@HOST/DB\")",
            flock, url,
        )  # fmt: skip


__all__ = ["SlurmBackend", "SlurmScheduler", "names_for"]
