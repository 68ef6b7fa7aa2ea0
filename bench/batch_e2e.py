"""End to end on AWS Batch (moto's emulation, containers through Podman): N trivial jobs
through the aws-batch backend against one plain array job of the same command submitted
with boto3 to the same emulator.

    eval "$(scripts/services-aws)"; .venv/bin/python bench/batch_e2e.py [--jobs 200]

Both sides use the same worker image (derived from the test Python image) and queue. The
plain side submits one array job of N children running `echo $AWS_BATCH_JOB_ID` and waits
until every child has ended (DescribeJobs every second). The Shepard side runs
`shepard submit --range ITEM=1-N --wait` on an aws-batch flock with stores in a bucket of the
same server (each child reads its job, runs the payload, uploads its logs and result, writes
its outcome; the head records them). Printed: seconds of each and the ratio plain/shepard
(target >= 0.7). The machine is shared: compare figures of one run only.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
SHEPARD = str(Path(sys.executable).with_name("shepard"))


def plain(url: str, queue: str, image: str, jobs: int) -> float:
    from tests import aws

    batch = aws.client("batch", url)
    definition = batch.register_job_definition(
        jobDefinitionName="plain-e2e", type="container",
        containerProperties={"image": image, "vcpus": 1, "memory": 256,
                             "command": ["sh", "-c", "echo $AWS_BATCH_JOB_ID"]},
    )["jobDefinitionArn"]  # fmt: skip
    began = time.perf_counter()
    array = batch.submit_job(jobName="plain-e2e", jobQueue=queue, jobDefinition=definition,
                             arrayProperties={"size": jobs})["jobId"]  # fmt: skip
    while True:
        children = [c for c in batch.list_jobs(arrayJobId=array)["jobSummaryList"]]
        if len(children) == jobs and all(c["status"] in ("SUCCEEDED", "FAILED") for c in children):
            return time.perf_counter() - began
        time.sleep(1.0)


def shepard(url: str, queue: str, image: str, jobs: int) -> float:
    from tests import aws

    flock = Path(tempfile.mkdtemp(prefix="batch-e2e-")) / "flock"
    env = {**os.environ, **aws.FAKE, "AWS_ENDPOINT_URL": url, "SHEPARD_FLOCK": str(flock)}
    worker = [f"AWS_ENDPOINT_URL={aws.task_endpoint(url)}"]
    worker += [f"{k}={v}" for k, v in aws.FAKE.items()]
    init = [SHEPARD, "init", str(flock), "--backend", "aws-batch", "--batch-queue", queue,
            "--image", image, "--storage", f"s3://{aws.bucket(url)}/e2e",
            "--payload-command", 'echo "$ITEM" > "$ROOT_OUTPUT_NAME/o.txt"']  # fmt: skip
    for item in worker:
        init += ["--worker-env", item]
    subprocess.run(init, check=True, env=env, capture_output=True)
    began = time.perf_counter()
    subprocess.run([SHEPARD, "submit", "--range", f"ITEM=1-{jobs}", "--wait"], check=True,
                   env=env, capture_output=True)  # fmt: skip
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=200)
    args = parser.parse_args()
    from tests import aws
    from tests.containers import PYTHON_IMAGE

    url = aws.endpoint()
    queue, image = aws.queue(url), aws.worker_image(PYTHON_IMAGE)
    base = plain(url, queue, image, args.jobs)
    ours = shepard(url, queue, image, args.jobs)
    print(f"{args.jobs} trivial jobs on moto's Batch (Podman), worker image {image}")
    print(f"plain boto3 array job: {base:.1f} s")
    print(f"shepard aws-batch (submit --wait): {ours:.1f} s")
    print(f"ratio plain/shepard: {base / ours:.2f} (target >= 0.7)")


if __name__ == "__main__":
    main()
