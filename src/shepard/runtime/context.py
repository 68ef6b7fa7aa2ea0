"""What the runtime needs to run one job attempt, independent of the backend that called it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from shepard.storage import ObjectStore

if TYPE_CHECKING:
    from shepard.payloads.base import Payload
    from shepard.runtime.buckets import ModelPayloads


@dataclass(frozen=True)
class RuntimeContext:
    """The flock-level facts a job attempt runs with (built once per worker process)."""

    inputs: ObjectStore  # registered input bundles (INPUTS_BUCKET)
    outputs: ObjectStore  # result zips (OUTPUTS_BUCKET)
    errors: ObjectStore  # error bundles (ERROR_BUCKET)
    quick_deploy: ObjectStore  # quick-deploy folders (QUICK_DEPLOY_BUCKET)
    logs: ObjectStore  # per-attempt stdout/stderr, keys from log_key() (runtime/logsink.py)
    secrets: ObjectStore  # encrypted secrets, decrypted into $ROOT_INPUT_NAME/secrets/
    workspace_root: Path  # job workspaces: <workspace_root>/<UUID>/{input,output}
    payload: Payload  # what runs, and how: the flock's payload kind (shepard/payloads/)
    timeout: float | None = None  # default per-attempt timeout (seconds); a job's own wins
    env: Mapping[str, str] = field(default_factory=dict)  # flock-wide extra variables
    efs: Path | None = None  # shared filesystem playing Shepard's EFS role
    lustre: Path | None = None  # shared filesystem playing Shepard's Lustre role
    models: ModelPayloads | None = None  # payloads of shepherd models ([shepherd.models])


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
