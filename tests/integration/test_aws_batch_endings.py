"""How children end on moto's Batch emulation (containers through Podman), read as the
aws-batch backend reads them (`_state`): a child stopped at its attemptDurationSeconds is a
TIMEOUT (the emulator gives no reason: the backend infers it from how long the child ran),
one terminated behind the flock's back is FAILED (a lost worker, re-run without spending an
attempt), one whose command failed is FAILED with its exit code.

Skips (locally) or fails (CI) without the AWS test server (scripts/services-aws) or Podman.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from shepard.backends.aws_batch.backend import _duration, _state
from tests import aws
from tests.containers import BUSYBOX


def _ended(batch: Any, job_ids: list[str], seconds: float) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = {j["jobId"]: j for j in batch.describe_jobs(jobs=job_ids)["jobs"]}
        if all(found[j]["status"] in ("SUCCEEDED", "FAILED") for j in job_ids):
            return found
        time.sleep(0.5)
    raise AssertionError(f"the jobs did not end in {seconds}s: {found}")


def test_timeouts_are_told_from_lost_children_and_failures() -> None:
    url = aws.endpoint()
    batch = aws.client("batch", url)
    name = f"endings-{uuid.uuid4().hex[:8]}"
    definition = batch.register_job_definition(
        jobDefinitionName=name, type="container",
        containerProperties={"image": BUSYBOX, "vcpus": 1, "memory": 128,
                             "command": ["sleep", "30"]},
    )["jobDefinitionArn"]  # fmt: skip
    queue = aws.queue(url)

    def submit(suffix: str, **extra: Any) -> str:
        return str(batch.submit_job(jobName=f"{name}-{suffix}", jobQueue=queue,
                                    jobDefinition=definition, **extra)["jobId"])  # fmt: skip

    timed = submit("timeout", timeout={"attemptDurationSeconds": 2})
    lost = submit("lost", timeout={"attemptDurationSeconds": 60})
    failed = submit("failed", containerOverrides={"command": ["sh", "-c", "exit 3"]},
                    timeout={"attemptDurationSeconds": 60})  # fmt: skip
    batch.terminate_job(jobId=lost, reason="host lost (test)")
    ended = _ended(batch, [timed, lost, failed], 90)
    assert [_state(ended[j], _duration(ended[j])) for j in (timed, lost, failed)] == [
        "TIMEOUT", "FAILED", "FAILED"
    ]  # fmt: skip
    assert not ended[timed].get("statusReason")  # what the inference is for
    # ListJobs (what the backend reads for array children) says the same
    listed = {j["jobId"]: j for j in batch.list_jobs(jobQueue=queue, jobStatus="FAILED")[
        "jobSummaryList"]}  # fmt: skip
    assert _state(listed[timed], 2) == "TIMEOUT" and _state(listed[lost], 60) == "FAILED"
    assert listed[failed]["container"]["exitCode"] == 3
