"""The local backend: `workers` slots on this machine, each running one job at a time.

Each slot is a runner process (see procs.py) that runs its jobs, records their outcomes and
claims its next job itself, through a catalog connection and a heartbeat of its own; each
payload is a child of its runner, in its own process group. This process only supervises:
it hands claimed jobs to idle slots, forwards cancellations and shutdowns, and ends the
attempts of a runner that died. Several processes with a local backend on one flock cooperate
through the catalog's leases.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from shepard.backends.base import BackendContext, LogRef, payload_logs
from shepard.backends.procs import CLOSE_TIMEOUT, RunnerProcess, RunnerSetup, start_runners
from shepard.catalog import in_process
from shepard.catalog.base import Catalog
from shepard.model import Job, RetryPolicy
from shepard.runtime import RuntimeContext
from shepard.runtime.workspace import remove_tree
from shepard.sheep import Clock, release
from shepard.storage import ObjectStore

log = logging.getLogger(__name__)


class LocalBackend:
    """Runs up to `workers` jobs at once; never claims more jobs than it has idle slots.

    The dispatcher hands jobs to idle slots; a slot that finishes a job records it and claims
    its next one in one transaction, so a busy pool never waits for the dispatcher (nor for
    this process). A slot claims only when it can start the job at once, which keeps `running`
    in the catalog meaning "running now" and leaves queued jobs to other processes serving the
    same flock. Slots tell this process when they run out of work (`wakeup` is then set).

    `catalog_url` is the catalog's full URL, for the runners' own connections; `clock` serves
    this process only (runners read the system clock).
    """

    name = "local"

    def __init__(
        self,
        ctx: RuntimeContext,
        catalog: Catalog,
        policy: RetryPolicy,
        *,
        workers: int,
        lease: float,
        worker_id: str,
        catalog_url: str,
        wakeup: threading.Event | None = None,
        clock: Clock = time.time,
        logs: ObjectStore | None = None,
    ) -> None:
        self.logs_store = logs or ctx.logs
        self.ctx, self.catalog, self.policy, self.workers = ctx, catalog, policy, workers
        self.lease, self.worker_id, self.clock = lease, worker_id, clock
        self.wakeup = wakeup or threading.Event()  # set when a slot goes idle
        self._closing = False
        level = logging.getLogger().getEffectiveLevel()
        setups = [
            RunnerSetup(ctx, catalog_url, policy, lease, self._slot_folder(n), level)
            for n in range(workers)
        ]
        self._slots = [
            RunnerProcess(setup, catalog, on_idle=self.wakeup.set, clock=clock) for setup in setups
        ]
        sweep_slots(ctx.workspace_root)
        # forks, while this process has no other thread; an in-memory catalog cannot serve
        # runner processes anyway, and closing it would lose it
        if not in_process(catalog_url):
            start_runners(self._slots, before_fork=catalog.close)

    @classmethod
    def from_context(cls, ctx: BackendContext) -> LocalBackend:
        """The flock's local backend: `ctx.workers` slots, started at once (as forks)."""
        return cls(
            ctx.runtime(), ctx.catalog, ctx.policy, workers=ctx.workers, lease=ctx.lease,
            worker_id=ctx.worker_id, catalog_url=ctx.catalog_url, wakeup=ctx.wakeup,
            clock=ctx.clock, logs=ctx.store("logs"),
        )  # fmt: skip

    def capacity(self) -> int:
        if self._closing:
            return 0
        return sum(not slot.busy for slot in self._slots)

    def submit(self, jobs: Sequence[Job]) -> None:
        idle = [slot for slot in self._slots if not slot.busy] if not self._closing else []
        for job, slot in zip(jobs, idle, strict=False):
            slot.run(job)
        for job in jobs[len(idle) :]:  # more than asked for: give them back untouched
            release(self.catalog, job, self.clock())

    def cancel(self, job_ids: Sequence[str]) -> None:
        for slot in self._slots:
            if slot.busy:
                slot.stop(job_ids)

    def active(self) -> int:
        """Jobs running now: one per busy slot (handed by `submit` or claimed by the slot)."""
        return sum(slot.busy for slot in self._slots)

    def logs(self, job: Job, attempt: int) -> list[LogRef]:
        """The payload's streams: a local runner keeps no log of its own per attempt."""
        return payload_logs(self.logs_store, job, attempt)

    def shutdown(self, *, kill: bool) -> None:
        self._closing = True
        for slot in self._slots:
            slot.close(kill=kill)
        for slot in self._slots:
            slot.join(timeout=CLOSE_TIMEOUT if kill else None)
        for folder in self.ctx.workspace_root.glob(f"{_slot_prefix()}*"):
            remove_tree(folder)

    def _slot_folder(self, n: int) -> Path:
        return slot_folder(self.ctx.workspace_root, n)


def slot_folder(workspace_root: Path, n: int) -> Path:
    """Slot `n`'s folder for this process: `slot-<host>-<pid>-<n>` (see sweep_slots)."""
    return workspace_root / f"{_slot_prefix()}{n}"


def _slot_prefix(pid: int | None = None) -> str:
    return f"slot-{socket.gethostname()}-{pid or os.getpid()}-"


def sweep_slots(workspace_root: Path) -> None:
    """Remove slot folders left by dead processes of this host (e.g. after kill -9).

    Best effort, and never fatal: another process starting at the same moment may be
    sweeping the same folders, and a payload orphaned by the dead process may still be
    writing into its folder (it is removed at the next start).
    """
    pattern = re.compile(re.escape(f"slot-{socket.gethostname()}-") + r"(\d+)-\d+")
    for folder in workspace_root.glob("slot-*"):
        match = pattern.fullmatch(folder.name)
        if match and not _alive(int(match.group(1))):
            try:
                remove_tree(folder)
            except FileNotFoundError:
                pass  # swept by another process meanwhile
            except OSError as exc:
                log.warning("could not remove %s, left by a dead process: %s", folder, exc)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
