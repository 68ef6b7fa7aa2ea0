"""What ties catalog jobs to Slurm tasks, shared by the backend and the tasks themselves.

- A *token* names one submission (one array): `YYYYMMDD-HHMMSS-xxxxxx` (UTC, then random), so
  its age can be read from it. Jobs handed over in that array carry the placement `TOKEN`
  while sbatch runs, then `TOKEN@ARRAYID`.
- A *manifest*, `<storage root>/slurm/TOKEN.jobs`, lists the array's job ids in task order,
  one fixed-width line each, so task N reads its job id at offset N * 37 without reading more.
- A task's *worker id* (recorded with each claim) ends with ` slurm ARRAY_INDEX` (one task per
  job) or ` slurm-sheep ARRAY_INDEX` (a sheep), which is how the reconciler finds the task of
  a running job.
"""

from __future__ import annotations

import calendar
import os
import re
import secrets
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from shepard.errors import ShepardError

COMMENT_PREFIX = "shepard:"  # sbatch --comment of our arrays: shepard:TOKEN
_ID_WIDTH = 36  # job ids are UUIDs in text form
_LINE = _ID_WIDTH + 1
_TOKEN = re.compile(r"^(\d{8}-\d{6})-[0-9a-f]{6}$")
_WORKER = re.compile(r" (slurm|slurm-sheep) (\d+)_(\d+)$")

ARRAY_TASK = "slurm"
SHEEP_TASK = "slurm-sheep"


def new_token(now: float) -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime(now)) + "-" + secrets.token_hex(3)


def token_age(token: str, now: float) -> float:
    """Seconds since `token` was made (0 for a token not made by `new_token`)."""
    match = _TOKEN.match(token)
    if match is None:
        return 0.0
    made = calendar.timegm(time.strptime(match.group(1), "%Y%m%d-%H%M%S"))
    return max(0.0, now - made)


def comment(token: str) -> str:
    return f"{COMMENT_PREFIX}{token}"


def token_of(comment_text: str) -> str | None:
    return (
        comment_text.removeprefix(COMMENT_PREFIX)
        if comment_text.startswith(COMMENT_PREFIX)
        else None
    )


def split_placement(placement: str) -> tuple[str, str | None]:
    """(token, array job id or None while its sbatch has not returned)."""
    token, sep, array_id = placement.partition("@")
    return token, (array_id if sep else None)


# -- manifests --------------------------------------------------------------------------------


def write_manifest(path: Path, job_ids: Sequence[str]) -> None:
    """Write the job ids in task order (atomically: a task never sees half a manifest)."""
    for job_id in job_ids:
        if len(job_id) != _ID_WIDTH or "\n" in job_id:
            raise ValueError(f"not a job id: {job_id!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.{os.getpid()}.part")
    part.write_text("".join(f"{job_id}\n" for job_id in job_ids))
    part.replace(path)


def manifest_line(path: Path, index: int) -> str:
    """The job id of task `index`; ShepardError when the manifest has no such line."""
    try:
        with path.open("rb") as f:
            f.seek(index * _LINE)
            line = f.read(_LINE)
    except OSError as exc:
        raise ShepardError(f"cannot read the task manifest {path}: {exc.strerror}") from None
    if index < 0 or len(line) != _LINE or not line.endswith(b"\n"):
        raise ShepardError(f"the task manifest {path} has no task {index}")
    return line[:-1].decode()


def manifest_ids(path: Path) -> list[str]:
    """Every job id of a manifest, in task order ([] when it is gone)."""
    try:
        return path.read_text().split()
    except FileNotFoundError:
        return []


# -- tasks ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskRef:
    kind: str  # ARRAY_TASK or SHEEP_TASK
    array_id: str
    index: int

    def __str__(self) -> str:
        return f"{self.array_id}_{self.index}"


def task_worker_id(kind: str, env: Mapping[str, str] | None = None) -> str:
    """The worker id of this process: `host:pid`, plus ` KIND ARRAY_INDEX` inside a Slurm
    array task."""
    env = os.environ if env is None else env
    base = f"{socket.gethostname()}:{os.getpid()}"
    array_id, index = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    if array_id and index and array_id.isdigit() and index.isdigit():
        return f"{base} {kind} {array_id}_{index}"
    return base


def task_of(worker: str | None) -> TaskRef | None:
    """The Slurm task a worker id names, if any."""
    match = _WORKER.search(worker or "")
    if match is None:
        return None
    return TaskRef(match.group(1), match.group(2), int(match.group(3)))


# -- how a task ended, in words ---------------------------------------------------------------

# Ends caused by the job itself: they cost the job an attempt (like a failed exit would).
JOB_CAUSED = frozenset({"TIMEOUT", "OUT_OF_MEMORY", "DEADLINE"})

_ENDINGS = {
    "TIMEOUT": "reached its Slurm time limit",
    "OUT_OF_MEMORY": "ran out of memory",
    "DEADLINE": "reached its deadline",
    "CANCELLED": "was cancelled outside shepard",
    "NODE_FAIL": "lost its node",
    "BOOT_FAIL": "could not boot its node",
    "PREEMPTED": "was preempted",
    "FAILED": "failed",
    "COMPLETED": "ended",
}


def ended(task: str, state: str | None) -> str:
    """Words for a task that ended without reporting: `slurm task 12_3 ran out of memory
    (OUT_OF_MEMORY)`; `state` None means Slurm no longer knows the task."""
    if state is None:
        return f"slurm task {task} ended (no longer known to Slurm)"
    return f"slurm task {task} {_ENDINGS.get(state, 'ended')} ({state})"


def ended_unstarted(array_id: str, state: str | None) -> str:
    """Words for tasks of an array that ended before claiming their jobs."""
    said = state or "no longer known to Slurm"
    return f"slurm array {array_id}: its task ended before it started the job ({said})"
