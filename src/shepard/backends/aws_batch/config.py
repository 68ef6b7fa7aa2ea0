"""`[backend.aws-batch]`: how a flock with `backend.kind = "aws-batch"` uses AWS Batch."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_ARRAY = 10_000  # Batch's largest array job
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class BatchConfig(BaseModel):
    """`[backend.aws-batch]` (docs/aws-batch.md). `queue` is required; everything else has a
    default. `worker_env` reaches every Batch task (e.g. the endpoint the tasks use, which may
    differ from the head's)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    queue: str | None = None  # the Batch job queue (name or ARN)
    region: str | None = None  # default: boto3's (AWS_REGION, AWS_DEFAULT_REGION, profile)
    endpoint_url: str | None = None  # Batch/Logs endpoint of the head; default: boto3's
    image: str | None = None  # REPO:TAG of the worker image (set by `shepard deploy`)
    job_definition: str | None = None  # name; default shepard-<flock>
    worker_env: dict[str, str] = Field(default_factory=dict)  # passed to every Batch task
    array_size: int = Field(default=MAX_ARRAY, ge=1, le=MAX_ARRAY)  # children per array
    submit_rate: float = Field(default=10.0, gt=0, le=50)  # Batch API calls per second
    # jobs each Batch child runs in turn (a pack): short jobs share one container start
    jobs_per_child: int = Field(default=1, ge=1, le=MAX_ARRAY)
    max_in_flight: int = Field(default=900_000, ge=1, le=1_000_000)  # children handed over at once
    vcpus: float = Field(default=1.0, gt=0)
    memory: int = Field(default=2048, ge=4)  # MiB
    gpus: int = Field(default=0, ge=0)
    fargate: bool = False  # platformCapabilities FARGATE instead of EC2
    job_role: str | None = None  # jobRoleArn: what the payload may do in AWS
    execution_role: str | None = None  # executionRoleArn (required by Fargate)
    efs: dict[str, str] = Field(default_factory=dict)  # container path -> EFS file system id
    reconcile: float = Field(default=5.0, ge=0.5)  # seconds between two looks at Batch
    log_group: str = "/aws/batch/job"  # where Batch sends the children's output

    @field_validator("worker_env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not _ENV_NAME.match(name):
                raise ValueError(f"{name!r} is not an environment variable name")
        return value

    @field_validator("efs")
    @classmethod
    def _efs(cls, value: dict[str, str]) -> dict[str, str]:
        for path, fs in value.items():
            if not path.startswith("/"):
                raise ValueError(f"EFS mount point {path!r} must be an absolute path")
            if not fs.startswith("fs-"):
                raise ValueError(f"{fs!r} is not an EFS file system id (fs-...)")
        return value
