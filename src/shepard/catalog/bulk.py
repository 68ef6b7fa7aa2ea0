"""The bulk insert behind `add_jobs` and `submit_jobs`: a million specs in seconds, in
bounded memory.

Per job the work is: take the spec from the caller's generator, make an id, and have the
database insert the row. Two things make that fast:

- A chunk of rows travels as ONE JSON array bound to ONE statement, `INSERT ... SELECT ...
  FROM json_each(:rows)` (json_array_elements on PostgreSQL). The database unpacks it in C,
  instead of the driver binding eight parameters per row with the GIL held, and the JSON of
  the params needs no separate encoding step: it is copied out of the array as text.
- Chunks are built on the calling thread while one helper thread runs the previous chunk's
  INSERT, which releases the GIL for its whole duration, so on two cores the halves overlap.
  (With executemany the driver drops and retakes the GIL for every row, and the helper would
  crawl behind the busy builder thread.) At most two chunks exist at once. The helper uses the
  caller's connection, one statement at a time, so it all stays ONE transaction.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from typing import Any

from sqlalchemy.engine import Connection

from shepard.model import JobSpec, JobStatus, new_job_id

CHUNK = 20_000
"""Rows per INSERT statement: large enough to amortise it, small enough to bound memory."""

_COLUMNS = "id, status, params, bundle_key, max_attempts, timeout, batch, submitted_at"

# Each element of the bound array is [id, params, bundle_key, max_attempts, timeout, batch];
# ORDER BY the array index so that seq follows the order of the ids returned to the caller.
_INSERT = {
    "sqlite": f"""
        INSERT INTO jobs ({_COLUMNS})
        SELECT json_extract(value, '$[0]'), '{{status}}', json_extract(value, '$[1]'),
               json_extract(value, '$[2]'), json_extract(value, '$[3]'),
               json_extract(value, '$[4]'), json_extract(value, '$[5]'), ?
        FROM json_each(?)
        ORDER BY key
    """,
    "postgresql": f"""
        INSERT INTO jobs ({_COLUMNS})
        SELECT r ->> 0, '{{status}}', (r -> 1)::text,
               r ->> 2, (r ->> 3)::integer,
               (r ->> 4)::double precision, r ->> 5, %s
        FROM json_array_elements(%s::json) WITH ORDINALITY AS rows (r, n)
        ORDER BY n
    """,
}

_to_json = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode


def insert_sql(dialect: str, status: str) -> str:
    """The INSERT of one chunk, bound to (now, chunk) as returned by `pipeline`."""
    return _INSERT[dialect].format(status=status)


def insert_specs(
    conn: Connection, specs: Iterable[JobSpec], *, now: float, default_attempts: int
) -> list[str]:
    """Insert QUEUED rows for `specs` on `conn` (inside the caller's transaction); return ids.

    An error from the generator or the database propagates once the in-flight chunk is done;
    the caller's transaction then rolls everything back.
    """
    sql = insert_sql(conn.dialect.name, JobStatus.QUEUED.value)
    ids: list[str] = []
    pipeline(
        specs,
        default_attempts=default_attempts,
        write=lambda chunk: conn.exec_driver_sql(sql, (now, chunk)),
        ids=ids,
    )
    return ids


def pipeline(
    specs: Iterable[JobSpec],
    *,
    default_attempts: int,
    write: Callable[[str], object],
    ids: list[str] | None = None,
    batch: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Turn `specs` into chunks (JSON arrays of rows) and `write` each on a helper thread
    while the next is built; return the number of rows written.

    `ids`: extended with every id, in order. `batch`: overrides every spec's batch label.
    `progress`: called with the running total after each chunk is written. An error from the
    generator or from `write` propagates once the in-flight chunk is done.
    """
    total = 0
    spec_iter = iter(specs)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="shepard-insert") as helper:
        in_flight: Future[Any] | None = None
        while rows := [_row(s, default_attempts, batch) for s in islice(spec_iter, CHUNK)]:
            if ids is not None:
                ids.extend(row[0] for row in rows)
            n = len(rows)
            payload = _to_json(rows)
            del rows
            if in_flight is not None:
                in_flight.result()  # re-raises a database error; keeps two chunks at most
                if progress is not None:
                    progress(total)
            in_flight = helper.submit(write, payload)
            total += n
        if in_flight is not None:
            in_flight.result()
            if progress is not None:
                progress(total)
    return total


def _row(spec: JobSpec, default_attempts: int, batch: str | None) -> tuple[Any, ...]:
    params = spec.params if isinstance(spec.params, dict) else dict(spec.params)
    attempts = default_attempts if spec.max_attempts is None else spec.max_attempts
    label = spec.batch if batch is None else batch
    return (new_job_id(), params, spec.bundle_key, attempts, spec.timeout, label)
