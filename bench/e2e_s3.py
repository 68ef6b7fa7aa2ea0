"""End-to-end throughput of the local backend with every store in S3, against local folders.

    .venv/bin/python bench/e2e_s3.py [--jobs 2000] [--workers N] [--rounds 3] [--endpoint URL]

Both sides run `shepard submit --range ITEM=1-N --wait` with the trivial payload of
bench/e2e_local.py (`echo "$ITEM" > <output>/o.txt`), alternating round by round: one flock
keeps its stores in folders, the other in a bucket of the S3 server at `--endpoint` (default
$SHEPARD_TEST_S3, else $AWS_ENDPOINT_URL; scripts/services-s3 starts moto's, bench/s3-server
a faster one: `--endpoint "$(bench/s3-server)"`). Each S3 job uploads its result zip (an
empty log is not stored; the secrets store is listed at most every 2 s per worker). The figure
that matters is the ratio of the two rates (target: S3 at least 0.5 of folders).

Where the time goes: what the S3 server alone allows in the same run (bench/s3ceiling.py: raw
boto3 PUT, GET, COPY+DELETE and LIST rates from 1 and from --workers threads); then `--profile`
jobs (default 100) of the S3 flock run one by one in this process (`Flock.run_job`), with every
S3 request counted and timed by operation; the server's PUT rate divided by the PUTs per job
caps the S3 side's jobs/s whatever the client does.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import s3ceiling

SHEPARD = str(Path(sys.executable).with_name("shepard"))
PAYLOAD = 'echo "$ITEM" > "$ROOT_OUTPUT_NAME/o.txt"'
FAKE_AWS = {  # an S3 test server takes any credentials
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def new_bucket(endpoint: str) -> str:
    from shepard.storage import StoreOptions
    from shepard.storage.s3 import client_for

    bucket = f"bench-{uuid.uuid4().hex[:16]}"
    client_for(StoreOptions(endpoint_url=endpoint)).create_bucket(Bucket=bucket)
    return bucket


def run_side(
    jobs: int, workers: int, scratch: Path, env: dict[str, str], storage: str | None
) -> tuple[float, float]:
    """(seconds, CPU seconds of every process) of `submit --range --wait` on a new flock."""
    flock = scratch / "flock"
    env = {**env, "SHEPARD_FLOCK": str(flock)}
    where = ["--storage", storage] if storage else []
    init = [SHEPARD, "init", str(flock), "--payload-command", PAYLOAD, "--workers", str(workers)]
    subprocess.run([*init, *where], check=True, env=env, capture_output=True)
    began, cpu = time.perf_counter(), children_cpu()
    subprocess.run(
        [SHEPARD, "submit", "--range", f"ITEM=1-{jobs}", "--wait"],
        check=True,
        env=env,
        capture_output=True,
    )
    elapsed, cpu = time.perf_counter() - began, children_cpu() - cpu
    check_outputs(flock, jobs, env)
    return elapsed, cpu


def check_outputs(flock: Path, jobs: int, env: dict[str, str]) -> None:
    from shepard.flock import Flock

    os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
    f = Flock.open(flock)
    try:
        produced = sum(1 for k in f.store("outputs").list() if k.endswith("_root.zip"))
    finally:
        f.close()
    assert produced == jobs, f"{produced} outputs for {jobs} jobs"


class Requests:
    """Every S3 request of one client, counted and timed by operation (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count: dict[str, int] = defaultdict(int)
        self.seconds: dict[str, float] = defaultdict(float)

    def attach(self, client: Any) -> None:
        client.meta.events.register("before-call.s3", self._before)
        client.meta.events.register("after-call.s3", self._after)

    def _before(self, model: Any, context: dict[str, Any], **_: Any) -> None:
        context["bench_began"] = time.perf_counter()

    def _after(self, model: Any, context: dict[str, Any], **_: Any) -> None:
        spent = time.perf_counter() - context.get("bench_began", time.perf_counter())
        with self.lock:
            self.count[model.name] += 1
            self.seconds[model.name] += spent


def profile(endpoint: str, jobs: int, scratch: Path) -> float:
    """Run `jobs` jobs of an S3 flock one by one here; print requests per job and their cost;
    return the PutObject requests per job."""
    from shepard.flock import Flock
    from shepard.storage import StoreOptions
    from shepard.storage.s3 import client_for

    flock_dir = scratch / "profiled"
    storage = f"s3://{new_bucket(endpoint)}/flock"
    init = [SHEPARD, "init", str(flock_dir), "--payload-command", PAYLOAD, "--storage", storage]
    subprocess.run(init, check=True, env=dict(os.environ), capture_output=True)
    flock = Flock.open(flock_dir)
    ids = flock.submit([{"ITEM": i} for i in range(jobs)]).ids
    requests = Requests()
    requests.attach(client_for(StoreOptions()))
    began = time.perf_counter()
    for job_id in ids:
        flock.run_job(job_id)
    total = time.perf_counter() - began
    flock.close()
    calls = sum(requests.count.values())
    in_s3 = sum(requests.seconds.values())
    print(f"  where the time goes ({jobs} S3 jobs run one by one in one process):")
    print(
        f"    {total / jobs * 1000:.1f} ms per job, of which {in_s3 / jobs * 1000:.1f} ms in "
        f"{calls / jobs:.1f} S3 requests ({in_s3 / calls * 1000:.2f} ms per request)"
    )
    for name in sorted(requests.count, key=lambda n: -requests.seconds[n]):
        n, spent = requests.count[name], requests.seconds[name]
        print(
            f"    {name:<22} {n / jobs:4.1f} per job   {spent / n * 1000:6.2f} ms each   "
            f"{spent / total:5.1%} of the time"
        )
    return requests.count["PutObject"] / jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", type=int, default=100, help="jobs profiled (0: none)")
    parser.add_argument(
        "--endpoint",
        default=os.environ.get("SHEPARD_TEST_S3") or os.environ.get("AWS_ENDPOINT_URL"),
        help="the S3 server (default $SHEPARD_TEST_S3, else $AWS_ENDPOINT_URL)",
    )
    parser.add_argument(
        "--dir",
        default="/dev/shm" if Path("/dev/shm").is_dir() else None,
        help="flock folders (default /dev/shm: measures bookkeeping, not the disk)",
    )
    args = parser.parse_args()
    if not args.endpoint:
        parser.error("no S3 server: give --endpoint URL (or run scripts/services-s3)")
    for name, value in FAKE_AWS.items():
        os.environ.setdefault(name, value)
    os.environ["AWS_ENDPOINT_URL"] = args.endpoint
    env = dict(os.environ)
    times: dict[str, list[float]] = {"folders": [], "s3": []}
    cpus: dict[str, list[float]] = {"folders": [], "s3": []}
    puts: list[float] = []  # the server's PUT rate from --workers threads, before each S3 side
    for _ in range(args.rounds):
        for side in ("folders", "s3"):
            if side == "s3":
                quick = s3ceiling.measure(
                    args.endpoint, args.workers, 150, ops=("put",), single=False
                )
                puts.append(quick.rate("put"))
            scratch = Path(tempfile.mkdtemp(prefix="shepard-bench-s3-", dir=args.dir))
            try:
                storage = f"s3://{new_bucket(args.endpoint)}/flock" if side == "s3" else None
                elapsed, cpu = run_side(args.jobs, args.workers, scratch, env, storage)
                times[side].append(elapsed)
                cpus[side].append(cpu)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
    print(
        f"{args.jobs} trivial jobs, local backend, {args.workers} workers, median of "
        f"{args.rounds} alternating rounds; S3 server {args.endpoint}"
    )
    rates = {}
    for side in ("folders", "s3"):
        t = statistics.median(times[side])
        rates[side] = args.jobs / t
        cpu = statistics.median(cpus[side]) / args.jobs * 1000
        print(f"  stores in {side:<8} {t:7.2f} s  {rates[side]:7.0f} jobs/s  {cpu:.2f} ms CPU/job")
    print(f"  ratio s3/folders: {rates['s3'] / rates['folders']:.2f}  (target >= 0.50)")
    put_rate = statistics.median(puts)
    print(f"  the server alone, just before each S3 side: {put_rate:.0f} PutObject/s "
          f"from {args.workers} threads (median); after the rounds:")  # fmt: skip
    print("\n".join(s3ceiling.measure(args.endpoint, args.workers, count=200).lines()))
    if args.profile:
        scratch = Path(tempfile.mkdtemp(prefix="shepard-bench-s3-", dir=args.dir))
        try:
            per_job = profile(args.endpoint, args.profile, scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        if per_job:
            cap = put_rate / per_job
            print(
                f"  the server caps the S3 side at {cap:.0f} jobs/s ({per_job:.1f} PutObject per "
                f"job at {put_rate:.0f}/s); reached {rates['s3'] / cap:.0%} of it; the folder "
                f"side ran at {rates['folders'] / cap:.2f} times that cap"
            )


if __name__ == "__main__":
    main()
