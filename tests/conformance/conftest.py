"""Fixtures of the conformance suite: a `target` flock per execution flavour."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shepard.flock import Flock
from shepard.storage import ObjectStore
from tests.acceptance.conftest import Cli
from tests.conformance.flavours import BATCH_SUBSETS, FLAVOURS, Flavour, FlockDict
from tests.services import require_service


class Target(Cli):
    """A Cli whose `init` makes a flock of one flavour; `store(name)` opens one of its stores
    (a folder or S3) so that tests look at what it keeps through the store API only."""

    def __init__(self, flock: Path, cwd: Path, flavour: Flavour) -> None:
        super().__init__(flock, cwd)
        self.flavour = flavour
        self.endpoint: str | None = None
        if flavour.s3:
            self.endpoint = _s3_setup(self.env)
        if flavour.aws:
            self.endpoint = _aws_setup(self.env)

    def init(self, command: str, *extra: str) -> None:
        storage: list[str] = []
        if self.endpoint is not None:
            storage = ["--storage", f"s3://{_new_bucket(self.endpoint)}/flocks/conformance"]
        args = (
            self.flavour.init_args(self.endpoint) if self.flavour.aws else self.flavour.init_args()
        )
        if self.flavour.aws and "SHEPARD_SECRET_KEY" in self.env:  # the tasks decrypt secrets
            args += ["--worker-env", f"SHEPARD_SECRET_KEY={self.env['SHEPARD_SECRET_KEY']}"]
        super().init(command, *args, *storage, *extra)
        if self.endpoint is not None:
            self.configure(_endpoint_in_config(self.endpoint))
        if self.flavour.edit is not None:
            self.configure(self.flavour.edit)

    def store(self, name: str) -> ObjectStore:
        flock = Flock.open(self.flock)
        try:
            return flock.store(name)
        finally:
            flock.close()


def _s3_setup(env: dict[str, str]) -> str:
    """The S3 test server's endpoint, with it and fake credentials in `env` (and in this
    process's environment, for `Target.store`)."""
    from tests.services import s3_endpoint

    endpoint = s3_endpoint()  # fails (CI) or skips when the server is missing
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        env[name] = os.environ[name]
    env["AWS_ENDPOINT_URL"] = endpoint
    return endpoint


def _aws_setup(env: dict[str, str]) -> str:
    """The AWS test server's endpoint, as `_s3_setup` does for the S3 one."""
    from tests import aws

    endpoint = aws.endpoint()  # fails (CI) or skips when the server is missing
    env.update(aws.FAKE)
    env["AWS_ENDPOINT_URL"] = endpoint
    return endpoint


def _new_bucket(endpoint: str) -> str:
    from shepard.storage import StoreOptions
    from shepard.storage.s3 import client_for

    bucket = f"conformance-{uuid.uuid4().hex[:16]}"
    client_for(StoreOptions(endpoint_url=endpoint, region="us-east-1")).create_bucket(Bucket=bucket)
    return bucket


def _endpoint_in_config(endpoint: str) -> Callable[[FlockDict], None]:
    def edit(data: FlockDict) -> None:
        # in flock.toml too, so that every process of the flock (Slurm tasks) finds it
        data.setdefault("storage", {})["endpoint_url"] = endpoint

    return edit


FULL_MATRIX_ENV = "SHEPARD_TEST_FULL_MATRIX"
"""Set to 1 to run every case on every flavour (the default runs SUBSETS below)."""

SUBSETS: dict[str, tuple[str, ...]] = {
    # sheep differ from array tasks in how a job is claimed, started, timed and cleaned up
    "slurm-sheep": (
        "test_environment_and_folders",
        "test_a_range_of_jobs_each_publish_their_output",
        "test_timeout_stops_the_payload_and_says_so",
        "test_workspace_is_gone_after_success_and_failure",
    ),
    # remote tasks reaching S3 stores: what goes in (bundle, secrets) and out (outputs,
    # error bundles, logs); the rest is the same code as slurm-array and local-s3
    "slurm-array-s3": (
        "test_bundle_is_copied_in_and_tag_prefixes_the_outputs",
        "test_failure_leaves_an_error_bundle_and_no_output",
        "test_logs_keep_the_payloads_streams",
        "test_secrets_reach_the_payload_and_nothing_else",
    ),
    # the tasks runner inside an array task: its environment, failure and time limit
    "slurm-array-tasks": (
        "test_environment_and_folders",
        "test_failure_leaves_an_error_bundle_and_no_output",
        "test_timeout_stops_the_payload_and_says_so",
    ),
}
"""The cases each slow flavour runs by default, chosen for what that flavour changes against
a flavour that runs every case (local, container, slurm-array, local-s3, tasks). Seconds of a
Slurm round-trip each: running every case everywhere made the suite too long for CI. The
aws-batch flavours' subsets (BATCH_SUBSETS, flavours.py) say what each case proves on Batch;
SHEPARD_TEST_BATCH_CONFORMANCE=1 runs every case on those two only."""
if os.environ.get("SHEPARD_TEST_BATCH_CONFORMANCE") != "1":
    SUBSETS.update(BATCH_SUBSETS)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get(FULL_MATRIX_ENV) == "1":
        return
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        spec = getattr(item, "callspec", None)
        flavour = spec.params.get("target") if spec is not None else None
        cases = SUBSETS.get(flavour.name) if isinstance(flavour, Flavour) else None
        name = getattr(item, "originalname", item.name)
        (keep if cases is None or name in cases else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(params=FLAVOURS, ids=[f.name for f in FLAVOURS])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    flavour: Flavour = request.param
    why = dict(flavour.skip).get(request.node.originalname)
    if why is not None:
        pytest.skip(f"not for flavour {flavour.name}: {why}")
    require_service(f"flavour {flavour.name}", flavour.problem())
    runner = Target(tmp_path / "flock", tmp_path, flavour)
    yield runner
    runner.kill_leftovers()
    if flavour.name.startswith("slurm"):
        from tests.slurm import cancel_tasks

        cancel_tasks(runner.flock)
