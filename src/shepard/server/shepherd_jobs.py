"""What shepherd's routes do with a flock: register a job, find one, describe the sheep.

Blocking (boto3, the catalog): the routes call these from worker threads. A shepherd job is an
ordinary Shepard job: its bundle key names its bucket (runtime/buckets.py) and it is
registered under the idempotency key and batch label `shepherd:<job id>`, which is how a
shepherd job id finds its Shepard job (and how a second submission of one id is refused,
whatever the S3 server answers to creating a bucket it already has).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Any

from shepard.errors import JobNotFound, ShepardError, StorageError
from shepard.model import Job, JobSpec, JobStatus
from shepard.params import check_env_size, validate_params
from shepard.runtime import buckets
from shepard.storage import NoSuchObject

if TYPE_CHECKING:
    from shepard.flock import Flock
    from shepard.storage import ObjectStore

LABEL = "shepherd:"
DEFAULT_INPUT = "input"
DEFAULT_OUTPUT = "output"
SHEEP_PREFIX = "sheep-"
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class Refusal(Exception):
    """An answer other than success: `status` and shepherd's `{"message": ...}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def no_data(job_id: str) -> Refusal:
    """shepherd's answer for a job it knows nothing of (400, as its clients expect)."""
    return Refusal(400, f"Data for job `{job_id}` does not exist")


def bucket_name_problem(job_id: str) -> str | None:
    """Why `job_id` cannot be a bucket name (and so a shepherd job id), or None."""
    if not _BUCKET.match(job_id):
        return (
            "a job id is its bucket's name: 3-63 characters, lower-case letters, digits, "
            "'-' and '.', starting and ending with a letter or digit"
        )
    if ".." in job_id or ".-" in job_id or "-." in job_id:
        return "a job id (a bucket name) may not hold '..', '.-' or '-.'"
    try:
        ipaddress.IPv4Address(job_id)
    except ValueError:
        return None
    return "a job id (a bucket name) may not look like an IP address"


@dataclass(frozen=True)
class StartJob:
    """A checked `/start-job` body."""

    job_id: str
    model_name: str | None
    model_version: str | None
    sheep_id: str | None = None
    payload: str | None = None


_FIELDS = {"job_id", "model", "sheep_id", "payload"}


def parse_start_job(body: object) -> StartJob:
    """The body as shepherd validates it: strict fields, 400 with its messages."""
    if not isinstance(body, dict):
        raise Refusal(400, "The request body must be a JSON object")
    problems: dict[str, str] = {k: "Rogue field" for k in body if k not in _FIELDS}
    job_id, model = body.get("job_id"), body.get("model")
    if job_id is None:
        problems["job_id"] = "This field is required."
    elif not isinstance(job_id, str):
        problems["job_id"] = f"Couldn't interpret '{job_id}' as string."
    if model is None:
        problems["model"] = "This field is required."
    elif not isinstance(model, dict):
        problems["model"] = "Only mappings may be used in a ModelType"
    else:
        for key in model:
            if key not in ("name", "version"):
                problems[f"model.{key}"] = "Rogue field"
        for key in ("name", "version"):
            if model.get(key) is not None and not isinstance(model[key], str):
                problems[f"model.{key}"] = f"Couldn't interpret '{model[key]}' as string."
    for key in ("sheep_id", "payload"):
        value = body.get(key)
        if value is not None and not isinstance(value, str):
            problems[key] = f"Couldn't interpret '{value}' as string."
    if problems:
        raise Refusal(400, f"Invalid input: ``{problems!r}``")
    assert isinstance(job_id, str) and isinstance(model, dict)
    problem = bucket_name_problem(job_id)
    if problem is not None:
        raise Refusal(400, f"Invalid job id `{job_id}`: {problem}")
    return StartJob(job_id, model.get("name"), model.get("version"), body.get("sheep_id"),
                    body.get("payload"))  # fmt: skip


