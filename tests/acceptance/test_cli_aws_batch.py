"""An aws-batch flock driven as a user would, against moto's Batch emulation (its containers
really run, through Podman): init, deploy, submit --wait, logs (--engine), then `up` with a
child cancelled while it runs, a child terminated behind the flock's back (a lost worker,
re-run without spending an attempt) and a job that reaches its timeout.

The worker image derived from the test image is built once per test process
(`aws.worker_image`), and so is the queue (`aws.queue`); every test has its own bucket.
Skips (locally) or fails (CI) without the AWS test server (scripts/services-aws) or Podman.
Verified against the emulation only: there is no AWS here.
"""

from __future__ import annotations

import contextlib
import shlex
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import aws
from tests.acceptance.conftest import Cli
from tests.containers import PYTHON_IMAGE, use_test_engine

# The payload: writes its item; with NAP, first waits up to NAP seconds, or until the object
# RELEASE (an URL of the test server; the object is public-read) can be read.
JOB_PY = """\
import os, pathlib, time, urllib.request
item = os.environ.get("ITEM", "-")
release, end = os.environ.get("RELEASE"), time.monotonic() + float(os.environ.get("NAP", "0"))
while time.monotonic() < end:
    try:
        urllib.request.urlopen(release, timeout=2).close()
        break
    except Exception:
        time.sleep(0.5)
pathlib.Path(os.environ["ROOT_OUTPUT_NAME"], "result.txt").write_text(f"item {item}\\n")
print("done", item)
"""


@dataclass
class Batch:
    """A user with AWS_ENDPOINT_URL (the head's endpoint) set, and the `init` options of an
    aws-batch flock whose stores are in a fresh bucket of the AWS test server."""

    cli: Cli
    options: list[str]
    url: str
    bucket: str

    def release_url(self, item: str) -> str:
        """Where a job's payload looks for its release object (as a container reaches it)."""
        return f"{aws.task_endpoint(self.url)}/{self.bucket}/release/{item}"

    def release(self, item: str) -> None:
        aws.client("s3", self.url).put_object(
            Bucket=self.bucket, Key=f"release/{item}", Body=b"", ACL="public-read"
        )  # readable without credentials: the payload has none


@pytest.fixture(scope="module")
def batch_image() -> str:
    """The worker image derived from the test image: built once for the module (the first
    time on a machine it builds the worker layer too, which takes a while)."""
    aws.endpoint()  # skips (locally) or fails (CI) without the server
    return aws.worker_image(PYTHON_IMAGE)


@pytest.fixture
def batch(tmp_path: Path) -> Iterator[Batch]:
    user = _user(tmp_path, aws.endpoint())
    yield user
    user.cli.kill_leftovers()


def _user(tmp_path: Path, url: str) -> Batch:
    cli = Cli(tmp_path / "myflock", tmp_path)
    cli.env.update(aws.FAKE)
    cli.env["AWS_ENDPOINT_URL"] = url
    bucket = aws.bucket(url)
    options = ["--backend", "aws-batch", "--batch-queue", aws.queue(url),
               "--storage", f"s3://{bucket}/flocks/myflock"]  # fmt: skip
    for item in [f"AWS_ENDPOINT_URL={aws.task_endpoint(url)}"] + [
        f"{k}={v}" for k, v in aws.FAKE.items()
    ]:
        options += ["--worker-env", item]
    return Batch(cli, options, url, bucket)


def _jobs(cli: Cli) -> dict[str, dict[str, Any]]:
    return {j["id"]: j for j in cli("query", "--json", "--limit", "100").json()["jobs"]}


