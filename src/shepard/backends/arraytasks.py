"""What ties catalog jobs to the tasks of job arrays, shared by the array template
(arrays.py) and the tasks themselves (shepard.scheduler_task).

- A *token* names one submission (one array): `YYYYMMDD-HHMMSS-xxxxxx` (UTC, then random), so
  its age can be read from it, then `-pK` when each task of the array runs K jobs in turn (a
  *pack*: task N runs lines N*K to N*K+K-1 of the manifest). Jobs handed over in that array
  carry the placement `TOKEN` while the submission runs, then `TOKEN@ARRAYID`.
- A *manifest*, `TOKEN.jobs` in the scheduler's store, lists the array's job ids in task
  order, one fixed-width line each, so a task reads its job id with one range read.
- A task's *worker id* (recorded with each claim) ends with ` KIND ARRAYID_INDEX`, KIND being
  the scheduler's name for one-job tasks (`slurm`) or for its sheep (`slurm-sheep`).
"""

from __future__ import annotations

import calendar
import os
import re
import secrets
import socket
import time
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from shepard.errors import ShepardError
from shepard.storage import ObjectStore

_ID_WIDTH = 36  # job ids are UUIDs in text form
_LINE = _ID_WIDTH + 1
_TOKEN = re.compile(r"^(\d{8}-\d{6})-[0-9a-f]{6}(?:-p([1-9][0-9]*))?$")
_WORKER = re.compile(r" ([a-z][a-z0-9-]*) (\S+)_(\d+)$")


# -- tokens and placements ------------------------------------------------------------------


def new_token(now: float, pack: int = 1) -> str:
    """A new submission token: `YYYYMMDD-HHMMSS-xxxxxx` (UTC, then random), then `-pK` when
    each task runs `pack` (K > 1) jobs in turn."""
    token = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now)) + "-" + secrets.token_hex(3)
    return token if pack <= 1 else f"{token}-p{pack}"


def token_pack(token: str) -> int:
    """How many jobs each task of `token`'s array runs in turn (1 unless the token says)."""
    match = _TOKEN.match(token)
    return int(match.group(2)) if match is not None and match.group(2) else 1


def pack_lines(pack: int, task: int, total: int) -> range:
    """The manifest lines task `task` runs, of an array of `total` jobs in packs of `pack`."""
    return range(task * pack, min(total, (task + 1) * pack))


def tasks_for(jobs: int, pack: int) -> int:
    """The number of tasks an array of `jobs` jobs in packs of `pack` has."""
    return -(-jobs // pack)


def token_age(token: str, now: float) -> float:
    """Seconds since `token` was made (0 for a token not made by `new_token`)."""
    match = _TOKEN.match(token)
    if match is None:
        return 0.0
    made = calendar.timegm(time.strptime(match.group(1), "%Y%m%d-%H%M%S"))
    return max(0.0, now - made)


def split_placement(placement: str) -> tuple[str, str | None]:
    """(token, array id or None while its submission has not returned)."""
    token, sep, array_id = placement.partition("@")
    return token, (array_id if sep else None)


# -- manifests ------------------------------------------------------------------------------


def manifest_key(token: str) -> str:
    return f"{token}.jobs"


def write_manifest(store: ObjectStore, token: str, job_ids: Sequence[str]) -> None:
    """Store the job ids in task order (a store's put is whole: no task sees half of it)."""
    for job_id in job_ids:
        if len(job_id) != _ID_WIDTH or "\n" in job_id:
            raise ValueError(f"not a job id: {job_id!r}")
    store.put_bytes(manifest_key(token), "".join(f"{i}\n" for i in job_ids).encode())


def manifest_line(store: ObjectStore, token: str, index: int) -> str:
    """The job id of task `index`; ShepardError when the manifest has no such line."""
    key = manifest_key(token)
    try:
        line = store.read_range(key, index * _LINE, _LINE) if index >= 0 else b""
    except (OSError, ShepardError) as exc:
        raise ShepardError(f"cannot read the task manifest {key} in {store}: {exc}") from None
    if len(line) != _LINE or not line.endswith(b"\n"):
        raise ShepardError(f"the task manifest {key} in {store} has no task {index}")
    return line[:-1].decode()


def manifest_ids(store: ObjectStore, token: str) -> list[str]:
    """Every job id of a manifest, in task order ([] when it is gone)."""
    key = manifest_key(token)
    try:
        return store.get_bytes(key).decode().split() if store.exists(key) else []
    except (OSError, ShepardError):
        return []


# -- tasks ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskRef:
    """One task of an array, as a worker id names it."""

    kind: str  # the scheduler's name for one-job tasks (`slurm`) or its sheep's
    array_id: str
    index: int

    def __str__(self) -> str:
        return f"{self.array_id}_{self.index}"


def task_worker_id(kind: str, identity: tuple[str, int] | None) -> str:
    """The worker id of this process: `host:pid`, plus ` KIND ARRAYID_INDEX` inside a task."""
    base = f"{socket.gethostname()}:{os.getpid()}"
    return base if identity is None else f"{base} {kind} {identity[0]}_{identity[1]}"


def task_of(worker: str | None, kinds: AbstractSet[str]) -> TaskRef | None:
    """The task a worker id names, if it is one of `kinds`."""
    match = _WORKER.search(worker or "")
    if match is None or match.group(1) not in kinds:
        return None
    return TaskRef(match.group(1), match.group(2), int(match.group(3)))
