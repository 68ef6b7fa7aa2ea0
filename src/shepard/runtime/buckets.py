"""shepherd jobs: a job whose inputs, outputs and status live in a bucket of its own.

A job submitted through the shepherd-compatible routes (server/shepherd.py) carries
`s3://<job id>/inputs/` as its bundle key. That key can never name an ordinary bundle (it is
not a valid store key: `check_key` refuses the empty segment after `s3:`), so ordinary jobs
never take this path. For such a job the runtime, on every backend:

1. copies each object under `inputs/` of the bucket to `$ROOT_INPUT_NAME/<name relative to
   inputs/>` and records `processing` in the bucket's `job_status.json`;
2. runs the payload of the job's model (`[shepherd.models."NAME:VERSION"]`, else the flock's);
3. stores every file under `$ROOT_OUTPUT_NAME` as `outputs/<relative name>` (not zipped),
   also after a failure (the partial outputs help, as in shepherd), and records `done` or
   `failed` in `job_status.json`.

The bucket is on the S3 endpoint boto3's standard chain finds (AWS_ENDPOINT_URL, ...), as in
shepherd. The status record's shape is shepherd's (`status_record`).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shepard.errors import StorageError
from shepard.model import Job, JobStatus
from shepard.runtime.workspace import SECRETS_DIR, SetupError

if TYPE_CHECKING:
    from shepard.config import FlockConfig, PayloadConfig
    from shepard.payloads.base import Payload
    from shepard.runtime.context import RuntimeContext
    from shepard.storage import ObjectStore

SCHEME = "s3://"
INPUTS = "inputs/"
OUTPUTS = "outputs/"
STATUS_KEY = "job_status.json"
MODEL_NAME = "MODEL_NAME"
MODEL_VERSION = "MODEL_VERSION"

COPY_CHUNK = 1 << 20

QUEUED, PROCESSING, DONE, FAILED = "queued", "processing", "done", "failed"


def bundle_key(bucket: str) -> str:
    """The bundle key a shepherd job carries: where its inputs are."""
    return f"{SCHEME}{bucket}/{INPUTS}"


def bucket_of(job: Job) -> str | None:
    """The job's bucket if it is a shepherd job, else None."""
    key = job.bundle_key
    if key is None or not key.startswith(SCHEME) or not key.endswith("/" + INPUTS):
        return None
    return key[len(SCHEME) : -len(INPUTS) - 1] or None


def open_bucket(bucket: str) -> ObjectStore:
    """The job's bucket as a store, on boto3's standard endpoint (imports boto3)."""
    from shepard.storage.s3 import S3Store

    return S3Store(bucket)


def model_of(params: Mapping[str, object]) -> dict[str, str | None]:
    """shepherd's `model` object from a job's MODEL_NAME / MODEL_VERSION ("" is null)."""
    name, version = params.get(MODEL_NAME), params.get(MODEL_VERSION)
    return {"name": str(name) if name else None, "version": str(version) if version else None}


def timestamp(epoch: float | None) -> str | None:
    """shepherd's timestamp: naive UTC, ISO form, always with microseconds."""
    if epoch is None:
        return None
    seconds = int(epoch)
    micro = round((epoch - seconds) * 1_000_000)
    if micro >= 1_000_000:
        seconds, micro = seconds + 1, 0
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{micro:06d}"


