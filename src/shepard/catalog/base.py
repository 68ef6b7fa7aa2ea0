"""The catalog contracts: where job state lives.

Two protocols, which a catalog implements together (`Catalog`):
- `JobStore`, the core: submissions (streamed, idempotent), the life of an attempt (claim,
  heartbeat, finish, release, lease expiry), a user's cancel and retry, and the queries.
- `PlacementStore`, for engine backends (Slurm, and any engine with a queue of its own):
  queued jobs handed to an engine queue entry and claimed later by its task (placing.py).

What each change does to a job is decided by the state machine (`states.py`); an
implementation reads the facts it needs, calls it, and writes the answer atomically. The
catalog suite (tests/integration/test_catalog*.py, through the `catalog_factory` fixture) is
the executable form of these contracts: every implementation must pass it.

Times are epoch seconds (float) passed in by the caller, so tests script the clock.
Every state change is fenced: it names the attempt it belongs to, and a change for an attempt
that is no longer the job's current running attempt is refused (None), so a worker that lost
its lease can never overwrite what a newer attempt recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from shepard.errors import ShepardError
from shepard.model import Ended, Job, JobEvent, JobSpec, JobStatus, Outcome


class IdempotencyConflict(ShepardError):
    """An idempotency key was used again with a different request (a 409-style error)."""


class PartPage(list[Job]):
    """What `JobStore.page` may return when it stopped reading before its page was full (a
    catalog that bounds what one filtered page reads): the jobs found, maybe none, and
    `read_to`, the seq of the last job it read. The next page goes on from there
    (`before_seq=read_to` newest first, `after_seq=read_to` oldest first)."""

    def __init__(self, jobs: Iterable[Job], read_to: int) -> None:
        super().__init__(jobs)
        self.read_to = read_to


@dataclass(frozen=True)
class Registered:
    """What a keyed submission registered; `replayed`: by an earlier request with the key."""

    batch: str
    ids: list[str]
    replayed: bool


class JobStore(Protocol):
    """The core job store. Every method is atomic (all or nothing) and safe to call from many
    threads and processes at once; a store that cannot be reached raises CatalogError."""

    def add_jobs(self, specs: Iterable[JobSpec], *, now: float, default_attempts: int) -> list[str]:
        """Register every spec as a QUEUED job in ONE transaction; return the new ids in order.

        Streams `specs` (never materialises more than a chunk of rows at once), so a million
        specs from a generator stay within bounded memory. If anything fails, nothing is added.
        `default_attempts` fills `max_attempts` where a spec leaves it None.
        """
        ...

    def submit_jobs(
        self,
        specs: Iterable[JobSpec],
        *,
        batch: str,
        now: float,
        default_attempts: int,
        clock: Callable[[], float] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Register every spec as a QUEUED job labelled `batch`, all or nothing, without ever
        holding the write lock for long nor keeping the ids; return how many (see staging.py).
        """
        ...

    def batch_ids(self, batch: str, *, chunk: int = 10_000) -> Iterator[str]:
        """The ids of the jobs labelled `batch`, in submission order, streamed."""
        ...

    def referenced_bundles(self, keys: Iterable[str]) -> set[str]:
        """Those of `keys` that some job names as its bundle."""
        ...

    def sweep_submissions(
        self, *, now: float, stale_after: float = ..., budget: int | None = None
    ) -> int:
        """Finish the streamed submissions whose process died (see staging.py)."""
        ...

    def claim(
        self,
        worker: str,
        *,
        now: float,
        lease: float,
        limit: int = 1,
        job_ids: Sequence[str] | None = None,
    ) -> list[Job]:
        """Atomically move up to `limit` claimable jobs to RUNNING for `worker`; return them.

        Claimable: QUEUED with `not_before` unset or <= now and no placement, oldest `seq`
        first; restricted to `job_ids` when given. Each claimed job gets attempt += 1,
        lease_until = now + lease, worker, and started_at = a START_TIME (int epoch seconds)
        strictly greater than the started_at of any earlier attempt of that job (so output
        names never collide).
        Concurrent callers (threads, processes, hosts) never receive the same job.
        A RUNNING event is recorded per claimed job.
        """
        ...

    def heartbeat(self, held: Sequence[tuple[str, int]], *, now: float, lease: float) -> set[str]:
        """Extend the leases of (job_id, attempt) pairs still held; return the ids extended.

        An id missing from the result means that attempt is no longer current (lease expired and
        re-queued, cancelled, ...): its worker must stop and must not publish anything.
        """
        ...

    def finish(
        self,
        job_id: str,
        attempt: int,
        outcome: Outcome,
        *,
        now: float,
        retry_at: float | None = None,
    ) -> JobStatus | None:
        """Record how `attempt` ended. Fenced: returns None if `attempt` is not current/running.

        If `outcome.status` is FAILED, `retry_at` is given, `outcome.retryable` and the job has
        attempts left (attempt < max_attempts), the job goes back to QUEUED with
        not_before = retry_at instead of FAILED. Returns the status the job ended up in.
        Records an event carrying the reason, followed by `outcome.detail` when set.
        The change is the state machine's (`states.finished`); the read of the job's facts
        and the write are one atomic step. Raises ValueError if `outcome` is not terminal.
        """
        ...

    def finish_and_claim(
        self,
        ended: Sequence[Ended],
        *,
        now: float,
        worker: str,
        lease: float,
        limit: int = 1,
    ) -> tuple[list[JobStatus | None], list[Job]]:
        """`finish` each of `ended` (in order), then `claim(worker, now=now, lease=lease,
        limit=limit)`, all in ONE transaction; returns the statuses `finish` would have
        returned, one per entry, and the claimed jobs.

        What a sheep calls when attempts end and it can start others: one round trip instead
        of one per attempt plus one per claim. Each part behaves (and records events) exactly
        as the method it stands for; the claim happens even when a finish is refused (None).
        """
        ...

    def release(self, job_id: str, attempt: int, *, now: float, detail: str) -> JobStatus | None:
        """Give a RUNNING attempt back to the queue without spending an attempt (fenced).

        Used when a sheep shuts down cleanly: the job becomes QUEUED at once and its
        max_attempts grows by one, so the next claim's attempt number still goes up
        (`states.released`).
        """
        ...

    def expire_leases(self, *, now: float, retry_at: float | None = None) -> list[str]:
        """Handle RUNNING jobs whose lease ended before `now` (their worker died or hung).

        Each becomes QUEUED again (not_before = retry_at) if it has attempts left, else FAILED,
        with reason "lease expired (worker lost)". Returns the ids handled, in seq order.
        A lost attempt is not spent; MAX_LOST losses fail the job (`states.expired`).
        """
        ...

    def cancel(
        self,
        job_ids: Sequence[str] | None = None,
        *,
        now: float,
        statuses: Sequence[JobStatus] = (JobStatus.QUEUED, JobStatus.RUNNING),
    ) -> list[str]:
        """Mark matching non-terminal jobs CANCELLED (all jobs in `statuses` when job_ids is None).

        Returns the ids cancelled, in seq order (`states.cancelled`). A RUNNING job's worker
        learns it through `heartbeat`.
        """
        ...

    def requeue(
        self,
        job_ids: Sequence[str] | None = None,
        *,
        now: float,
        statuses: Sequence[JobStatus] = (JobStatus.FAILED,),
        since: float | None = None,
        extra_attempts: int = 1,
    ) -> list[str]:
        """Put terminal jobs back to QUEUED as new attempts of the same ids (`shepard retry`).

        max_attempts grows so that `extra_attempts` more attempts are allowed. `since` limits to
        jobs finished at or after that time. Returns the ids requeued, in seq order
        (`states.requeued`). Raises ValueError if `extra_attempts` < 1.
        """
        ...

    def ready(self, *, now: float) -> int:
        """How many jobs `claim` could take at `now` (QUEUED, due, without a placement)."""
        ...

    # -- queries ----------------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        """The job `job_id` (None if there is none, or its submission is not committed yet)."""
        ...

    def events(self, job_id: str) -> list[JobEvent]:
        """The job's history, oldest first (QUEUED at submission, then each transition)."""
        ...

    def counts(self, *, batch: str | None = None) -> dict[JobStatus, int]:
        """Number of jobs in each status (every status present, zero included).

        With `batch`, only the jobs of that submission.
        """
        ...

    def page(
        self,
        *,
        status: JobStatus | None = None,
        worker: str | None = None,
        batch: str | None = None,
        tag: str | None = None,
        since: float | None = None,
        limit: int = 50,
        before_seq: int | None = None,
        after_seq: int | None = None,
        newest_first: bool = True,
        param: tuple[str, str] | None = None,
        text: str | None = None,
    ) -> list[Job]:
        """Jobs in `seq` order, keyset-paged by seq, optionally filtered by status, by the
        worker that claimed them last, by batch label, by tag (a parameter named TAG in any
        case whose value equals `tag` ignoring case), by any parameter (`param`: (key, value),
        compared as the tag is), by text anywhere in the parameters (`text`, any case) and by
        submission time (`since`: epoch seconds, submitted at or after). Filters combine
        with AND.

        A catalog that bounds the jobs one page may read and reject (the DynamoDB catalog,
        for the filters on parameters) may stop short of `limit` jobs before it reached the
        end: it then returns a `PartPage` saying where it stopped."""
        ...

    def ended_per_minute(self, *, since: float) -> dict[int, dict[JobStatus, int]]:
        """Attempts that ended succeeded or failed at or after `since` (from the jobs'
        history), counted per minute (whole minutes since the epoch) and status: the
        dashboard's throughput. Must not read every job: it is asked every few seconds."""
        ...

    def count_marks(self) -> tuple[int, int]:
        """Opaque marks (two integers) of the catalog's state, for `count_changes`; read
        them before the `counts` they go with."""
        ...

    def count_changes(self, *, after_event: int, after_seq: int) -> dict[JobStatus, int]:
        """How the jobs per status changed since `count_marks` returned these marks (every
        status present, negative for fewer). Its cost follows what happened since, not the
        size of the catalog: the dashboard adds it to a full count between full counts."""
        ...

    def recent_batches(self, *, limit: int = 8) -> list[str]:
        """Up to `limit` batch labels, most recently submitted first (the dashboard's
        progress bars). Must not read whole batches."""
        ...

    def add_jobs_once(
        self,
        key: str,
        request_hash: str,
        batch: str,
        specs: Iterable[JobSpec],
        *,
        now: float,
        default_attempts: int,
    ) -> Registered:
        """`add_jobs(specs)` (each spec carrying `batch`) under the client's idempotency `key`,
        in ONE transaction with the key's record.

        If `key` was used before, nothing is added and what that request registered comes
        back with `replayed` set; IdempotencyConflict if that request's `request_hash` differs.
        Concurrent calls with one key register the jobs exactly once.
        """
        ...

    def add_jobs_once_each(
        self,
        requests: Sequence[tuple[str, str, str, Sequence[JobSpec]]],
        *,
        now: float,
        default_attempts: int,
    ) -> list[Registered]:
        """`add_jobs_once(key, request_hash, batch, specs)` for each request, in ONE
        transaction (their locks taken in one order, so concurrent callers cannot deadlock); the
        answers in the order of `requests`. For triggers that register many keyed bundles."""
        ...

    def close(self) -> None:
        """Release connections; the catalog must not be used afterwards."""
        ...


