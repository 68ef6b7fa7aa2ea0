"""Filtered pages and idempotent submissions, on SQLite and PostgreSQL through the same tests."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from shepard.catalog import Catalog
from shepard.catalog.base import IdempotencyConflict, Registered
from shepard.model import JobSpec, JobStatus, Outcome
from tests.integration.conftest import CatalogFactory

T0 = 1_700_000_000.0


def add(catalog: Catalog, params: list[dict[str, Any]], *, batch: str, now: float) -> list[str]:
    specs = (JobSpec(p, batch=batch) for p in params)
    return catalog.add_jobs(specs, now=now, default_attempts=1)


def ids(catalog: Catalog, **filters: Any) -> list[str]:
    return [job.id for job in catalog.page(newest_first=False, **filters)]


def test_page_filters_by_batch_since_and_tag(catalog: Catalog) -> None:
    a = add(catalog, [{"TAG": "Red"}, {"tag": "rED"}, {"TAG": "blue"}, {}], batch="a", now=T0)
    b = add(catalog, [{"Tag": "red", "X": 1}, {"X": "red"}, {"TAG": 5}], batch="b", now=T0 + 10)
    assert ids(catalog, batch="a") == a
    assert ids(catalog, since=T0 + 10) == b
    assert ids(catalog, tag="RED") == [a[0], a[1], b[0]]
    assert ids(catalog, tag="red", batch="b") == [b[0]]
    assert ids(catalog, tag="5") == [b[2]]
    assert ids(catalog, tag="red", since=T0 + 11) == []


def test_tag_and_status_filters_with_keyset_paging(catalog: Catalog) -> None:
    tagged = add(catalog, [{"TAG": "t", "I": i} for i in range(5)], batch="a", now=T0)
    (job,) = catalog.claim("w", now=T0, lease=60, job_ids=[tagged[1]])
    catalog.finish(job.id, job.attempt, Outcome(JobStatus.FAILED, reason="x"), now=T0)
    queued = ids(catalog, tag="t", status=JobStatus.QUEUED)
    assert queued == [tagged[0], *tagged[2:]]
    newest = catalog.page(tag="t", status=JobStatus.QUEUED, limit=2)
    rest = catalog.page(tag="t", status=JobStatus.QUEUED, limit=5, before_seq=newest[-1].seq)
    assert [j.id for j in newest + rest] == queued[::-1]
    # one batch in several statuses: merged by seq, and paged on by seq
    top = catalog.page(batch="a", limit=3)
    more = catalog.page(batch="a", limit=3, before_seq=top[-1].seq)
    assert [j.id for j in top + more] == tagged[::-1]
    assert ids(catalog, batch="a", limit=2) == tagged[:2]


def test_a_key_registers_once_and_replays(catalog: Catalog) -> None:
    def submit(params: list[dict[str, Any]], digest: str, batch: str) -> Registered:
        specs = (JobSpec(p, batch=batch) for p in params)
        return catalog.add_jobs_once("k", digest, batch, specs, now=T0, default_attempts=1)

    first = submit([{"I": 1}, {"I": 2}], "h1", "b1")
    again = submit([{"I": 1}, {"I": 2}], "h1", "b2")
    assert not first.replayed and again == Registered("b1", first.ids, replayed=True)
    with pytest.raises(IdempotencyConflict):
        submit([{"I": 3}], "h2", "b3")
    assert sum(catalog.counts().values()) == 2


@pytest.fixture
def second(catalog_factory: CatalogFactory, catalog: Catalog) -> Iterator[Catalog]:
    """Another handle on the same database (as another process would have)."""
    other = catalog_factory()
    yield other
    other.close()


def test_concurrent_requests_with_one_key_register_once(catalog: Catalog, second: Catalog) -> None:
    results: list[Registered] = []
    start = threading.Barrier(2)

    def submit(on: Catalog, batch: str) -> None:
        start.wait()
        specs = (JobSpec({"I": i}, batch=batch) for i in range(200))
        results.append(on.add_jobs_once("k", "h", batch, specs, now=T0, default_attempts=1))

    threads = [threading.Thread(target=submit, args=a) for a in ((catalog, "x"), (second, "y"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.replayed for r in results) == [False, True]
    assert results[0].ids == results[1].ids and results[0].batch == results[1].batch
    assert sum(catalog.counts().values()) == 200


def test_page_filters_by_parameter_and_text(catalog: Catalog) -> None:
    a = add(
        catalog, [{"NAME": "s-1", "N": 7}, {"name": "S-2"}, {"NOTE": "50%_off"}], batch="a", now=T0
    )
    assert ids(catalog, param=("NAME", "s-2")) == [a[1]]
    assert ids(catalog, param=("n", "7")) == [a[0]]
    assert ids(catalog, text="S-") == a[:2]
    assert ids(catalog, text="%_") == [a[2]]
    assert ids(catalog, text="_o", param=("NOTE", "50%_off")) == [a[2]]


def test_ended_per_minute_and_recent_batches(catalog: Catalog) -> None:
    first = add(catalog, [{"I": i} for i in range(3)], batch="one", now=T0)
    add(catalog, [{"I": 9}], batch="two", now=T0 + 1)
    later = add(catalog, [{"I": 10}], batch="one-more", now=T0 + 2)
    for n, job_id in enumerate(first + later):
        (job,) = catalog.claim("w", now=T0 + 60 * n, lease=60, job_ids=[job_id])
        status = JobStatus.FAILED if n == 1 else JobStatus.SUCCEEDED
        catalog.finish(job.id, job.attempt, Outcome(status, reason="x"), now=T0 + 60 * n + 5)
    minute = int((T0 + 5) // 60)
    assert catalog.ended_per_minute(since=T0 + 60) == {
        minute + 1: {JobStatus.FAILED: 1},
        minute + 2: {JobStatus.SUCCEEDED: 1},
        minute + 3: {JobStatus.SUCCEEDED: 1},
    }
    assert catalog.ended_per_minute(since=T0 + 10_000) == {}
    assert catalog.recent_batches(limit=2) == ["one-more", "two"]
    assert catalog.recent_batches() == ["one-more", "two", "one"]


def test_count_changes_follow_every_transition(catalog: Catalog) -> None:
    old = add(catalog, [{"I": i} for i in range(6)], batch="old", now=T0)
    (done,) = catalog.claim("w", now=T0, lease=60, job_ids=[old[0]])
    catalog.finish(done.id, done.attempt, Outcome(JobStatus.FAILED, reason="x"), now=T0 + 1)
    marks = catalog.count_marks()
    base = catalog.counts()

    def current() -> dict[JobStatus, int]:
        change = catalog.count_changes(after_event=marks[0], after_seq=marks[1])
        return {s: base[s] + change[s] for s in JobStatus}

    assert current() == base
    new = add(catalog, [{"I": 9}, {"I": 10}], batch="new", now=T0 + 2)  # submitted
    (a,) = catalog.claim("w", now=T0 + 3, lease=60, job_ids=[old[1]])
    catalog.finish(a.id, a.attempt, Outcome(JobStatus.SUCCEEDED), now=T0 + 4)  # ran
    catalog.claim("w", now=T0 + 3, lease=60, job_ids=[new[0]])  # a new job runs
    catalog.cancel([old[2], old[3]], now=T0 + 5)  # cancelled while queued
    catalog.requeue([old[0]], now=T0 + 6)  # the failed one, retried
    assert current() == catalog.counts()
    later = catalog.count_marks()
    assert catalog.count_changes(after_event=later[0], after_seq=later[1]) == {
        s: 0 for s in JobStatus
    }
