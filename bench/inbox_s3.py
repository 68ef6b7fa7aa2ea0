"""S3 inbox throughput: N small bundles put into inbox/ of a flock kept in S3 while the inbox
watches, beside the folder inbox's figure in the same run.

    eval "$(scripts/services-s3)"        # moto's S3 server, or --endpoint "$(bench/s3-server)"
    .venv/bin/python bench/inbox_s3.py [--bundles 2000] [--rounds 3] [--threads 8] [--check]

Each round makes a fresh bucket and a flock with `storage.root = s3://BUCKET/flocks/bench`
(catalog: SQLite in a local folder), and measures, in the same run:
- put floor: the N PutObject requests alone (8 at a time), which is the drop itself;
- watched: an ObjectInbox watching as `shepard up` does (`run`, 1 s between idle listings)
  while the N bundles are put: from the first put until the last job is registered;
- backlog: the N bundles already in the inbox, one watcher draining them (scan after scan);
- the folder inbox (bench/inbox.py's round, renames into a folder inbox) with the same N.
It counts the S3 requests of the watcher per bundle, by operation, and the server's time per
request (one HeadBucket at a time), measures what the server allows at all in the same run
(bench/s3ceiling.py: raw PUT, GET, COPY+DELETE and LIST rates from 1 and --threads threads)
and the cap that puts on the inbox (a bundle is the drop's PUT, one listed key, the watcher's
GET and PUT), and checks that every bundle became exactly one job.
Target: >= 500 bundles/s watched (the original system's S3 -> Lambda path turned about 290/s).
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import inbox as folder_bench
import s3ceiling
from shepard.config import BackendConfig, FlockConfig, PayloadConfig, StorageConfig
from shepard.flock import Flock
from shepard.storage import StoreOptions
from shepard.storage.s3 import client_for
from shepard.triggers import ObjectInbox

TARGET = 500  # bundles/s, watched, end to end


@dataclass
class Round:
    put: float  # seconds to put the N objects (no watcher)
    watched: float  # seconds from the first put to the last registration, watcher running
    backlog: float  # seconds to drain N objects already in the inbox
    cpu: float  # CPU seconds of this process while draining them (client, checks, catalog)
    requests: collections.Counter[str]  # S3 requests of the backlog watcher, by operation


def small_bundle(i: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("inputs.json", json.dumps({"ITEM": i, "NAME": f"sample-{i}"}))
        zf.writestr("data/sample.txt", f"sample {i}\n" * 10)
    return buf.getvalue()


class Requests:
    """Counts the S3 requests a client sends, by operation (botocore's event hooks)."""

    def __init__(self, client: Any) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self.on = False
        client.meta.events.register("before-call.s3.*", self._count)

    def _count(self, model: Any, **_: Any) -> None:
        if self.on:
            self.counts[model.name] += 1


def new_flock(scratch: Path, endpoint: str, name: str) -> Flock:
    bucket = f"bench-{uuid.uuid4().hex[:16]}"
    client_for(StoreOptions(endpoint_url=endpoint)).create_bucket(Bucket=bucket)
    cfg = FlockConfig(
        name="bench",
        backend=BackendConfig(workers=1),
        payload=PayloadConfig(command="true"),
        storage=StorageConfig(root=f"s3://{bucket}/flocks/bench", endpoint_url=endpoint),
    )
    return Flock.create(scratch / name, cfg)


def put_all(flock: Flock, bundles: list[bytes], pool: ThreadPoolExecutor) -> float:
    store = flock.store("inbox")
    began = time.perf_counter()
    list(pool.map(lambda i: store.put_bytes(f"bundle-{i:05}.zip", bundles[i]), range(len(bundles))))
    return time.perf_counter() - began


def check(flock: Flock, n: int) -> None:
    jobs = flock.catalog.page(limit=n + 1, newest_first=False)
    assert len(jobs) == n, f"{len(jobs)} jobs for {n} bundles"
    assert sorted(int(j.params["ITEM"]) for j in jobs) == list(range(n))  # type: ignore[arg-type]
    assert len({j.bundle_key for j in jobs}) == n
    assert not list(flock.store("inbox").list()), "the inbox is not empty"


def watched_round(flock: Flock, bundles: list[bytes], threads: int) -> float:
    n, done = len(bundles), threading.Event()
    registered = [0]

    def seen(result: Any) -> None:
        registered[0] += result.registered
        if registered[0] >= n:
            done.set()

    stop = threading.Event()
    with ObjectInbox(flock, threads=threads, on_result=seen) as inbox:
        watcher = threading.Thread(target=inbox.run, args=(stop,))
        watcher.start()
        time.sleep(0.2)  # let it list the empty inbox once, as a running `up` has
        with ThreadPoolExecutor(8) as pool:
            began = time.perf_counter()
            put_all(flock, bundles, pool)
        assert done.wait(600), f"only {registered[0]} of {n} registered"
        elapsed = time.perf_counter() - began
        stop.set()
        watcher.join()
    check(flock, n)
    return elapsed


def backlog_round(
    flock: Flock, bundles: list[bytes], threads: int, counter: Requests
) -> tuple[float, float]:
    n = len(bundles)
    with ThreadPoolExecutor(8) as pool:
        put_all(flock, bundles, pool)
    registered = 0
    with ObjectInbox(flock, threads=threads) as inbox:
        counter.on, counter.counts = True, collections.Counter()
        began, cpu = time.perf_counter(), time.process_time()
        while registered < n:
            registered += inbox.scan_once().registered
        elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu
        counter.on = False
    check(flock, n)
    return elapsed, cpu


def one_round(n: int, endpoint: str, threads: int, counter: Requests) -> Round:
    scratch = Path(tempfile.mkdtemp(prefix="shepard-inbox-s3-bench-"))
    bundles = [small_bundle(i) for i in range(n)]
    try:
        floor_flock = new_flock(scratch, endpoint, "floor")
        with ThreadPoolExecutor(8) as pool:
            put = put_all(floor_flock, bundles, pool)
        floor_flock.close()
        flock = new_flock(scratch, endpoint, "watched")
        watched = watched_round(flock, bundles, threads)
        flock.close()
        flock = new_flock(scratch, endpoint, "backlog")
        backlog, cpu = backlog_round(flock, bundles, threads, counter)
        flock.close()
        return Round(put, watched, backlog, cpu, counter.counts)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def request_time(endpoint: str, count: int = 200) -> float:
    """Seconds per request of the server, one HeadBucket at a time."""
    client = client_for(StoreOptions(endpoint_url=endpoint))
    bucket = f"bench-{uuid.uuid4().hex[:16]}"
    client.create_bucket(Bucket=bucket)
    began = time.perf_counter()
    for _ in range(count):
        client.head_bucket(Bucket=bucket)
    return (time.perf_counter() - began) / count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundles", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=8, help="objects taken at once")
    parser.add_argument("--endpoint", default=os.environ.get("SHEPARD_TEST_S3"))
    parser.add_argument("--check", action="store_true", help="exit 1 if the target is missed")
    args = parser.parse_args()
    if not args.endpoint:
        parser.error('no S3 endpoint: eval "$(scripts/services-s3)" or give --endpoint URL')
    for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}.items():
        os.environ.setdefault(name, value)
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    n = args.bundles
    counter = Requests(client_for(StoreOptions(endpoint_url=args.endpoint)))
    print(f"{n} small bundles; median of {args.rounds} round(s); target {TARGET}/s watched")
    rounds = [one_round(n, args.endpoint, args.threads, counter) for _ in range(args.rounds)]
    folder = [folder_bench.one_round(n, None) for _ in range(args.rounds)]
    put = statistics.median(r.put for r in rounds)
    watched = statistics.median(r.watched for r in rounds)
    backlog = statistics.median(r.backlog for r in rounds)
    folder_e2e = statistics.median(r.end_to_end for r in folder)
    print(f"\nS3 ({args.endpoint}), {args.threads} objects taken at once")
    print(f"  put floor (8 at a time) {put:6.2f} s  {n / put:7.0f} objects/s")
    print(f"  watched, end to end     {watched:6.2f} s  {n / watched:7.0f} bundles/s")
    print(f"  backlog drained         {backlog:6.2f} s  {n / backlog:7.0f} bundles/s")
    total = sum(rounds[-1].requests.values())
    ops = ", ".join(f"{op} {c / n:.3f}" for op, c in rounds[-1].requests.most_common())
    print(f"  requests per bundle     {total / n:.2f} ({ops})")
    per = request_time(args.endpoint)
    print(f"  server time per request {per * 1000:.2f} ms (one at a time)")
    ceiling = s3ceiling.measure(args.endpoint, args.threads, count=200)
    print("\n".join(ceiling.lines()))
    # a bundle costs the server its drop (PUT), one listed key, the watcher's GET and PUT
    cost = 2 / ceiling.rate("put") + 1 / ceiling.rate("get") + 1 / ceiling.rate("list")
    print(
        f"  the server caps the inbox at {1 / cost:.0f} bundles/s (PUT, listed key, GET, PUT "
        f"at its {args.threads}-thread rates); watched reached {n / watched * cost:.0%} of it"
    )
    cpu = statistics.median(r.cpu for r in rounds)
    print(
        f"  watcher CPU per bundle  {cpu / n * 1000:.2f} ms (this process: S3 client, checks, "
        f"catalog), so at most {n / cpu:.0f} bundles/s per watcher process"
    )
    print(f"\nfolder inbox ({tempfile.gettempdir()}), same N, end to end with the 0.5 s wait")
    print(f"  watcher e2e             {folder_e2e:6.2f} s  {n / folder_e2e:7.0f} bundles/s")
    print(f"\nratio S3 watched / folder: {folder_e2e / watched:.3f}")
    missed = n / watched < TARGET
    print(f"{'MISSES' if missed else 'meets'} the target of {TARGET} bundles/s watched")
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
