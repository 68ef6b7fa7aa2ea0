"""`[backend.slurm]`: how a flock with `backend.kind = "slurm"` uses its cluster."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shepard.backends.slurm import spec


class SlurmConfig(BaseModel):
    """`[backend.slurm]` (docs/slurm.md). Sizes and limits use Slurm's notations and are
    checked here.

    Slurm needs one shared path: the flock's folder, the tasks' `--chdir`, into whose
    `slurm-output/` sbatch writes each task's own output (`--output`); the stores may be
    anywhere (folders the nodes share, or S3).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["array", "sheep"] = "array"  # one array task per job | long-lived sheep
    partition: str | None = None
    account: str | None = None
    cpus_per_job: int = Field(default=1, ge=1, le=4096)  # per array task or per sheep
    memory: str | None = None  # per task or sheep: MB (2048) or with a unit (512M, 2G)
    time: str | None = None  # limit per array task: 30 (minutes), 1:00:00, 1-12:00:00
    sbatch_options: list[str] = Field(default_factory=list)  # e.g. ["--qos=short"]
    max_sheep: int = Field(default=16, ge=1, le=1_000_000)
    jobs_per_sheep: int = Field(default=20, ge=1)  # queued jobs that justify one more sheep
    sheep_time: str = "1:00:00"  # time limit of each sheep
    sheep_idle: float = Field(default=5.0, gt=0)  # seconds a sheep waits on an empty queue
    submit_rate: float = Field(default=2.0, gt=0)  # sbatch calls per second, at most
    reconcile: float = Field(default=5.0, ge=0.5)  # seconds between two looks at squeue
    shepard: str | None = None  # the shepard command on the nodes; default: this install's

    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, value: object) -> object:
        if value is not None:
            spec.memory_megabytes(value)  # type: ignore[arg-type]
            return str(value).strip().upper()
        return value

    @field_validator("time", "sheep_time", mode="before")
    @classmethod
    def _time(cls, value: object) -> object:
        if value is not None:
            spec.time_seconds(value)  # type: ignore[arg-type]
            return str(value).strip()
        return value

    @field_validator("sbatch_options")
    @classmethod
    def _options(cls, value: list[str]) -> list[str]:
        for option in value:
            name = option.split("=", 1)[0]
            if not option.startswith("-"):
                raise ValueError(f"{option!r} is not an sbatch option (they start with -)")
            if name in SBATCH_OWNED:
                raise ValueError(f"{name} is set by shepard itself; remove {option!r}")
        return value


# sbatch options the slurm backend sets itself: a flock may not override them
SBATCH_OWNED = frozenset(
    {
        "-a", "--array", "-o", "--output", "-e", "--error", "-J", "--job-name", "--parsable",
        "--comment", "--wrap", "-D", "--chdir", "--export",
    }
)  # fmt: skip
