"""`add_jobs_once_each` (many keyed submissions in one transaction, as the object inbox
registers bundles), on every catalog implementation (see conftest)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from shepard.catalog import Catalog
from shepard.catalog.base import IdempotencyConflict, Registered
from shepard.model import Job, JobSpec
from tests.integration.conftest import CatalogFactory

T0 = 1_700_000_000.0


def request(key: str, item: int) -> tuple[str, str, str, list[JobSpec]]:
    return (key, f"hash-{key}", f"batch-{key}", [JobSpec({"ITEM": item}, batch=f"batch-{key}")])


def test_each_key_registers_once_and_replays_in_request_order(catalog: Catalog) -> None:
    first = catalog.add_jobs_once_each(
        [request("b", 1), request("a", 2)], now=T0, default_attempts=1
    )
    assert [r.batch for r in first] == ["batch-b", "batch-a"]
    assert not any(r.replayed for r in first) and all(len(r.ids) == 1 for r in first)
    again = catalog.add_jobs_once_each(
        [request("c", 3), request("a", 2), request("b", 1)], now=T0, default_attempts=1
    )
    assert [r.replayed for r in again] == [False, True, True]
    assert again[1] == Registered("batch-a", first[1].ids, replayed=True)
    assert again[2] == Registered("batch-b", first[0].ids, replayed=True)
    jobs: dict[str, Job] = {}
    for j in catalog.page(limit=10):
        assert j.batch is not None
        jobs[j.batch] = j
    assert sorted(jobs) == ["batch-a", "batch-b", "batch-c"]
    assert jobs["batch-a"].params == {"ITEM": 2} and jobs["batch-a"].id == first[1].ids[0]
    # one key, as `add_jobs_once` would see it
    single = catalog.add_jobs_once("c", "hash-c", "x", [], now=T0, default_attempts=1)
    assert single.replayed and single.ids == again[0].ids


def test_a_key_with_another_request_hash_is_a_conflict_and_adds_nothing(
    catalog: Catalog,
) -> None:
    catalog.add_jobs_once_each([request("a", 1)], now=T0, default_attempts=1)
    changed = ("a", "other", "batch-a", [JobSpec({"ITEM": 9})])
    with pytest.raises(IdempotencyConflict):
        catalog.add_jobs_once_each([request("n", 2), changed], now=T0, default_attempts=1)
    assert sum(catalog.counts().values()) == 1


@pytest.fixture
def second(catalog_factory: CatalogFactory, catalog: Catalog) -> Iterator[Catalog]:
    """Another handle on the same database (as another process would have)."""
    other = catalog_factory()
    yield other
    other.close()


def test_two_heads_racing_over_overlapping_keys_register_each_once(
    catalog: Catalog, second: Catalog
) -> None:
    results: list[list[Registered]] = []
    start = threading.Barrier(2)

    def submit(on: Catalog, keys: list[int]) -> None:
        start.wait()
        for i in range(0, len(keys), 25):
            chunk = [request(f"k{n:03}", n) for n in keys[i : i + 25]]
            results.append(on.add_jobs_once_each(chunk, now=T0, default_attempts=1))

    keys = list(range(200))
    threads = [
        threading.Thread(target=submit, args=(catalog, keys)),
        threading.Thread(target=submit, args=(second, keys[::-1])),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    answers = [r for chunk in results for r in chunk]
    assert len(answers) == 400 and sum(not r.replayed for r in answers) == 200
    assert sum(catalog.counts().values()) == 200
