"""An aws-batch flock driven as a user would, against moto's Batch emulation (its containers
really run, through Podman): init, deploy, submit --wait, logs (--engine), then `up` with a
child cancelled while it runs, a child terminated behind the flock's back (a lost worker,
re-run without spending an attempt) and a job that reaches its timeout.

Skips (locally) or fails (CI) without the AWS test server (scripts/services-aws) or Podman.
Verified against the emulation only: there is no AWS here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests import aws
from tests.acceptance.conftest import Cli
from tests.containers import PYTHON_IMAGE, use_test_engine

JOB_PY = """\
import os, pathlib, sys, time
item = os.environ.get("ITEM", "-")
time.sleep(float(os.environ.get("NAP", "0")))
pathlib.Path(os.environ["ROOT_OUTPUT_NAME"], "result.txt").write_text(f"item {item}\\n")
print("done", item)
"""


@pytest.fixture
def batch(tmp_path: Path) -> tuple[Cli, list[str]]:
    """A user with AWS_ENDPOINT_URL (the head's endpoint) set, and the `init` options of an
    aws-batch flock whose stores are in a fresh bucket."""
    url = aws.endpoint()
    cli = Cli(tmp_path / "myflock", tmp_path)
    cli.env.update(aws.FAKE)
    cli.env["AWS_ENDPOINT_URL"] = url
    (tmp_path / "job.py").write_text(JOB_PY)
    worker = [f"AWS_ENDPOINT_URL={aws.task_endpoint(url)}"]
    worker += [f"{k}={v}" for k, v in aws.FAKE.items()]
    options = ["--backend", "aws-batch", "--batch-queue", aws.queue(url),
               "--storage", f"s3://{aws.bucket(url)}/flocks/myflock"]  # fmt: skip
    for item in worker:
        options += ["--worker-env", item]
    return cli, options


def _jobs(cli: Cli) -> dict[str, dict[str, Any]]:
    return {j["id"]: j for j in cli("query", "--json", "--limit", "100").json()["jobs"]}


def _until(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(1.0)
    raise AssertionError(f"timed out waiting for {what}")


def _running_in_container(child: str) -> bool:
    """Whether the child's container runs (moto reports RUNNING before it exists, and ignores
    a TerminateJob until it does), and has for a few seconds (the worker started)."""
    from tests.containers import client

    name = child.replace(":", "-")
    for container in client().containers.list(filters={"status": "running"}):
        if name in container.name:
            started = container.attrs.get("State", {}).get("StartedAt", "")
            return bool(started)
    return False


def _child(worker: str) -> str:
    """`ARRAY:INDEX` of the Batch child a worker id names."""
    array_id, _, index = worker.split(" ")[-1].rpartition("_")
    return f"{array_id}:{index}"


@pytest.mark.timeout(900)  # the first run on a machine builds the worker layer (minutes)
def test_deploy_then_submit_wait(batch: tuple[Cli, list[str]], tmp_path: Path) -> None:
    cli, options = batch
    code = tmp_path / "code"
    code.mkdir()
    (code / "job.py").write_text(JOB_PY)
    (code / "Dockerfile").write_text(f"FROM {PYTHON_IMAGE}\nCOPY job.py /opt/job.py\n")
    cli("init", str(cli.flock), "--payload-command", "python3 /opt/job.py", *options)
    cli.configure(use_test_engine)  # deploy builds on the test engine
    deployed = cli("deploy", str(code), "--no-push", "--quiet", timeout=900)
    assert "job definition arn:aws:batch:" in deployed.out
    assert "image = " in (cli.flock / "flock.toml").read_text()
    waited = cli("submit", "--range", "ITEM=1-3", "--wait", timeout=600)
    assert "succeeded" in waited.out + waited.err
    jobs = _jobs(cli)
    assert sorted(j["status"] for j in jobs.values()) == ["succeeded"] * 3
    for job in jobs.values():
        assert len(job["outputs"]) == 1
        assert " aws-batch " in job["worker"]
        item = job["params"]["ITEM"]
        assert cli("logs", job["id"]).out == f"done {item}\n"
        engine = cli("logs", job["id"], "--engine")
        assert "attempt 1: succeeded" in engine.out


@pytest.mark.skip(
    reason="not reliable on moto's emulated Batch on these machines yet: its containers start "
    "too slowly under load for the timeout and lost-child checks (docs/aws-batch.md, Tests)"
)
@pytest.mark.timeout(900)
def test_up_cancel_lost_child_and_timeout(batch: tuple[Cli, list[str]], tmp_path: Path) -> None:
    cli, options = batch
    image = aws.worker_image(PYTHON_IMAGE)
    cli("init", str(cli.flock), "--payload-command", f"python3 {tmp_path}/job.py", "--image",
        image, *options)  # fmt: skip
    # the job code is not in the image: hand it over as a quick-deploy-free environment value
    cli.configure(lambda d: d["payload"].update(command=f"python3 -c {json.dumps(JOB_PY)}"))
    cancel = cli("submit", "-j", '{"ITEM": "cancel", "NAP": 120}', "--ids").out.strip()
    lost = cli("submit", "-j", '{"ITEM": "lost", "NAP": 45}', "--ids").out.strip()
    slow_job = '{"ITEM": "slow", "NAP": 120}'
    slow = cli("submit", "-j", slow_job, "--timeout", "4", "--ids").out.strip()
    up = cli.popen("up")
    try:
        _until(lambda: all(_jobs(cli)[j]["status"] == "running" for j in (cancel, lost)),
               240, "the children to start")  # fmt: skip
        jobs = _jobs(cli)
        lost_child, cancelled = _child(jobs[lost]["worker"]), _child(jobs[cancel]["worker"])
        _until(lambda: _running_in_container(lost_child) and _running_in_container(cancelled),
               240, "the containers")  # fmt: skip
        time.sleep(3)  # the worker inside starts
        batch_api = aws.client("batch", aws.endpoint())
        batch_api.terminate_job(jobId=lost_child, reason="host lost (test)")
        cli.env["SHEPARD_LOG_LEVEL"] = "INFO"
        said = cli("cancel", cancel)
        del cli.env["SHEPARD_LOG_LEVEL"]
        _until(lambda: batch_api.describe_jobs(jobs=[cancelled])["jobs"][0]["status"] == "FAILED",
               120, f"Batch to stop the cancelled child ({said.err})")  # fmt: skip
        _until(lambda: _jobs(cli)[lost]["status"] == "succeeded", 300, "the lost job's re-run")
        _until(lambda: _jobs(cli)[slow]["status"] == "failed", 120, "the timeout")
    finally:
        up.terminate()
        up.wait(30)
    jobs = _jobs(cli)
    assert jobs[cancel]["status"] == "cancelled"
    assert "timeout" in jobs[slow]["reason"]
    history = cli("show", lost, "--json").json()
    details = " ".join(str(e.get("detail")) for e in history["events"])
    assert "without an outcome" in details, details
    assert jobs[lost]["attempt"] == 2 and jobs[lost]["max_attempts"] >= 2  # not spent
