"""The data model: frozen, typed records and the job state enum. No I/O here."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

ParamValue = str | int | bool
Params = Mapping[str, ParamValue]


class JobStatus(StrEnum):
    """Where a job is in its life. Terminal states never change again (except by `retry`)."""

    QUEUED = "queued"  # waiting for a sheep (also between retry attempts)
    RUNNING = "running"  # claimed by a worker that holds a lease
    SUCCEEDED = "succeeded"  # payload exited 0 and outputs were collected
    FAILED = "failed"  # last attempt failed; see Job.reason
    CANCELLED = "cancelled"  # cancelled by a user before it finished

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What a submission asks for. `params` must already be validated (see params.py)."""

    params: Params
    bundle_key: str | None = None  # key of the input bundle in the flock's inputs store
    max_attempts: int | None = None  # None: the flock's retry policy decides
    timeout: float | None = None  # seconds; None: the flock's default
    batch: str | None = None  # free label grouping the jobs of one submission


@dataclass(frozen=True, slots=True)
class Job:
    """A job as recorded in the catalog."""

    id: str
    seq: int
    status: JobStatus
    params: Mapping[str, ParamValue]
    bundle_key: str | None
    attempt: int  # number of the current (or last) attempt; 0 = never started
    max_attempts: int
    timeout: float | None
    batch: str | None
    submitted_at: float
    not_before: float | None = None  # a queued retry waits until this time
    started_at: int | None = None  # START_TIME of the current attempt (epoch seconds)
    finished_at: float | None = None
    lease_until: float | None = None
    worker: str | None = None
    reason: str | None = None  # why the last attempt failed / was cancelled
    exit_code: int | None = None
    outputs: tuple[str, ...] = ()  # output keys of the attempt that succeeded
    error_bundle: str | None = None  # key of the last error bundle, if any
    # where a queued job was handed to an engine's own queue (e.g. a Slurm array), until a
    # task of that engine claims it; None for jobs waiting for any sheep
    placement: str | None = None

    @property
    def is_invoked(self) -> bool:
        """Shepard's IS_INVOKED: True for parameter-only jobs, False for bundle jobs."""
        return self.bundle_key is None


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One entry of a job's history."""

    job_id: str
    attempt: int
    status: JobStatus
    at: float
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt ended, as reported by the runtime."""

    status: JobStatus  # SUCCEEDED, FAILED or CANCELLED
    reason: str | None = None
    exit_code: int | None = None
    outputs: tuple[str, ...] = ()
    error_bundle: str | None = None
    retryable: bool = True  # False: do not retry whatever the policy says
    detail: str | None = None  # facts for the job's history, e.g. the container image that ran


class Ended(NamedTuple):
    """An ended attempt, ready to be recorded: `retry_at` asks for a retry at that time when
    the outcome is a retryable failure (None: no retry)."""

    job_id: str
    attempt: int
    outcome: Outcome
    retry_at: float | None = None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many attempts a job gets and how long to wait between them."""

    attempts: int = 1
    backoff: float = 5.0  # seconds before the 2nd attempt; doubles each time
    backoff_max: float = 300.0
    no_retry_exit_codes: frozenset[int] = field(default_factory=frozenset)

    def delay(self, attempt: int) -> float:
        """Seconds to wait before the attempt that follows `attempt` (1-based)."""
        return float(min(self.backoff_max, self.backoff * (2 ** max(0, attempt - 1))))


class _IdSource:
    """Time-ordered job ids in UUID text form (UUIDv7 layout).

    Ids sort by creation time, so the catalog's unique index grows at its right edge
    (cheap bulk inserts) and `ls` of the outputs store lists jobs in submission order.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = 0
        self._counter = 0

    def new(self) -> str:
        with self._lock:
            ms = time.time_ns() // 1_000_000
            if ms <= self._last_ms:
                self._counter += 1
                if self._counter > 0xFFF:  # 4096 ids in one ms: borrow the next ms
                    self._last_ms += 1
                    self._counter = 0
                ms = self._last_ms
            else:
                self._last_ms, self._counter = ms, 0
            counter = self._counter
        rand = int.from_bytes(os.urandom(8), "big") & 0x3FFF_FFFF_FFFF_FFFF
        value = (ms << 80) | (0x7 << 76) | (counter << 64) | (0b10 << 62) | rand
        h = f"{value:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


new_job_id = _IdSource().new
