"""What the dashboard's figures and the API tokens cost on the DynamoDB catalog.

    python bench/dynamo_figures.py --endpoint http://127.0.0.1:PORT [--jobs 5000]

Registers `--jobs` jobs in eight batches, ends a tenth of them over the last hour, then times
each figure the dashboard asks for (median of five calls) and counts the DynamoDB requests
each makes and the read units DynamoDB reports (`ReturnConsumedCapacity`; moto reports them
for some calls only: an emulator's figures, not AWS's). Start a moto server of your own
(`moto_server -p PORT`); the table is deleted afterwards.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from shepard.catalog import open_catalog
from shepard.catalog.base import StoredToken
from shepard.model import JobSpec, JobStatus, Outcome

READS = ("Query", "GetItem", "BatchGetItem", "Scan")


def specs(n: int, batch: str) -> Iterator[JobSpec]:
    return (JobSpec({"NAME": f"{batch}-{i}"}, batch=batch) for i in range(n))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True, help="DynamoDB endpoint (moto server)")
    parser.add_argument("--jobs", type=int, default=5_000)
    args = parser.parse_args()
    for name, value in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}.items():
        os.environ.setdefault(name, value)
    table = f"shepard-bench-{uuid.uuid4().hex[:8]}"
    catalog = open_catalog(f"dynamodb://{table}?region=us-east-1&endpoint={args.endpoint}")
    seen = {"requests": 0, "units": 0.0}

    def ask(params: dict[str, Any], **_: Any) -> None:
        params["ReturnConsumedCapacity"] = "TOTAL"

    def count(parsed: dict[str, Any], **_: Any) -> None:
        seen["requests"] += 1
        used = parsed.get("ConsumedCapacity") or []
        for entry in used if isinstance(used, list) else [used]:
            seen["units"] += float(entry.get("CapacityUnits", 0))

    events = catalog._db.meta.events  # type: ignore[attr-defined]
    for operation in READS:
        events.register(f"provide-client-params.dynamodb.{operation}", ask)
        events.register(f"after-call.dynamodb.{operation}", count)

    def measure(label: str, call: Callable[[], object]) -> None:
        times = []
        for _ in range(5):
            seen.update(requests=0, units=0.0)
            began = time.perf_counter()
            call()
            times.append(time.perf_counter() - began)
        print(f"  {label:<44} {statistics.median(times) * 1000:8.0f} ms "
              f"{seen['requests']:4d} reads {seen['units']:8.1f} units")  # fmt: skip

    try:
        now = time.time()
        per_batch = max(1, args.jobs // 8)
        for b in range(8):
            catalog.submit_jobs(specs(per_batch, f"b{b}"), batch=f"b{b}", now=now - 3600,
                                default_attempts=1)  # fmt: skip
        ended = per_batch * 8 // 10
        for n in range(ended):
            (job,) = catalog.claim("w", now=now - 3600, lease=7200)
            status = JobStatus.FAILED if n % 7 == 0 else JobStatus.SUCCEEDED
            at = now - 3600 + 3600 * n / ended
            catalog.finish(job.id, job.attempt, Outcome(status), now=at)
        catalog.add_token(StoredToken("bench", "d" * 64, False, now, None))
        print(f"{per_batch * 8:,} jobs in 8 batches, {ended:,} ended over the last hour")
        first = int(now // 60) - 59
        measure("ended_per_minute (the last 60 minutes)",
                lambda: catalog.ended_per_minute(since=first * 60.0))  # fmt: skip
        marks = catalog.count_marks()
        measure("count_marks", catalog.count_marks)
        measure("count_changes", lambda: catalog.count_changes(after_event=marks[0],
                                                               after_seq=marks[1]))  # fmt: skip
        measure("counts", catalog.counts)
        measure("recent_batches (8)", lambda: catalog.recent_batches(limit=8))
        measure("counts(batch=...) of one batch", lambda: catalog.counts(batch="b7"))
        measure("page of 51, a common text", lambda: catalog.page(text="b7-", limit=51))
        measure("page of 51, a text no job has", lambda: catalog.page(text="zz", limit=51))
        measure("find_token", lambda: catalog.find_token("d" * 64, now=now))
    finally:
        catalog._db.delete_table(TableName=table)  # type: ignore[attr-defined]
        catalog.close()


if __name__ == "__main__":
    main()