def _until(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(1.0)
    raise AssertionError(f"timed out waiting for {what}")


def _container_runs(child: str) -> bool:
    """Whether the child's container runs (moto reports RUNNING before it exists)."""
    from tests.containers import client

    name = child.replace(":", "-")
    return any(name in c.name for c in client().containers.list(filters={"status": "running"}))


def _child(worker: str) -> str:
    """`ARRAY:INDEX` of the Batch child a worker id names."""
    array_id, _, index = worker.split(" ")[-1].rpartition("_")
    return f"{array_id}:{index}"


@pytest.mark.timeout(900)  # the first run on a machine builds the worker layer (minutes)
def test_deploy_then_submit_wait(batch: Batch, batch_image: str, tmp_path: Path) -> None:
    cli = batch.cli
    code = tmp_path / "code"
    code.mkdir()
    (code / "job.py").write_text(JOB_PY)
    (code / "Dockerfile").write_text(f"FROM {PYTHON_IMAGE}\nCOPY job.py /opt/job.py\n")
    cli("init", str(cli.flock), "--payload-command", "python3 /opt/job.py", *batch.options)
    cli.configure(use_test_engine)  # deploy builds on the test engine
    try:
        deployed = cli("deploy", str(code), "--no-push", "--quiet", timeout=900)
        assert "job definition arn:aws:batch:" in deployed.out
        assert "image = " in (cli.flock / "flock.toml").read_text()
        waited = cli("submit", "--range", "ITEM=1-3", "--wait", timeout=600)
    finally:
        _remove_deployed(cli.flock)
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


def _remove_deployed(flock: Path) -> None:
    """Untag the images `deploy` made for this test (the worker image flock.toml names and the
    flock image it was derived from), so that runs do not pile them up on the test engine."""
    import tomllib

    import docker

    from tests.containers import client

    worker = tomllib.loads((flock / "flock.toml").read_text())["backend"]["aws-batch"].get("image")
    if not worker:
        return
    for tag in (worker, worker.replace("-batch:", ":")):
        with contextlib.suppress(docker.errors.APIError):
            client().images.remove(tag)


@pytest.mark.timeout(600)
def test_up_cancel_lost_child_and_timeout(batch: Batch, batch_image: str) -> None:
    """One `up` round: a running child cancelled (TerminateJob stops its container), a child
    terminated behind the flock's back (lost: re-run, no attempt spent), a job stopped by the
    worker at its own timeout (failed, `timeout after 4s`, with its error bundle)."""
    cli = batch.cli
    cli("init", str(cli.flock), "--payload-command", f"python3 -c {shlex.quote(JOB_PY)}",
        "--image", batch_image, *batch.options)  # fmt: skip

    def quick(data: dict[str, Any]) -> None:  # look at Batch every second, re-run at once
        data["backend"]["aws-batch"]["reconcile"] = 1.0
        data.setdefault("retry", {})["backoff"] = 0

    cli.configure(quick)

    def submit(item: str, *extra: str) -> str:
        params = f'{{"ITEM": "{item}", "NAP": 300, "RELEASE": "{batch.release_url(item)}"}}'
        return cli("submit", "-j", params, "--ids", *extra).out.strip()

    cancel, lost, slow = submit("cancel"), submit("lost"), submit("slow", "--timeout", "4")
    up = cli.popen("up")
    try:
        _until(lambda: all(_jobs(cli)[j]["status"] == "running" for j in (cancel, lost)),
               180, "the children to start")  # fmt: skip
        jobs = _jobs(cli)
        lost_child, cancelled = _child(jobs[lost]["worker"]), _child(jobs[cancel]["worker"])
        _until(lambda: _container_runs(lost_child) and _container_runs(cancelled),
               180, "the containers")  # fmt: skip
        batch_api = aws.client("batch", batch.url)
        batch_api.terminate_job(jobId=lost_child, reason="host lost (test)")
        said = cli("cancel", cancel)
        _until(lambda: batch_api.describe_jobs(jobs=[cancelled])["jobs"][0]["status"] == "FAILED",
               60, f"Batch to stop the cancelled child ({said.out} {said.err})")  # fmt: skip
        assert not _container_runs(cancelled)
        _until(lambda: _jobs(cli)[lost]["attempt"] >= 2, 120, "the lost job to be re-run")
        batch.release("lost")
        _until(lambda: _jobs(cli)[lost]["status"] == "succeeded", 180, "the lost job's re-run")
        _until(lambda: _jobs(cli)[slow]["status"] == "failed", 60, "the timeout")
    finally:
        up.terminate()
        up.wait(30)
    jobs = _jobs(cli)
    assert jobs[cancel]["status"] == "cancelled"
    slow_job = cli("show", slow, "--json").json()
    assert slow_job["reason"] == "timeout after 4s" and slow_job["error_bundle"]
    history = cli("show", lost, "--json").json()
    details = " ".join(str(e.get("detail")) for e in history["history"])
    assert "without an outcome" in details, details
    # not spent: each lost child gives one more attempt (a loaded machine may lose the re-run's
    # container start too: the emulator's, docs/aws-batch.md)
    assert jobs[lost]["attempt"] >= 2 and jobs[lost]["max_attempts"] == jobs[lost]["attempt"]
    assert cli("logs", lost).out == "done lost\n"


@pytest.mark.timeout(300)
def test_cancel_of_children_still_waiting_in_batch(tmp_path: Path, batch_image: str) -> None:
    """On a moto server of its own whose jobs wait seconds in each state (the shared one's
    pass at once): a job whose child still waits is cancelled through CancelJob, and never
    runs; its array's other child runs its job as usual."""
    with aws.private_server() as url:
        aws.slow_states(url, 2)
        user = _user(tmp_path, url)
        cli = user.cli
        cli("init", str(cli.flock), "--payload-command", f"python3 -c {shlex.quote(JOB_PY)}",
            "--image", batch_image, *user.options)  # fmt: skip
        cli.configure(lambda d: d["backend"]["aws-batch"].update(reconcile=1.0))
        cli.env["SHEPARD_LOG_LEVEL"] = "INFO"
        kept, dropped = cli("submit", "--range", "ITEM=1-2", "--ids").out.split()
        up = cli.popen("up")
        try:
            _until(lambda: all(_jobs(cli)[j]["placement"] for j in (kept, dropped)), 60,
                   "the array's hand-over")  # fmt: skip
            array_id = _jobs(cli)[dropped]["placement"].rpartition("@")[2]
            batch_api = aws.client("batch", url)
            children = [f"{array_id}:0", f"{array_id}:1"]

            def described() -> list[dict[str, Any]]:
                return list(batch_api.describe_jobs(jobs=children)["jobs"])

            waiting = [c["status"] for c in described()]
            said = cli("cancel", dropped)
            assert set(waiting) <= {"SUBMITTED", "PENDING", "RUNNABLE"}, waiting
            assert "stopping 1 of 2 children" in said.err, said.err
            _until(lambda: any(c["status"] == "FAILED" for c in described()), 60,
                   "Batch to fail the cancelled child")  # fmt: skip
            [ended] = [c for c in described() if c["status"] == "FAILED"]
            assert ended["statusReason"] == "cancelled with shepard cancel"
            _until(lambda: _jobs(cli)[kept]["status"] == "succeeded", 120, "the other child")
        finally:
            up.terminate()
            up.wait(30)
        jobs = _jobs(cli)
        assert jobs[dropped]["status"] == "cancelled" and jobs[dropped]["attempt"] == 0
        assert jobs[dropped]["outputs"] == []


@pytest.mark.timeout(600)
def test_a_pack_runs_its_jobs_in_turn_and_skips_one_cancelled_while_it_waits(
    batch: Batch, batch_image: str
) -> None:
    """`--jobs-per-child 3`: one child runs three jobs in turn. The head shows one of them
    running at a time; a job cancelled while it waits in the pack is skipped by the child,
    which goes on with the next."""
    cli = batch.cli
    cli("init", str(cli.flock), "--payload-command", f"python3 -c {shlex.quote(JOB_PY)}",
        "--image", batch_image, "--jobs-per-child", "3", *batch.options)  # fmt: skip
    cli.configure(lambda d: d["backend"]["aws-batch"].update(reconcile=1.0))

    def submit(item: str, nap: int) -> str:
        params = f'{{"ITEM": "{item}", "NAP": {nap}, "RELEASE": "{batch.release_url(item)}"}}'
        return cli("submit", "-j", params, "--ids").out.strip()

    first, dropped, last = submit("first", 300), submit("dropped", 0), submit("last", 0)
    up = cli.popen("up")
    try:
        _until(lambda: _jobs(cli)[first]["status"] == "running", 180, "the child to start")
        jobs = _jobs(cli)
        assert jobs[dropped]["status"] == jobs[last]["status"] == "queued"  # waiting in the pack
        token = jobs[dropped]["placement"].partition("@")[0]
        assert token.endswith("-p3") and jobs[last]["placement"] == jobs[dropped]["placement"]
        said = cli("cancel", dropped)
        assert "stopping" not in said.err, said.err  # the child goes on with its pack
        mark = f"flocks/myflock/manifests/cancelled/{dropped}"
        aws.client("s3", batch.url).head_object(Bucket=batch.bucket, Key=mark)
        batch.release("first")
        _until(lambda: _jobs(cli)[last]["status"] == "succeeded", 180, "the pack's last job")
    finally:
        up.terminate()
        up.wait(30)
    jobs = _jobs(cli)
    assert jobs[first]["status"] == "succeeded" and jobs[first]["attempt"] == 1
    assert jobs[dropped]["status"] == "cancelled" and jobs[dropped]["attempt"] == 0
    assert jobs[dropped]["outputs"] == [] and len(jobs[last]["outputs"]) == 1
    assert _child(jobs[first]["worker"]) == _child(jobs[last]["worker"])  # one child ran both
    assert cli("logs", last).out == "done last\n"
    engine = cli("logs", last, "--engine").out
    assert f"job {dropped}: cancelled, skipped" in engine, engine


def test_the_worker_image_imports_from_its_compiled_files(batch_image: str) -> None:
    """A child starts on the bundle's compiled files: none of the modules it imports is stale
    and compiled again at each start (an image build rounds the sources' times)."""
    from tests.containers import client

    python = (
        "cd /opt/shepard-worker/lib && PYTHONHOME=/opt/shepard-worker "
        "./ld-linux-*.so.* --library-path /opt/shepard-worker/lib "
        '/opt/shepard-worker/bin/python3 -s -v -c "import shepard.batch_task, shepard.config, '
        'shepard.flock, shepard.runtime, shepard.storage.s3, boto3" 2>&1'
    )
    out = client().containers.run(batch_image, ["sh", "-c", python], remove=True).decode()
    assert "code object from" in out  # -v said what it loaded
    stale = [line for line in out.splitlines() if "stale" in line or "bad mtime" in line]
    assert not stale, stale[:5]
