"""Benchmark: one page of `Catalog.page` (50 jobs) under each filter of the service layer.

    .venv/bin/python bench/page_filters.py [--jobs N] [--url URL]

Registers N jobs (one batch; TAG `rare` on one job in 10,000, else one of seven common tags)
into a fresh catalog (SQLite in a temporary folder unless --url names an empty database), then
times a newest-first page with no filter, a common tag, a rare tag, and the batch.
A rare tag scans the table: that is the figure a `tag` column with an index would remove.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

from shepard.catalog import open_catalog
from shepard.model import JobSpec

FILTERS: list[tuple[str, dict[str, Any]]] = [
    ("no filter", {}),
    ("common tag", {"tag": "T3"}),
    ("rare tag", {"tag": "RARE"}),
    ("batch", {"batch": "b"}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200_000)
    parser.add_argument("--url", default=None)
    args = parser.parse_args()
    url = args.url or f"sqlite:///{tempfile.mkdtemp()}/catalog.db"
    catalog = open_catalog(url)
    specs = (
        JobSpec({"TAG": "rare" if i % 10_000 == 0 else f"t{i % 7}", "I": i}, batch="b")
        for i in range(args.jobs)
    )
    catalog.add_jobs(specs, now=1.0, default_attempts=1)
    for label, filters in FILTERS:
        began = time.perf_counter()
        for _ in range(5):
            catalog.page(limit=50, **filters)
        ms = (time.perf_counter() - began) / 5 * 1000
        print(f"{label:>10}: {ms:7.1f} ms per page of 50 over {args.jobs} jobs")
    catalog.close()


if __name__ == "__main__":
    main()
