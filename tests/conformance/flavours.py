"""The execution flavours the conformance suite runs against.

A flavour is one way of running a flock's jobs (a backend, or a kind of payload). Each test of
the suite runs once per flavour, through the real `shepard` executable, and expects the same
runtime contract. To add one: append a `Flavour` to FLAVOURS.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

FlockDict = dict[str, Any]


def _nothing_missing() -> str | None:
    return None


def _no_args() -> list[str]:
    return []


@dataclass(frozen=True)
class Flavour:
    """How to make a flock run its jobs one particular way.

    `problem()` is None when the flavour can run on this machine, else why it cannot (the
    suite then skips, or fails in CI). `init_args()` are extra `shepard init` arguments;
    `edit`, when set, changes the parsed flock.toml after `init` (it is written back).
    `s3`: the flock's stores live in a fresh bucket of the S3 test server (`--storage
    s3://...`) instead of folders. `aws`: they live in a bucket of the AWS test server
    instead, which the flock's Batch tasks reach too (`init_args` then take that server's
    endpoint).
    """

    name: str
    problem: Callable[[], str | None] = _nothing_missing
    init_args: Callable[..., list[str]] = _no_args
    edit: Callable[[FlockDict], None] | None = None
    s3: bool = False
    aws: bool = False
    skip: tuple[tuple[str, str], ...] = ()  # (test name, why it does not apply)


def _container_problem() -> str | None:
    from tests.containers import PYTHON_IMAGE, engine_problem

    return engine_problem(PYTHON_IMAGE)


def _container_args() -> list[str]:
    from tests.containers import PYTHON_IMAGE

    return ["--payload-image", PYTHON_IMAGE]


def _container_edit(data: FlockDict) -> None:
    from tests.containers import use_test_engine

    use_test_engine(data)


def _slurm_problem() -> str | None:
    from tests.slurm import problem

    return problem()


def _s3_problem() -> str | None:
    import os

    from tests.services import S3_ENV, s3_problem

    return s3_problem(os.environ.get(S3_ENV))


def _slurm_s3_problem() -> str | None:
    return _slurm_problem() or _s3_problem()


def _on_slurm(mode: str) -> Callable[[FlockDict], None]:
    def edit(data: FlockDict) -> None:
        from tests.slurm import use_slurm

        use_slurm(data, mode)

    return edit


def _aws_problem() -> str | None:
    from tests.aws import problem

    return problem()


def _on_batch(image_payload: bool) -> Callable[[str], list[str]]:
    """`init` options of an aws-batch flock on the AWS test server at `endpoint`: its queue,
    the worker image derived from the test image, the tasks' endpoint and credentials."""

    def args(endpoint: str) -> list[str]:
        from tests import aws
        from tests.containers import PYTHON_IMAGE

        found = ["--backend", "aws-batch", "--batch-queue", aws.queue(endpoint),
                 "--image", aws.worker_image(PYTHON_IMAGE),
                 "--worker-env", f"AWS_ENDPOINT_URL={aws.task_endpoint(endpoint)}"]  # fmt: skip
        for name, value in aws.FAKE.items():
            found += ["--worker-env", f"{name}={value}"]
        return found + (["--payload-image", PYTHON_IMAGE] if image_payload else [])

    return args


def _as_tasks(data: FlockDict) -> None:
    """Run the flock's command as the one task of a tasks.json document (kind "tasks")."""
    import json
    import tempfile
    from pathlib import Path

    command = data["payload"].pop("command")
    doc = {
        "programName": "conformance",
        "itemName": "${WORK_ITEM}",
        "tasks": [{"name": "payload", "command": command}],
    }
    path = Path(tempfile.mkdtemp(prefix="shepard-conformance-tasks-")) / "tasks.json"
    path.write_text(json.dumps(doc))
    data["payload"].update(kind="tasks", tasks=str(path))


def _slurm_tasks(data: FlockDict) -> None:
    _as_tasks(data)
    _on_slurm("array")(data)


_TASKS_SKIP = (
    (
        "test_logs_keep_the_payloads_streams",
        "the tasks runner reports its phases in the job's log, so the streams are not the "
        "command's alone",
    ),
)

