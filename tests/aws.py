"""What tests of the aws-batch backend share: the AWS test server (moto, started by
scripts/services-aws), a Batch queue on it, buckets, and worker images.

Containers that moto's Batch runs through Podman reach the server at
http://host.containers.internal:PORT (the head uses 127.0.0.1): flocks pass that to their
tasks with `--worker-env AWS_ENDPOINT_URL=...`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

from tests.services import require_service

AWS_ENV = "SHEPARD_TEST_AWS"
FAKE = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip


def problem() -> str | None:
    """None when the AWS test server answers and Podman holds the test images."""
    endpoint = os.environ.get(AWS_ENV)
    if not endpoint:
        return f'{AWS_ENV} is not set (start the server: eval "$(scripts/services-aws)")'
    try:
        with urllib.request.urlopen(endpoint, timeout=3):
            pass
    except urllib.error.HTTPError:
        pass
    except OSError as exc:
        return f"the AWS test server at {endpoint} ({AWS_ENV}) does not answer: {exc}"
    from tests.containers import BUSYBOX, PYTHON_IMAGE, engine_problem

    return engine_problem(PYTHON_IMAGE, BUSYBOX)


def endpoint() -> str:
    """The server's endpoint for the head, fake credentials in this process's environment;
    skips (locally) or fails (CI) when the server is missing."""
    require_service("the AWS test server", problem())
    for name, value in FAKE.items():
        os.environ.setdefault(name, value)
    return os.environ[AWS_ENV]


def task_endpoint(head: str) -> str:
    """The same server as the containers of Batch jobs reach it."""
    return f"http://host.containers.internal:{urlparse(head).port}"


def client(service: str, url: str) -> Any:
    import boto3

    return boto3.client(service, endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip


@functools.cache
def queue(url: str) -> str:
    """A Batch job queue on an EC2 compute environment (made once per test process): the
    IAM role and instance profile, the network, the compute environment, the queue."""
    suffix = uuid.uuid4().hex[:8]
    iam, ec2, batch = client("iam", url), client("ec2", url), client("batch", url)
    policy = '{"Version":"2012-10-17","Statement":[]}'
    role = iam.create_role(RoleName=f"batch-{suffix}", AssumeRolePolicyDocument=policy)
    profile = iam.create_instance_profile(InstanceProfileName=f"batch-{suffix}")
    iam.add_role_to_instance_profile(InstanceProfileName=f"batch-{suffix}",
                                     RoleName=f"batch-{suffix}")  # fmt: skip
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.0.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName=f"batch-{suffix}", Description="batch",
                                      VpcId=vpc)["GroupId"]  # fmt: skip
    batch.create_compute_environment(
        computeEnvironmentName=f"ce-{suffix}", type="MANAGED", state="ENABLED",
        serviceRole=role["Role"]["Arn"],
        computeResources={
            "type": "EC2", "minvCpus": 0, "maxvCpus": 4, "desiredvCpus": 0,
            "instanceTypes": ["optimal"], "instanceRole": profile["InstanceProfile"]["Arn"],
            "subnets": [subnet], "securityGroupIds": [group],
        },
    )  # fmt: skip
    name = f"q-{suffix}"
    order = [{"order": 1, "computeEnvironment": f"ce-{suffix}"}]
    batch.create_job_queue(
        jobQueueName=name, state="ENABLED", priority=1, computeEnvironmentOrder=order
    )
    return name


def bucket(url: str) -> str:
    name = f"batch-{uuid.uuid4().hex[:16]}"
    client("s3", url).create_bucket(Bucket=name)
    return name


@functools.cache
def worker_image(base: str) -> str:
    """The worker image `deploy` derives from `base` (built once per machine and base)."""
    from shepard.backends.aws_batch.image import derive
    from tests.containers import client as engine

    return derive(engine(), base)


def moto_server() -> str:
    """The moto_server executable scripts/services-aws installs (SHEPARD_MOTO_VENV, else its
    default for this user); skips (locally) or fails (CI) when it is missing."""
    import shutil
    from pathlib import Path

    default = "/opt/shepard-moto" if os.geteuid() == 0 else str(Path.home() / ".cache/shepard-moto")
    venv = Path(os.environ.get("SHEPARD_MOTO_VENV", default))
    found = venv / "bin" / "moto_server"
    if not found.exists():
        found = Path(shutil.which("moto_server") or found)
    require_service("moto_server", None if found.exists() else
                    f"no moto_server in {venv} (run scripts/services-aws)")  # fmt: skip
    return str(found)


@contextlib.contextmanager
def private_server() -> Iterator[str]:
    """A moto server of this test's own, started as scripts/services-aws starts the shared
    one (0.0.0.0, Podman's socket, path-style buckets), for what would disturb other tests
    of the shared one (its state manager); its endpoint for the head."""
    import socket
    import subprocess
    import time

    endpoint()  # the shared server answers, and Podman holds the images
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    docker_host = os.environ.get("SHEPARD_TEST_DOCKER_HOST",
                                 "unix:///run/shepard-podman/podman.sock")  # fmt: skip
    env = {**os.environ, "DOCKER_HOST": docker_host, "S3_IGNORE_SUBDOMAIN_BUCKETNAME": "true"}
    proc = subprocess.Popen([moto_server(), "-H", "0.0.0.0", "-p", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=2):
                    break
            except urllib.error.HTTPError:
                break
            except OSError:
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def slow_states(url: str, seconds: float) -> None:
    """Make the Batch jobs of the server at `url` pass SUBMITTED, PENDING, RUNNABLE and
    STARTING in `seconds` each (moto's state manager; by default they pass at once)."""
    import json

    body = {"model_name": "batch::job", "transition": {"progression": "time", "seconds": seconds}}
    request = urllib.request.Request(
        f"{url}/moto-api/state-manager/set-transition", data=json.dumps(body).encode(),
        method="POST", headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10):
        pass
