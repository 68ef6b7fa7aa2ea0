"""Placements: queued jobs handed to an engine's own queue (a Slurm array task), and back.

An engine backend does not claim jobs when it submits them: a job may wait in the engine's
queue for hours, and `running` must keep meaning running. Instead the dispatcher *places* jobs:
each stays QUEUED but carries the name of the engine queue entry it was handed to, which keeps
it from being handed out twice (placed jobs are never claimed by `claim` nor placed again).
The engine's task later claims its job with `claim_placed`, which checks the placement and
clears it. If the task ends without claiming (cancelled while pending, failed to start, its node
died), the reconciler `unplace`s the job so it can be handed over again.

A placement is fenced like an attempt: every change names the placement it expects, so a late
task of an old array can never take a job that was meanwhile handed to a newer one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from shepard.catalog import states
from shepard.catalog.schema import jobs
from shepard.catalog.statements import apply_changes, chunks
from shepard.model import Job, JobStatus

MAX_LOST = states.MAX_LOST

_QUEUED, _RUNNING = JobStatus.QUEUED.value, JobStatus.RUNNING.value


class SqlPlacements:
    """The PlacementStore half of SqlCatalog, which supplies `_transaction` and `_job`.
    Transitions are decided by `states`; choosing jobs to place is a query."""

    def _transaction(
        self, *, read_only: bool = False
    ) -> contextlib.AbstractContextManager[Connection]:
        raise NotImplementedError

    def _job(self, row: Mapping[Any, Any]) -> Job:
        raise NotImplementedError

    def place(self, placement: str, *, now: float, limit: int) -> list[str]:
        """Mark up to `limit` claimable, unplaced QUEUED jobs (oldest first) with `placement`;
        return their ids in seq order. Concurrent callers never place the same job."""
        if limit < 1:
            return []
        chosen = (
            sa.select(jobs.c.seq)
            .where(jobs.c.status == _QUEUED, jobs.c.placement.is_(None))
            .where(sa.or_(jobs.c.not_before.is_(None), jobs.c.not_before <= now))
            .order_by(jobs.c.seq)
            .limit(limit)
            .with_for_update(skip_locked=True)  # rendered on PostgreSQL only
        )
        stmt = (
            jobs.update()
            .where(jobs.c.seq.in_(chosen.scalar_subquery()))
            .values(placement=placement)
            .returning(jobs.c.seq, jobs.c.id)
        )
        with self._transaction() as conn:
            rows = conn.execute(stmt).all()
        return [r.id for r in sorted(rows, key=lambda r: int(r.seq))]

    def rename_placement(self, old: str, new: str) -> int:
        """Give every job placed under `old` the placement `new` (e.g. once the engine has
        named the queue entry); returns how many jobs changed."""
        stmt = jobs.update().where(jobs.c.placement == old).values(placement=new)
        with self._transaction() as conn:
            return int(conn.execute(stmt).rowcount)

    def claim_placed(
        self,
        worker: str,
        job_id: str,
        placements: Sequence[str],
        *,
        now: float,
        lease: float,
    ) -> Job | None:
        """Claim `job_id` like `claim` does (`states.claimed`), but only if it is QUEUED and
        placed under one of `placements`; the claim clears its placement. None when it is not
        (any more)."""
        if not placements:
            return None
        mine = sa.and_(
            jobs.c.id == job_id, jobs.c.status == _QUEUED, jobs.c.placement.in_(list(placements))
        )
        decide = partial(states.claimed, worker=worker, now=now, lease=lease)
        with self._transaction() as conn:
            if not apply_changes(conn, mine, decide, now=now):
                return None
            row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).mappings().one()
        return self._job(row)

    def unplace(
        self,
        job_ids: Sequence[str],
        placement: str,
        *,
        now: float,
        detail: str,
        lost: bool = True,
    ) -> list[str]:
        """Take back QUEUED jobs still placed under `placement` whose engine task ended without
        claiming them (`states.unplaced`): they become claimable (and placeable) again, and
        `detail` goes into their history. With `lost`, this counts as a lost worker: the job
        that reaches MAX_LOST losses fails with `detail` as its reason. Returns the ids
        changed, in seq order."""
        if not job_ids:
            return []
        mine = sa.and_(jobs.c.status == _QUEUED, jobs.c.placement == placement)
        decide = partial(
            states.unplaced, placement=placement, now=now, detail=detail, count_lost=lost
        )
        changed: list[tuple[int, str, int, states.Change]] = []
        with self._transaction() as conn:
            for chunk in chunks(list(job_ids)):
                where = sa.and_(mine, jobs.c.id.in_(chunk))
                changed.extend(apply_changes(conn, where, decide, now=now))
        return [job_id for _seq, job_id, _a, _c in sorted(changed, key=lambda c: c[0])]

    def placed(self, *, limit: int = 1000, after_seq: int | None = None) -> list[Job]:
        """QUEUED jobs that carry a placement, oldest first (page on with the last seq)."""
        stmt = (
            sa.select(jobs)
            .where(jobs.c.placement.is_not(None), jobs.c.status == _QUEUED)
            .order_by(jobs.c.seq)
            .limit(limit)
        )
        if after_seq is not None:
            stmt = stmt.where(jobs.c.seq > after_seq)
        with self._transaction(read_only=True) as conn:
            return [self._job(row) for row in conn.execute(stmt).mappings()]

    def placements(self) -> dict[str, int]:
        """The placements of QUEUED jobs, each with its number of jobs."""
        stmt = (
            sa.select(jobs.c.placement, sa.func.count())
            .where(jobs.c.placement.is_not(None), jobs.c.status == _QUEUED)
            .group_by(jobs.c.placement)
        )
        with self._transaction(read_only=True) as conn:
            return {placement: int(n) for placement, n in conn.execute(stmt)}

    def placed_in(self, placements: Sequence[str]) -> list[Job]:
        """Every job (any status) whose placement is one of `placements`, oldest first."""
        if not placements:
            return []
        stmt = sa.select(jobs).where(jobs.c.placement.in_(list(placements))).order_by(jobs.c.seq)
        with self._transaction(read_only=True) as conn:
            return [self._job(row) for row in conn.execute(stmt).mappings()]

    def ready(self, *, now: float) -> int:
        """How many QUEUED jobs without a placement could be claimed at `now`."""
        stmt = (
            sa.select(sa.func.count())
            .select_from(jobs)
            .where(jobs.c.status == _QUEUED, jobs.c.placement.is_(None))
            .where(sa.or_(jobs.c.not_before.is_(None), jobs.c.not_before <= now))
        )
        with self._transaction(read_only=True) as conn:
            return int(conn.execute(stmt).scalar() or 0)

    def lose(
        self, job_id: str, attempt: int, *, now: float, reason: str, retry_at: float | None = None
    ) -> JobStatus | None:
        """The worker of RUNNING `attempt` is known to be gone (its engine task ended): handle
        it now as a lease expiry would, with `reason` (`states.lost`). The job goes back to
        QUEUED (not_before = retry_at) without spending an attempt, or FAILS once it has lost
        MAX_LOST workers. Fenced: None if `attempt` is not the job's current running one."""
        decide = partial(
            states.lost, attempt=attempt, now=now, reason=reason, retry_at=retry_at,
            times=f" ({MAX_LOST} times)",
        )  # fmt: skip
        with self._transaction() as conn:
            changed = apply_changes(conn, jobs.c.id == job_id, decide, now=now)
        return changed[0][3].status if changed else None