FLAVOURS: list[Flavour] = [
    Flavour("local"),
    # the local backend, each job in a container of a Debian image with Python (Podman)
    Flavour(
        "container", problem=_container_problem, init_args=_container_args, edit=_container_edit
    ),
    # the slurm backend on the test cluster, PostgreSQL catalog: one array task per job
    Flavour("slurm-array", problem=_slurm_problem, edit=_on_slurm("array")),
    # the same, with long-lived sheep claiming jobs from the catalog
    Flavour("slurm-sheep", problem=_slurm_problem, edit=_on_slurm("sheep")),
    # the local backend with every store in S3 (the test server): bundles, outputs, error
    # bundles, logs, secrets and quick-deploy folders are objects, not files
    Flavour("local-s3", problem=_s3_problem, s3=True),
    # the slurm backend (tasks on this machine reach the S3 server too), stores in S3
    Flavour("slurm-array-s3", problem=_slurm_s3_problem, edit=_on_slurm("array"), s3=True),
    # the tasks kind (docs/tasks.md): the command as the one task of a tasks.json document
    Flavour("tasks", edit=_as_tasks, skip=_TASKS_SKIP),
    Flavour("slurm-array-tasks", problem=_slurm_problem, edit=_slurm_tasks, skip=_TASKS_SKIP),
]


def _batch_edit(data: FlockDict) -> None:
    # the head looks at Batch every second (default 5): each case waits less for its outcome
    data.setdefault("backend", {}).setdefault("aws-batch", {})["reconcile"] = 1.0


def _batch_packed_edit(data: FlockDict) -> None:
    _batch_edit(data)
    data["backend"]["aws-batch"]["jobs_per_child"] = 4


# The aws-batch backend on moto's Batch emulation (containers through Podman), stores in S3 on
# the same server: a command payload in the worker image derived from the test image, and an
# image payload (the image's own command, in its container).
#
# Each job costs seconds on the emulator (a container start, the worker's start, an upload of
# every result), so by default these flavours run the cases where a Batch child does something
# of its own (BATCH_SUBSETS, read by conftest.py: each case says what it proves there), and
# leave out the cases whose every step is the runtime's reading and writing of the flock's
# stores, which a Batch child does through the same code as the `local-s3` flavour (quick
# deploy, logs, workspace removal). SHEPARD_TEST_BATCH_CONFORMANCE=1 (or
# SHEPARD_TEST_FULL_MATRIX=1) runs every case on both.
BATCH_CASES: dict[str, str] = {
    "test_environment_and_folders": "the variables, folders and output names as the child's "
    "container sees them; START_TIME is the hand-over's",
    "test_bundle_is_copied_in_and_tag_prefixes_the_outputs": "the input bundle reaches the "
    "child through the store",
    "test_failure_leaves_an_error_bundle_and_no_output": "the child's outcome (exit code, error "
    "bundle) recorded by the head",
    "test_a_range_of_jobs_each_publish_their_output": "six jobs as one array: each child finds "
    "its own job from its index",
    "test_timeout_stops_the_payload_and_says_so": "the worker in the child enforces the job's "
    "timeout",
    "test_secrets_reach_the_payload_and_nothing_else": "the child decrypts secrets with the key "
    "its worker_env gives",
}
BATCH_IMAGE_CASES: dict[str, str] = {
    # the rest is the command flavour's: in the child, an image payload becomes a command
    "test_environment_and_folders": "the payload runs in the child's own container",
}
# jobs_per_child = 4: each child runs a pack of jobs in turn (the head claims and records
# them one by one)
BATCH_PACKED_CASES: dict[str, str] = {
    "test_a_range_of_jobs_each_publish_their_output": "six jobs in two children (packs of "
    "four and two): each job's outcome recorded as its child goes on",
    "test_failure_leaves_an_error_bundle_and_no_output": "a failed job's outcome in a pack",
    "test_timeout_stops_the_payload_and_says_so": "a job of a pack stopped at its own timeout",
}
BATCH_SUBSETS: dict[str, tuple[str, ...]] = {
    "aws-batch": tuple(BATCH_CASES),
    "aws-batch-image": tuple(BATCH_IMAGE_CASES),
    "aws-batch-packed": tuple(BATCH_PACKED_CASES),
}

BATCH_FLAVOURS: list[Flavour] = [
    Flavour(
        "aws-batch", problem=_aws_problem, init_args=_on_batch(False), edit=_batch_edit, aws=True
    ),
    Flavour(
        "aws-batch-image", problem=_aws_problem, init_args=_on_batch(True), edit=_batch_edit,
        aws=True,
    ),
    Flavour(
        "aws-batch-packed", problem=_aws_problem, init_args=_on_batch(False),
        edit=_batch_packed_edit, aws=True,
    ),
]  # fmt: skip
FLAVOURS += BATCH_FLAVOURS
