"""Benchmark: register N parameter-only jobs into a fresh SQLite catalog.

    .venv/bin/python bench/catalog_insert.py [--jobs N] [--dir DIR] [--check]

Each measurement runs in a fresh child process, so the peak RSS reported is that of the
registration alone. Two runs on the same schema:
- baseline: plain sqlite3 `executemany` of the same rows (id, JSON params, ...) in one
  transaction with the catalog's pragmas, and no bookkeeping at all;
- shepard:  `open_catalog(url).add_jobs(generator_of_JobSpec)`.
Both consume a generator, so both timings include making the rows; neither includes creating
the schema.
Targets: >= 100,000 jobs/s and < 300 MB peak RSS. `--check` exits 1 when one is missed.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

TARGET_RATE = 100_000  # jobs/s
TARGET_RSS_MB = 300

Measure = tuple[float, float, int]  # seconds, peak RSS in MB, rows in the table afterwards


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _count(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM jobs").fetchone()[0])


def _create_schema(db: Path) -> None:
    from shepard.catalog import open_catalog

    open_catalog(f"sqlite:///{db}").close()


def run_shepard(db: str, jobs: int) -> Measure:
    """Child process: the catalog's own path, from the first spec to the commit."""
    from shepard.catalog import open_catalog
    from shepard.model import JobSpec

    specs = (JobSpec(params={"ITEM": i}) for i in range(jobs))
    catalog = open_catalog(f"sqlite:///{db}")  # creates the schema, like the baseline's setup
    start = time.perf_counter()
    ids = catalog.add_jobs(specs, now=time.time(), default_attempts=1)
    seconds = time.perf_counter() - start
    catalog.close()
    assert len(ids) == jobs
    return seconds, _peak_rss_mb(), _count(Path(db))


def run_baseline(db: str, jobs: int) -> Measure:
    """Child process: the same rows through sqlite3 alone (schema made beforehand)."""
    from shepard.model import new_job_id

    now = time.time()

    def rows() -> Iterator[tuple[object, ...]]:
        for i in range(jobs):
            params = json.dumps({"ITEM": i}, separators=(",", ":"))
            yield new_job_id(), "queued", params, None, 1, None, None, now

    sql = (
        "INSERT INTO jobs (id, status, params, bundle_key, max_attempts, timeout, batch,"
        " submitted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    )
    start = time.perf_counter()
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(sql, rows())
    conn.execute("COMMIT")
    seconds = time.perf_counter() - start
    conn.close()
    return seconds, _peak_rss_mb(), _count(Path(db))


def in_child(fn: Callable[[str, int], Measure], db: Path, jobs: int) -> Measure:
    """Run `fn` in a freshly spawned process (clean heap, so ru_maxrss is its own)."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(fn, str(db), jobs).result()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, default=None, help="where the databases go")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.dir, prefix="shepard-bench-") as tmp:
        base_db, shep_db = Path(tmp) / "baseline.db", Path(tmp) / "shepard.db"
        _create_schema(base_db)
        baseline = in_child(run_baseline, base_db, args.jobs)
        shepard = in_child(run_shepard, shep_db, args.jobs)

    for label, (_, _, rows) in (("baseline", baseline), ("shepard", shepard)):
        if rows != args.jobs:
            print(f"{label}: expected {args.jobs} rows, found {rows}", file=sys.stderr)
            return 1
    rate = args.jobs / shepard[0]
    ok_rate, ok_rss = rate >= TARGET_RATE, shepard[1] < TARGET_RSS_MB
    print(f"Registering {args.jobs:,} parameter-only jobs into a new SQLite catalog (file, WAL)")
    print(f"{'':28}{'seconds':>9}{'jobs/s':>12}{'peak RSS':>11}")
    for label, (seconds, rss, _) in (
        ("sqlite3 executemany (base)", baseline),
        ("shepard add_jobs", shepard),
    ):
        print(f"{label:28}{seconds:9.2f}{args.jobs / seconds:12,.0f}{rss:8.0f} MB")
    print(f"ratio shepard/baseline: {baseline[0] / shepard[0]:.2f}x the throughput")
    print(f"target >= {TARGET_RATE:,} jobs/s: {'met' if ok_rate else 'MISSED'}")
    print(f"target < {TARGET_RSS_MB} MB peak RSS: {'met' if ok_rss else 'MISSED'}")
    return 1 if args.check and not (ok_rate and ok_rss) else 0


if __name__ == "__main__":
    sys.exit(main())
