"""Queries of the service layer: filtered job pages and submissions made once per key.

The tag filter reads the TAG parameter out of the JSON `params` column (json_each on SQLite,
json_each_text on PostgreSQL): no column or index of its own, so bulk inserts pay nothing for
it. It runs as a filter on the pages' seq-ordered scan (the `(status, seq)` or `(batch,
status)` index narrows it first when those filters are given). A common tag costs little,
a rare one scans the table (bench/page_filters.py, 200,000 jobs, a page of 50: 2 ms and
0.5 s on SQLite here, 6 ms and 0.8 s on PostgreSQL). A flock that pages by tag over
millions of jobs would want a `tag` column filled at insert (lower-cased) with an index on
`(tag, seq)`; on PostgreSQL alone an expression index on the extracted value would also do,
but only for one spelling of the key.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from shepard.catalog.base import IdempotencyConflict, Registered
from shepard.catalog.bulk import insert_specs
from shepard.catalog.schema import STAGED, idempotency_keys, job_events, jobs
from shepard.model import JobSpec, JobStatus


def page_queries(
    dialect: str,
    *,
    status: JobStatus | None,
    batch: str | None,
    **filters: Any,
) -> list[sa.Select[Any]]:
    """The SELECTs behind `Catalog.page`, whose rows merged by seq (and cut to the limit)
    are the page. A batch without a status is asked one status at a time: each query then
    reads the `(batch, status)` index in seq order and stops at the limit, where one query
    would read the whole batch and sort it (350 ms per page of a 200,000-job batch on
    SQLite here, against 2 ms)."""
    if batch is None or status is not None:
        return [page_query(dialect, status=status, batch=batch, **filters)]
    return [page_query(dialect, status=s, batch=batch, **filters) for s in JobStatus]


def page_query(
    dialect: str,
    *,
    status: JobStatus | None,
    worker: str | None,
    batch: str | None,
    tag: str | None,
    since: float | None,
    limit: int,
    param: tuple[str, str] | None = None,
    text: str | None = None,
    before_seq: int | None,
    after_seq: int | None,
    newest_first: bool,
) -> sa.Select[Any]:
    """The SELECT behind `Catalog.page` (see there for the meaning of each filter)."""
    stmt = sa.select(jobs).limit(limit)
    if status is not None:
        stmt = stmt.where(jobs.c.status == status.value)
    else:  # rows of a submission still being written are not jobs yet (staging.py)
        stmt = stmt.where(jobs.c.status != STAGED)
    if worker is not None:
        stmt = stmt.where(jobs.c.worker == worker)
    if batch is not None:
        stmt = stmt.where(jobs.c.batch == batch)
    if since is not None:
        stmt = stmt.where(jobs.c.submitted_at >= since)
    if before_seq is not None:
        stmt = stmt.where(jobs.c.seq < before_seq)
    if after_seq is not None:
        stmt = stmt.where(jobs.c.seq > after_seq)
    if tag is not None:
        stmt = stmt.where(tag_is(dialect, tag))
    if param is not None:
        stmt = stmt.where(param_is(dialect, *param))
    if text is not None:
        stmt = stmt.where(params_contain(text))
    return stmt.order_by(jobs.c.seq.desc() if newest_first else jobs.c.seq.asc())


_PLAIN = re.compile(r"^[A-Za-z0-9 ._:/+-]+$")
"""Values written the same in JSON text as in a payload's environment."""


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def tag_is(dialect: str, tag: str) -> sa.ColumnElement[bool]:
    """True for jobs with a parameter named TAG (any case) whose text equals `tag` (any
    case; letters beyond ASCII are compared as they are on SQLite, whose lower() is ASCII)."""
    return param_is(dialect, "TAG", tag)


def params_contain(text: str) -> sa.ColumnElement[bool]:
    """True for jobs whose parameters, as stored (JSON text), contain `text` in any case
    (ASCII case folding on SQLite). A scan of the rows the other filters leave."""
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return sa.func.lower(jobs.c.params).like(f"%{escaped}%", escape="\\")


def param_is(dialect: str, key: str, wanted: str) -> sa.ColumnElement[bool]:
    """True for jobs with a parameter named `key` (any case) whose text equals `wanted` (any
    case; letters beyond ASCII are compared as they are on SQLite, whose lower() is ASCII)."""
    if dialect == "postgresql":
        pairs = sa.func.json_each_text(sa.cast(jobs.c.params, sa.JSON)).table_valued("key", "value")
        value: sa.ColumnElement[Any] = pairs.c.value
    else:
        pairs = sa.func.json_each(jobs.c.params).table_valued("key", "value", "type")
        # booleans are 1/0 in SQLite's json_each; a payload sees them as True/False
        value = sa.case(
            (pairs.c.type == "true", "true"),
            (pairs.c.type == "false", "false"),
            else_=pairs.c.value,
        )
    exact = (
        sa.exists()
        .select_from(pairs)
        .where(sa.func.upper(pairs.c.key) == key.upper(), sa.func.lower(value) == wanted.lower())
    )
    if not _PLAIN.match(wanted) or _number(wanted):
        return exact  # numbers may be written otherwise in JSON (1e5, 100000.0)
    # the value appears as it is in the stored JSON text: a LIKE on that text first spares
    # most rows the JSON parsing (a page filtered by a rare value: 13 s -> ~0.4 s at 1M jobs)
    return sa.and_(params_contain(wanted), exact)


