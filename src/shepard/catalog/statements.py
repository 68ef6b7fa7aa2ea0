"""The catalog's hot-path statements and row helpers, shared by sql.py and its mixins.

The statements of a job's life (claim, finish, history rows) are built once here, with bind
parameters, and compiled once per dialect by `prepared.Prepared`; the helpers turn rows into
model records and back.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from shepard.catalog.schema import job_events, jobs
from shepard.model import Job, JobStatus

QUEUED, RUNNING = JobStatus.QUEUED.value, JobStatus.RUNNING.value
ID_CHUNK = 500  # ids per IN (...) list, far below every driver's bind-parameter limit


def claim_statement(restricted: bool) -> sa.Update:
    """UPDATE ... WHERE seq IN (oldest claimable ...) RETURNING *, built once with bind
    parameters so each claim pays only for execution, not for building SQL."""
    claimable = (
        sa.select(jobs.c.seq)
        .where(jobs.c.status == QUEUED)
        .where(jobs.c.placement.is_(None))  # placed jobs wait for their engine task
        .where(sa.or_(jobs.c.not_before.is_(None), jobs.c.not_before <= sa.bindparam("now")))
        .order_by(jobs.c.seq)
        .limit(sa.bindparam("limit", type_=sa.Integer()))
        .with_for_update(skip_locked=True)  # rendered on PostgreSQL only
    )
    if restricted:
        claimable = claimable.where(jobs.c.id.in_(sa.bindparam("ids", expanding=True)))
    # START_TIME must exceed every earlier attempt's, even within the same second.
    start = sa.bindparam("start", type_=sa.BigInteger())
    started_at = sa.case((jobs.c.started_at >= start, jobs.c.started_at + 1), else_=start)
    return (
        jobs.update()
        .where(jobs.c.seq.in_(claimable.scalar_subquery()))
        .values(
            status=RUNNING,
            attempt=jobs.c.attempt + 1,
            started_at=started_at,
            lease_until=sa.bindparam("lease_until", type_=sa.Float()),
            worker=sa.bindparam("worker", type_=sa.String()),
            not_before=None,
            finished_at=None,
        )
        .returning(*jobs.c)
    )


CLAIM, CLAIM_IDS = claim_statement(False), claim_statement(True)


def finish_statement() -> sa.Update:
    """One fenced UPDATE ... RETURNING status that ends an attempt, or re-queues the job when
    a retry is wanted and attempts are left (decided in SQL, so no read comes first)."""
    retry = sa.and_(
        sa.bindparam("wants_retry", type_=sa.Boolean()), jobs.c.attempt < jobs.c.max_attempts
    )
    now = sa.bindparam("now", type_=sa.Float())
    return (
        jobs.update()
        .where(
            jobs.c.id == sa.bindparam("b_id"),
            jobs.c.attempt == sa.bindparam("b_attempt"),
            jobs.c.status == RUNNING,
        )
        .values(
            status=sa.case((retry, QUEUED), else_=sa.bindparam("final", type_=sa.String())),
            # explicit casts: PostgreSQL cannot infer the type of a NULL parameter in a CASE
            not_before=sa.case(
                (retry, sa.cast(sa.bindparam("retry_at", type_=sa.Float()), sa.Float())),
                else_=sa.null(),
            ),
            finished_at=sa.case((retry, sa.null()), else_=sa.cast(now, sa.Float())),
            lease_until=None,
            reason=sa.bindparam("b_reason", type_=sa.Text()),
            exit_code=sa.bindparam("b_exit_code", type_=sa.Integer()),
            outputs=sa.bindparam("b_outputs", type_=sa.Text()),
            # the last error bundle stays visible after a later attempt succeeds
            error_bundle=sa.func.coalesce(
                sa.bindparam("b_error_bundle", type_=sa.Text()), jobs.c.error_bundle
            ),
        )
        .returning(jobs.c.status)
    )


FINISH = finish_statement()
INSERT_EVENT = job_events.insert()


# -- row helpers ------------------------------------------------------------------------------


def to_job(row: Mapping[Any, Any]) -> Job:
    return Job(
        id=row["id"],
        seq=row["seq"],
        status=JobStatus(row["status"]),
        params=json.loads(row["params"]),
        bundle_key=row["bundle_key"],
        attempt=row["attempt"],
        max_attempts=row["max_attempts"],
        timeout=as_float(row["timeout"]),
        batch=row["batch"],
        submitted_at=float(row["submitted_at"]),
        not_before=as_float(row["not_before"]),
        started_at=row["started_at"],
        finished_at=as_float(row["finished_at"]),
        lease_until=as_float(row["lease_until"]),
        worker=row["worker"],
        reason=row["reason"],
        exit_code=row["exit_code"],
        outputs=tuple(json.loads(row["outputs"])) if row["outputs"] else (),
        error_bundle=row["error_bundle"],
        placement=row["placement"],
    )


def events_rows(
    held: Sequence[tuple[str, int]], status: JobStatus, now: float, detail: str | None
) -> list[dict[str, Any]]:
    """History rows: one per (job_id, attempt)."""
    return [
        {"job_id": i, "attempt": a, "status": status.value, "at": now, "detail": detail}
        for i, a in held
    ]


def dbapi(conn: Connection) -> Any:
    """The DBAPI connection under a SQLAlchemy connection (for the prepared statements)."""
    return conn.connection.dbapi_connection


def as_float(value: float | None) -> float | None:
    # SQLite may hand back a REAL that holds a whole number as an int (e.g. from RETURNING).
    return None if value is None else float(value)


def by_seq(item: Any) -> int:
    return int(item.seq)


def claim_params(worker: str, *, now: float, lease: float, limit: int) -> dict[str, Any]:
    """The bind parameters of CLAIM (CLAIM_IDS also takes `ids`)."""
    return {
        "now": now,
        "start": int(now),
        "lease_until": now + lease,
        "worker": worker,
        "limit": limit,
    }


def chunks(items: list[Any], size: int = ID_CHUNK) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