class PlacementStore(Protocol):
    """Engine placements: queued jobs handed to an engine's own queue (see placing.py).

    A placed job stays QUEUED but is never claimed by `JobStore.claim` nor placed again until
    its engine task claims it (`claim_placed`) or the reconciler takes it back (`unplace`).
    Every change names the placement it expects, so a late task of an old engine queue entry
    can never take a job meanwhile handed to a newer one. Atomic and concurrent-safe like
    JobStore.
    """

    def place(self, placement: str, *, now: float, limit: int) -> list[str]:
        """Mark up to `limit` QUEUED jobs that `claim` could take now (and carry no placement)
        with `placement`, oldest seq first; return their ids in seq order.

        Placed jobs stay QUEUED but are never claimed by `claim` nor placed again: they wait
        for `claim_placed`. Concurrent callers never place the same job.
        """
        ...

    def rename_placement(self, old: str, new: str) -> int:
        """Change the placement of every job placed under `old` to `new`; return the count."""
        ...

    def claim_placed(
        self,
        worker: str,
        job_id: str,
        placements: Sequence[str],
        *,
        now: float,
        lease: float,
    ) -> Job | None:
        """Claim `job_id` exactly as `claim` would, provided it is QUEUED and placed under one
        of `placements`; the claim clears the placement. None when that is not the case."""
        ...

    def unplace(
        self,
        job_ids: Sequence[str],
        placement: str,
        *,
        now: float,
        detail: str,
        lost: bool = True,
    ) -> list[str]:
        """Clear the placement of those `job_ids` that are QUEUED and still placed under
        `placement` (their engine task ended without claiming them); `detail` is recorded in
        their history. With `lost` the job's lost-worker count grows, and a job reaching
        MAX_LOST fails with `detail` as its reason. Returns the ids changed, in seq order."""
        ...

    def placed(self, *, limit: int = 1000, after_seq: int | None = None) -> list[Job]:
        """QUEUED jobs carrying a placement, in seq order, keyset-paged by seq."""
        ...

    def placements(self) -> dict[str, int]:
        """Every placement that QUEUED jobs carry, with the number of such jobs."""
        ...

    def placed_in(self, placements: Sequence[str]) -> list[Job]:
        """Jobs in any status whose placement is one of `placements`, in seq order."""
        ...

    def lose(
        self, job_id: str, attempt: int, *, now: float, reason: str, retry_at: float | None = None
    ) -> JobStatus | None:
        """Handle RUNNING `attempt` as if its lease had expired now, with `reason` (its worker
        is known to be gone): QUEUED again (not_before = retry_at) without spending an
        attempt, or FAILED once the job has lost MAX_LOST workers. Fenced: None if `attempt`
        is not the job's current running attempt."""
        ...


