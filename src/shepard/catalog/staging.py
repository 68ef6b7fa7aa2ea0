"""Streamed submissions: any number of jobs, all or nothing, in short transactions.

`add_jobs` writes a submission in ONE transaction, which holds SQLite's write lock for its
whole length (seconds per million jobs) and must keep every id. `submit_jobs` instead:

1. records the submission in `submissions` (one short transaction);
2. writes its rows with status STAGED, one chunk (see bulk.py) per transaction, so the write
   lock is never held for long and other processes claim and finish jobs in between; STAGED
   rows are invisible: never claimed, counted, listed nor returned by `get`;
3. marks the submission committed (one short transaction): from then on it will become
   visible, whatever happens;
4. turns its STAGED rows into QUEUED rows, a chunk per transaction, and drops its record.

If the submitting process dies before step 3, its rows stay invisible, and `sweep_submissions`
(run at the start of `submit` and by every dispatcher) removes them once the submission is
proven dead (its process is gone from this host) or has not moved for STALE_AFTER_S. If it
dies during step 4, the sweep finishes making the rows visible. A validation error in the
middle of the stream removes the rows at once, so nothing is ever registered.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from shepard.catalog.bulk import insert_sql, pipeline
from shepard.catalog.schema import STAGED, jobs, submissions
from shepard.catalog.statements import chunks
from shepard.errors import CatalogError
from shepard.model import JobSpec, JobStatus

STALE_AFTER_S = 600.0
"""A submission whose record has not moved for this long (and whose process cannot be checked
from this host) is taken for dead. Every transaction of a live one moves it on."""

SWEEP_CHUNK = 20_000
"""Rows made visible or removed per transaction: well under a second of the write lock."""

HOLD_S = 0.75
GAP_S = 0.11
"""After holding the write lock for HOLD_S in back-to-back transactions, a submission leaves it
free for GAP_S. Other SQLite writers wait in SQLite's busy handler, which looks again at most
every 100 ms: without a gap, a writer could find every look fall inside a transaction and wait
for the whole submission. With it, any other writer gets its turn within about a second."""

_QUEUED = JobStatus.QUEUED.value
_SWEPT = (
    "the submission of batch {batch!r} was taken for dead (its record did not move for "
    "too long) and removed; nothing of it was registered: submit it again"
)


class Turns:
    """Paces a series of write transactions as HOLD_S / GAP_S describe (thread-safe enough:
    one submission runs its transactions one at a time)."""

    def __init__(self, hold: float = HOLD_S, gap: float = GAP_S) -> None:
        self.hold, self.gap, self.held = hold, gap, 0.0

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        if self.held >= self.hold:
            time.sleep(self.gap)
            self.held = 0.0
        began = time.monotonic()
        try:
            yield
        finally:
            self.held += time.monotonic() - began


class Staging:
    """The streamed-submission half of SqlCatalog; it supplies `_transaction` and `_engine`."""

    _engine: Engine

    def _transaction(
        self, *, read_only: bool = False
    ) -> contextlib.AbstractContextManager[Connection]:
        raise NotImplementedError

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
        """Register `specs` as QUEUED jobs labelled `batch`, all or nothing, in transactions
        that each hold the write lock briefly (see the module docstring); return their number.

        Ids are not returned (a submission may be larger than memory): see `batch_ids`.
        `clock` (default: `now` throughout) dates the record's progress; `progress` is called
        with the number of rows written so far. Raises CatalogError if a submission labelled
        `batch` is in flight; an error from `specs` leaves no job behind.
        """
        tick = clock or (lambda: now)
        record = {
            "batch": batch, "started_at": now, "updated_at": now,
            "host": socket.gethostname(), "pid": os.getpid(), "committed": 0,
        }  # fmt: skip
        with self._transaction() as conn:
            if conn.execute(sa.select(submissions.c.batch).where(_mine(batch))).first():
                raise CatalogError(f"batch {batch!r} is being submitted by another process")
            conn.execute(submissions.insert().values(record))
        turns = Turns()
        try:
            sql = insert_sql(self._engine.dialect.name, STAGED)

            def write(chunk: str) -> None:
                with turns.turn(), self._transaction() as conn:
                    conn.exec_driver_sql(sql, (now, chunk))
                    if not _touch(conn, batch, tick()):
                        raise CatalogError(_SWEPT.format(batch=batch))

            count = pipeline(
                specs, default_attempts=default_attempts, write=write, batch=batch,
                progress=progress,
            )  # fmt: skip
            with self._transaction() as conn:
                mark = submissions.update().where(_mine(batch)).values(committed=1)
                if conn.execute(mark).rowcount != 1:
                    raise CatalogError(_SWEPT.format(batch=batch))
        except BaseException:
            with contextlib.suppress(Exception):  # else the sweep removes them later
                self._discard(batch, tick, turns=turns)
            raise
        self._publish(batch, tick, turns=turns)
        return count

    def batch_ids(self, batch: str, *, chunk: int = 10_000) -> Iterator[str]:
        """The ids of the visible jobs labelled `batch`, in submission order, read in short
        transactions of `chunk` ids each (memory stays flat whatever the count)."""
        after = -1
        while True:
            stmt = (
                sa.select(jobs.c.seq, jobs.c.id)
                .where(jobs.c.batch == batch, jobs.c.seq > after, jobs.c.status != STAGED)
                .order_by(jobs.c.seq)
                .limit(chunk)
            )
            with self._transaction(read_only=True) as conn:
                rows = conn.execute(stmt).all()
            if not rows:
                return
            after = rows[-1].seq
            yield from (r.id for r in rows)

    def referenced_bundles(self, keys: Iterable[str]) -> set[str]:
        """Those of `keys` that some job (visible or being submitted) names as its bundle."""
        found: set[str] = set()
        for chunk in chunks(list(keys)):
            stmt = sa.select(jobs.c.bundle_key).where(jobs.c.bundle_key.in_(chunk)).distinct()
            with self._transaction(read_only=True) as conn:
                found.update(conn.execute(stmt).scalars())
        return found

    def sweep_submissions(
        self, *, now: float, stale_after: float = STALE_AFTER_S, budget: int | None = None
    ) -> int:
        """Finish the submissions whose process died: make the rows of a committed one
        visible, remove those of an uncommitted one. A submission counts as dead when its
        process is gone from this host, or its record has not moved for `stale_after` s.
        `budget`: at most about this many rows are handled in this call (None: all).
        Returns the number of rows handled."""
        with self._transaction(read_only=True) as conn:
            found = conn.execute(sa.select(submissions)).all()
        handled = 0
        for row in found:
            if not _dead(row, now, stale_after):
                continue
            if row.committed:
                handled += self._publish(row.batch, lambda: now, budget=budget)
            else:
                handled += self._discard(row.batch, lambda: now, budget=budget)
            if budget is not None and handled >= budget:
                break
        return handled

    def _publish(
        self, batch: str, tick: Callable[[], float], budget: int | None = None,
        turns: Turns | None = None,
    ) -> int:  # fmt: skip
        """Turn the STAGED rows of a committed submission into QUEUED rows, then drop it."""
        return self._drain(batch, tick, budget, turns or Turns(), lambda seqs: jobs.update().where(
            jobs.c.seq.in_(seqs)).values(status=_QUEUED))  # fmt: skip

    def _discard(
        self, batch: str, tick: Callable[[], float], budget: int | None = None,
        turns: Turns | None = None,
    ) -> int:  # fmt: skip
        """Remove the STAGED rows of an abandoned submission, then drop it."""
        return self._drain(batch, tick, budget, turns or Turns(), lambda seqs: jobs.delete().where(
            jobs.c.seq.in_(seqs)))  # fmt: skip

    def _drain(
        self,
        batch: str,
        tick: Callable[[], float],
        budget: int | None,
        turns: Turns,
        change: Callable[[Any], sa.Update | sa.Delete],
    ) -> int:
        staged = (
            sa.select(jobs.c.seq)
            .where(jobs.c.batch == batch, jobs.c.status == STAGED)
            .limit(SWEEP_CHUNK)
            .scalar_subquery()
        )
        done = 0
        while budget is None or done < budget:
            with turns.turn(), self._transaction() as conn:
                n = conn.execute(change(staged)).rowcount
                done += n
                if n < SWEEP_CHUNK:
                    conn.execute(submissions.delete().where(_mine(batch)))
                    return done
                _touch(conn, batch, tick())
        return done


def _mine(batch: str) -> sa.ColumnElement[bool]:
    return submissions.c.batch == batch


def _touch(conn: Connection, batch: str, now: float) -> bool:
    """Date the submission's progress; False if its record is gone (swept as dead)."""
    return (
        conn.execute(submissions.update().where(_mine(batch)).values(updated_at=now)).rowcount == 1
    )


def _dead(row: Any, now: float, stale_after: float) -> bool:
    if row.updated_at < now - stale_after:
        return True
    if row.host != socket.gethostname():
        return False
    try:
        os.kill(row.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False
