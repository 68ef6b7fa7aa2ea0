"""The functions' code zip (shepard.aws.package) deployed as a real Lambda function on the
AWS test server: moto runs it in the runtime image scripts/services-aws builds (env
SHEPARD_TEST_AWS_LAMBDA names it; that script exports it when its server was started with
it). The scheduler, invoked with an SQS event, registers a dropped bundle: the zip holds
everything the handler imports, for Lambda's platform."""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from shepard.aws.package import build_code_zip
from shepard.lambdas.common import forget_flocks
from tests import aws
from tests.serverless import Stack, exiting_image, stack
from tests.services import require_service

LAMBDA_ENV = "SHEPARD_TEST_AWS_LAMBDA"


@pytest.fixture
def flock_stack() -> Iterator[Stack]:
    url = aws.endpoint()
    require_service(
        "Lambda on the AWS test server",
        None if os.environ.get(LAMBDA_ENV) else
        f'{LAMBDA_ENV} is not set: eval "$(scripts/services-aws)" on a server it started',
    )  # fmt: skip
    with stack(url, image=exiting_image()) as made:
        yield made
    forget_flocks()


@pytest.fixture(scope="module")
def code_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the module: pip installs the requirements once (about 10 s)."""
    return tmp_path_factory.mktemp("lambda-code")


def test_the_zip_is_deterministic_and_cached(code_cache: Path) -> None:
    first = build_code_zip("3.11", cache=code_cache)
    assert first.name.startswith("shepard-functions-py3.11-")
    again = build_code_zip("3.11", cache=code_cache)
    assert again == first
    with zipfile.ZipFile(first) as zf:
        names = zf.namelist()
        assert names == sorted(names)
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    assert "shepard/lambdas/scheduler.py" in names and "boto3/__init__.py" in names
    assert not any(n.startswith(("typer/", "rich/", "alembic/", "cryptography/")) for n in names)
    assert not any(n.endswith(".pyc") for n in names)
    assert "botocore/data/s3/" in "\n".join(names)
    assert "botocore/data/ec2/" not in "\n".join(names)
    # written again (no pointer, the same pip folder): the very same bytes
    for pointer in code_cache.glob("inputs-*.txt"):
        pointer.unlink()
    data = first.read_bytes()
    first.unlink()
    assert build_code_zip("3.11", cache=code_cache).read_bytes() == data


def test_the_scheduler_runs_from_the_zip_as_a_lambda_function(
    flock_stack: Stack, code_cache: Path
) -> None:
    made = flock_stack
    code = build_code_zip("3.11", cache=code_cache)
    s3, functions = made.client("s3"), made.client("lambda")
    s3.upload_file(str(code), made.bucket("quick-deploy"), code.name)
    role = made.client("iam").create_role(
        RoleName=f"{made.name}-scheduler",
        AssumeRolePolicyDocument='{"Version":"2012-10-17","Statement":[]}',
    )["Role"]["Arn"]
    functions.create_function(
        FunctionName=f"{made.name}-scheduler", Runtime="python3.11", Role=role,
        Handler="shepard.lambdas.scheduler.handler", Timeout=120, MemorySize=512,
        Code={"S3Bucket": made.bucket("quick-deploy"), "S3Key": code.name},
        Environment={"Variables": {**made.env, "HOME": "/tmp"}},
    )  # fmt: skip
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("inputs.json", json.dumps({"ITEM": 42}))
    s3.put_object(Bucket=made.bucket("inbox"), Key="sub dir/job+1.zip", Body=buf.getvalue())
    event = made.sqs_event([made.s3_body("put"), "not json"])
    done = functions.invoke(FunctionName=f"{made.name}-scheduler", Payload=json.dumps(event),
                            LogType="Tail")  # fmt: skip
    payload = json.loads(done["Payload"].read())
    import base64

    tail = base64.b64decode(done.get("LogResult", "")).decode(errors="replace")
    assert "FunctionError" not in done, (payload, tail)
    bad = event["Records"][1]["messageId"]
    assert payload == {"batchItemFailures": [{"itemIdentifier": bad}]}, tail
    from shepard.catalog import open_catalog

    catalog = open_catalog(made.env["SHEPARD_CATALOG"], create=False)
    try:
        (job,) = catalog.page(limit=10, newest_first=False)
    finally:
        catalog.close()
    assert job.params["ITEM"] == 42 and job.placement  # registered, then handed to Batch
