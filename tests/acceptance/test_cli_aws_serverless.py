"""A serverless flock, end to end, in the emulator (moto's server: SHEPARD_TEST_AWS, started
by scripts/services-aws with its Lambda runtime image): `aws deploy`, `aws describe`,
`configure --aws-stack`, `deploy ./code` of a tiny image; a zip put into the inbox bucket
becomes a job (S3 -> SQS -> the scheduler function), runs on the emulated Batch through
Podman and leaves its result zip in the outputs bucket; then, through the profile, `query`,
`logs`, `submit --wait` of a failing job, `retry --failed`, `retrieve`; last `aws destroy`.

One deploy serves the whole file (a module fixture); the tests run in order. There is no AWS
here: everything is checked against the emulator only.
"""

from __future__ import annotations

import io
import json
import subprocess
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import aws
from tests.acceptance.conftest import Cli
from tests.containers import PYTHON_IMAGE, use_test_engine
from tests.services import require_service

LAMBDA_IMAGE = "localhost/shepard-lambda-python:3.11"
REGION = "us-east-1"
JOB_PY = """\
import os, pathlib, sys
item = os.environ.get("ITEM", "-")
pathlib.Path(os.environ["ROOT_OUTPUT_NAME"], "result.txt").write_text(f"item {item}\\n")
token = pathlib.Path(os.environ["ROOT_INPUT_NAME"], "secrets", "token")
print("done", item, token.read_text() if token.exists() else "no secret")
sys.exit(3 if os.environ.get("FAIL") else 0)
"""

pytestmark = pytest.mark.timeout(900)


def _lambda_problem() -> str | None:
    done = subprocess.run(["podman", "image", "exists", LAMBDA_IMAGE], capture_output=True)
    if done.returncode != 0:
        return f"no Lambda runtime image {LAMBDA_IMAGE} (run scripts/services-aws)"
    return None


class Serverless:
    """The deployed flock: its name, the user's CLI (profile `work`), the emulator."""

    def __init__(self, cli: Cli, name: str, url: str) -> None:
        self.cli, self.name, self.url = cli, name, url
        self.described: dict[str, Any] = {}

    def client(self, service: str) -> Any:
        """A client that waits for the functions the emulator runs inside a call (a put
        into the inbox, an invoke) and never repeats such a call."""
        import boto3
        from botocore.config import Config

        config = Config(read_timeout=900, retries={"max_attempts": 1, "mode": "standard"})
        return boto3.client(service, endpoint_url=self.url, region_name=REGION,
                            aws_access_key_id="testing", aws_secret_access_key="testing",
                            config=config)  # fmt: skip

    def bucket(self, role: str) -> str:
        return str(self.described["buckets"][role])

    def jobs(self) -> dict[str, dict[str, Any]]:
        found = self.cli("query", "--json", "--limit", "50").json()["jobs"]
        return {j["id"]: j for j in found}

    def reconcile_until(self, check: Callable[[], bool], seconds: float, what: str) -> None:
        """Invoke the reconciler (the emulator never fires its schedule) until `check`."""
        functions = self.client("lambda")
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if check():
                return
            functions.invoke(FunctionName=f"{self.name}-reconciler", Payload=b"{}")
            time.sleep(2.0)
        raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def flock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serverless]:
    url = aws.endpoint()
    require_service("the emulator's Lambda runtime", _lambda_problem())
    tmp = tmp_path_factory.mktemp("serverless")
    cli = Cli(tmp / "unused", tmp)
    cli.env.pop("SHEPARD_FLOCK")
    cli.env.update(aws.FAKE)
    cli.env["AWS_ENDPOINT_URL"] = url
    name = f"sl{uuid.uuid4().hex[:8]}"
    worker = [
        f"AWS_ENDPOINT_URL={aws.task_endpoint(url)}",
        *(f"{k}={v}" for k, v in aws.FAKE.items()),
    ]
    options = [x for item in worker for x in ("--worker-env", item)]
    deployed = cli("aws", "deploy", name, "--region", REGION, "--lambda-python", "3.11",
                   *options, timeout=600)  # fmt: skip
    try:
        assert "created the stack" in deployed.out
        yield Serverless(cli, name, url)
    finally:
        cli("aws", "destroy", name, "--region", REGION, "--yes", ok=None)
        _remove_images(name)


def _remove_images(name: str) -> None:
    """The images `deploy` built and tagged for this flock (its own names only)."""
    from tests.containers import client as engine

    images = engine().images
    for image in images.list():
        for tag in image.tags:
            if f"/{name}:" in tag or f"/{name}/worker:" in tag:
                images.remove(tag, force=True)


