"""SubmitGroup: concurrent small submissions written in shared transactions, each request
getting exactly its own jobs back."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import shepard
from shepard.config import FlockConfig, PayloadConfig
from shepard.errors import CatalogError, ParamsError
from shepard.flock import Flock
from shepard.submitgroup import SubmitGroup
from shepard.views import SubmitRequest, SubmitResult


@pytest.fixture
def flock(tmp_path: Path) -> Iterator[Flock]:
    Flock.create(tmp_path / "f", FlockConfig(name="g", payload=PayloadConfig(command="true")))
    opened = shepard.open(tmp_path / "f")
    yield opened
    opened.close()


def test_concurrent_requests_each_get_their_own_jobs(flock: Flock) -> None:
    group = SubmitGroup(flock)
    results: dict[tuple[int, int], SubmitResult] = {}
    writes: list[int] = []
    add_jobs = flock.catalog.add_jobs

    def counting(specs, **kw):  # type: ignore[no-untyped-def]
        writes.append(len(specs))
        return add_jobs(specs, **kw)

    flock.catalog.add_jobs = counting  # type: ignore[method-assign]

    def client(n: int) -> None:
        for i in range(20):
            jobs = [{"C": n, "I": i, "K": k} for k in range(1 + i % 3)]
            results[(n, i)] = group.submit_request(SubmitRequest(jobs=jobs, attempts=1 + n % 2))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 160 and len({r.batch for r in results.values()}) == 160
    for (n, i), result in results.items():
        jobs = [flock.get_job(job_id) for job_id in result.ids]
        assert [j.params for j in jobs] == [{"C": n, "I": i, "K": k} for k in range(1 + i % 3)]
        assert {(j.batch, j.max_attempts) for j in jobs} == {(result.batch, 1 + n % 2)}
    assert flock.count().total == sum(writes) == sum(r.count for r in results.values())
    assert len(writes) <= 160  # some were written together (how many depends on timing)


def test_a_failed_write_fails_every_request_of_its_group(flock: Flock) -> None:
    group = SubmitGroup(flock)

    def broken(specs, **kw):  # type: ignore[no-untyped-def]
        raise CatalogError("catalog busy")

    flock.catalog.add_jobs = broken  # type: ignore[method-assign]
    with pytest.raises(CatalogError, match="busy"):
        group.submit_request(SubmitRequest(params={"A": 1}))
    del flock.catalog.add_jobs  # the catalog's own again
    assert group.submit_request(SubmitRequest(params={"A": 2})).count == 1  # not stuck
    with pytest.raises(ParamsError):
        group.submit_request(SubmitRequest(params={"PATH": "x"}))
    assert flock.count().total == 1


def test_keyed_and_large_requests_go_the_usual_way(flock: Flock) -> None:
    group = SubmitGroup(flock)
    keyed = SubmitRequest(params={"A": 1}, idempotency_key="k")
    assert group.submit_request(keyed).ids == group.submit_request(keyed).ids
    large = group.submit_request(SubmitRequest(jobs=[{"I": i} for i in range(500)]))
    assert large.count == 500 == len(large.ids)
