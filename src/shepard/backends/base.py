"""The backend contracts: how queued jobs get run somewhere.

A backend is one module (or package) in `shepard.backends`, one pydantic config section
(`[backend.<kind>]`), one line in `backends/__init__.py`'s KINDS, and a conformance flavour. It
never decides *which* jobs run (the catalog hands out the oldest claimable ones) and never
records outcomes itself except through the runtime, which reports to the catalog from wherever
the job runs. It sees the flock only through a `BackendContext`: never the `Flock` facade.

There are two kinds:
- `Backend` runs jobs from this process (the local worker pool): the dispatcher claims jobs
  for it and hands them over with `submit`.
- `SchedulerBackend` hands jobs to a scheduler with a queue of its own (Slurm): jobs may wait
  there for hours, so they are not claimed at submission but *placed* (see
  catalog/placing.py), and the scheduler's tasks claim them when they start. The dispatcher
  calls its `dispatch` instead of claiming. Schedulers with job arrays share the steps of
  backends/arrays.py and fill its hooks.

Every registered class is also a `BackendClass`: it builds itself from a context
(`from_context`) and, for a scheduler, says what its tasks need (`task_setup`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from pydantic import BaseModel

from shepard.catalog.base import Catalog
from shepard.model import Job, RetryPolicy
from shepard.runtime import RuntimeContext, log_key
from shepard.storage import ObjectStore

if TYPE_CHECKING:
    from shepard.scheduler_task import TaskSetup

Clock = Callable[[], float]


@dataclass(frozen=True)
class BackendContext:
    """What a backend may use of its flock, and nothing more.

    - `name`, `folder`: the flock's name and folder (where its flock.toml is);
    - `catalog`, `catalog_url`: the open catalog, and its URL for processes of their own;
    - `settings`: the backend's own `[backend.<kind>]` section (its registered config class);
    - `workers`, `lease`, `policy`: `[backend] workers` (or the caller's override), the claim
      lease in seconds and the retry policy;
    - `worker_id`: who claims ("" for a one-off command that claims nothing);
    - `clock`, `wakeup`: the time source of this process, and the event that makes the
      dispatcher look again at once;
    - `store(name)`: one of the flock's stores (inputs, outputs, errors, logs, ... and any
      name of the backend's own, such as `slurm` for manifests);
    - `runtime()`: how the flock's jobs run (the runtime context, for backends that run jobs
      in this host's processes).
    """

    name: str
    folder: Path
    catalog: Catalog
    catalog_url: str
    settings: BaseModel
    workers: int
    lease: float
    policy: RetryPolicy
    worker_id: str
    clock: Clock
    wakeup: threading.Event
    store: Callable[[str], ObjectStore]
    runtime: Callable[[], RuntimeContext]


@dataclass(frozen=True)
class LogRef:
    """One log of an attempt: `key` in `store`, shown under `label` (stdout, stderr, ...)."""

    label: str
    store: ObjectStore
    key: str


def payload_logs(logs: ObjectStore, job: Job, attempt: int) -> list[LogRef]:
    """The payload's stdout and stderr of `attempt`, as the runtime stores them on every
    backend (those the attempt did not leave are omitted)."""
    refs = [LogRef(s, logs, log_key(job.id, attempt, s)) for s in ("stdout", "stderr")]
    return [ref for ref in refs if logs.exists(ref.key)]


class Backend(Protocol):
    name: str

    def capacity(self) -> int:
        """How many more claimed jobs the backend accepts right now (0 = come back later).

        The dispatcher claims at most this many jobs before calling `submit`.
        """
        ...

    def submit(self, jobs: Sequence[Job]) -> None:
        """Start running `jobs`, which the caller has just claimed (status RUNNING, leased).

        Must not block for the duration of the jobs. From here on the backend keeps their
        leases alive (heartbeats) while they run, and the runtime reports each outcome to the
        catalog. A job the backend cannot start must still end in a recorded outcome.
        """
        ...

    def cancel(self, job_ids: Sequence[str]) -> None:
        """Stop these jobs if this backend runs them (kill the payload); ignore unknown ids."""
        ...

    def active(self) -> int:
        """Number of jobs running now: those accepted by `submit` that have not ended yet,
        and any its workers claimed for themselves since (see `LocalBackend`)."""
        ...

    def logs(self, job: Job, attempt: int) -> list[LogRef]:
        """Where `attempt` of `job` left logs that can be read now, from any process: at least
        the payload's streams (`payload_logs`), then any the backend keeps of its own."""
        ...

    def shutdown(self, *, kill: bool) -> None:
        """Stop accepting work. kill=False: wait for running jobs to end; kill=True: stop them.

        Jobs accepted but not started, and jobs killed here, must go back to the queue
        (released without spending an attempt), so nothing is lost by a clean shutdown.
        """
        ...


@runtime_checkable
class SchedulerBackend(Protocol):
    """A backend that hands queued jobs to a scheduler's own queue; the scheduler's tasks run
    `shepard worker run` / `shepard worker serve`, which claim, run and report like any sheep.

    An implementation must guarantee:
    - a job is handed over at most once per attempt: only through `Catalog.place`, and a task
      only runs a job it claimed with `Catalog.claim_placed` (or, for long-lived sheep, with
      `Catalog.claim`);
    - no job is lost: a placement whose task ended without claiming its job is given back
      (`Catalog.unplace`), and an attempt whose task vanished while running is ended with the
      scheduler's reason (`Catalog.lose`, or `Catalog.finish` when the job itself caused it);
    - scheduler errors that may pass (a busy controller) are retried later with back-off;
      errors that cannot (a submission refused as configured) raise ShepardError.
    """

    name: str

    def dispatch(self, now: float) -> int:
        """Hand queued work to the scheduler and reconcile with it; must return quickly.

        Called by the dispatcher every poll interval. Returns the number of jobs handed over
        (0 makes the dispatcher wait a poll interval before calling again).
        """
        ...

    def cancel(self, job_ids: Sequence[str]) -> None:
        """Remove the scheduler's tasks of these jobs (already cancelled in the catalog).

        Works from any process, not only the one that submitted them; unknown ids are ignored.
        """
        ...

    def logs(self, job: Job, attempt: int) -> list[LogRef]:
        """As `Backend.logs`: the payload's streams, then the scheduler's own output of the
        task, where the backend can tell which task ran the attempt."""
        ...

    def shutdown(self, *, kill: bool) -> None:
        """Stop handing over work. Jobs already handed to the scheduler stay there and keep
        running (`shepard cancel` removes them); submissions not completed are given back."""
        ...


class BackendClass(Protocol):
    """What a class registered in `backends.KINDS` provides, besides its instances' methods."""

    @classmethod
    def from_context(cls, ctx: BackendContext) -> Backend | SchedulerBackend:
        """Build the backend for the flock `ctx` describes (`ctx.settings` is an instance of the
        config class registered with it). Must not claim or submit anything: work starts with
        `submit`/`dispatch`. Must accept `ctx.worker_id == ""` (a one-off command such as
        `cancel`, which only calls `cancel` and `logs`). May start the processes it runs jobs
        in (the local backend forks its runners here, before the caller starts threads)."""
        ...

    @classmethod
    def task_setup(cls, ctx: BackendContext) -> TaskSetup:
        """Schedulers only: what their tasks need to run (shepard.scheduler_task): the store of
        their manifests, how a task learns its identity from its environment, the kinds its
        worker ids carry. Called inside the task, on a node; must not talk to the scheduler.
        Backends without tasks of their own leave it out (a sheep started by hand then gets
        `scheduler_task.handmade_setup`)."""
        ...