def sheep_ids(flock: Flock) -> list[str]:
    """The flock's sheep as shepherd names them: one per worker slot."""
    return [f"{SHEEP_PREFIX}{n}" for n in range(1, flock.config.backend.workers + 1)]


def start_job(flock: Flock, request: StartJob) -> None:
    """Store the inline payload, record `queued`, register the job; nothing twice.

    Refused: an unknown sheep (before anything is stored), a job id already registered or
    whose bucket already holds a job or (with a payload) exists at all: 409; a missing bucket
    without a payload: 400. What this call made is removed again when it fails midway.
    """
    job_id = request.job_id
    if request.sheep_id is not None and request.sheep_id not in sheep_ids(flock):
        raise Refusal(400, f"Unknown sheep id `{request.sheep_id}`")
    params = job_params(flock, request)
    if find_job(flock, job_id) is not None:
        raise conflict()
    bucket = buckets.open_bucket(job_id)
    made: list[str] = []  # keys written here, and "" for the bucket itself
    try:
        if request.payload:
            if bucket_exists(job_id):
                raise conflict()
            create_bucket(job_id)
            made.append("")
            made.append(f"{buckets.INPUTS}{DEFAULT_INPUT}")
            bucket.put_bytes(made[-1], request.payload.encode())
        else:
            if not bucket_exists(job_id):
                raise no_data(job_id)
            if bucket.exists(buckets.STATUS_KEY):
                raise conflict()
        now = flock.clock()
        record = buckets.status_record(buckets.QUEUED, buckets.model_of(params), enqueued_at=now)
        made.append(buckets.STATUS_KEY)
        buckets.put_status(bucket, record)
        register(flock, job_id, params, now)
    except BaseException as exc:
        # a conflict found at registration: a concurrent request with this id won, and
        # what is in the bucket is its job's
        if made and not (isinstance(exc, Refusal) and exc.status == 409):
            undo(job_id, bucket, made)
        raise


def register(flock: Flock, job_id: str, params: dict[str, Any], now: float) -> None:
    """The Shepard job of `job_id`, registered once: 409 if it was already."""
    spec = JobSpec(params, buckets.bundle_key(job_id), None, None, None)
    fingerprint = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()
    if flock.register_once(LABEL + job_id, spec, request_hash=fingerprint, now=now) is None:
        raise conflict()


def undo(job_id: str, bucket: ObjectStore, made: list[str]) -> None:
    """Remove what a failed `/start-job` made (best effort: the failure is what counts)."""
    try:
        for key in reversed(made):
            if key:
                bucket.delete(key)
            else:
                _client().delete_bucket(Bucket=job_id)
    except Exception:  # the caller raises the error that matters
        pass


def job_params(flock: Flock, request: StartJob) -> dict[str, Any]:
    """MODEL_NAME and MODEL_VERSION ("" for null), checked like any job's parameters."""
    raw = {
        buckets.MODEL_NAME: request.model_name or "",
        buckets.MODEL_VERSION: request.model_version or "",
    }
    try:
        params = validate_params(raw, source="model")
        check_env_size(params, flock.config.payload.env, source="model")
        flock.check_resources()
    except ShepardError as exc:
        raise Refusal(400, str(exc)) from None
    return params


def conflict() -> Refusal:
    return Refusal(409, "A job with this ID was already submitted")


def find_job(flock: Flock, job_id: str) -> Job | None:
    """The Shepard job of shepherd job `job_id`, if it was submitted here."""
    for shepard_id in islice(flock.batch_ids(LABEL + job_id), 1):
        try:
            return flock.job(shepard_id)
        except JobNotFound:
            return None
    return None