def status_record(
    status: str,
    model: Mapping[str, str | None],
    *,
    enqueued_at: float | None,
    started_at: float | None = None,
    finished_at: float | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """shepherd's JobStatus: every key present, unset ones null."""
    details = None
    if error is not None:
        details = {"message": error, "exception_type": None, "exception_traceback": None}
    return {
        "status": status,
        "error_details": details,
        "model": dict(model),
        "enqueued_at": timestamp(enqueued_at),
        "processing_started_at": timestamp(started_at),
        "finished_at": timestamp(finished_at),
    }


def job_record(job: Job) -> dict[str, Any]:
    """The status record of a catalog job, which is what shepherd's routes answer."""
    model = model_of(job.params)
    status, error = _shepherd_status(job)
    started = job.started_at if job.status is not JobStatus.QUEUED else None
    finished = job.finished_at if job.status.terminal else None
    return status_record(
        status, model, enqueued_at=job.submitted_at, started_at=started,
        finished_at=finished, error=error,
    )  # fmt: skip


def _shepherd_status(job: Job) -> tuple[str, str | None]:
    if job.status is JobStatus.SUCCEEDED:
        return DONE, None
    if job.status is JobStatus.FAILED:
        return FAILED, job.reason or "failed"
    if job.status is JobStatus.CANCELLED:
        return FAILED, f"cancelled: {job.reason}" if job.reason else "cancelled"
    return (PROCESSING if job.status is JobStatus.RUNNING else QUEUED), None


def put_status(bucket: ObjectStore, record: Mapping[str, Any]) -> None:
    bucket.put_bytes(STATUS_KEY, json.dumps(record).encode())


# -- the runtime's side ------------------------------------------------------------------


class ModelPayloads:
    """The payloads of the models named in `[shepherd.models]`, built on first use; part of
    the RuntimeContext (picklable: what it built is rebuilt in a new process)."""

    def __init__(self, config: FlockConfig) -> None:
        self.config = config
        self._built: dict[str, Payload] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["config"])  # type: ignore[misc]

    def context_for(self, job: Job, ctx: RuntimeContext) -> RuntimeContext:
        """`ctx` for the job's model: with its table's payload, timeout (else the flock's)
        and env (over the flock's), or `ctx` itself when the model has no table."""
        table = self._table(job)
        if table is None:
            return ctx
        timeout = table.timeout if table.timeout is not None else ctx.timeout
        return replace(
            ctx, payload=self.payload_for(job, ctx.payload), timeout=timeout,
            env={**ctx.env, **table.env},
        )  # fmt: skip

    def _table(self, job: Job) -> PayloadConfig | None:
        name = str(job.params.get(MODEL_NAME, ""))
        version = str(job.params.get(MODEL_VERSION, ""))
        return self.config.shepherd.payload_for(name, version)

    def payload_for(self, job: Job, default: Payload) -> Payload:
        """The payload of the job's model: its own table, else `default` (the flock's)."""
        table = self._table(job)
        if table is None:
            return default
        key = f"{job.params.get(MODEL_NAME, '')}:{job.params.get(MODEL_VERSION, '')}"
        with self._lock:
            payload = self._built.get(key)
            if payload is None:
                from shepard.payloads import kind_class

                own = self.config.model_copy(update={"payload": table})
                payload = self._built[key] = kind_class(table.kind).from_config(own)
        return payload


def pull_inputs(bucket: ObjectStore, dest: Path) -> int:
    """Copy every object under `inputs/` to `dest/<relative name>`; return how many.
    Raises SetupError when one cannot be copied or would land on the secrets folder."""
    count = 0
    try:
        for key in bucket.list(INPUTS):
            name = key[len(INPUTS) :]
            if name.split("/", 1)[0] == SECRETS_DIR:
                raise SetupError(
                    f"input {key!r} clashes with the secrets folder; rename it", retryable=False
                )
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            with bucket.open_read(key) as source, open(target, "wb") as sink:
                shutil.copyfileobj(source, sink, COPY_CHUNK)  # one GET, also for big ones
            count += 1
    except (StorageError, OSError) as exc:
        raise SetupError(f"cannot copy the job's inputs: {exc}") from exc
    return count


def push_outputs(bucket: ObjectStore, folder: Path) -> list[str]:
    """Store every file under `folder` as `outputs/<relative name>`; return the keys.
    Symbolic links are not followed (a payload could point one anywhere)."""
    keys = []
    for root, dirs, files in os.walk(folder):
        base = Path(root)
        dirs[:] = sorted(d for d in dirs if not (base / d).is_symlink())
        for name in sorted(files):
            path = base / name
            if path.is_symlink() or not path.is_file():
                continue
            key = OUTPUTS + path.relative_to(folder).as_posix()
            bucket.put_file(key, path)
            keys.append(key)
    return keys
