"""End to end on AWS Batch (moto's emulation, containers through Podman): N trivial jobs
through the aws-batch backend against plain array jobs of the same command submitted with
boto3 to the same emulator.

    eval "$(scripts/services-aws)"; .venv/bin/python bench/batch_e2e.py [--jobs 200]
        [--array-size 20] [--in-flight 20] [--jobs-per-child 10]

The emulator starts every child of every array at once, whatever the compute environment's
vCPUs; on a small machine hundreds of containers starting together time out and end FAILED
without a log. So both sides keep at most `--in-flight` children with Batch, in arrays of at
most `--array-size`: the plain side submits the next array when one has ended, the Shepard
side is given the same numbers (`array_size`, `max_in_flight` in flock.toml) and looks at
Batch as often (`reconcile = 1.0`: every second, where the default is 5 s).

The Shepard side runs twice: one job per child, as the plain side (the default), then in
packs of `--jobs-per-child` jobs per child (`jobs_per_child`), the same number of children
at most at once: what a user with short jobs sets.

Both sides use the same worker image (derived from the test Python image) and queue. The
plain side runs `echo $AWS_BATCH_JOB_ID` in each child and waits until every child has ended
(ListJobs every second); its failed children are counted, not re-run. The Shepard side runs
`shepard submit --range ITEM=1-N --wait` on an aws-batch flock with stores in a bucket of the
same server (each child reads its job, runs the payload, uploads its logs and result, writes
its outcome; the head records them); children that ended without an outcome are lost workers,
re-run by the head, and counted. Each side starts once the load average has fallen under
1.5 (at most 90 s of waiting), so that none runs in the wake of the one before. Printed:
seconds of each, the ratios plain/shepard (target >= 0.7), the failures and re-runs, and the
machine's load average. The machine is shared: compare figures of one run only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
SHEPARD = str(Path(sys.executable).with_name("shepard"))
ENDED = ("SUCCEEDED", "FAILED")


def plain(url: str, queue: str, image: str, jobs: int, size: int, in_flight: int) -> dict[str, Any]:
    """Arrays of `size` children, at most `in_flight` children with Batch at once."""
    from tests import aws

    batch = aws.client("batch", url)
    definition = batch.register_job_definition(
        jobDefinitionName="plain-e2e", type="container",
        containerProperties={"image": image, "vcpus": 1, "memory": 256,
                             "command": ["sh", "-c", "echo $AWS_BATCH_JOB_ID"]},
    )["jobDefinitionArn"]  # fmt: skip
    began = time.perf_counter()
    arrays: dict[str, int] = {}  # array id -> children
    left, done, failed, calls = jobs, 0, 0, 0
    while left or arrays:
        waiting = sum(arrays.values())
        while left and waiting + min(size, left) <= in_flight:
            n = min(size, left)
            request: dict[str, Any] = {"jobName": "plain-e2e", "jobQueue": queue,
                                       "jobDefinition": definition}  # fmt: skip
            if n > 1:
                request["arrayProperties"] = {"size": n}
            arrays[batch.submit_job(**request)["jobId"]] = n
            calls += 1
            left, waiting = left - n, waiting + n
        time.sleep(1.0)
        for array_id, n in list(arrays.items()):
            if n > 1:
                children = batch.list_jobs(arrayJobId=array_id)["jobSummaryList"]
            else:
                children = batch.describe_jobs(jobs=[array_id])["jobs"]
            if len(children) == n and all(c["status"] in ENDED for c in children):
                failed += sum(c["status"] == "FAILED" for c in children)
                done += n
                del arrays[array_id]
    return {"seconds": time.perf_counter() - began, "failed": failed, "arrays": calls}


def shepard(url: str, queue: str, image: str, jobs: int, size: int, in_flight: int,
            timeout: float, pack: int = 1) -> dict[str, Any]:  # fmt: skip
    from tests import aws

    flock = Path(tempfile.mkdtemp(prefix="batch-e2e-")) / "flock"
    env = {**os.environ, **aws.FAKE, "AWS_ENDPOINT_URL": url, "SHEPARD_FLOCK": str(flock)}
    worker = [f"AWS_ENDPOINT_URL={aws.task_endpoint(url)}"]
    worker += [f"{k}={v}" for k, v in aws.FAKE.items()]
    init = [SHEPARD, "init", str(flock), "--backend", "aws-batch", "--batch-queue", queue,
            "--image", image, "--storage", f"s3://{aws.bucket(url)}/e2e",
            "--array-size", str(size),
            "--payload-command", 'echo "$ITEM" > "$ROOT_OUTPUT_NAME/o.txt"']  # fmt: skip
    for item in worker:
        init += ["--worker-env", item]
    subprocess.run(init, check=True, env=env, capture_output=True)
    toml = flock / "flock.toml"
    text = toml.read_text().replace(
        "[backend.aws-batch]\n",
        # the head looks at Batch as often as the plain side does (ListJobs every second)
        f"[backend.aws-batch]\nmax_in_flight = {in_flight}\nreconcile = 1.0\n"
        f"jobs_per_child = {pack}\n",
        1,
    )
    toml.write_text(text)
    began = time.perf_counter()
    waited = subprocess.run(
        [SHEPARD, "submit", "--range", f"ITEM=1-{jobs}", "--wait"],
        env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    seconds = time.perf_counter() - began
    listed = subprocess.run([SHEPARD, "query", "--json", "--limit", str(jobs)], env=env,
                            capture_output=True, text=True, check=True)  # fmt: skip
    found = json.loads(listed.stdout)["jobs"]
    arrays = {j["worker"].split(" ")[-1].rsplit("_", 1)[0] for j in found if j.get("worker")}
    return {
        "seconds": seconds,
        "exit": waited.returncode,
        "succeeded": sum(j["status"] == "succeeded" for j in found),
        "failed": sum(j["status"] == "failed" for j in found),
        "rerun": sum(j["attempt"] > 1 for j in found),  # lost children's jobs, run again
        "arrays": len(arrays),
    }


def settle(limit: float = 1.5, longest: float = 90.0) -> float:
    """Wait (up to `longest` seconds) for the 1-minute load average to fall under `limit`, so
    that a side does not start in the wake of the one before (its containers still being
    removed); returns the load average it starts with."""
    deadline = time.monotonic() + longest
    while os.getloadavg()[0] >= limit and time.monotonic() < deadline:
        time.sleep(5)
    return os.getloadavg()[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--array-size", type=int, default=20)
    parser.add_argument("--in-flight", type=int, default=20)
    parser.add_argument("--jobs-per-child", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=1800.0, help="of the Shepard side")
    args = parser.parse_args()
    if args.jobs < 1 or args.array_size < 1 or args.in_flight < args.array_size:
        parser.error("give --jobs >= 1, --array-size >= 1 and --in-flight >= --array-size")
    from tests import aws
    from tests.containers import PYTHON_IMAGE

    url = aws.endpoint()
    queue, image = aws.queue(url), aws.worker_image(PYTHON_IMAGE)
    load = os.getloadavg()
    starts = [settle()]
    base = plain(url, queue, image, args.jobs, args.array_size, args.in_flight)
    starts.append(settle())
    ours = shepard(url, queue, image, args.jobs, args.array_size, args.in_flight, args.timeout)
    starts.append(settle())
    packed = shepard(url, queue, image, args.jobs, args.array_size, args.in_flight, args.timeout,
                     args.jobs_per_child)  # fmt: skip
    after = os.getloadavg()
    print(f"{args.jobs} trivial jobs on moto's Batch (Podman), worker image {image}")
    print(f"arrays of <= {args.array_size}, <= {args.in_flight} children at once, "
          f"{os.cpu_count()} CPUs")  # fmt: skip
    print(f"plain boto3 array jobs: {base['seconds']:.1f} s ({base['arrays']} arrays, "
          f"{base['failed']} children failed)")  # fmt: skip
    for title, side in (("one job per child", ours),
                        (f"{args.jobs_per_child} jobs per child", packed)):  # fmt: skip
        print(f"shepard aws-batch (submit --wait), {title}: {side['seconds']:.1f} s (exit "
              f"{side['exit']}): {side['succeeded']} succeeded, {side['failed']} failed, "
              f"{side['rerun']} re-run after a lost child; last attempts in {side['arrays']} "
              "arrays")  # fmt: skip
    print(f"ratio plain/shepard, one job per child: {base['seconds'] / ours['seconds']:.2f}; "
          f"{args.jobs_per_child} jobs per child: {base['seconds'] / packed['seconds']:.2f} "
          "(target >= 0.7)")  # fmt: skip
    print(f"load average (1, 5, 15 min): before {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}, "
          f"after {after[0]:.1f} {after[1]:.1f} {after[2]:.1f}; 1 min at each side's start "
          f"(plain, one per child, packs): {' '.join(f'{x:.1f}' for x in starts)}")  # fmt: skip


if __name__ == "__main__":
    main()
