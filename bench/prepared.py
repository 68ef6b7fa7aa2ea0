"""What compiling the hot statements once saves (catalog/prepared.py), on SQLite.

    .venv/bin/python bench/prepared.py [--jobs 20000] [--rounds 5]

Each side runs a job's hot statements (claim one job, read its facts, finish it, record its
two history rows) for `--jobs` jobs in transactions of one job each, on one connection to a
fresh SQLite catalog file (in /dev/shm when there is one): once through `Prepared` on the
DBAPI cursor, once through SQLAlchemy's `Connection.execute` with its compiled cache (the
public way). Prints the CPU time of this process per job (median of the rounds; steadier than
wall time on a shared machine) and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from shepard.catalog import open_catalog
from shepard.catalog.prepared import Prepared
from shepard.catalog.schema import jobs
from shepard.catalog.statements import (
    CLAIM,
    FACT_COLUMNS,
    FINISH,
    FINISH_FACTS,
    INSERT_EVENT,
    claim_params,
)
from shepard.model import JobSpec

EVENT_KEYS = ("job_id", "attempt", "status", "at", "detail")


def finish_params(job_id: str) -> dict[str, Any]:
    return {
        "b_id": job_id, "b_attempt": 1, "b_status": "succeeded", "b_not_before": None,
        "b_finished_at": 2.0, "b_reason": None, "b_exit_code": 0, "b_outputs": "[]",
        "b_error_bundle": None,
    }  # fmt: skip


def events(job_id: str) -> list[dict[str, Any]]:
    return [
        {"job_id": job_id, "attempt": 1, "status": s, "at": 1.0, "detail": None}
        for s in ("running", "succeeded")
    ]


def fresh(folder: Path, n: int, name: str) -> sa.Engine:
    url = f"sqlite:///{folder / name}"
    catalog = open_catalog(url)
    catalog.add_jobs((JobSpec({"I": i}) for i in range(n)), now=0.0, default_attempts=1)
    catalog.close()
    return sa.create_engine(url)


def prepared_side(engine: sa.Engine, n: int) -> float:
    d = engine.dialect
    claim = Prepared(CLAIM, d, [c.name for c in jobs.c])
    facts = Prepared(FINISH_FACTS, d, [c.name for c in FACT_COLUMNS])
    finish, event = Prepared(FINISH, d), Prepared(INSERT_EVENT, d, insert_keys=EVENT_KEYS)
    raw = engine.raw_connection()
    start = time.process_time()
    for _ in range(n):
        (row,) = claim.rows(raw, claim_params("w", now=1.0, lease=60, limit=1))
        facts.rows(raw, {"b_id": row["id"]})
        finish.rows(raw, finish_params(row["id"]))
        event.many(raw, events(row["id"]))
        raw.commit()
    took = time.process_time() - start
    raw.close()
    return took


def sqlalchemy_side(engine: sa.Engine, n: int) -> float:
    with engine.connect() as conn:
        start = time.process_time()
        for _ in range(n):
            with conn.begin():
                row = conn.execute(CLAIM, claim_params("w", now=1.0, lease=60, limit=1)).one()
                conn.execute(FINISH_FACTS, {"b_id": row.id}).one()
                conn.execute(FINISH, finish_params(row.id))
                conn.execute(INSERT_EVENT, events(row.id))
        return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    sides = {"prepared": prepared_side, "sqlalchemy": sqlalchemy_side}
    took: dict[str, list[float]] = {name: [] for name in sides}
    shm = "/dev/shm" if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(dir=shm) as folder:
        for r in range(args.rounds):
            for name, side in sides.items():
                engine = fresh(Path(folder), args.jobs, f"{name}{r}.db")
                took[name].append(side(engine, args.jobs))
                engine.dispose()
    per_job = {name: statistics.median(t) / args.jobs * 1e6 for name, t in took.items()}
    for name, us in per_job.items():
        print(f"  {name:<11} {us:7.1f} µs CPU per job (claim, facts, finish, 2 events, commit)")
    print(f"  ratio sqlalchemy/prepared: {per_job['sqlalchemy'] / per_job['prepared']:.2f}")


if __name__ == "__main__":
    main()