def job_status(flock: Flock, job_id: str) -> dict[str, Any]:
    """The job's status record: from the catalog for jobs submitted here (the truth, even
    when a status write to the bucket failed), else the bucket's `job_status.json` (a job
    of an earlier shepherd server); 400 if neither knows it."""
    if bucket_name_problem(job_id) is not None:
        raise no_data(job_id)
    job = find_job(flock, job_id)
    if job is not None:
        return buckets.job_record(job)
    try:
        record = json.loads(buckets.open_bucket(job_id).get_bytes(buckets.STATUS_KEY))
    except NoSuchObject:
        raise no_data(job_id) from None
    except StorageError as exc:
        if not bucket_exists(job_id):
            raise no_data(job_id) from None
        raise exc
    except ValueError:
        raise Refusal(500, f"the {buckets.STATUS_KEY} of job `{job_id}` is not JSON") from None
    if not isinstance(record, dict):
        raise Refusal(500, f"the {buckets.STATUS_KEY} of job `{job_id}` is not a JSON object")
    return record


def finished(record: dict[str, Any]) -> bool:
    return record.get("status") in (buckets.DONE, buckets.FAILED)


def job_file(
    job_id: str, folder: str, name: str, *, known: bool = False
) -> tuple[ObjectStore, str, int]:
    """(bucket, key, size) of `<folder><name>` of the job; 400 for an unknown job, 404 for
    a missing file. `known`: the job's status was just read (its bucket exists)."""
    if bucket_name_problem(job_id) is not None or not (known or bucket_exists(job_id)):
        raise no_data(job_id)
    bucket = buckets.open_bucket(job_id)
    key = folder + name
    try:
        size = bucket.stat(key).size
    except NoSuchObject:
        raise Refusal(404, "Requested file does not exist") from None
    except StorageError as exc:
        if "invalid object key" in str(exc):
            raise Refusal(404, "Requested file does not exist") from None
        raise
    return bucket, key, size


# -- the bucket itself (boto3, imported when used) --------------------------------------


def _client() -> Any:
    from shepard.storage.base import StoreOptions
    from shepard.storage.s3 import client_for

    return client_for(StoreOptions())


def bucket_exists(job_id: str) -> bool:
    """Whether the bucket exists (HEAD), looked at rather than inferred from creating it:
    S3 in us-east-1 and moto answer 200 to creating a bucket one already owns."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        _client().head_bucket(Bucket=job_id)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchBucket", "NotFound"):
            return False
        raise storage_refusal(exc) from exc
    except BotoCoreError as exc:
        raise storage_refusal(exc) from exc
    return True


def create_bucket(job_id: str) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    client = _client()
    kwargs: dict[str, Any] = {"Bucket": job_id}
    region = client.meta.region_name
    if region and region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        client.create_bucket(**kwargs)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise conflict() from None
        raise Refusal(500, f"Failed to create the bucket `{job_id}`: {exc}") from None
    except BotoCoreError as exc:
        raise storage_refusal(exc) from exc


def storage_refusal(exc: BaseException) -> Refusal:
    """503 when the S3 server cannot be reached (worth retrying), else 500; with the cause."""
    cause: BaseException | None = exc
    while cause is not None:
        name = type(cause).__name__
        if "Connect" in name or "Timeout" in name:
            return Refusal(503, f"the storage cannot be reached: {exc}")
        cause = cause.__cause__
    return Refusal(500, f"storage error: {exc}")


# -- /status -----------------------------------------------------------------------------


def sheep(flock: Flock) -> dict[str, dict[str, Any]]:
    """The flock's worker slots as shepherd's sheep. Shepard does not pin jobs or models to
    slots: `running` says a slot has a job now, and `model` is that job's model or, for an
    idle slot, the model of one of the flock's most recent jobs (null for jobs without one)."""
    ids = sheep_ids(flock)
    running = flock.recent(len(ids), status=JobStatus.RUNNING)
    recent = flock.recent(len(ids))
    shown = [*running, *recent]
    answer = {}
    for n, sheep_id in enumerate(ids):
        model = buckets.model_of(shown[n].params if n < len(shown) else {})
        answer[sheep_id] = {"running": n < len(running), "model": model, "request": None}
    return answer
