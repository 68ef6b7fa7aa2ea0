"""A serverless flock's resources made directly on the AWS test server (no CloudFormation):
the buckets, the events queue and its dead-letter queue, a Batch queue, and the environment
the stack gives every function (template.ENVIRONMENT). The catalog table is made by the
catalog itself. Shared by the function tests and bench/lambda_scheduler.py."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from shepard.aws.stackflock import FLOCK_KEY
from tests import aws

EVENTS = Path(__file__).parent / "integration" / "data" / "s3_sqs_bodies.json"
ROLES = ("inbox", "inputs", "outputs", "errors", "quick-deploy", "state")


@dataclass
class Stack:
    name: str
    url: str  # the server, as this process reaches it
    env: dict[str, str]  # the functions' environment

    def client(self, service: str) -> Any:
        return aws.client(service, self.url)

    def bucket(self, role: str) -> str:
        return self.env[f"SHEPARD_{role.upper().replace('-', '_')}_BUCKET"]

    def write_settings(self, settings: dict[str, Any]) -> None:
        """flock.toml in the state bucket, as `shepard aws deploy` writes it."""
        data = tomli_w.dumps(settings).encode()
        self.client("s3").put_object(Bucket=self.bucket("state"), Key=FLOCK_KEY, Body=data)

    def sqs_event(self, bodies: list[str]) -> dict[str, Any]:
        """An SQS event as Lambda hands it to the scheduler, one record per body."""
        arn = f"arn:aws:sqs:us-east-1:123456789012:{self.name}-events"
        return {"Records": [
            {"messageId": str(uuid.uuid4()), "receiptHandle": uuid.uuid4().hex, "body": body,
             "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {},
             "md5OfBody": "", "eventSource": "aws:sqs", "eventSourceARN": arn,
             "awsRegion": "us-east-1"}
            for body in bodies
        ]}  # fmt: skip

    def s3_body(self, kind: str) -> Any:
        """A captured message body (data/s3_sqs_bodies.json) for this stack's inbox."""
        found = json.loads(EVENTS.read_text())[kind]

        def swap(text: str) -> str:
            return text.replace("BUCKET", self.bucket("inbox"))

        return [swap(t) for t in found] if isinstance(found, list) else swap(found)

    def put_event(self, key: str) -> str:
        """The body S3 sends for a PutObject of `key` (the captured one, key swapped)."""
        from urllib.parse import quote_plus

        body = json.loads(self.s3_body("put"))
        body["Records"][0]["s3"]["object"]["key"] = quote_plus(key)
        return json.dumps(body)


@functools.cache
def exiting_image() -> str:
    """The test busybox image with a worker command that exits at once (status 3): Batch
    children run and end (an image without the command leaves moto's containers behind,
    created but never started). Built once per machine."""
    from tests.containers import BUSYBOX, client

    tag = "localhost/shepard-test-exiting-worker:1"
    engine = client()
    if any(tag in (image.tags or []) for image in engine.images.list()):
        return tag
    recipe = (
        f"FROM {BUSYBOX}\n"
        "RUN mkdir -p /opt/shepard-worker/bin && printf '#!/bin/sh\\nexit 3\\n' > "
        "/opt/shepard-worker/bin/shepard-batch-task && "
        "chmod 755 /opt/shepard-worker/bin/shepard-batch-task\n"
    )
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(recipe)
        tar.addfile(info, io.BytesIO(recipe.encode()))
    context.seek(0)
    engine.images.build(fileobj=context, custom_context=True, tag=tag, rm=True)
    return tag


@contextlib.contextmanager
def stack(url: str, *, image: str) -> Iterator[Stack]:
    """A new flock's resources on the server at `url`; its Batch jobs run `image`."""
    name = f"lf{uuid.uuid4().hex[:10]}"
    s3, sqs = aws.client("s3", url), aws.client("sqs", url)
    buckets = {role: f"{name}-{role}-x" for role in ROLES}
    for bucket in buckets.values():
        s3.create_bucket(Bucket=bucket)
    dlq = sqs.create_queue(QueueName=f"{name}-events-dlq")["QueueUrl"]
    events = sqs.create_queue(QueueName=f"{name}-events")["QueueUrl"]
    env = {f"SHEPARD_{r.upper().replace('-', '_')}_BUCKET": b for r, b in buckets.items()}
    env.update(
        SHEPARD_FLOCK_NAME=name,
        SHEPARD_CATALOG=f"dynamodb://{name}-catalog?region=us-east-1",
        SHEPARD_EVENTS_QUEUE=events,
        SHEPARD_DEAD_LETTERS=dlq,
        SHEPARD_JOB_QUEUE=aws.queue(url),
        SHEPARD_JOB_DEFINITION=f"{name}-job",
        SHEPARD_SECRET_NAME=f"{name}/secrets",
        SHEPARD_JOB_LOG_GROUP=f"/shepard/{name}/jobs",
        AWS_REGION="us-east-1",
    )
    made = Stack(name, url, env)
    made.write_settings({
        "payload": {"command": "true"},
        "backend": {"aws-batch": {"image": image, "submit_rate": 50}},
    })  # fmt: skip
    from shepard.catalog import open_catalog

    with _environment({**env, "AWS_ENDPOINT_URL": url, **aws.FAKE}):
        open_catalog(env["SHEPARD_CATALOG"], create=True).close()
        yield made
    with contextlib.suppress(Exception):
        aws.client("dynamodb", url).delete_table(TableName=f"{name}-catalog")


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """These variables in os.environ (where the handlers read them) while inside."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in before.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


class Context:
    """The part of Lambda's context object the handlers use."""

    def __init__(self, seconds: float = 120.0) -> None:
        import time

        self._end = time.monotonic() + seconds

    def get_remaining_time_in_millis(self) -> int:
        import time

        return int((self._end - time.monotonic()) * 1000)