ENDED = (JobStatus.SUCCEEDED.value, JobStatus.FAILED.value)
CLOCK_SKEW = 300.0
"""Seconds by which the clocks of the processes that record events may disagree."""


def ended_per_minute(conn: Connection, since: float) -> dict[int, dict[JobStatus, int]]:
    """Attempts that ended succeeded or failed at or after `since`, per minute (whole minutes
    since the epoch) and status, read from the job history.

    No index covers an event's time, but event ids grow as events are written, in time order
    up to the clocks' skew: a binary search over the primary key finds the first event that
    can be recent (about 25 indexed reads for ten million events), and only the events after
    it are read. A full scan of the jobs' `finished_at` took 10 s at a million jobs."""
    first = _first_event_at(conn, since - CLOCK_SKEW)
    if first is None:
        return {}
    minute = sa.cast(sa.func.floor(job_events.c.at / 60), sa.Integer).label("minute")
    stmt = (
        sa.select(minute, job_events.c.status, sa.func.count())
        .where(
            job_events.c.id >= first,
            job_events.c.status.in_(ENDED),
            job_events.c.at >= since,
        )
        .group_by(minute, job_events.c.status)
    )
    ended: dict[int, dict[JobStatus, int]] = {}
    for at, status, n in conn.execute(stmt):
        ended.setdefault(int(at), {})[JobStatus(status)] = int(n)
    return ended


def _first_event_at(conn: Connection, moment: float) -> int | None:
    """The smallest event id whose event (and, clock skew aside, every later one) happened
    at or after `moment`; None when no event did."""
    # two statements: SQLite reads min() or max() from the index only when it is alone
    lo = conn.execute(sa.select(sa.func.min(job_events.c.id))).scalar()
    hi = conn.execute(sa.select(sa.func.max(job_events.c.id))).scalar()
    if lo is None or hi is None:
        return None

    def at_or_after(event_id: int) -> tuple[int, float] | None:
        row = conn.execute(
            sa.select(job_events.c.id, job_events.c.at)
            .where(job_events.c.id >= event_id)
            .order_by(job_events.c.id)
            .limit(1)
        ).first()
        return None if row is None else (int(row[0]), float(row[1]))

    last = at_or_after(hi)
    if last is None or last[1] < moment:
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        found = at_or_after(mid)
        if found is None or found[1] >= moment:
            hi = mid
        else:
            lo = found[0] + 1
    return int(lo)


def count_marks(conn: Connection) -> tuple[int, int]:
    """(largest event id, largest job seq): where `count_changes` starts from. Read them
    before the counts they go with."""
    event = conn.execute(sa.select(sa.func.max(job_events.c.id))).scalar()
    seq = conn.execute(sa.select(sa.func.max(jobs.c.seq))).scalar()
    return int(event or 0), int(seq or 0)


