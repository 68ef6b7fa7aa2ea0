"""The catalog's hot-path statements and row helpers, shared by sql.py and its mixins.

The statements of a job's life (claim, finish, history rows) are built once here, with bind
parameters, and compiled once per dialect by `prepared.Prepared`; the helpers turn rows into
model records and back.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from shepard.catalog.schema import job_events, jobs
from shepard.catalog.states import Change, Facts
from shepard.model import Job, JobStatus

QUEUED, RUNNING = JobStatus.QUEUED.value, JobStatus.RUNNING.value
ID_CHUNK = 500  # ids per IN (...) list, far below every driver's bind-parameter limit
FACT_COLUMNS = (
    jobs.c.status, jobs.c.attempt, jobs.c.max_attempts, jobs.c.lost, jobs.c.placement,
    jobs.c.started_at,
)  # fmt: skip
"""The columns of a row that make `states.Facts`, in its field order."""


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


def finish_statements() -> tuple[sa.Select[Any], sa.Update]:
    """The two statements that end an attempt: read the facts the state machine needs
    (locking the row on PostgreSQL; only when it needs them, `states.needs_facts`), then write
    what `states.finished` decided, fenced by `id, attempt, status = 'running'` and returning
    the id when it matched. The last error bundle is kept when none is given."""
    facts = (
        sa.select(*FACT_COLUMNS)
        .where(jobs.c.id == sa.bindparam("b_id"))
        .with_for_update()  # rendered on PostgreSQL only
    )
    write = (
        jobs.update()
        .where(
            jobs.c.id == sa.bindparam("b_id"),
            jobs.c.attempt == sa.bindparam("b_attempt"),
            jobs.c.status == RUNNING,
        )
        .values(
            status=sa.bindparam("b_status", type_=sa.String()),
            not_before=sa.bindparam("b_not_before", type_=sa.Float()),
            finished_at=sa.bindparam("b_finished_at", type_=sa.Float()),
            lease_until=None,
            reason=sa.bindparam("b_reason", type_=sa.Text()),
            exit_code=sa.bindparam("b_exit_code", type_=sa.Integer()),
            outputs=sa.bindparam("b_outputs", type_=sa.Text()),
            error_bundle=sa.func.coalesce(
                sa.bindparam("b_error_bundle", type_=sa.Text()), jobs.c.error_bundle
            ),
        )
        .returning(jobs.c.id)  # nothing when fenced out
    )
    return facts, write


FINISH_FACTS, FINISH = finish_statements()
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


def to_facts(row: Mapping[Any, Any]) -> Facts:
    """The state machine's view of a row holding the FACT_COLUMNS."""
    return Facts(
        JobStatus(row["status"]),
        row["attempt"],
        row["max_attempts"],
        row["lost"],
        row["placement"],
        row["started_at"],
    )


def stored(change: Change) -> dict[str, Any]:
    """The column values of `change` as the jobs table stores them."""
    values = change.values()
    if "outputs" in values:
        values["outputs"] = json.dumps(list(values["outputs"]), separators=(",", ":"))
    return values


def event_row(job_id: str, attempt: int, change: Change, now: float) -> dict[str, Any]:
    """The history row recording `change` of `job_id` (attempt: the job's after the change)."""
    attempt = change.fields.get("attempt", attempt)
    return {
        "job_id": job_id, "attempt": attempt, "status": change.status.value, "at": now,
        "detail": change.detail,
    }  # fmt: skip


def apply_changes(
    conn: Connection,
    where: sa.ColumnElement[bool],
    decide: Callable[[Facts], Change | None],
    *,
    now: float,
    chunk: int = 5_000,
) -> list[tuple[int, str, int, Change]]:
    """Ask `decide` what happens to each job matching `where` and write its answers, with
    their history rows, in the open transaction; return (seq, id, attempt, change) of the
    jobs changed, in seq order.

    The rows are read (locked, on PostgreSQL) a chunk at a time in seq order, so a bulk change
    of a million jobs holds a bounded number of rows in memory and concurrent bulk changes
    lock in one order. Rows that get the same columns are written with one executemany.
    """
    done: list[tuple[int, str, int, Change]] = []
    last = -1
    while True:
        rows = (
            conn.execute(
                sa.select(jobs.c.seq, jobs.c.id, *FACT_COLUMNS)
                .where(where, jobs.c.seq > last)
                .order_by(jobs.c.seq)
                .limit(chunk)
                .with_for_update()
            )
            .mappings()
            .all()
        )
        if not rows:
            return done
        last = rows[-1]["seq"]
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        events = []
        for row in rows:
            change = decide(to_facts(row))
            if change is None:
                continue
            values = stored(change)
            groups.setdefault(tuple(values), []).append(
                {"b_seq": row["seq"], **{f"v_{k}": v for k, v in values.items()}}
            )
            events.append(event_row(row["id"], row["attempt"], change, now))
            done.append((row["seq"], row["id"], row["attempt"], change))
        for columns, params in groups.items():
            stmt = (
                jobs.update()
                .where(jobs.c.seq == sa.bindparam("b_seq"))
                .values({c: sa.bindparam(f"v_{c}") for c in columns})
            )
            conn.execute(stmt, params)
        if events:
            conn.execute(INSERT_EVENT, events)
        if len(rows) < chunk:
            return done
