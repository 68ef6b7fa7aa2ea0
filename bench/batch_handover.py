"""Hand-over to AWS Batch: 100,000 queued jobs, as array jobs, against one call per job.

    .venv/bin/python bench/batch_handover.py [--jobs 100000] [--rate 10] [--sample 200]

Starts its own moto server (from /opt/shepard-moto, scripts/services-aws installs it) on a
free port, with Batch's `use_docker` off (jobs are only recorded, not run: what is measured is
the hand-over), makes a queue and a bucket, a flock with the aws-batch backend and its stores
in that bucket, submits `--jobs` jobs and drives the hand-over step of the backend's
`dispatch` (the array template's `hand_over`: place, manifest, assignment, SubmitJob) until
every job is with Batch; following the children is left out (the emulator ends them at once
without running them). Printed: SubmitJob calls (target <= 10 for 100,000), the highest
number of Batch calls within any one second (target <= the configured rate), wall time.
The baseline is the original's one SubmitJob per job: `--sample` single-job submissions
through the same paced client give its time per job, and the time 100,000 would take at the
same rate limit.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import deque
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
MOTO = os.environ.get("SHEPARD_MOTO_VENV", "/opt/shepard-moto") + "/bin/moto_server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([MOTO, "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(url, timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    body = json.dumps({"batch": {"use_docker": False}}).encode()
    request = urllib.request.Request(f"{url}/moto-api/config", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    urllib.request.urlopen(request, timeout=5)
    return proc, url


class Timed:
    """Wraps a boto3 client: keeps the time of every call (for the calls-per-second peak)."""

    def __init__(self, client: Any, times: list[float]) -> None:
        self._client, self._times = client, times

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self._times.append(time.monotonic())
            return attr(*args, **kwargs)

        return call


def peak(times: list[float]) -> int:
    """The most calls within any one second."""
    window: deque[float] = deque()
    best = 0
    for t in sorted(times):
        window.append(t)
        while window[0] <= t - 1.0:
            window.popleft()
        best = max(best, len(window))
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--sample", type=int, default=200)
    args = parser.parse_args()
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():  # fmt: skip
        os.environ.setdefault(name, value)
    proc, url = start_moto()
    try:
        run(url, args)
    finally:
        proc.kill()  # its job threads would keep it busy for a while
        proc.wait(30)


def run(url: str, args: argparse.Namespace) -> None:
    from tests import aws

    from shepard import config
    from shepard.backends.aws_batch.api import BatchApi, RateLimiter, clients
    from shepard.backends.aws_batch.backend import BatchBackend
    from shepard.flock import Flock

    queue, bucket = aws.queue(url), aws.bucket(url)
    folder = Path(tempfile.mkdtemp(prefix="batch-handover-")) / "flock"
    data = {
        "name": "handover",
        "storage": {"root": f"s3://{bucket}/handover", "endpoint_url": url},
        "backend": {"kind": "aws-batch", "aws-batch": {
            "queue": queue, "image": "bench/worker:1", "endpoint_url": url,
            "submit_rate": args.rate}},
        "payload": {"command": "true"},
    }  # fmt: skip
    flock = Flock.create(folder, config.parse(data, source="bench"))
    began = time.perf_counter()
    flock.submit({"ITEM": i} for i in range(1, args.jobs + 1))
    submitted = time.perf_counter() - began
    times: list[float] = []
    batch, logs = clients(None, url)
    api = BatchApi(Timed(batch, times), logs, RateLimiter(args.rate))
    backend = BatchBackend(flock.backend_context(worker="bench"), api=api)
    began = time.perf_counter()
    while flock.catalog.ready(now=time.time()) > 0:  # the hand-over step of `dispatch`
        backend.arrays.hand_over(time.time())
    handover = time.perf_counter() - began
    calls = dict(api.calls)
    placed = sum(flock.catalog.placements().values())
    # the original: one SubmitJob per job, through the same paced client
    definition = backend.batch.job_definition()
    one_api = BatchApi(batch, logs, RateLimiter(args.rate))
    began = time.perf_counter()
    for i in range(args.sample):
        one_api.submit(jobName=f"one-{i}", jobQueue=queue, jobDefinition=definition)
    per_job = (time.perf_counter() - began) / args.sample
    flock.close()
    print(f"jobs: {args.jobs} (submitted to the catalog in {submitted:.1f} s); handed to Batch: "
          f"{placed}")  # fmt: skip
    print(f"aws-batch: SubmitJob calls {calls.get('SubmitJob', 0)} (target <= 10), all Batch "
          f"calls {sum(calls.values())} {calls}")  # fmt: skip
    print(f"aws-batch: peak {peak(times)} calls in one second (configured rate {args.rate:g}/s)")
    print(f"aws-batch: hand-over wall time {handover:.1f} s")
    print(f"one call per job: {per_job * 1000:.1f} ms a call over {args.sample} calls at "
          f"{args.rate:g}/s -> {args.jobs} jobs: {args.jobs * per_job:.0f} s, "
          f"{args.jobs} SubmitJob calls")  # fmt: skip
    print(f"ratio (one call per job / arrays), wall time: {args.jobs * per_job / handover:.1f}x")


if __name__ == "__main__":
    main()
