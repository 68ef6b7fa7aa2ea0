"""The DynamoDB catalog's own streamed submissions (the staging tests are SQL-only): a
labelled submission registers all or nothing, frees its label, and a submission whose
process died is swept away without ever having been visible."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shepard.catalog import open_catalog
from shepard.catalog.base import PartPage
from shepard.catalog.dynamodb import DynamoCatalog
from shepard.catalog.states import Change
from shepard.config import CatalogConfig, FlockConfig, PayloadConfig
from shepard.flock import Flock
from shepard.model import JobSpec, JobStatus, Outcome
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


def test_a_filtered_page_stops_at_its_budget_and_says_where(catalog: DynamoCatalog) -> None:
    ids = catalog.add_jobs(specs(30), now=T0, default_attempts=1)
    catalog.filter_budget = 10
    found = catalog.page(param=("item", "29"), limit=5)  # the newest, then 10 rejected
    assert isinstance(found, PartPage) and [j.id for j in found] == [ids[29]]
    assert found.read_to == 20  # ids[19]: seq 20, the tenth rejected
    reads: list[int] = []
    after: int | None = None
    while isinstance(part := catalog.page(text="nowhere", limit=5, after_seq=after,
                                          newest_first=False), PartPage):  # fmt: skip
        read_to = part.read_to  # before `== []`, after which mypy takes it for a plain list
        assert part == []
        reads.append(after := read_to)
    assert part == [] and reads == [10, 20, 30]  # the last reached the end unawares
    catalog.filter_budget = 30
    assert [j.id for j in catalog.page(param=("ITEM", "0"), limit=5)] == [ids[0]]


def test_the_service_pages_on_past_an_empty_filtered_page(
    catalog: DynamoCatalog, tmp_path: Path
) -> None:
    """`Flock.jobs`: a short or empty page with a cursor, and every match found by paging."""
    cfg = FlockConfig(name="f", payload=PayloadConfig(command="true"),
                      catalog=CatalogConfig(url=catalog.url))  # fmt: skip
    flock = Flock.create(tmp_path / "f", cfg)
    try:
        ids = flock.submit([{"ITEM": i, "KIND": "rare" if i in (3, 25) else "x"}
                            for i in range(30)]).ids  # fmt: skip
        flock.catalog.filter_budget = 8  # type: ignore[attr-defined]
        seen, cursor, pages = [], None, 0
        while True:
            page = flock.jobs(param=("kind", "RARE"), limit=2, cursor=cursor)
            seen += [j.id for j in page.items]
            pages += 1
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert seen == [ids[25], ids[3]] and pages >= 3
    finally:
        flock.close()


def test_ended_attempts_are_counted_by_hour_items_in_full_transactions(
    catalog: DynamoCatalog,
) -> None:
    """99 jobs claimed in one call, then ending in one change: two transactions of jobs,
    counter shard and hour item each time (98 + 2 items, then 1 + 2), in a minute of their
    own two hours after the first ended."""
    (early,) = catalog.add_jobs(specs(1), now=T0, default_attempts=1)
    (job,) = catalog.claim("w", now=T0, lease=60, job_ids=[early])
    catalog.finish(job.id, job.attempt, Outcome(JobStatus.SUCCEEDED), now=T0 + 5)
    ids = catalog.add_jobs(specs(99), now=T0, default_attempts=1)
    end = T0 + 7200.0
    assert len(catalog.claim("w", now=end - 10, lease=60, limit=99)) == 99  # 98, then 1
    fail = Change(JobStatus.FAILED, {"finished_at": end, "reason": "x"}, "x")
    assert len(catalog._apply(catalog._get_rows(ids), lambda facts: fail, now=end)) == 99
    assert catalog.counts()[JobStatus.FAILED] == 99
    assert catalog.ended_per_minute(since=T0) == {
        int((T0 + 5) // 60): {JobStatus.SUCCEEDED: 1},
        int(end // 60): {JobStatus.FAILED: 99},
    }
    assert catalog.ended_per_minute(since=end) == {int(end // 60): {JobStatus.FAILED: 99}}
    assert catalog.ended_per_minute(since=end + 60) == {}
    assert catalog.ended_per_minute(since=end + 3600) == {}
