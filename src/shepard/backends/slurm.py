"""The Slurm backend: a flock's jobs run as tasks of Slurm job arrays.

Two modes (`backend.slurm.mode`), one runtime contract:
- `array`: one array task per job. Queued jobs are *placed* (catalog/placing.py) in chunks that
  respect the cluster's MaxArraySize and MaxJobCount, each chunk is written to a manifest and
  submitted as one `sbatch --array`, and task N runs `shepard worker run --manifest M`, which
  claims the job on line N (only if it is still placed there) and runs it.
- `sheep`: a few long-lived array tasks run `shepard worker serve`, each claiming job after job
  from the catalog until the queue stays empty or its time limit nears. Their number follows
  the queue: `min(max_sheep, ceil(ready jobs / jobs_per_sheep))`, none when nothing waits.

The dispatcher calls `dispatch` every poll interval; every `backend.slurm.reconcile` seconds it
also compares the catalog with what Slurm says (slurmrec.py). sbatch calls are spaced by
`submit_rate`, and failures that may pass are retried with back-off.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shlex
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from shepard import slurmspec
from shepard.backends import slurmtasks as tasks
from shepard.backends.slurmctl import ALIVE, Pacer, SlurmBusy, SlurmCtl, SlurmError, SlurmRefused
from shepard.backends.slurmrec import Reconciler, flock_names
from shepard.config import SlurmConfig
from shepard.errors import ShepardError

if TYPE_CHECKING:
    from shepard.flock import Flock

log = logging.getLogger(__name__)

HEADROOM = 0.9  # share of MaxJobCount the flock may fill, leaving room for everyone else
HERD_EVERY = 2.0  # seconds between two looks at the sheep in sheep mode
_warned_sqlite: set[str] = set()


@dataclass
class Submission:
    """An array being handed over: its token and its jobs in task order."""

    token: str
    job_ids: list[str]
    tries: int = 0


class SlurmBackend:
    """Hands a flock's queued jobs to Slurm (see the module docstring)."""

    name = "slurm"
    engine = True  # an EngineBackend: see backends/base.py

    def __init__(
        self,
        flock: Flock,
        *,
        ctl: SlurmCtl | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.flock, self.catalog = flock, flock.catalog
        self.cfg: SlurmConfig = flock.config.backend.slurm
        self.ctl = ctl or SlurmCtl()
        self.clock = clock or flock.clock
        self.names = flock_names(flock)
        self.manifests = flock.dir.storage_root / "slurm"
        self.slurm_logs = flock.dir.store_path("logs") / "slurm"
        self.reconciler = Reconciler(flock, self.ctl, self.names, self.manifests)
        self._pacer = Pacer(self.cfg.submit_rate)
        self._retry: list[Submission] = []
        self._next_reconcile = float("-inf")
        self._next_herd = float("-inf")
        self._in_slurm: int | None = None  # jobs the controller holds (for MaxJobCount)
        self._count_until = float("-inf")
        self._waiting_for_room = False

    @classmethod
    def from_flock(
        cls,
        flock: Flock,
        *,
        workers: int | None = None,
        worker_id: str,
        wakeup: threading.Event | None = None,
    ) -> SlurmBackend:
        """The flock's Slurm backend; `workers` and `wakeup` do not apply (Slurm runs the
        jobs) and are accepted for the common signature."""
        if worker_id:  # a dispatcher, not a one-off command such as cancel
            warn_if_sqlite(flock)
        return cls(flock)

    # -- EngineBackend ------------------------------------------------------------------------

    def dispatch(self, now: float) -> int:
        if now >= self._next_reconcile:
            self._next_reconcile = now + self.cfg.reconcile
            self.reconciler.run(now, submitting={s.token for s in self._retry})
        if self.cfg.mode == "sheep":
            self._herd(now)
            return 0
        return self._hand_over(now)

    def cancel(self, job_ids: Sequence[str]) -> None:
        """scancel the pending and running array tasks of these (cancelled) jobs. Sheep are
        not cancelled for one job (they stop it and take the next); pending sheep go when
        nothing is left to run."""
        try:
            self._cancel(set(job_ids))
        except SlurmError as exc:
            log.warning("could not remove the Slurm tasks of cancelled jobs: %s", exc)

    def shutdown(self, *, kill: bool) -> None:
        """Jobs handed to Slurm stay there; submissions that never went through are given
        back to the queue (nothing is lost, nothing runs twice: see catalog/placing.py), and
        sheep still pending go when no job is left for them."""
        now = self.clock()
        for sub in self._retry:
            self.catalog.unplace(
                sub.job_ids, sub.token, now=now, lost=False,
                detail="its submission to Slurm was abandoned: the dispatcher stopped",
            )  # fmt: skip
        self._retry.clear()
        if self.cfg.mode == "sheep" and self.catalog.ready(now=now) == 0:
            try:
                pending = self.ctl.queue(names=[self.names.sheep]).tasks(states=["PENDING"])
                if pending:
                    self._cut_pending(pending, sum(len(i) for i in pending.values()))
            except SlurmError as exc:
                log.warning("could not remove pending sheep: %s", exc)

    # -- array mode: one task per job ---------------------------------------------------------

    def _hand_over(self, now: float) -> int:
        """Submit at most one array (the dispatcher calls again at once when it did)."""
        if not self._pacer.ready(now):
            return 0
        if self._retry:
            sub = self._retry.pop(0)
        else:
            try:
                room = self._room(now)
            except SlurmBusy as exc:
                log.warning("%s; trying again in %gs", exc, self._pacer.failed(now))
                return 0
            if room <= 0:
                return 0
            token = tasks.new_token(now)
            ids = self.catalog.place(token, now=now, limit=room)
            if not ids:
                return 0
            sub = Submission(token, ids)
            self._write_manifest(sub, now)
        return len(sub.job_ids) if self._submit(sub, now) else 0

    def _write_manifest(self, sub: Submission, now: float) -> None:
        path = self._manifest(sub.token)
        try:
            tasks.write_manifest(path, sub.job_ids)
        except OSError as exc:
            self._give_back(sub, now, "its task manifest could not be written")
            raise ShepardError(
                f"cannot write the task manifest {path}: {exc.strerror or exc}; the flock's "
                "storage must be writable here and shared with the nodes"
            ) from None

    def _room(self, now: float) -> int:
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

    def _submit(self, sub: Submission, now: float) -> bool:
        """sbatch one array; True once Slurm has it, False to try again later."""
        try:
            if sub.tries and self._adopt(sub):  # an earlier sbatch may have gone through
                return True
            self._pacer.sent(now)
            script = self._script("run", "--manifest", str(self._manifest(sub.token)))
            options = self._options(self.names.array, sub.token, len(sub.job_ids), self.cfg.time)
            array_id = self.ctl.sbatch(options, script)
        except SlurmRefused as exc:
            self._give_back(sub, now, "Slurm refused its submission")
            raise SlurmError(f"{exc} (check [backend.slurm] in {self._toml})") from None
        except SlurmBusy as exc:
            sub.tries += 1
            delay = self._pacer.failed(now)
            self._retry.insert(0, sub)
            log.warning("%s; trying again in %gs", exc, delay)
            return False
        self._pacer.succeeded()
        self.catalog.rename_placement(sub.token, f"{sub.token}@{array_id}")
        self._in_slurm = (self._in_slurm or 0) + len(sub.job_ids)
        log.info("submitted %d job(s) as Slurm array %s", len(sub.job_ids), array_id)
        return True

    def _adopt(self, sub: Submission) -> bool:
        found = self.ctl.queue(names=[self.names.array]).with_comment(tasks.comment(sub.token))
        if not found:
            return False
        array_id = min(found, key=int)
        self.catalog.rename_placement(sub.token, f"{sub.token}@{array_id}")
        log.info("Slurm array %s had been submitted after all; keeping it", array_id)
        return True

    def _give_back(self, sub: Submission, now: float, why: str) -> None:
        self.catalog.unplace(sub.job_ids, sub.token, now=now, lost=False, detail=why)
        with contextlib.suppress(OSError):
            self._manifest(sub.token).unlink(missing_ok=True)

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
            raise SlurmError(f"{exc} (check [backend.slurm] in {self._toml})") from None
        except SlurmBusy as exc:
            delay = self._pacer.failed(now)
            log.warning("%s; trying again in %gs", exc, delay)

    def _add_sheep(self, count: int, now: float) -> None:
        count = min(count, self.ctl.limits().tasks_per_array)
        limit = slurmspec.time_seconds(self.cfg.sheep_time)
        idle = f"{self.cfg.sheep_idle:g}"
        script = self._script("serve", "--time-limit", str(limit), "--idle", idle)
        options = self._options(self.names.sheep, tasks.new_token(now), count, self.cfg.sheep_time)
        self._pacer.sent(now)
        array_id = self.ctl.sbatch(options, script)
        self._pacer.succeeded()
        log.info("submitted %d sheep as Slurm array %s", count, array_id)

    def _cut_pending(self, pending: dict[str, set[int]], surplus: int) -> None:
        """scancel up to `surplus` pending sheep, newest first."""
        targets: list[str] = []
        for array_id in sorted(pending, key=int, reverse=True):
            take = sorted(pending[array_id], reverse=True)[:surplus]
            if take:
                targets.append(f"{array_id}_[{slurmspec.format_indexes(take)}]")
                surplus -= len(take)
            if surplus <= 0:
                break
        self.ctl.scancel(targets)

    # -- cancel ---------------------------------------------------------------------------------

    def _cancel(self, wanted: set[str]) -> None:
        snapshot = self.ctl.queue(names=[self.names.array, self.names.sheep])
        alive = snapshot.tasks(states=ALIVE)
        targets: list[str] = []
        sheep: dict[str, set[int]] = {}
        for record in snapshot.records:
            token = tasks.token_of(record.comment)
            if record.name == self.names.sheep:
                if record.state == "PENDING":
                    sheep.setdefault(record.array_id, set()).update(record.indexes)
                continue
            if token is None or record.array_id not in alive:
                continue
            ids = tasks.manifest_ids(self._manifest(token))
            hits = {i for i in record.indexes & alive[record.array_id] if i < len(ids)}
            hits = {i for i in hits if ids[i] in wanted}
            if hits:
                targets.append(f"{record.array_id}_[{slurmspec.format_indexes(hits)}]")
        if sheep and self.catalog.ready(now=self.clock()) == 0:
            targets += [f"{a}_[{slurmspec.format_indexes(i)}]" for a, i in sheep.items()]
        self.ctl.scancel(sorted(set(targets)))

    # -- pieces ---------------------------------------------------------------------------------

    def _manifest(self, token: str) -> Path:
        return self.manifests / f"{token}.jobs"

    @property
    def _toml(self) -> Path:
        return self.flock.dir.folder / "flock.toml"

    def _options(self, name: str, token: str, size: int, limit: str | None) -> list[str]:
        """sbatch options of an array of `size` tasks; Slurm's own output of task N goes to
        `logs/slurm/TOKEN/N.log`."""
        logs = self.slurm_logs / token
        logs.mkdir(parents=True, exist_ok=True)
        cfg = self.cfg
        options = [
            f"--array=0-{size - 1}",
            f"--job-name={name}",
            f"--comment={tasks.comment(token)}",
            f"--output={logs}/%a.log",
            f"--chdir={self.flock.dir.folder}",
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

    def _script(self, *args: str) -> str:
        command = [*task_command(self.cfg, *args), "--flock", str(self.flock.dir.folder)]
        return f"#!/bin/sh\n# shepard flock {self.flock.config.name}\nexec {shlex.join(command)}\n"


def task_command(cfg: SlurmConfig, command: str, *args: str) -> list[str]:
    """What a task runs for `command` (run | serve): `<backend.slurm.shepard> worker COMMAND`
    when that is set, else `python -m shepard.task COMMAND` with this installation's own
    interpreter (nodes that share its filesystem run the same install): the same code
    without loading the CLI, so short tasks start faster (see shepard/task.py)."""
    if cfg.shepard:
        return [*shlex.split(cfg.shepard), "worker", command, *args]
    return [sys.executable, "-m", "shepard.task", command, *args]


def warn_if_sqlite(flock: Flock) -> None:
    """Say once per flock and process that SQLite is a poor catalog for a cluster."""
    url = flock.dir.catalog_url
    if url.startswith("sqlite") and url not in _warned_sqlite:
        _warned_sqlite.add(url)
        log.warning(
            "flock %s runs on Slurm with a SQLite catalog (%s): fine for a few nodes on one "
            "shared filesystem, but SQLite's locking over NFS is unreliable; PostgreSQL is "
            "recommended for clusters (catalog.url = \"postgresql://USER@HOST/DB\")",
            flock.config.name, url,
        )  # fmt: skip
