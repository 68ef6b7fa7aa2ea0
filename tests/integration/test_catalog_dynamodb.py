"""The DynamoDB catalog's own streamed submissions (the staging tests are SQL-only): a
labelled submission registers all or nothing, frees its label, and a submission whose
process died is swept away without ever having been visible."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from shepard.catalog import open_catalog
from shepard.catalog.dynamodb import DynamoCatalog
from shepard.model import JobSpec, JobStatus
from tests.integration.conftest import dynamodb_catalog

T0 = 1_700_000_000.0


@pytest.fixture
def catalog(request: pytest.FixtureRequest, tmp_path: object) -> Iterator[DynamoCatalog]:
    with dynamodb_catalog(request, tmp_path) as url:  # type: ignore[arg-type]
        opened = open_catalog(url)
        assert isinstance(opened, DynamoCatalog)
        yield opened
        opened.close()


def specs(n: int) -> Iterator[JobSpec]:
    return (JobSpec({"ITEM": i}) for i in range(n))


def test_a_labelled_submission_is_all_or_nothing_and_frees_its_label(
    catalog: DynamoCatalog,
) -> None:
    def failing() -> Iterator[JobSpec]:
        yield from specs(30)
        raise RuntimeError("bad spec")

    with pytest.raises(RuntimeError, match="bad spec"):
        catalog.submit_jobs(failing(), batch="b", now=T0, default_attempts=1)
    assert sum(catalog.counts().values()) == 0 and list(catalog.batch_ids("b")) == []
    assert catalog.submit_jobs(specs(30), batch="b", now=T0, default_attempts=1) == 30
    ids = list(catalog.batch_ids("b", chunk=7))
    assert [j.id for j in catalog.page(batch="b", limit=50, newest_first=False)] == ids
    assert catalog.counts(batch="b")[JobStatus.QUEUED] == 30 == catalog.counts()[JobStatus.QUEUED]


def test_a_dead_submission_is_never_visible_and_is_swept(catalog: DynamoCatalog) -> None:
    sub = uuid.uuid4().hex
    catalog._begin(sub, T0, None)  # as a process that dies after writing its jobs
    catalog._write(specs(12), sub, now=T0, default_attempts=1, ids=None, label=None,
                   clock=None, progress=None)  # fmt: skip
    assert catalog.page(limit=50) == [] and catalog.claim("w", now=T0, lease=60) == []
    now = time.time()  # the record is dated by the real clock
    assert catalog.sweep_submissions(now=now) == 0, "its process still lives (this one)"
    assert catalog.sweep_submissions(now=now + 10_000) == 12  # its record went stale
    assert catalog.page(limit=50) == [] and sum(catalog.counts().values()) == 0
    assert catalog.add_jobs(specs(2), now=T0, default_attempts=1)
    assert len(catalog.page(limit=50)) == 2
