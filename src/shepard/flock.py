"""The library facade: everything a user (or the CLI, or the HTTP API) does with a flock."""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, cast

from shepard import config, leftovers
from shepard.bundle import make_bundle, read_bundle_file
from shepard.catalog import be_patient, open_catalog
from shepard.catalog.base import Catalog, IdempotencyConflict
from shepard.config import STORE_NAMES, FlockConfig, Flockdir
from shepard.errors import CatalogMissing, JobNotFound, ShepardError
from shepard.model import Job, JobEvent, JobSpec, JobStatus, ParamValue
from shepard.params import check_env_size, find_key, validate_params
from shepard.payloads import open_payload
from shepard.payloads.container_engine import check_gpus
from shepard.retrieval import Retrieval, retrieve_store
from shepard.runtime import RuntimeContext, log_key
from shepard.runtime.buckets import ModelPayloads
from shepard.service import FlockService
from shepard.storage import ObjectStore, open_store
from shepard.workitems import job_name

if TYPE_CHECKING:
    from shepard.backends.base import Backend, BackendContext, SchedulerBackend
    from shepard.scheduler_task import TaskSetup

Progress = Callable[[dict[JobStatus, int]], None]


IDS_KEPT = 10_000
"""A submission of up to this many jobs returns their ids; a larger one only counts them."""


@dataclass(frozen=True)
class Submission:
    """The jobs one call registered, grouped under one batch label.

    `ids`: every id in order when there are at most IDS_KEPT jobs, else empty (a submission
    may not fit in memory): stream them with `Flock.batch_ids(batch)`. `count`: how many.
    """

    batch: str
    ids: list[str]
    count: int = -1

    def __post_init__(self) -> None:
        if self.count < 0:
            object.__setattr__(self, "count", len(self.ids))


