"""The serverless flock's scheduler: bundles validated and registered per second by ONE
invocation handling a batch of SQS events (S3 ObjectCreated messages), against the same
bundles registered by `shepard batch` into the same DynamoDB catalog.

    SHEPARD_TEST_AWS=http://127.0.0.1:PORT .venv/bin/python bench/lambda_scheduler.py \
        [--events 100] [--rounds 3] [--cli 10] [--check]

Each round makes a new flock on the AWS test server (tests/serverless.py: buckets, queues,
a Batch queue, the DynamoDB catalog), puts N small bundles into the inbox (not timed), then:
- scheduler: `shepard.lambdas.scheduler.handler` called in this process with N records (the
  bodies moto sends, captured in tests/integration/data), as Lambda would call it. "take" is
  the registration (stat, validation, conditional store of the bundle, one catalog write per
  chunk of 100, the inbox's objects deleted); "handler" adds the dispatch round (one Batch
  array of N children) and the flock's opening (flock.toml read from the state bucket);
- batch (in-process): `Flock.submit_bundle` for each of the same N bundles, what `shepard
  batch BUNDLE.zip` does once started, into a new flock's catalog on the same server;
- batch (CLI): `shepard batch BUNDLE.zip` as processes, for --cli of them.
A warm container is measured (a first invocation, with a kick only, opens the flock).
Target (issue 15): >= 300 bundles/s for the scheduler. `--check` exits 1 below it.
Run it against a moto server of its own with Batch's containers off (POST /moto-api/config
{"batch": {"use_docker": false}}): each round's array would otherwise start N containers.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.serverless import Context, stack

TARGET = 300.0  # bundles/s, one invocation


def small_bundle(i: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("inputs.json", json.dumps({"ITEM": i, "NAME": f"sample-{i}"}))
        zf.writestr("data/sample.txt", f"sample {i}\n" * 10)
    return buf.getvalue()


def scheduler_round(url: str, n: int) -> tuple[float, float]:
    """(take seconds, handler seconds) of one invocation with n events."""
    from shepard.lambdas import scheduler
    from shepard.lambdas.common import forget_flocks, open_flock

    with stack(url, image="localhost/shepard-test-busybox:1") as made:
        s3 = made.client("s3")
        keys = [f"drop/sample-{i:05d}.zip" for i in range(n)]
        for i, key in enumerate(keys):
            s3.put_object(Bucket=made.bucket("inbox"), Key=key, Body=small_bundle(i))
        scheduler.handler(made.sqs_event([json.dumps({"shepard": "dispatch"})]), Context())
        # the whole handler: N objects registered, then handed to Batch as one array
        event = made.sqs_event([made.put_event(key) for key in keys])
        started = time.perf_counter()
        answer = scheduler.handler(event, Context())
        handler = time.perf_counter() - started
        assert answer == {"batchItemFailures": []}, answer
        # the registration alone, with N new objects (their jobs stay queued)
        for i, key in enumerate(keys):
            s3.put_object(Bucket=made.bucket("inbox"), Key=key + ".2", Body=small_bundle(i))
        flock = open_flock(os.environ)
        plan = scheduler.read_messages(
            made.sqs_event([made.put_event(key + ".2") for key in keys])["Records"],
            made.bucket("inbox"),
        )
        started = time.perf_counter()
        counts = scheduler.take(flock, plan)
        take = time.perf_counter() - started
        assert counts["registered"] == n and not plan.failed, (counts, plan.failed)
        forget_flocks()
    return take, handler


def batch_round(url: str, n: int, cli: int) -> tuple[float, float]:
    """(in-process seconds per bundle, CLI seconds per bundle)."""
    from shepard.lambdas.common import forget_flocks, open_flock

    with stack(url, image="localhost/shepard-test-busybox:1"), \
            tempfile.TemporaryDirectory() as tmp:  # fmt: skip
        flock = open_flock(os.environ)
        paths = []
        for i in range(n):
            path = Path(tmp) / f"sample-{i:05d}.zip"
            path.write_bytes(small_bundle(i))
            paths.append(path)
        started = time.perf_counter()
        for path in paths:
            flock.submit_bundle(path)
        in_process = (time.perf_counter() - started) / n
        shepard = Path(sys.executable).parent / "shepard"
        started = time.perf_counter()
        for path in paths[:cli]:
            subprocess.run([str(shepard), "batch", str(path), "--flock", str(flock.dir.folder)],
                           check=True, capture_output=True, env=os.environ)  # fmt: skip
        by_cli = (time.perf_counter() - started) / max(1, cli)
        forget_flocks()
    return in_process, by_cli


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cli", type=int, default=10)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    url = os.environ.get("SHEPARD_TEST_AWS")
    if not url:
        print('set SHEPARD_TEST_AWS (eval "$(scripts/services-aws)")', file=sys.stderr)
        return 2
    n = args.events
    takes, handlers, singles, clis = [], [], [], []
    for _ in range(args.rounds):
        take, handler = scheduler_round(url, n)
        single, by_cli = batch_round(url, n, args.cli)
        takes.append(take)
        handlers.append(handler)
        singles.append(single)
        clis.append(by_cli)
    take, handler = statistics.median(takes), statistics.median(handlers)
    print(f"scheduler, {n} events in one invocation (median of {args.rounds}):")
    print(f"  take (validate + register):  {take:.3f} s  {n / take:7.0f} bundles/s")
    print(f"  whole handler (+ dispatch):  {handler:.3f} s  {n / handler:7.0f} bundles/s")
    single, by_cli = statistics.median(singles), statistics.median(clis)
    print("shepard batch, one bundle at a time into the same DynamoDB:")
    print(
        f"  in process (submit_bundle):  {single * 1000:.1f} ms each  {1 / single:7.0f} bundles/s"
    )
    cli_line = f"  CLI processes ({args.cli}):"
    print(f"{cli_line:31}{by_cli * 1000:.0f} ms each  {1 / by_cli:7.1f} bundles/s")
    ok = n / handler >= TARGET
    print(f"target >= {TARGET:.0f} bundles/s (whole handler): {'met' if ok else 'MISSED'}")
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
