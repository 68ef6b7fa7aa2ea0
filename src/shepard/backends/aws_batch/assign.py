"""What a Batch child reads and writes in the flock's `manifests` store.

Batch tasks never open the catalog (it may be a SQLite file on the user's machine), so the
head writes, next to the array template's manifest `TOKEN.jobs`:
- `TOKEN.toml`: the flock's flock.toml as the head had it (the task's settings);
- `TOKEN.assign`: one JSON line per manifest line, the job as a child runs it (id,
  parameters, bundle, timeout, and the attempt number the head will record it under);
- `TOKEN.offsets`: one fixed-width line per manifest line, `OFFSET LENGTH` of its line in
  `TOKEN.assign`, so a child reads its job (or its pack of jobs: consecutive lines) with two
  range reads whatever the array's size;
- `TOKEN.batch`: the Batch job id of the array and the time of its hand-over (found by other
  processes of the head);
and a child writes the outcome of the job on manifest line N to `outcomes/ARRAYID/N.json`
(N is the child's index unless the array runs packs), which the head records. The head
writes `cancelled/JOBID` for a job cancelled while it waits in a pack, so that its child
skips it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from shepard.errors import ShepardError
from shepard.model import Job, JobStatus, Outcome
from shepard.storage import ObjectStore

_OFFSET_LINE = 24  # "%11d %11d\n"


def toml_key(token: str) -> str:
    return f"{token}.toml"


def assign_key(token: str) -> str:
    return f"{token}.assign"


def offsets_key(token: str) -> str:
    return f"{token}.offsets"


def array_key(token: str) -> str:
    return f"{token}.batch"


def outcome_key(array_id: str, line: int) -> str:
    return f"outcomes/{array_id}/{line}.json"


def outcome_lines(store: ObjectStore, array_id: str) -> set[int]:
    """The manifest lines of `array_id` whose outcome a child has written (one listing)."""
    prefix = f"outcomes/{array_id}/"
    found = set()
    for key in store.list(prefix):
        name = key[len(prefix) :].removesuffix(".json")
        if name.isdigit():
            found.add(int(name))
    return found


def cancelled_key(job_id: str) -> str:
    return f"cancelled/{job_id}"


def start_time(job: Job, at: float) -> int:
    """The START_TIME the catalog gives `job`'s next attempt when claimed at `at` (the rule
    of its claim: `at`, or one more than the last attempt's when that is not earlier). The head
    claims a child's job with `now=at`, so the child, which runs before the head has claimed
    it, names its outputs with the START_TIME the catalog records."""
    start = int(at)
    return job.started_at + 1 if job.started_at is not None and job.started_at >= start else start


def job_record(job: Job, at: float) -> dict[str, Any]:
    """What a child needs of `job`: the attempt it runs is the next one, started at `at` (the
    head claims it under that number and time when it sees the child start)."""
    return {
        "started_at": start_time(job, at),
        "id": job.id,
        "params": dict(job.params),
        "bundle_key": job.bundle_key,
        "attempt": job.attempt + 1,
        "max_attempts": job.max_attempts,
        "timeout": job.timeout,
        "batch": job.batch,
        "submitted_at": job.submitted_at,
    }


def write_assignment(
    store: ObjectStore, token: str, jobs: Sequence[Job], flock_toml: str, at: float
) -> None:
    """Store what the children of `token`'s array read (the array is submitted after), their
    jobs handed over at `at`."""
    lines, offsets, offset = [], [], 0
    for job in jobs:
        line = (json.dumps(job_record(job, at), separators=(",", ":")) + "\n").encode()
        offsets.append(f"{offset:11d} {len(line):11d}\n")
        lines.append(line)
        offset += len(line)
    store.put_bytes(toml_key(token), flock_toml.encode())
    store.put_bytes(assign_key(token), b"".join(lines))
    store.put_bytes(offsets_key(token), "".join(offsets).encode())


def read_assignment(store: ObjectStore, token: str, index: int) -> Job:
    """The job on manifest line `index` of `token`'s array (ShepardError when none)."""
    return read_assignments(store, token, range(index, index + 1))[0]


