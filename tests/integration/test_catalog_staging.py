"""Streamed submissions (issue 11.3): short transactions, all or nothing, swept when killed."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import cast

import pytest
import sqlalchemy as sa

from shepard.catalog import Catalog, bulk
from shepard.catalog.schema import jobs, submissions
from shepard.catalog.sql import SqlCatalog
from shepard.catalog.staging import STALE_AFTER_S, Staging
from shepard.dispatcher import Dispatcher
from shepard.errors import CatalogError, ParamsError
from shepard.model import JobSpec, JobStatus, RetryPolicy
from tests.integration.conftest import CatalogFactory

T0 = 1_700_000_000.0

pytestmark = pytest.mark.sql_catalog


@pytest.fixture(autouse=True)
def _small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bulk, "CHUNK", 10)  # many chunks, hence many transactions


def specs(n: int) -> Iterator[JobSpec]:
    return (JobSpec({"I": i}) for i in range(n))


def rows(catalog: Catalog, table: sa.Table = jobs) -> int:
    with cast(SqlCatalog, catalog)._transaction(read_only=True) as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def test_a_streamed_submission_registers_every_job_in_order(catalog: Catalog) -> None:
    seen: list[int] = []
    n = catalog.submit_jobs(specs(95), batch="b", now=T0, default_attempts=2, progress=seen.append)
    assert n == 95 and seen[-1] == 95 and len(seen) == 10  # one report per chunk
    assert catalog.counts(batch="b")[JobStatus.QUEUED] == 95
    ids = list(catalog.batch_ids("b", chunk=7))
    assert [catalog.get(i).params["I"] for i in ids[:3]] == [0, 1, 2]  # type: ignore[union-attr]
    assert len(set(ids)) == 95 and rows(catalog, submissions) == 0
    (job,) = catalog.claim("w", now=T0, lease=60.0)
    assert job.id == ids[0] and job.max_attempts == 2


def test_nothing_is_visible_while_a_submission_is_written(
    catalog_factory: CatalogFactory,
) -> None:
    writer, other = catalog_factory(), catalog_factory()
    looked: list[object] = []

    def watched() -> Iterator[JobSpec]:
        for i in range(50):
            if i == 35:  # two chunks at least are written (and committed) by now
                looked.append(rows(other))
                looked.append(sum(other.counts().values()))
                looked.append(other.page(limit=100))
                looked.append(other.claim("w", now=T0, lease=60.0))
            yield JobSpec({"I": i})

    try:
        writer.submit_jobs(watched(), batch="b", now=T0, default_attempts=1)
        assert cast(int, looked[0]) >= 20  # the rows are there...
        assert looked[1:] == [0, [], []]  # ...but not counted, listed nor claimable
        assert sum(other.counts().values()) == 50
    finally:
        writer.close()
        other.close()


def test_an_error_midway_registers_nothing(catalog: Catalog) -> None:
    def failing() -> Iterator[JobSpec]:
        yield from specs(45)
        raise ParamsError("line 46: bad")

    with pytest.raises(ParamsError):
        catalog.submit_jobs(failing(), batch="b", now=T0, default_attempts=1)
    assert rows(catalog) == 0 and rows(catalog, submissions) == 0


def _killed(catalog: Catalog, monkeypatch: pytest.MonkeyPatch, *, committed: bool) -> None:
    """Leave a submission as a process killed midway (or after its commit) would."""
    monkeypatch.setattr(Staging, "_discard", lambda *a, **k: 0)
    monkeypatch.setattr(Staging, "_publish", lambda *a, **k: 0)

    def killed() -> Iterator[JobSpec]:
        yield from specs(45 if committed else 40)  # four whole chunks written when killed
        if not committed:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) if not committed else _nothing():
        catalog.submit_jobs(killed(), batch="b", now=T0, default_attempts=1)
    monkeypatch.undo()


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def test_a_killed_submission_stays_invisible_and_is_swept(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    _killed(catalog, monkeypatch, committed=False)
    assert rows(catalog) == 40 and sum(catalog.counts().values()) == 0
    assert catalog.claim("w", now=T0, lease=60.0) == [] and catalog.page() == []
    assert catalog.sweep_submissions(now=T0 + 1) == 0  # its process (this one) is alive
    assert rows(catalog) == 40
    assert catalog.sweep_submissions(now=T0 + 1, stale_after=0.5) == 40  # not moved: dead
    assert rows(catalog) == 0 and rows(catalog, submissions) == 0


def test_a_submission_killed_after_its_commit_is_rolled_forward(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    _killed(catalog, monkeypatch, committed=True)
    assert sum(catalog.counts().values()) == 0
    assert catalog.sweep_submissions(now=T0 + 1, stale_after=0.5, budget=20) >= 20
    catalog.sweep_submissions(now=T0 + 1, stale_after=0.5)
    assert catalog.counts(batch="b")[JobStatus.QUEUED] == 45
    assert rows(catalog, submissions) == 0


def test_one_label_cannot_be_submitted_twice_at_once(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    _killed(catalog, monkeypatch, committed=False)
    with pytest.raises(Exception, match="being submitted by another process"):
        catalog.submit_jobs(specs(1), batch="b", now=T0, default_attempts=1)


def test_a_submission_whose_process_died_is_swept_at_once(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    _killed(catalog, monkeypatch, committed=False)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid no live process has (reaped)
    with cast(SqlCatalog, catalog)._transaction() as conn:
        conn.execute(submissions.update().values(pid=gone.pid))
    assert catalog.sweep_submissions(now=T0) == 40  # proven dead: no waiting for staleness
    assert rows(catalog) == 0


def test_a_dispatcher_sweeps_dead_submissions(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    _killed(catalog, monkeypatch, committed=False)

    class Idle:
        def capacity(self) -> int:
            return 0

    dispatcher = Dispatcher(
        catalog, Idle(), RetryPolicy(), worker_id="w", lease=60.0,  # type: ignore[arg-type]
        clock=lambda: T0 + STALE_AFTER_S + 1,
    )  # fmt: skip
    dispatcher.step()
    assert rows(catalog) == 0 and rows(catalog, submissions) == 0


def test_a_submission_wrongly_swept_as_dead_registers_nothing(catalog: Catalog) -> None:
    def swept_midway() -> Iterator[JobSpec]:
        yield from specs(25)
        catalog.sweep_submissions(now=T0 + 1, stale_after=0.5)  # another process's mistake
        yield from specs(25)

    with pytest.raises(CatalogError, match="taken for dead"):
        catalog.submit_jobs(swept_midway(), batch="b", now=T0, default_attempts=1)
    assert rows(catalog) == 0 and sum(catalog.counts().values()) == 0
