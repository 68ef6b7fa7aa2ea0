"""SqlCatalog: the Catalog on SQLite or PostgreSQL, through one SQLAlchemy Core code path.

Concurrency model: every method runs in its own short transaction on a pooled connection, so
one instance can be shared by many threads, and many processes can share one database.
- Claiming is one `UPDATE ... WHERE seq IN (SELECT ... LIMIT n) RETURNING ...`. On PostgreSQL
  the subquery is `FOR UPDATE SKIP LOCKED`, so concurrent claimers take disjoint rows without
  waiting; SQLite renders no FOR UPDATE, and its BEGIN IMMEDIATE serialises writers instead.
- What a change does to a job is the state machine's (states.py): each transition reads the
  job's facts (rows locked with FOR UPDATE on PostgreSQL; SQLite's writers take turns),
  asks `states`, and writes the answer in the same transaction (`statements.apply_changes`).
  Which jobs a claim or a placement takes stays one set-based statement (the hot path).
- Every change made on behalf of an attempt is fenced by `id, attempt, status = 'running'`.
- The statements of a job's life (claim, finish, their history rows: statements.py) are
  compiled once (prepared.py) and run in `_hot` transactions on a bare DBAPI connection.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from shepard.catalog import engine as _engine
from shepard.catalog import states
from shepard.catalog.base import Registered
from shepard.catalog.bulk import insert_specs
from shepard.catalog.listing import (
    count_changes,
    count_marks,
    ended_per_minute,
    page_queries,
    recent_batches,
    submit_each,
    submit_once,
)
from shepard.catalog.migrate import ensure_schema
from shepard.catalog.placing import SqlPlacements
from shepard.catalog.prepared import Prepared
from shepard.catalog.schema import STAGED, job_events, jobs
from shepard.catalog.staging import Staging
from shepard.catalog.statements import (
    CLAIM,
    CLAIM_IDS,
    FINISH,
    FINISH_FACTS,
    INSERT_EVENT,
    apply_changes,
    by_seq,
    chunks,
    claim_params,
    dbapi,
    event_row,
    events_rows,
    stored,
    to_facts,
    to_job,
)
from shepard.catalog.tokens import SqlTokens
from shepard.model import Ended, Job, JobEvent, JobSpec, JobStatus, Outcome

MAX_LOST = states.MAX_LOST
_RUNNING = JobStatus.RUNNING.value


class SqlCatalog(SqlPlacements, Staging, SqlTokens):
    """A Catalog stored in the database at `url` (see `shepard.catalog.open_catalog`).

    `patient` (an attribute too, see `be_patient`): never fail because another process holds
    the SQLite write lock for long; wait, and log once that it is waiting (for long-running
    processes; see engine.begin_immediate). Else such a wait ends in CatalogError.
    Opening brings the database to the current schema. Database failures surface as
    CatalogError with a message naming the catalog (password hidden).
    """

    def __init__(self, url: str, *, create: bool = True, patient: bool = False) -> None:
        self._url = _engine.parse_url(_engine.memory_as_sqlite(url))
        if not create:
            _engine.check_exists(self._url)
        self.patient = patient
        self._engine = _engine.create_engine(self._url, patient=lambda: self.patient)
        # An in-memory SQLite database is one shared connection: transactions must not overlap.
        self._serial: contextlib.AbstractContextManager[Any] = (
            threading.RLock() if _engine.is_memory(self._url) else contextlib.nullcontext()
        )
        # SQLite allows one writer at a time, and a writer that finds the database locked
        # sleeps in SQLite's busy handler for whole milliseconds. Queue this process's own
        # writers on a lock instead, so only writers from other processes ever wait there.
        self._writer: contextlib.AbstractContextManager[Any] = (
            threading.Lock()
            if self._url.get_backend_name() == "sqlite"
            else contextlib.nullcontext()
        )
        self._driver_error = _engine.driver_errors(self._engine)
        # SQLite writers take turns on `_writer` anyway: `_hot` keeps one connection rather
        # than taking one from the pool and giving it back for every transaction
        self._keep = self._url.get_backend_name() == "sqlite"
        self._kept: Any = None
        with self._serial, _engine.catalog_errors(self._url):
            ensure_schema(self._engine, create=create)
        dialect = self._engine.dialect
        job_columns = [c.name for c in jobs.c]
        self._claim = Prepared(CLAIM, dialect, job_columns)
        self._facts = Prepared(
            FINISH_FACTS, dialect, [c.name for c in FINISH_FACTS.selected_columns]
        )
        self._finish = Prepared(FINISH, dialect, ["id"])
        self._event = Prepared(
            INSERT_EVENT, dialect, insert_keys=("job_id", "attempt", "status", "at", "detail")
        )

    @classmethod
    def from_url(cls, url: str, *, create: bool, patient: bool) -> SqlCatalog:
        """See shepard.catalog.CatalogClass."""
        return cls(url, create=create, patient=patient)

    @classmethod
    def check_url(cls, url: str) -> None:
        """See shepard.catalog.CatalogClass."""
        _engine.parse_url(_engine.memory_as_sqlite(url))

    @classmethod
    def in_process(cls, url: str) -> bool:
        """See shepard.catalog.CatalogClass."""
        return _engine.is_memory(_engine.parse_url(_engine.memory_as_sqlite(url)))

    def be_patient(self) -> None:
        """See Catalog.be_patient."""
        self.patient = True

    @property
    def url(self) -> str:
        """The catalog URL with any password replaced by ***."""
        return self._url.render_as_string(hide_password=True)

    def __repr__(self) -> str:
        return f"SqlCatalog({self.url!r})"

    def close(self) -> None:
        with self._serial, self._writer:
            kept, self._kept = self._kept, None
        if kept is not None:
            kept.close()
        self._engine.dispose()

    def _job(self, row: Mapping[Any, Any]) -> Job:
        return to_job(row)

    @contextlib.contextmanager
    def _transaction(self, *, read_only: bool = False) -> Iterator[Connection]:
        """One transaction on a pooled connection; commits on success, rolls back on error."""
        writer = contextlib.nullcontext() if read_only else self._writer
        with (
            self._serial,
            writer,
            _engine.catalog_errors(self._url, self._driver_error),
            self._engine.connect() as conn,
        ):
            if read_only:
                conn.execution_options(**{_engine.READ_ONLY: True})
            with conn.begin():
                yield conn

    @contextlib.contextmanager
    def _hot(self) -> Iterator[Any]:
        """A write transaction on a bare DBAPI connection, for the prepared statements only:
        what `_transaction` does, without SQLAlchemy's per-statement machinery."""
        with (
            self._serial,
            self._writer,
            _engine.catalog_errors(self._url, self._driver_error),
        ):
            raw = self._kept or self._engine.raw_connection()
            try:
                if self._keep:  # SQLite: open the write transaction as `_on_begin` does
                    _engine.begin_immediate(
                        raw.driver_connection, patient=self.patient, name=self.url
                    )
                yield raw
                raw.commit()
            except BaseException:
                with contextlib.suppress(Exception):
                    raw.rollback()
                self._kept = None
                raw.close()  # back to the pool, or dropped when broken
                raise
            if self._keep:
                self._kept = raw
            else:
                raw.close()

    def _record(
        self,
        conn: Connection,
        held: Sequence[tuple[str, int]],
        status: JobStatus,
        now: float,
        detail: str | None,
    ) -> None:
        """Append one event per (job_id, attempt) to the history."""
        if held:
            self._event.many(dbapi(conn), events_rows(held, status, now, detail))

    # -- submission -------------------------------------------------------------------------

    def add_jobs(self, specs: Iterable[JobSpec], *, now: float, default_attempts: int) -> list[str]:
        """Insert QUEUED rows in chunks (see `bulk`), all inside one transaction.

        No event row is written per job: `events()` derives the QUEUED entry from submitted_at,
        which keeps a million-job submission to one insert per job.
        """
        with self._transaction() as conn:
            return insert_specs(conn, specs, now=now, default_attempts=default_attempts)

    # -- the life of an attempt -------------------------------------------------------------

    def claim(
        self,
        worker: str,
        *,
        now: float,
        lease: float,
        limit: int = 1,
        job_ids: Sequence[str] | None = None,
    ) -> list[Job]:
        if limit < 1 or (job_ids is not None and not job_ids):
            return []
        if job_ids is None:
            with self._hot() as raw:
                claimed, events = self._claim_in(raw, worker, now=now, lease=lease, limit=limit)
                if events:
                    self._event.many(raw, events)
            return claimed
        params = claim_params(worker, now=now, lease=lease, limit=limit)
        params["ids"] = list(job_ids)
        with self._transaction() as conn:
            rows = conn.execute(CLAIM_IDS, params).mappings()
            claimed = sorted((to_job(row) for row in rows), key=by_seq)
            self._record(conn, [(j.id, j.attempt) for j in claimed], JobStatus.RUNNING, now, worker)
        return claimed

    def _claim_in(
        self, raw: Any, worker: str, *, now: float, lease: float, limit: int
    ) -> tuple[list[Job], list[dict[str, Any]]]:
        """Claim in the open `_hot` transaction; return the jobs and their history rows."""
        params = claim_params(worker, now=now, lease=lease, limit=limit)
        claimed = sorted((to_job(row) for row in self._claim.rows(raw, params)), key=by_seq)
        held = [(job.id, job.attempt) for job in claimed]
        return claimed, events_rows(held, JobStatus.RUNNING, now, worker)

    def heartbeat(self, held: Sequence[tuple[str, int]], *, now: float, lease: float) -> set[str]:
        extended: set[str] = set()
        if not held:
            return extended
        with self._transaction() as conn:
            for chunk in chunks(list(held)):
                stmt = (
                    jobs.update()
                    .where(sa.tuple_(jobs.c.id, jobs.c.attempt).in_(chunk))
                    .where(jobs.c.status == _RUNNING)
                    .values(lease_until=now + lease)
                    .returning(jobs.c.id)
                )
                extended.update(conn.execute(stmt).scalars())
        return extended

    def finish(
        self,
        job_id: str,
        attempt: int,
        outcome: Outcome,
        *,
        now: float,
        retry_at: float | None = None,
    ) -> JobStatus | None:
        with self._hot() as raw:
            status, events = self._finish_in(raw, job_id, attempt, outcome, now, retry_at)
            if events:
                self._event.many(raw, events)
        return status

    def finish_and_claim(
        self,
        ended: Sequence[Ended],
        *,
        now: float,
        worker: str,
        lease: float,
        limit: int = 1,
    ) -> tuple[list[JobStatus | None], list[Job]]:
        """See Catalog.finish_and_claim: `finish` each, then `claim`, in one transaction."""
        statuses: list[JobStatus | None] = []
        events: list[dict[str, Any]] = []
        with self._hot() as raw:
            for job_id, attempt, outcome, retry_at in ended:
                status, finished = self._finish_in(raw, job_id, attempt, outcome, now, retry_at)
                statuses.append(status)
                events += finished
            claimed: list[Job] = []
            if limit >= 1:
                claimed, claim_events = self._claim_in(
                    raw, worker, now=now, lease=lease, limit=limit
                )
                events += claim_events
            if events:
                self._event.many(raw, events)
        return statuses, claimed

    def _finish_in(
        self,
        raw: Any,
        job_id: str,
        attempt: int,
        outcome: Outcome,
        now: float,
        retry_at: float | None,
    ) -> tuple[JobStatus | None, list[dict[str, Any]]]:
        """Finish in the open `_hot` transaction; return the new status and its history row
        (what `states.finished` decides from the row's facts). The facts are read only when
        the decision needs them (`states.needs_facts`); the write is fenced either way."""
        if states.needs_facts(outcome, retry_at):
            found = self._facts.rows(raw, {"b_id": job_id})
            facts = to_facts(found[0]) if found else None
        else:
            facts = states.fenced(attempt)
        if facts is None:
            if not outcome.status.terminal:
                raise ValueError(f"an attempt cannot end as {outcome.status.value!r}")
            return None, []
        change = states.finished(facts, attempt, outcome, now=now, retry_at=retry_at)
        if change is None:
            return None, []
        values = stored(change)
        params = {f"b_{k}": v for k, v in values.items()}
        params["b_id"], params["b_attempt"] = job_id, attempt
        if not self._finish.rows(raw, params):  # fenced out: not the running attempt
            return None, []
        return change.status, [event_row(job_id, attempt, change, now)]

    def release(self, job_id: str, attempt: int, *, now: float, detail: str) -> JobStatus | None:
        """See JobStore.release (`states.released`)."""
        return self._one(
            job_id, lambda facts: states.released(facts, attempt, detail=detail), now=now
        )

    def expire_leases(self, *, now: float, retry_at: float | None = None) -> list[str]:
        """See JobStore.expire_leases (`states.expired`)."""
        expired = sa.and_(jobs.c.status == _RUNNING, jobs.c.lease_until < now)
        with self._transaction() as conn:
            changed = apply_changes(
                conn, expired, lambda f: states.expired(f, now=now, retry_at=retry_at), now=now
            )
        return [job_id for _seq, job_id, _attempt, _change in changed]

    # -- user actions -----------------------------------------------------------------------

    def cancel(
        self,
        job_ids: Sequence[str] | None = None,
        *,
        now: float,
        statuses: Sequence[JobStatus] = (JobStatus.QUEUED, JobStatus.RUNNING),
    ) -> list[str]:
        """See JobStore.cancel (`states.cancelled`)."""
        wanted = jobs.c.status.in_([s.value for s in statuses if not s.terminal])
        return self._many(job_ids, wanted, lambda f: states.cancelled(f, now=now), now=now)

    def requeue(
        self,
        job_ids: Sequence[str] | None = None,
        *,
        now: float,
        statuses: Sequence[JobStatus] = (JobStatus.FAILED,),
        since: float | None = None,
        extra_attempts: int = 1,
    ) -> list[str]:
        """See JobStore.requeue (`states.requeued`)."""
        if extra_attempts < 1:
            raise ValueError(f"extra_attempts must be at least 1, not {extra_attempts}")
        wanted: sa.ColumnElement[bool] = jobs.c.status.in_(
            [s.value for s in statuses if s.terminal]
        )
        if since is not None:
            wanted = sa.and_(wanted, jobs.c.finished_at >= since)
        return self._many(
            job_ids, wanted, lambda f: states.requeued(f, extra_attempts=extra_attempts), now=now
        )

    def _many(
        self,
        job_ids: Sequence[str] | None,
        where: sa.ColumnElement[bool],
        decide: Callable[[states.Facts], states.Change | None],
        *,
        now: float,
    ) -> list[str]:
        """Apply `decide` to the jobs matching `where` (and among `job_ids`, if given) in one
        transaction; return the ids changed, in seq order."""
        if job_ids is not None and not job_ids:
            return []
        parts = (
            [where]
            if job_ids is None
            else [sa.and_(where, jobs.c.id.in_(chunk)) for chunk in chunks(list(job_ids))]
        )
        changed: list[tuple[int, str, int, states.Change]] = []
        with self._transaction() as conn:
            for part in parts:
                changed.extend(apply_changes(conn, part, decide, now=now))
        return [job_id for _seq, job_id, _a, _c in sorted(changed, key=lambda c: c[0])]

    def _one(
        self,
        job_id: str,
        decide: Callable[[states.Facts], states.Change | None],
        *,
        now: float,
    ) -> JobStatus | None:
        """Apply `decide` to job `job_id`; return its new status, None if nothing changed."""
        with self._transaction() as conn:
            changed = apply_changes(conn, jobs.c.id == job_id, decide, now=now)
        return changed[0][3].status if changed else None

    # -- queries ----------------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        with self._transaction(read_only=True) as conn:
            row = (
                conn.execute(sa.select(jobs).where(jobs.c.id == job_id, jobs.c.status != STAGED))
                .mappings()
                .first()
            )
        return None if row is None else to_job(row)

    def events(self, job_id: str) -> list[JobEvent]:
        """The synthesised QUEUED submission event, then the stored events in insertion order."""
        stored = sa.select(job_events).where(job_events.c.job_id == job_id)
        with self._transaction(read_only=True) as conn:
            submitted = conn.execute(
                sa.select(jobs.c.submitted_at).where(jobs.c.id == job_id)
            ).scalar()
            if submitted is None:
                return []
            rows = conn.execute(stored.order_by(job_events.c.id)).all()
        first = JobEvent(job_id, 0, JobStatus.QUEUED, float(submitted))
        return [first] + [
            JobEvent(job_id, r.attempt, JobStatus(r.status), float(r.at), r.detail) for r in rows
        ]

    def counts(self, *, batch: str | None = None) -> dict[JobStatus, int]:
        """Jobs per status (all statuses, zeros included), in one GROUP BY query.

        With `batch`, the count is answered from the (batch, status) index.
        """
        stmt = sa.select(jobs.c.status, sa.func.count()).group_by(jobs.c.status)
        if batch is not None:
            stmt = stmt.where(jobs.c.batch == batch)
        with self._transaction(read_only=True) as conn:
            found: dict[str, int] = {status: n for status, n in conn.execute(stmt)}
        return {status: found.get(status.value, 0) for status in JobStatus}

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
        """Up to `limit` jobs with before_seq > seq > after_seq (bounds optional), in
        descending seq order when newest_first else ascending. To page on, pass the last
        returned seq as before_seq (newest_first) or after_seq (oldest first).
        Filters: see Catalog.page; the tag filter is explained in `listing`."""
        queries = page_queries(
            self._url.get_backend_name(), status=status, worker=worker, batch=batch, tag=tag,
            since=since, limit=limit, before_seq=before_seq, after_seq=after_seq,
            newest_first=newest_first, param=param, text=text,
        )  # fmt: skip
        with self._transaction(read_only=True) as conn:
            found = [to_job(row) for stmt in queries for row in conn.execute(stmt).mappings()]
        if len(queries) > 1:
            found = sorted(found, key=by_seq, reverse=newest_first)[:limit]
        return found

    def ended_per_minute(self, *, since: float) -> dict[int, dict[JobStatus, int]]:
        """See Catalog.ended_per_minute."""
        with self._transaction(read_only=True) as conn:
            return ended_per_minute(conn, since)

    def count_marks(self) -> tuple[int, int]:
        """See Catalog.count_marks."""
        with self._transaction(read_only=True) as conn:
            return count_marks(conn)

    def count_changes(self, *, after_event: int, after_seq: int) -> dict[JobStatus, int]:
        """See Catalog.count_changes."""
        with self._transaction(read_only=True) as conn:
            return count_changes(conn, after_event, after_seq)

    def recent_batches(self, *, limit: int = 8) -> list[str]:
        """See Catalog.recent_batches."""
        with self._transaction(read_only=True) as conn:
            return recent_batches(conn, limit)

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
        """See Catalog.add_jobs_once."""
        with self._transaction() as conn:
            return submit_once(
                conn, key, request_hash, batch, specs, now=now, default_attempts=default_attempts
            )

    def add_jobs_once_each(
        self,
        requests: Sequence[tuple[str, str, str, Sequence[JobSpec]]],
        *,
        now: float,
        default_attempts: int,
    ) -> list[Registered]:
        """See Catalog.add_jobs_once_each."""
        with self._transaction() as conn:
            return submit_each(conn, requests, now=now, default_attempts=default_attempts)
