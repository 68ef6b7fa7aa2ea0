"""Registering many jobs in the DynamoDB catalog, against the same in SQLite, side by side.

    python bench/dynamo_catalog.py --endpoint http://127.0.0.1:PORT [--jobs 1000000]

Prints the registration time of each (and the ratio), the write units DynamoDB reports in
ConsumedCapacity for the registration (moto reports none for BatchWriteItem: then the
units are estimated from the item sizes, 1 per KB, plus one per index entry), and the time
of a first `page` (50 newest jobs) and of `counts` on the registered jobs. Against moto the
DynamoDB figures measure the emulator (one Python process), not AWS: start a moto server of
your own (`moto_server -p PORT`); the table is deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

from shepard.catalog import open_catalog
from shepard.model import JobSpec


def specs(n: int) -> Iterator[JobSpec]:
    return (JobSpec({"ITEM": i, "NAME": f"sample-{i}"}, batch="bench") for i in range(n))


def timed(label: str, fn: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn()
    elapsed = time.perf_counter() - start
    print(f"  {label:<28} {elapsed:10.3f} s", flush=True)
    return value, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True, help="DynamoDB endpoint (moto server)")
    parser.add_argument("--jobs", type=int, default=1_000_000)
    args = parser.parse_args()
    for name, value in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}.items():
        os.environ.setdefault(name, value)

    table = f"shepard-bench-{uuid.uuid4().hex[:8]}"
    dynamo = open_catalog(f"dynamodb://{table}?region=us-east-1&endpoint={args.endpoint}")
    units = {"reported": 0.0, "estimated": 0.0}

    def ask_capacity(params: dict[str, Any], **_: Any) -> None:
        params["ReturnConsumedCapacity"] = "TOTAL"
        for request in params.get("RequestItems", {}).get(table, []):
            if "PutRequest" in request:  # 1 unit per KB, plus one per index entry
                item = request["PutRequest"]["Item"]
                size = len(json.dumps(item)) / 1024
                indexes = 2 + ("gb" in item) + ("gu" in item)
                units["estimated"] += max(1, -(-size // 1)) + indexes

    def count(parsed: dict[str, Any], **_: Any) -> None:
        for used in parsed.get("ConsumedCapacity", []) or []:
            units["reported"] += float(used.get("CapacityUnits", 0))

    events = dynamo._db.meta.events  # type: ignore[attr-defined]
    events.register("provide-client-params.dynamodb.BatchWriteItem", ask_capacity)
    events.register("after-call.dynamodb.BatchWriteItem", count)

    n = args.jobs
    print(f"{n:,} jobs; the machine may be shared: compare the ratios of one run")
    with tempfile.TemporaryDirectory() as folder:
        sqlite = open_catalog(f"sqlite:///{folder}/catalog.db")
        print("SQLite")
        _, sql_add = timed(
            "register", lambda: sqlite.add_jobs(specs(n), now=1.0, default_attempts=1)
        )
        _, sql_page = timed("page of 50 (newest)", lambda: sqlite.page(limit=50))
        timed("counts", sqlite.counts)
        sqlite.close()
    try:
        print("DynamoDB")
        _, ddb_add = timed(
            "register", lambda: dynamo.add_jobs(specs(n), now=1.0, default_attempts=1)
        )
        _, ddb_page = timed("page of 50 (newest)", lambda: dynamo.page(limit=50))
        counted, _ = timed("counts", dynamo.counts)
        assert sum(counted.values()) == n
        print(f"  write units (reported)       {units['reported']:10.0f}")
        per_job = units["estimated"] / n
        print(f"  write units (estimated)      {units['estimated']:10.0f}  ({per_job:.1f} per job)")
        ratios = f"register {ddb_add / sql_add:.1f}x, page {ddb_page / sql_page:.1f}x"
        print(f"ratios DynamoDB/SQLite: {ratios}")
        print(f"DynamoDB registration rate: {n / ddb_add:,.0f} jobs/s")
    finally:
        dynamo._db.delete_table(TableName=table)  # type: ignore[attr-defined]
        dynamo.close()


if __name__ == "__main__":
    main()
