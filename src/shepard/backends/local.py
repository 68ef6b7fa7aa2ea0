"""The local backend: `workers` slots on this machine, each running one job at a time.

Each slot is a thread of this process (claims, heartbeats, reports to the catalog) paired with
a runner process of its own (workspace, payload, outputs; see procs.py); each payload is a
child of that runner, in its own process group. Several processes with a local backend on one
flock cooperate through the catalog's leases.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from shepard.backends.procs import RunnerProcess
from shepard.catalog.base import Catalog
from shepard.model import Job, RetryPolicy
from shepard.runtime import AttemptControl, RuntimeContext
from shepard.runtime.workspace import remove_tree
from shepard.sheep import SHUTDOWN, Clock, Heartbeat, run_claimed

log = logging.getLogger(__name__)


class LocalBackend:
    """Runs up to `workers` jobs at once; never claims more jobs than it has idle workers.

    The dispatcher hands jobs to idle workers; a worker that finishes a job claims its next one
    itself, right away, so a busy pool never waits for the dispatcher. Not claiming ahead keeps
    `running` in the catalog meaning "running now" and leaves queued jobs to other processes
    serving the same flock.
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
        wakeup: threading.Event | None = None,
        clock: Clock = time.time,
    ) -> None:
        self.ctx, self.catalog, self.policy, self.workers = ctx, catalog, policy, workers
        self.lease, self.worker_id, self.clock = lease, worker_id, clock
        self.wakeup = wakeup or threading.Event()  # set when a worker goes idle
        self._heartbeat = Heartbeat(catalog, lease, clock).start()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="sheep")
        self._lock = threading.Lock()
        self._inflight = 0
        self._closing = False
        self._slots = threading.local()
        self._runners: list[RunnerProcess] = []
        self._slot_names = itertools.count()
        sweep_slots(ctx.workspace_root)

    def capacity(self) -> int:
        with self._lock:
            if self._closing:
                return 0
            return self.workers - self._inflight

    def submit(self, jobs: Sequence[Job]) -> None:
        for job in jobs:
            control = self._heartbeat.hold(job)
            with self._lock:
                self._inflight += 1
            self._pool.submit(self._run, job, control)

    def cancel(self, job_ids: Sequence[str]) -> None:
        self._heartbeat.stop(job_ids, "cancelled")

    def active(self) -> int:
        with self._lock:
            return self._inflight

    def shutdown(self, *, kill: bool) -> None:
        with self._lock:
            self._closing = True
        if kill:
            self._heartbeat.stop(None, SHUTDOWN)
        self._pool.shutdown(wait=True)
        self._heartbeat.close()
        for runner in self._runners:
            runner.close()
        for slot in self.ctx.workspace_root.glob(f"{_slot_prefix()}*"):
            remove_tree(slot)

    def _run(self, job: Job, control: AttemptControl) -> None:
        """Run `job`, then keep claiming and running the next queued job until none is left."""
        try:
            current: Job | None = job
            while current is not None:
                if self._closing:  # accepted but never started: give it back untouched
                    control.stop_reason = SHUTDOWN
                    control.stop.set()
                try:
                    slot, runner = self._slot()
                    run_claimed(
                        current, self.ctx, self.catalog, self.policy, control, self.clock,
                        slot, runner,
                    )  # fmt: skip
                finally:
                    self._heartbeat.drop(current.id)
                current = None if self._closing else self._claim_next()
                if current is not None:
                    control = self._heartbeat.hold(current)
        except Exception:
            # e.g. the catalog is unreachable: the job's lease runs out and it runs again;
            # the dispatcher gives this slot new work once the catalog answers
            log.exception("a worker slot stopped on an error")
        finally:
            with self._lock:
                self._inflight -= 1
            self.wakeup.set()

    def _slot(self) -> tuple[Path, RunnerProcess]:
        """This worker thread's folder (the root folder of each of its jobs) and runner."""
        slot: tuple[Path, RunnerProcess] | None = getattr(self._slots, "slot", None)
        if slot is None:
            folder = self.ctx.workspace_root / f"{_slot_prefix()}{next(self._slot_names)}"
            runner = RunnerProcess(self.ctx)
            with self._lock:
                self._runners.append(runner)
            slot = self._slots.slot = (folder, runner)
        return slot

    def _claim_next(self) -> Job | None:
        claimed = self.catalog.claim(self.worker_id, now=self.clock(), lease=self.lease)
        return claimed[0] if claimed else None


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
