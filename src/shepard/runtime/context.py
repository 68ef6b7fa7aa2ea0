"""What the runtime needs to run one job attempt, independent of the backend that called it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from shepard.storage import LocalStore, ObjectStore


@dataclass(frozen=True)
class RuntimeContext:
    """The flock-level facts a job attempt runs with (built once per worker process)."""

    inputs: ObjectStore  # registered input bundles (INPUTS_BUCKET)
    outputs: ObjectStore  # result zips (OUTPUTS_BUCKET)
    errors: ObjectStore  # error bundles (ERROR_BUCKET)
    quick_deploy: ObjectStore  # quick-deploy folders (QUICK_DEPLOY_BUCKET)
    logs: LocalStore  # per-attempt stdout/stderr, keys from log_key()
    secrets_dir: Path  # files copied into $ROOT_INPUT_NAME/secrets/ for every job
    workspace_root: Path  # job workspaces: <workspace_root>/<UUID>/{input,output}
    command: str | None  # the payload command, run with /bin/sh -c
    timeout: float | None = None  # default per-attempt timeout (seconds); a job's own wins
    env: Mapping[str, str] = field(default_factory=dict)  # flock-wide extra variables
    efs: Path | None = None  # shared filesystem playing Shepard's EFS role
    lustre: Path | None = None  # shared filesystem playing Shepard's Lustre role
    container: ContainerSpec | None = None  # run the payload in this image (else a process)


@dataclass(frozen=True)
class ContainerSpec:
    """How an image payload runs (see runtime/container.py and docs/containers.md)."""

    image: str  # the image every job runs in
    flock: str  # the flock's name, for the containers' labels
    engine: str | None = None  # Docker Engine API URL; None: DOCKER_HOST, else a local socket
    cpus: float | None = None
    memory: int | None = None  # bytes
    ulimits: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # (soft, hard), -1 = inf
    gpus: int = 0  # NVIDIA GPUs per job; -1: all of them
    allow_docker_access: bool = False  # the engine's socket is mounted into the container
    network: str | None = None  # None: the engine's default network
    pull: str = "missing"  # "missing", "never" or "always"
    user: str = "host"  # "host": the worker's uid:gid; "image": the image's USER; or uid[:gid]


@dataclass
class AttemptControl:
    """How the caller steers a running attempt.

    `stop` is set by the caller when the attempt must end early (cancelled, or its lease was
    lost); the runtime then kills the payload's process group and publishes nothing.
    `still_current()` is asked once, right before outputs are published; False means a newer
    attempt owns the job, so this one must not publish.
    """

    stop: threading.Event = field(default_factory=threading.Event)
    stop_reason: str = "cancelled"
    still_current: Callable[[], bool] = lambda: True


def log_key(job_id: str, attempt: int, stream: str) -> str:
    """Key of an attempt's `stream` ("stdout" or "stderr") in the logs store.

    `<first 8 characters of the id>/<id>.<attempt>.<stream>`: job ids start with their
    creation time, so the jobs of one submission share a few folders instead of making one
    folder per job (folder creation is what short jobs pay most for on many filesystems).
    """
    return f"{job_id[:8]}/{job_id}.{attempt}.{stream}"