class Flock(FlockService):
    """One flock: its config, stores, catalog and the operations on its jobs."""

    def __init__(self, flockdir: Flockdir, *, clock: Callable[[], float] = time.time) -> None:
        self.dir = flockdir
        self.config: FlockConfig = flockdir.config
        self.clock = clock
        self._stores: dict[str, ObjectStore] = {}

    @classmethod
    def open(cls, folder: str | Path) -> Flock:
        return cls(config.load(folder))

    @classmethod
    def create(cls, folder: Path, cfg: FlockConfig) -> Flock:
        """Write `<folder>/flock.toml` (refusing to overwrite one) and create the stores."""
        if (folder / config.CONFIG_NAME).exists():
            raise ShepardError(f"{folder / config.CONFIG_NAME} already exists; not overwriting it")
        draft = cls(Flockdir(folder, cfg))
        for name in STORE_NAMES:  # before flock.toml: an unusable store leaves no flock behind
            draft.store(name).ensure()
        draft.dir.store_path("work").mkdir(parents=True, exist_ok=True)
        config.write(folder, cfg)
        flock = cls.open(folder)
        open_catalog(flock.dir.catalog_url, create=True).close()  # the only place one is made
        return flock

    def repair(self) -> list[str]:
        """Create the missing stores and catalog (empty) of this existing flock; return what
        was made. The only other way to a catalog is `create` (`shepard init --repair`)."""
        made = []
        for name in STORE_NAMES:
            store = self.store(name)
            path = store.local_path("x")  # a folder store's folder is its keys' parent
            if path is not None and not path.parent.is_dir():
                made.append(f"store {path.parent}")
            store.ensure()  # makes a folder; an S3 bucket must exist
        work = self.dir.store_path("work")
        if not work.is_dir():
            work.mkdir(parents=True)
            made.append(f"store {work}")
        try:
            open_catalog(self.dir.catalog_url, create=False).close()
        except CatalogMissing:
            open_catalog(self.dir.catalog_url, create=True).close()
            made.append(f"an empty catalog {self.dir.catalog_url}")
        return made

    # -- stores and catalog -------------------------------------------------------------

    def store(self, name: str) -> ObjectStore:
        """The flock's store `name` (one of config.STORE_NAMES), a folder or S3 alike, opened
        once by its URL (`Flockdir.store_url`) and then shared; thread-safe."""
        store = self._stores.get(name)
        if store is None:
            url = self.dir.store_url(name)
            store = self._stores.setdefault(name, open_store(url, options=self.dir.store_options()))
        return store

    @cached_property
    def catalog(self) -> Catalog:
        # made patient (catalog.be_patient) when it runs jobs: see open_backend
        return open_catalog(self.dir.catalog_url, create=False)

    def close(self) -> None:
        if "catalog" in self.__dict__:
            self.catalog.close()

    def runtime_context(self) -> RuntimeContext:
        """What the runtime needs to run this flock's jobs: its stores, folders and its
        payload kind, configured (built once per worker process)."""
        payload = self.config.payload
        return RuntimeContext(
            inputs=self.store("inputs"),
            outputs=self.store("outputs"),
            errors=self.store("errors"),
            quick_deploy=self.store("quick-deploy"),
            logs=self.store("logs"),
            secrets=self.store("secrets"),
            workspace_root=self.dir.store_path("work"),
            payload=open_payload(self.config),
            timeout=payload.timeout,
            env=dict(payload.env),
            efs=self.dir.filesystem("efs"),
            lustre=self.dir.filesystem("lustre"),
            models=ModelPayloads(self.config) if self.config.shepherd.models else None,
        )

    def check_submission(self) -> None:
        """Raise ShepardError when this flock's payload could not run any job, for what can
        be judged before submitting (a `tasks` flock's document: docs/tasks.md)."""
        if self.config.payload.kind == "tasks":
            from shepard.payloads.tasks import check_flock_document

            check_flock_document(self.dir)

    def check_resources(self) -> None:
        """Raise ResourceError when this host cannot give the flock's jobs what they ask for
        (GPUs). Judged for the local backend only: a scheduler's nodes are other hosts."""
        if self.config.backend.kind == "local":
            check_gpus(self.config.container.gpus, self.config.container.engine)

    # -- submitting ---------------------------------------------------------------------

    def submit(
        self,
        params: Iterable[Mapping[str, object]],
        *,
        batch: str | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
        progress: Callable[[int], None] | None = None,
        validated: bool = False,
    ) -> Submission:
        """Register one parameter-only job per mapping, all or nothing.

        `params` is consumed lazily, in chunks, so memory stays flat whatever its length, and
        the catalog is never locked for long (see catalog/staging.py). A mapping that fails
        validation registers nothing. `progress` is called with the number of jobs written.
        `validated`: the caller has passed every mapping through `validate_params` already
        (a SubmitRequest's `param_sets`, which name the bad item), so it is not done twice.
        """
        config.check_job_limits(max_attempts, timeout)
        self.check_resources()
        self.check_submission()
        label = batch or new_batch_label()
        self.catalog.sweep_submissions(now=self.clock())  # leftovers of a killed submission
        kept: list[str] = []
        specs = self._specs(params, label, max_attempts, timeout, validated)
        count = self.catalog.submit_jobs(
            specs, batch=label, now=self.clock(), default_attempts=self._attempts,
            clock=self.clock, progress=progress,
        )  # fmt: skip
        if count <= IDS_KEPT:
            kept = list(self.catalog.batch_ids(label))
        return Submission(label, kept, count)

    def register(
        self,
        params: Sequence[Mapping[str, object]],
        *,
        batch: str | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
        validated: bool = False,
    ) -> Submission:
        """`submit` for a few jobs already in memory (a server's request): the same checks,
        then ONE short transaction (`Catalog.add_jobs`) instead of the staged path that
        keeps a long submission from holding the catalog's write lock. About 50 times
        cheaper for one job; meant for requests of up to a thousand jobs."""
        label, specs = self.prepare(
            params, batch=batch, max_attempts=max_attempts, timeout=timeout, validated=validated
        )
        ids = self.catalog.add_jobs(specs, now=self.clock(), default_attempts=self._attempts)
        return Submission(label, ids)

    def prepare(
        self,
        params: Sequence[Mapping[str, object]],
        *,
        batch: str | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
        validated: bool = False,
    ) -> tuple[str, list[JobSpec]]:
        """The checks of `register`, and the specs it would write under the batch label it
        returns (for a caller that writes several requests' specs in one transaction:
        `shepard.submitgroup`)."""
        config.check_job_limits(max_attempts, timeout)
        self.check_resources()
        label = batch or new_batch_label()
        return label, list(self._specs(params, label, max_attempts, timeout, validated))

    def _specs(
        self,
        params: Iterable[Mapping[str, object]],
        label: str,
        max_attempts: int | None,
        timeout: float | None,
        validated: bool = False,
    ) -> Iterator[JobSpec]:
        """Each mapping validated (ParamsError names the bad one), as a job of `label`."""
        env = self.config.payload.env
        for item in params:
            checked = cast("dict[str, ParamValue]", item) if validated else validate_params(item)
            if env:  # payload.env counts against the same limit
                check_env_size(checked, env)
            yield JobSpec(checked, None, max_attempts, timeout, label)

    def register_once(
        self, key: str, spec: JobSpec, *, request_hash: str, now: float | None = None
    ) -> str | None:
        """Register one job under the idempotency key `key` (its batch label, which finds it
        again with `batch_ids(key)`); its id, or None when `key` was used before (whatever
        that request was). For front ends whose clients name their jobs (shepherd's job ids).
        `now`: its submission time (default: the flock's clock).
        """
        self.check_resources()
        try:
            done = self.catalog.add_jobs_once(
                key, request_hash, key, [replace(spec, batch=key)],
                now=self.clock() if now is None else now,
                default_attempts=self._attempts,
            )  # fmt: skip
        except IdempotencyConflict:
            return None
        return None if done.replayed else done.ids[0]

    def batch_ids(self, batch: str) -> Iterator[str]:
        """The ids of the jobs of `batch`, in submission order, streamed from the catalog."""
        return self.catalog.batch_ids(batch)

    def submit_bundle(
        self,
        path: Path,
        *,
        key: str | None = None,
        batch: str | None = None,
        source: str | None = None,
    ) -> Submission:
        """Validate a zip bundle, store it in the inputs store, register its job.

        Nothing is stored or registered when the bundle is refused. `source` names the
        bundle in messages (default: `path`; an upload is named as its sender named it).
        """
        self.check_resources()
        self.check_submission()
        params = read_bundle_file(path, self.config.limits, name=source)
        check_env_size(
            params, self.config.payload.env,
            source=f"parameters of bundle {source or path.name!r}",
        )  # fmt: skip
        key = _zip_key(key or f"{uuid.uuid4()}.zip")
        inputs = self.store("inputs")
        if inputs.exists(key):
            raise ShepardError(f"an input bundle named {key!r} already exists; choose another name")
        inputs.put_file(key, path)
        label = batch or new_batch_label()
        spec = JobSpec(params, key, None, None, label)
        try:
            ids = self.catalog.add_jobs([spec], now=self.clock(), default_attempts=self._attempts)
        except BaseException:
            inputs.delete(key)
            raise
        return Submission(label, ids)

    def batch(self, folder: Path, *, zip_name: str | None = None) -> Submission:
        """Zip `folder` (which holds inputs.json or inputs.txt) and submit it as one job."""
        work = self.dir.store_path("work")
        work.mkdir(parents=True, exist_ok=True)
        self.sweep_leftovers()
        with (
            tempfile.TemporaryDirectory(dir=work, prefix=leftovers.BATCH_PREFIX) as tmp,
            leftovers.held(Path(tmp)),  # tells a later sweep this folder is in use
        ):
            bundle = make_bundle(folder, Path(tmp) / "bundle.zip", self.config.limits)
            return self.submit_bundle(bundle, key=zip_name)

    def sweep_leftovers(self) -> leftovers.Swept:
        """Remove what killed `batch` commands left behind (see leftovers.py): run at the
        start of `batch` and of `up`."""
        work = self.dir.store_path("work")
        return leftovers.sweep(work, self.store("inputs"), self.catalog, now=self.clock())

    @property
    def _attempts(self) -> int:
        return self.config.retry.attempts

    # -- looking --------------------------------------------------------------------------

    def job(self, job_id: str) -> Job:
        job = self.catalog.get(job_id)
        if job is None:
            raise JobNotFound(f"no job {job_id!r} in flock {self.config.name!r}")
        return job

    def events(self, job_id: str) -> list[JobEvent]:
        return self.catalog.events(job_id)

    def counts(self, batch: str | None = None) -> dict[JobStatus, int]:
        return self.catalog.counts(batch=batch)

    def recent(self, limit: int = 20, status: JobStatus | None = None) -> list[Job]:
        return self.catalog.page(status=status, limit=limit, newest_first=True)

    def logs_store(self) -> ObjectStore:
        """The store holding the payloads' logs (what joblogs reads)."""
        return self.store("logs")

    def log_keys(self, job: Job) -> list[tuple[int, str, str]]:
        """(attempt, stdout key, stderr key) in the logs store of every attempt that started
        (`store("logs").url(key)` says where one is, for people). A log may be missing: an
        empty stream is not stored in S3 (runtime/logsink.py), and every reader takes a
        missing log as empty; so nothing is asked of the store here."""
        return [
            (attempt, log_key(job.id, attempt, "stdout"), log_key(job.id, attempt, "stderr"))
            for attempt in range(1, job.attempt + 1)
        ]

    def retrieve(
        self,
        dest: Path,
        *,
        unzip: bool = False,
        errors: bool = False,
        job_ids: Iterable[str] = (),
        on_file: Callable[[Path], None] | None = None,
    ) -> Retrieval:
        """Copy result zips (and error bundles into dest/errors/) to a local folder.

        Files already present with the same size are skipped, so retrieve can be re-run to
        fetch what is new. With `unzip`, each zip is also extracted into a folder of the same
        name without `.zip` (see `retrieval.extract_results`: nothing lands outside it, odd
        names are cleaned or left out). One object that cannot be copied or unzipped never
        stops the others: the result lists them (`failed`), and the entries left out
        (`skipped`).
        """
        wanted = [f"@{job_id}_" for job_id in job_ids]
        result = Retrieval()
        sources = [(self.store("outputs"), dest)]
        if errors:
            sources.append((self.store("errors"), dest / "errors"))
        for store, target in sources:
            retrieve_store(store, target, result, unzip=unzip, wanted=wanted, on_file=on_file)
        return result

    # -- user actions ---------------------------------------------------------------------

    def cancel(
        self,
        job_ids: Sequence[str] | None = None,
        *,
        statuses: Sequence[JobStatus] = (JobStatus.QUEUED, JobStatus.RUNNING),
    ) -> list[str]:
        """Cancel queued and running jobs (all of them in `statuses` when job_ids is None).

        Returns the ids cancelled. A queued job never starts; the sheep running a running job
        notices at its next heartbeat (within about 2 s) and kills the payload's process group,
        and the runtime's late report of that attempt is refused by the catalog. On a scheduler
        backend (Slurm) the scheduler's tasks of those jobs are removed as well (`scancel`).
        """
        cancelled = self.catalog.cancel(job_ids, now=self.clock(), statuses=statuses)
        if cancelled:
            from shepard.backends import open_scheduler

            # e.g. Slurm: remove the cancelled jobs' tasks
            scheduler = open_scheduler(self.config.backend.kind, self.backend_context())
            if scheduler is not None:
                scheduler.cancel(cancelled)
        return cancelled

    def retry(
        self,
        job_ids: Sequence[str] | None = None,
        *,
        statuses: Sequence[JobStatus] = (JobStatus.FAILED,),
        since: float | None = None,
        tag: str | None = None,
        extra_attempts: int = 1,
    ) -> list[str]:
        """Queue terminal jobs again as new attempts of the same ids; return the ids requeued.

        Only jobs in `statuses` (failed by default), finished at or after `since` (epoch
        seconds), and whose TAG parameter equals `tag` ignoring case (the key's case is ignored
        too), are taken; each may run `extra_attempts` more times.
        """
        if tag is not None:
            wanted = tag.casefold()
            job_ids = [
                job.id
                for job in self._jobs(job_ids, statuses)
                if (find_key(job.params, "TAG") or "").casefold() == wanted
            ]
        return self.catalog.requeue(
            job_ids, now=self.clock(), statuses=statuses, since=since,
            extra_attempts=extra_attempts,
        )  # fmt: skip

    def active_named(self, names: Collection[str] | None) -> list[Job]:
        """Queued and running jobs whose name (`workitems.job_name`: its work item) is in
        `names` (None: every queued and running job), oldest first. Every page of both
        states is read, unlike the original's `stop_jobs.py` (first page of RUNNING only)."""
        wanted = None if names is None else set(names)
        statuses = (JobStatus.QUEUED, JobStatus.RUNNING)
        return [
            job
            for job in self._jobs(None, statuses)
            if wanted is None or job_name(job.params) in wanted
        ]

    def _jobs(self, job_ids: Sequence[str] | None, statuses: Sequence[JobStatus]) -> Iterator[Job]:
        """The named jobs, or every job in `statuses` (oldest first, paged)."""
        if job_ids is not None:
            for job_id in job_ids:
                job = self.catalog.get(job_id)
                if job is not None and job.status in statuses:
                    yield job
            return
        for status in statuses:
            after: int | None = None
            while page := self.catalog.page(
                status=status, limit=1000, after_seq=after, newest_first=False
            ):
                yield from page
                after = page[-1].seq

    # -- running --------------------------------------------------------------------------

    def run(
        self,
        stop: threading.Event,
        *,
        until: Callable[[], bool] | None = None,
        workers: int | None = None,
        wakeup: threading.Event | None = None,
        backend: Backend | SchedulerBackend | None = None,
    ) -> None:
        """Run queued jobs with the flock's backend until `stop` is set or `until()` is true.

        The local backend runs them here (`workers` slots, default `backend.workers`); a
        scheduler backend (Slurm) hands them to its scheduler, whose tasks run them.
        Setting `wakeup` makes the dispatcher look again at once (new jobs, `until` changed).
        `backend`: one opened with `open_backend` (with the same `wakeup`); it is shut down
        on return.
        """
        from shepard.dispatcher import Dispatcher

        wakeup = wakeup or threading.Event()
        if backend is None:
            backend = self.open_backend(workers=workers, wakeup=wakeup)
        dispatcher = Dispatcher(
            self.catalog, backend, self.config.retry.policy(), worker_id=worker_id(),
            lease=self.config.backend.lease, wakeup=wakeup, clock=self.clock,
        )  # fmt: skip
        try:
            dispatcher.run(stop, until)
        finally:
            backend.shutdown(kill=stop.is_set())

    def open_backend(
        self, *, workers: int | None = None, wakeup: threading.Event | None = None
    ) -> Backend | SchedulerBackend:
        """The flock's backend, ready for `run`. Open it before this process starts threads
        of its own: a local backend then starts its runner processes as forks, at once."""
        from shepard.backends import open_backend, spares

        be_patient(self.catalog)  # whatever runs jobs runs long (and so does an inbox beside)
        ctx = self.backend_context(workers=workers, wakeup=wakeup, worker=worker_id())
        try:
            return open_backend(self.config.backend.kind, ctx)
        finally:
            spares.discard()  # the spare runners the command started and the backend left

    def backend_context(
        self,
        *,
        workers: int | None = None,
        wakeup: threading.Event | None = None,
        worker: str = "",
    ) -> BackendContext:
        """What the flock's backend may see of it (backends/base.py): `worker` is the id this
        process claims under ("" for commands that claim nothing)."""
        from shepard.backends.base import BackendContext

        backend = self.config.backend
        return BackendContext(
            name=self.config.name, folder=self.dir.folder, catalog=self.catalog,
            catalog_url=self.dir.catalog_url, settings=backend.section(),
            workers=workers or backend.workers, lease=backend.lease,
            policy=self.config.retry.policy(), worker_id=worker, clock=self.clock,
            wakeup=wakeup or threading.Event(), store=self.store,
            runtime=self.runtime_context,
        )  # fmt: skip

    def task_setup(self) -> TaskSetup:
        """What this flock's scheduler tasks need (`shepard worker run --manifest`, `worker
        serve`), from its backend class; for a backend without tasks of its own (local), a
        setup for sheep started by hand (`worker serve` on any machine)."""
        from shepard.backends import backend_class
        from shepard.scheduler_task import handmade_setup

        cls = backend_class(self.config.backend.kind)
        make = getattr(cls, "task_setup", handmade_setup)
        setup: TaskSetup = make(self.backend_context())
        return setup

    def run_job(self, job_id: str) -> JobStatus | None:
        """Claim and run one specific queued job here (what `shepard worker run JOB` does).

        Returns the job's new status, or None when the job was not claimable (already taken,
        finished or cancelled), in which case nothing ran.
        """
        from shepard.sheep import Heartbeat, run_claimed

        lease = self.config.backend.lease
        claimed = self.catalog.claim(
            worker_id(), now=self.clock(), lease=lease, limit=1, job_ids=[job_id]
        )
        if not claimed:
            return None
        heartbeat = Heartbeat(self.catalog, lease, self.clock).start()
        try:
            control = heartbeat.hold(claimed[0])
            policy = self.config.retry.policy()
            return run_claimed(claimed[0], self.runtime_context(), self.catalog, policy, control)
        finally:
            heartbeat.close()

    def wait(
        self,
        batch: str,
        stop: threading.Event,
        *,
        on_progress: Progress | None = None,
        poll: float = 0.25,
    ) -> dict[JobStatus, int]:
        """Run jobs here until every job of `batch` is terminal (other processes may help)."""
        done, wakeup, ended = threading.Event(), threading.Event(), threading.Event()
        counter = PacedCounts(lambda: self.counts(batch))

        def over(counts: dict[JobStatus, int]) -> bool:
            if counts[JobStatus.QUEUED] + counts[JobStatus.RUNNING] == 0:
                done.set()
            return done.is_set()

        busy_here = True

        def settled() -> bool:
            nonlocal busy_here
            # asked after each dispatcher step, one of which follows the last slot running
            # out of work: the end is seen at once rather than at the next progress poll.
            # While jobs run here nothing is counted (the watcher covers the rare case of
            # slots busy with other batches' jobs); once idle, counts are paced.
            if done.is_set():
                return True
            active = getattr(backend, "active", None)
            running = active() if active is not None else 0
            went_idle, busy_here = busy_here and running == 0, running > 0
            if running or not (went_idle or counter.due()):
                return False
            return over(counter.count())

        def watch() -> None:
            while not ended.is_set():
                counts = counter.count()
                if on_progress:
                    on_progress(counts)
                if over(counts):
                    wakeup.set()
                    return
                ended.wait(max(poll, counter.spacing()))

        backend = self.open_backend(wakeup=wakeup)  # before the thread: see open_backend
        watcher = threading.Thread(target=watch, name="progress", daemon=True)
        watcher.start()
        self.run(stop, until=settled, wakeup=wakeup, backend=backend)
        ended.set()
        watcher.join()
        counts = self.counts(batch)
        if on_progress:
            on_progress(counts)
        return counts


class PacedCounts:
    """Counts for `wait` and `query --watch`, spaced so that counting takes at most a tenth of
    the time: a million jobs take about 0.1 s to count, every 0.25 s that would keep a core
    busy a third of the time. Small flocks count in milliseconds and are not slowed."""

    SHARE = 10  # at least this many times a count's cost between the start of two counts

    def __init__(self, count: Callable[[], dict[JobStatus, int]]) -> None:
        self._count = count
        self._lock = threading.Lock()
        self._last, self._cost = float("-inf"), 0.0

    def count(self) -> dict[JobStatus, int]:
        began = time.monotonic()
        counts = self._count()
        with self._lock:
            self._last, self._cost = began, time.monotonic() - began
        return counts

    def spacing(self) -> float:
        """Seconds to leave between the starts of two counts."""
        with self._lock:
            return self.SHARE * self._cost

    def due(self) -> bool:
        with self._lock:
            return time.monotonic() - self._last >= self.SHARE * self._cost


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def new_batch_label() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def _zip_key(name: str) -> str:
    name = name if name.lower().endswith(".zip") else name + ".zip"
    if "/" in name or "\\" in name or name.startswith("."):
        raise ShepardError(f"invalid bundle name {name!r}: use a plain file name")
    return name