def test_deploy_is_idempotent_and_described(flock: Serverless) -> None:
    cli = flock.cli
    again = cli("aws", "deploy", flock.name, "--region", REGION, "--lambda-python", "3.11",
                *[x for item in [f"AWS_ENDPOINT_URL={aws.task_endpoint(flock.url)}",
                                 *(f"{k}={v}" for k, v in aws.FAKE.items())]
                  for x in ("--worker-env", item)])  # fmt: skip
    assert "nothing changed" in again.out, again.out
    described = cli("aws", "describe", flock.name, "--region", REGION, "--json").json()
    assert described["status"] in {"CREATE_COMPLETE", "UPDATE_COMPLETE"}
    assert set(described["buckets"]) == {"inbox", "inputs", "outputs", "errors",
                                         "quick-deploy", "state"}  # fmt: skip
    assert described["catalog"] == f"{flock.name}-catalog"
    assert described["api_url"] and described["code"].endswith(".zip")
    assert any("Secrets Manager" in cost for cost in described["idle_costs"])
    flock.described = described
    # what the emulator's CloudFormation ignores, made through the APIs
    s3, secrets = flock.client("s3"), flock.client("secretsmanager")
    notified = s3.get_bucket_notification_configuration(Bucket=flock.bucket("inbox"))
    assert notified["QueueConfigurations"][0]["QueueArn"].endswith(f"{flock.name}-events")
    secret = json.loads(secrets.get_secret_value(SecretId=f"{flock.name}/secrets")["SecretString"])
    assert len(secret["shepard_secret_key"]) == 44
    assert secret["shepard_secret_key"] not in again.out + again.err


def test_configure_and_deploy_code(flock: Serverless, tmp_path: Path) -> None:
    cli = flock.cli
    cli("configure", "work", "--aws-stack", flock.name, "--region", REGION)
    cli("set-profile", "work")
    where = cli("where-am-i", "--json").json()
    folder = Path(where["flock"])
    assert (folder / "flock.toml").is_file() and "profile 'work'" in where["flock_source"]
    local = Cli(folder, cli.cwd)
    local.env = cli.env

    def settings(data: dict[str, Any]) -> None:
        use_test_engine(data)  # deploy builds on the test engine
        data["payload"] = {"command": "python3 /opt/job.py"}  # run in the deployed image

    local.configure(settings)
    code = tmp_path / "code"
    code.mkdir()
    (code / "job.py").write_text(JOB_PY)
    (code / "Dockerfile").write_text(f"FROM {PYTHON_IMAGE}\nCOPY job.py /opt/job.py\n")
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "token").write_text("s3cret")
    stored = cli("secretify", str(secrets))  # with the key of the flock's secret on AWS
    assert f"Secrets Manager secret '{flock.name}/secrets'" in stored.out, stored.out
    deployed = cli("deploy", str(code), "--no-push", "--quiet", timeout=600)
    assert f"s3://{flock.bucket('state')}/flock.toml" in deployed.out
    toml = flock.client("s3").get_object(Bucket=flock.bucket("state"), Key="flock.toml")
    assert "dkr.ecr" in toml["Body"].read().decode()  # the worker image, for the functions


def test_a_zip_dropped_into_the_inbox_runs_on_batch(flock: Serverless) -> None:
    cli = flock.cli
    bundle = io.BytesIO()
    with zipfile.ZipFile(bundle, "w") as zf:
        zf.writestr("inputs.json", json.dumps({"ITEM": "dropped"}))
    flock.client("s3").put_object(Bucket=flock.bucket("inbox"), Key="drop.zip",
                                  Body=bundle.getvalue())  # fmt: skip
    flock.reconcile_until(lambda: bool(flock.jobs()), 60, "the drop to become a job")
    (job_id,) = flock.jobs()
    flock.reconcile_until(lambda: flock.jobs()[job_id]["status"] == "succeeded", 240,
                          "the dropped job to succeed")  # fmt: skip
    listed = flock.client("s3").list_objects_v2(Bucket=flock.bucket("outputs"))
    names = [o["Key"] for o in listed.get("Contents", [])]
    assert any("result@" in n and n.endswith(".zip") for n in names), names
    # the Batch task decrypted the secret with the key it read from Secrets Manager
    assert cli("logs", job_id).out == "done dropped s3cret\n"


def test_submit_wait_retry_and_retrieve(flock: Serverless, tmp_path: Path) -> None:
    cli = flock.cli
    failed = cli("submit", "-j", '{"ITEM": "bad", "FAIL": "1"}', "--wait", ok=False, timeout=800)
    assert failed.code == 1, failed
    (bad,) = [j for j in flock.jobs().values() if j["params"].get("ITEM") == "bad"]
    assert bad["status"] == "failed"
    retried = cli("retry", "--failed")  # the scheduler hands it to Batch at once
    assert bad["id"] in retried.out
    again = flock.jobs()[bad["id"]]
    assert again["status"] in {"queued", "running"}, again
    assert again["placement"] and again["placement"] != bad["placement"]
    counts = cli("query", "--json").json()["counts"]
    assert counts["succeeded"] == 1 and counts["failed"] == 0, counts
    out = tmp_path / "retrieved"
    cli("retrieve", str(out))
    assert list(out.rglob("*.zip")), list(out.rglob("*"))


def test_destroy_removes_the_flock(flock: Serverless) -> None:
    cli = flock.cli
    done = cli("aws", "destroy", flock.name, "--region", REGION, "--yes")
    assert f"removed bucket {flock.bucket('outputs')}" in done.out
    assert f"removed table {flock.name}-catalog" in done.out
    names = {b["Name"] for b in flock.client("s3").list_buckets()["Buckets"]}
    assert not any(n.startswith(f"{flock.name}-") for n in names)
    queues = flock.client("batch").describe_job_queues()["jobQueues"]
    assert not any(q["jobQueueName"] == f"{flock.name}-jobs" for q in queues)