def read_assignments(store: ObjectStore, token: str, lines: range) -> list[Job]:
    """The jobs on manifest `lines` (consecutive: a child's pack, the last of which may have
    fewer lines than asked) of `token`'s array, with two range reads (ShepardError when the
    first line has no job)."""
    where = f"lines {lines.start}-{lines.stop - 1}" if len(lines) > 1 else f"line {lines.start}"
    try:
        if not lines or lines.start < 0:
            raise ValueError("no such line")
        size = len(lines) * _OFFSET_LINE
        table = store.read_range(offsets_key(token), lines.start * _OFFSET_LINE, size)
        if not table or len(table) % _OFFSET_LINE:  # the last pack may be shorter
            raise ValueError("the array has fewer jobs")
        size = len(table)
        spans = [tuple(int(w) for w in table[i : i + _OFFSET_LINE].split())
                 for i in range(0, size, _OFFSET_LINE)]  # fmt: skip
        first, end = spans[0][0], spans[-1][0] + spans[-1][1]
        data = store.read_range(assign_key(token), first, end - first)
        records = [json.loads(data[off - first : off - first + n]) for off, n in spans]
    except (OSError, ShepardError, ValueError) as exc:
        raise ShepardError(f"no job on {where} of {token} in {store}: {exc}") from None
    return [_job(record) for record in records]


def _job(record: dict[str, Any]) -> Job:
    return Job(
        id=record["id"], seq=0, status=JobStatus.RUNNING, params=record["params"],
        bundle_key=record["bundle_key"], attempt=record["attempt"],
        max_attempts=record["max_attempts"], timeout=record["timeout"], batch=record["batch"],
        submitted_at=record["submitted_at"], started_at=record["started_at"],
    )  # fmt: skip


def write_outcome(store: ObjectStore, array_id: str, line: int, job: Job, outcome: Outcome) -> None:
    data = {"job": job.id, "attempt": job.attempt, **asdict(outcome)}
    data["status"] = outcome.status.value
    data["outputs"] = list(outcome.outputs)
    store.put_bytes(outcome_key(array_id, line), json.dumps(data).encode())


def read_outcome(store: ObjectStore, array_id: str, line: int) -> tuple[str, int, Outcome] | None:
    """(job id, attempt, outcome) a child left for manifest line `line`, or None."""
    try:
        data = json.loads(store.get_bytes(outcome_key(array_id, line)))
    except (OSError, ShepardError, ValueError):
        return None
    outcome = Outcome(
        status=JobStatus(data["status"]), reason=data.get("reason"),
        exit_code=data.get("exit_code"), outputs=tuple(data.get("outputs") or ()),
        error_bundle=data.get("error_bundle"), retryable=bool(data.get("retryable", True)),
        detail=data.get("detail"),
    )  # fmt: skip
    return str(data["job"]), int(data["attempt"]), outcome


def write_array(store: ObjectStore, token: str, array_id: str, at: float) -> None:
    store.put_bytes(array_key(token), json.dumps({"array": array_id, "at": at}).encode())


def read_array(store: ObjectStore, token: str) -> tuple[str, float] | None:
    """(Batch job id, hand-over time) of `token`'s array, once submitted."""
    try:
        data = json.loads(store.get_bytes(array_key(token)))
        return str(data["array"]), float(data["at"])
    except (OSError, ShepardError, ValueError, KeyError):
        return None


def remove(store: ObjectStore, token: str, job_ids: Sequence[str]) -> None:
    """Drop everything of `token`'s array (of `job_ids`, in manifest order) but its manifest,
    which the array template sweeps: the files the head wrote, the children's outcomes and the
    cancel marks of its jobs."""
    keys = [toml_key(token), assign_key(token), offsets_key(token)]
    found = read_array(store, token)
    keys.append(array_key(token))
    if found is not None:
        keys += [outcome_key(found[0], line) for line in range(len(job_ids))]
    keys += [cancelled_key(job_id) for job_id in job_ids]
    store.delete_many(keys)
