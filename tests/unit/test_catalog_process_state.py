"""Catalog code may run inside a threaded server: it never flips process-wide switches."""

from __future__ import annotations

import gc
from collections.abc import Iterator

from shepard.catalog import open_catalog
from shepard.model import JobSpec


def test_a_bulk_insert_leaves_the_garbage_collector_alone() -> None:
    seen: list[bool] = []

    def specs() -> Iterator[JobSpec]:
        for i in range(50_000):  # more than two insert chunks
            if i % 10_000 == 0:
                seen.append(gc.isenabled())
            yield JobSpec({"I": i})

    catalog = open_catalog("memory://")
    try:
        assert gc.isenabled()
        catalog.add_jobs(specs(), now=1.0, default_attempts=1)
        catalog.submit_jobs(specs(), batch="b", now=1.0, default_attempts=1)
    finally:
        catalog.close()
    assert seen == [True] * 10 and gc.isenabled()