def count_changes(conn: Connection, after_event: int, after_seq: int) -> dict[JobStatus, int]:
    """The net change of the jobs per status since `count_marks` said (after_event,
    after_seq): each event after `after_event` moved its job from the status of the job's
    previous event (QUEUED for the first: submissions are not stored as events) to its own,
    and each job after `after_seq` was submitted QUEUED. Reads those events and jobs through
    the primary keys and the events' job_id index: its cost follows the activity since the
    marks, not the size of the flock."""
    e = job_events.alias("e")
    p = job_events.alias("p")
    before = (
        sa.select(p.c.status)
        .where(p.c.job_id == e.c.job_id, p.c.id < e.c.id)
        .order_by(p.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    moves = sa.select(e.c.status.label("now"), before.label("was")).where(e.c.id > after_event)
    moved = moves.subquery()
    change = {status: 0 for status in JobStatus}
    rows = conn.execute(
        sa.select(moved.c.now, moved.c.was, sa.func.count()).group_by(moved.c.now, moved.c.was)
    )
    for now, was, n in rows:
        change[JobStatus(now)] += int(n)
        change[JobStatus(was) if was else JobStatus.QUEUED] -= int(n)
    new = conn.execute(
        sa.select(sa.func.count()).where(jobs.c.seq > after_seq, jobs.c.status != STAGED)
    ).scalar()
    change[JobStatus.QUEUED] += int(new or 0)
    return change


def recent_batches(conn: Connection, limit: int) -> list[str]:
    """Up to `limit` batch labels, the one of the newest job first, then the one of the newest
    job submitted before that batch's first job, and so on: each step reads the first job of
    a batch per status through the `(batch, status)` index, never a whole batch. Batches
    submitted side by side may hide each other."""
    labels: list[str] = []
    before: int | None = None
    while len(labels) < limit:
        stmt = sa.select(jobs.c.batch, jobs.c.seq).where(jobs.c.status != STAGED)
        if before is not None:
            stmt = stmt.where(jobs.c.seq < before)
        row = conn.execute(stmt.order_by(jobs.c.seq.desc()).limit(1)).first()
        if row is None:
            break
        label, seq = row
        if label is None:  # no batch label: step over the job
            before = int(seq)
            continue
        labels.append(str(label))
        firsts = [
            conn.execute(
                sa.select(sa.func.min(jobs.c.seq)).where(
                    jobs.c.batch == label, jobs.c.status == status.value
                )
            ).scalar()
            for status in JobStatus
        ]
        before = min(int(f) for f in firsts if f is not None) if any(firsts) else int(seq)
    return labels


def submit_once(
    conn: Connection,
    key: str,
    request_hash: str,
    batch: str,
    specs: Iterable[JobSpec],
    *,
    now: float,
    default_attempts: int,
) -> Registered:
    """Register `specs` under idempotency `key` in the open transaction, unless the key is
    known: then return what it registered (IdempotencyConflict if `request_hash` differs).

    Concurrent requests with one key are serialised (a transaction-scoped advisory lock on
    PostgreSQL; SQLite's writers take turns anyway), so exactly one of them registers jobs.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": key})
    known = conn.execute(sa.select(idempotency_keys).where(idempotency_keys.c.key == key)).first()
    if known is not None:
        if known.request_hash != request_hash:
            raise IdempotencyConflict(
                f"idempotency key {key!r} was already used for a different request; "
                "use a new key for a new request"
            )
        return Registered(known.batch, json.loads(known.ids), replayed=True)
    ids = insert_specs(conn, specs, now=now, default_attempts=default_attempts)
    conn.execute(
        idempotency_keys.insert().values(
            key=key, request_hash=request_hash, batch=batch, ids=json.dumps(ids), created_at=now
        )
    )
    return Registered(batch, ids, replayed=False)


def submit_each(
    conn: Connection,
    requests: Sequence[tuple[str, str, str, Sequence[JobSpec]]],
    *,
    now: float,
    default_attempts: int,
) -> list[Registered]:
    """`submit_once` for each (key, request_hash, batch, specs) in the open transaction, with
    one lookup and one insert for all of them; the answers in the order of `requests`."""
    keys = sorted({r[0] for r in requests})
    if conn.dialect.name == "postgresql":
        # submit_once's locks, taken in the order of their numbers, so that concurrent callers
        # (whose keys may share a number) always take them in one order and never deadlock
        found = conn.execute(
            sa.text("SELECT DISTINCT hashtext(k) FROM unnest(CAST(:keys AS text[])) AS k"),
            {"keys": keys},
        )
        for (number,) in sorted(found.all()):
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:n)"), {"n": number})
    known = {
        row.key: row
        for start in range(0, len(keys), 500)  # stay under SQLite's bound-parameter limit
        for row in conn.execute(
            sa.select(idempotency_keys).where(idempotency_keys.c.key.in_(keys[start : start + 500]))
        )
    }
    fresh: dict[str, tuple[str, str, str, Sequence[JobSpec]]] = {}
    for request in requests:
        if request[0] not in known:
            fresh.setdefault(request[0], request)  # a key given twice counts once
    specs = [spec for r in fresh.values() for spec in r[3]]
    ids = iter(insert_specs(conn, specs, now=now, default_attempts=default_attempts))
    rows: list[dict[str, Any]] = []
    for key, request_hash, batch, group in fresh.values():
        mine = [next(ids) for _ in group]
        rows.append({"key": key, "request_hash": request_hash, "batch": batch,
                     "ids": json.dumps(mine), "created_at": now})  # fmt: skip
    if rows:
        conn.execute(idempotency_keys.insert(), rows)
    done = {row["key"]: Registered(row["batch"], json.loads(row["ids"]), False) for row in rows}
    answers = []
    for key, request_hash, _batch, _specs in requests:
        if key in known:
            row = known[key]
            if row.request_hash != request_hash:
                raise IdempotencyConflict(
                    f"idempotency key {key!r} was already used for a different request; "
                    "use a new key for a new request"
                )
            answers.append(Registered(row.batch, json.loads(row.ids), replayed=True))
        else:
            answers.append(done[key])
    return answers