TOUCH_EVERY = 60.0
"""Seconds between two writes of a token's last use (`TokenStore.find_token`)."""


@dataclass(frozen=True)
class StoredToken:
    """An API token as the catalog keeps it: the sha256 hex digest of its secret, never the
    secret itself."""

    name: str
    digest: str
    read_only: bool
    created_at: float
    last_used_at: float | None


class TokenStore(Protocol):
    """API tokens (`shepard token`, `shepard serve`), kept by name with the digest of their
    secret; the caller hashes (shepard.tokens)."""

    def add_token(self, token: StoredToken) -> None:
        """Store a new token; ShepardError if its name is taken."""
        ...

    def tokens(self) -> list[StoredToken]:
        """Every token, by name."""
        ...

    def find_token(self, digest: str, *, now: float) -> StoredToken | None:
        """The token whose secret hashes to `digest` (None if none), noting its use at `now`
        (at most about once a minute, so a busy API does not write on every request)."""
        ...

    def revoke_token(self, name: str) -> bool:
        """Remove a token; False if there was none of that name."""
        ...


class Catalog(JobStore, PlacementStore, TokenStore, Protocol):
    """A complete catalog: the job store and the engine placements over the same jobs.
    Implementations are registered by URL scheme in `shepard.catalog.CATALOGS`."""

    @property
    def url(self) -> str:
        """The catalog's URL, with any password replaced by ***."""
        ...

    def be_patient(self) -> None:
        """From now on, wait out another process's long hold on the catalog (logging it)
        instead of raising CatalogError: for long-running processes (dispatchers, sheep,
        runners), which must never die because a short command is busy. A catalog with no
        such wait does nothing."""
        ...
