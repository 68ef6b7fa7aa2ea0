"""The JSON shapes of the service layer: what `Flock` returns and accepts, defined once.

The CLI's `--json` output, the HTTP API and the Python API all speak these pydantic models,
so a job looks the same everywhere. Times come twice: as epoch seconds (`*_at`, what the
catalog stores and scripts compute with) and as ISO-8601 UTC text (`submitted`, `started`,
`finished`, what people and browsers read). Conversion from the model's records is done by
the plain functions at the bottom; nothing here does I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shepard.errors import ShepardError
from shepard.model import Job, JobEvent, JobStatus, ParamValue
from shepard.params import find_key, validate_params
from shepard.workitems import job_name

MAX_PAGE = 1000
"""The largest page `Flock.jobs` returns."""


class CursorError(ShepardError):
    """A paging cursor is malformed, or was made for other filters (a 400-style error)."""


class _View(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class JobView(_View):
    """One job as the catalog records it. Store keys are relative to the flock's stores."""

    id: str
    status: JobStatus
    params: dict[str, ParamValue]
    batch: str | None
    bundle: str | None = Field(description="key of the input bundle in the inputs store")
    tag: str | None = Field(description="the TAG parameter (any case), if any")
    name: str | None = Field(
        default=None,
        description="the job's name: its JOB_NAME parameter, else its WORK_ITEM",
    )
    attempt: int = Field(description="current (or last) attempt; 0: never started")
    max_attempts: int
    timeout: float | None
    submitted_at: float
    started_at: int | None = Field(description="START_TIME of the current attempt")
    finished_at: float | None
    submitted: str
    started: str | None
    finished: str | None
    reason: str | None
    exit_code: int | None
    outputs: list[str] = Field(description="keys in the outputs store")
    error_bundle: str | None = Field(description="key in the errors store")
    placement: str | None = Field(description="engine queue entry of a queued job")
    worker: str | None


class EventView(_View):
    """One entry of a job's history."""

    attempt: int
    status: JobStatus
    at: float
    time: str
    detail: str | None


class AttemptView(_View):
    """One attempt of a job, read from its history. `status` is how the attempt ended
    (`running` while it runs; `queued` when it was given back: retry, lost worker, shutdown)."""

    number: int
    started_at: float
    ended_at: float | None
    started: str
    ended: str | None
    status: JobStatus
    worker: str | None
    reason: str | None
    exit_code: int | None = Field(description="known for the job's last attempt only")
    stdout: str = Field(description="key of its stdout log in the logs store")
    stderr: str = Field(description="key of its stderr log in the logs store")


class OutputView(_View):
    """One object a job published: its key, size and full location (`url`)."""

    key: str
    size: int
    url: str
    store: str = Field(description="`outputs` or `errors`")


class JobPage(_View):
    """One page of `Flock.jobs`; pass `next_cursor` back to get the next one (None: done)."""

    items: list[JobView]
    next_cursor: str | None


class CountsView(_View):
    """Jobs per status. `done` is the finished (terminal) share, 1.0 when there are none;
    `settled` says nothing is queued or running."""

    counts: dict[JobStatus, int]
    total: int
    done: float
    settled: bool


class RangeSpec(_View):
    """One job per integer START..END (inclusive), with NAME set to it."""

    name: str = Field(min_length=1)
    start: int
    end: int

    @model_validator(mode="after")
    def _ordered(self) -> RangeSpec:
        if self.end < self.start:
            raise ValueError(f"range end {self.end} is before its start {self.start}")
        if self.end - self.start >= 10_000_000:
            raise ValueError("a range covers at most 10,000,000 jobs")
        return self


class SubmitRequest(_View):
    """Parameter-only jobs to register: one `params` object, a list of `jobs`, or a `range`
    (with `params` as the values every job of the range shares).

    A retried request with the same `idempotency_key` registers nothing new and returns the
    first answer; the same key with a different request is refused.
    """

    params: dict[str, Any] | None = None
    jobs: list[dict[str, Any]] | None = None
    range: RangeSpec | None = None
    batch: str | None = Field(default=None, min_length=1, max_length=200)
    attempts: int | None = Field(default=None, ge=1, le=100)
    timeout: float | None = Field(default=None, gt=0)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)

    @field_validator("timeout")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("timeout must be a finite number of seconds")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> SubmitRequest:
        if self.jobs is not None and (self.params is not None or self.range is not None):
            raise ValueError("give `jobs`, or `params` (with an optional `range`), not both")
        if self.jobs is None and self.params is None and self.range is None:
            raise ValueError("nothing to submit: give `params`, `jobs` or `range`")
        if self.jobs is not None and not self.jobs:
            raise ValueError("`jobs` is empty")
        return self

    def size(self) -> int:
        """How many jobs the request registers."""
        if self.jobs is not None:
            return len(self.jobs)
        return 1 if self.range is None else self.range.end - self.range.start + 1

    def param_sets(self) -> Iterator[dict[str, ParamValue]]:
        """Every job's parameters, validated (ParamsError names the bad one)."""
        if self.jobs is not None:
            for n, item in enumerate(self.jobs, 1):
                yield validate_params(item, source=f"jobs item {n}")
            return
        base = validate_params(self.params or {}, source="params")
        if self.range is None:
            yield base
            return
        name = self.range.name
        for i in range(self.range.start, self.range.end + 1):
            yield validate_params({**base, name: i}, source=f"range {name}={i}")

    def fingerprint(self) -> str:
        """A hash of what the request asks for (the idempotency key left out)."""
        body = self.model_dump(mode="json", exclude={"idempotency_key"})
        text = json.dumps(body, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


class SubmitResult(_View):
    """What a submission registered. `replayed`: an earlier request with the same
    idempotency key registered these jobs, and nothing new was added."""

    ids: list[str]
    batch: str
    count: int
    replayed: bool = False


class ActionResult(_View):
    """The jobs an action (cancel, retry) changed, in submission order."""

    action: str
    ids: list[str]
    count: int


class JobDetail(_View):
    """Everything about one job at once: what `show` prints and `GET /api/v1/jobs/{id}`
    answers."""

    job: JobView
    events: list[EventView]
    attempts: list[AttemptView]
    outputs: list[OutputView]


class TokenView(_View):
    """An API token as listed: never its secret (shown once, when it is made)."""

    name: str
    read_only: bool
    created_at: float
    created: str
    last_used_at: float | None
    last_used: str | None


class CancelRequest(_View):
    """What `POST /api/v1/cancel` cancels, as `shepard cancel` takes it: the jobs named by
    `ids`, or `all` queued and running jobs, or every job in `status` (with `ids`: only those
    of them in that status)."""

    ids: list[str] | None = Field(default=None, max_length=100_000)
    all: bool = False
    status: JobStatus | None = None

    @field_validator("status")
    @classmethod
    def _active(cls, value: JobStatus | None) -> JobStatus | None:
        if value not in (None, JobStatus.QUEUED, JobStatus.RUNNING):
            raise ValueError("status: only queued or running jobs can be cancelled")
        return value

    @model_validator(mode="after")
    def _one_selection(self) -> CancelRequest:
        if self.all and (self.ids or self.status):
            raise ValueError("cancel: `all` cannot be combined with `ids` or `status`")
        if not (self.ids or self.all or self.status):
            raise ValueError("cancel: say which jobs: `ids`, `all` or `status` (queued|running)")
        return self


class RetryRequest(_View):
    """What `POST /api/v1/retry` queues again, as `shepard retry` takes it: jobs in
    `statuses` (failed by default), only those named by `ids` when given, that ended at or
    after `since` (epoch seconds or ISO 8601, UTC when naive) and whose TAG is `tag` (any
    case); each may run `extra_attempts` more times."""

    ids: list[str] | None = Field(default=None, max_length=100_000)
    statuses: list[JobStatus] = Field(default=[JobStatus.FAILED], min_length=1)
    since: datetime | None = None
    tag: str | None = None
    extra_attempts: int = Field(default=1, ge=1, le=100)

    @field_validator("statuses")
    @classmethod
    def _ended(cls, value: list[JobStatus]) -> list[JobStatus]:
        for status in value:
            if status not in (JobStatus.FAILED, JobStatus.CANCELLED):
                raise ValueError("statuses: only failed and cancelled jobs can be retried")
        return value


class MinuteView(_View):
    """Jobs that ended in one minute (`start`: epoch seconds of its first second)."""

    start: float
    time: str
    succeeded: int
    failed: int


class ThroughputView(_View):
    """Jobs ended per minute over the last `minutes` minutes, oldest first, and when the
    queued and running jobs should be done at the recent pace (`eta_seconds`: None when
    nothing ended lately, 0 when nothing is left)."""

    minutes: list[MinuteView]
    per_minute: float = Field(description="jobs ended per minute, over the last ten minutes")
    remaining: int
    eta_seconds: float | None


class BatchView(_View):
    """One submission (batch label) with its jobs per status."""

    batch: str
    counts: CountsView


class WorkerView(_View):
    """A worker (a local slot, a sheep, a scheduler's task) and the jobs it runs now."""

    worker: str
    running: int
    jobs: list[str] = Field(description="ids of (up to ten of) the jobs it runs")


class RejectedView(_View):
    """A file the inbox refused, with the reason it wrote beside it."""

    key: str
    size: int
    at: float
    time: str
    reason: str


class InboxView(_View):
    """The flock's inbox: where to drop bundles, how many wait there, what was refused
    (newest `limit` rejections; `more_rejected` says there were more)."""

    location: str
    waiting: int
    rejected: list[RejectedView]
    more_rejected: bool


class FlockView(_View):
    """The flock a server serves: what clients and the dashboard show about it. `config` is
    flock.toml as loaded, with secrets removed (passwords in URLs, and the values of keys
    that name a secret, a token, a password or a key)."""

    name: str
    backend: str
    workers: int
    payload: str = Field(description="the payload kind: command, image or quick-deploy")
    stores: dict[str, str] = Field(description="store name -> its location (folder or s3://)")
    catalog: str = Field(description="the catalog URL, without a password")
    config: dict[str, Any]


class NewTokenRequest(_View):
    """A token to make (`POST /api/v1/tokens`)."""

    name: str = Field(min_length=1, max_length=100)
    read_only: bool = False


class NewToken(_View):
    """A token just made: its view and its secret, shown this once and never again."""

    token: TokenView
    secret: str


# -- conversions -------------------------------------------------------------------------------


def iso(epoch: float | None) -> str | None:
    """ISO-8601 UTC text (`2026-12-02T05:43:15.250000Z`) of epoch seconds, None for None."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def job_view(job: Job) -> JobView:
    return JobView(
        id=job.id, status=job.status, params=dict(job.params), batch=job.batch,
        bundle=job.bundle_key, tag=find_key(job.params, "TAG"),
        name=job_name(job.params), attempt=job.attempt,
        max_attempts=job.max_attempts, timeout=job.timeout, submitted_at=job.submitted_at,
        started_at=job.started_at, finished_at=job.finished_at,
        submitted=iso(job.submitted_at) or "", started=iso(job.started_at),
        finished=iso(job.finished_at), reason=job.reason, exit_code=job.exit_code,
        outputs=list(job.outputs), error_bundle=job.error_bundle, placement=job.placement,
        worker=job.worker,
    )  # fmt: skip


def event_view(event: JobEvent) -> EventView:
    return EventView(
        attempt=event.attempt, status=event.status, at=event.at, time=iso(event.at) or "",
        detail=event.detail,
    )  # fmt: skip


def attempt_views(
    job: Job, events: Sequence[JobEvent], log_key: Callable[[str, int, str], str]
) -> list[AttemptView]:
    """The attempts of `job` from its history: each starts with a RUNNING event and ends with
    the next event of the same attempt (later ones, e.g. a user's retry, do not change it).
    `log_key(job_id, attempt, stream)` names the log objects."""
    started: dict[int, JobEvent] = {}
    ended: dict[int, JobEvent] = {}
    for e in events:
        if e.attempt < 1:
            continue
        if e.status is JobStatus.RUNNING and e.attempt not in started:
            started[e.attempt] = e
        elif e.attempt in started and e.attempt not in ended:
            ended[e.attempt] = e
    views = []
    for number, start in sorted(started.items()):
        end = ended.get(number)
        end_at, end_detail = (end.at, end.detail) if end else (None, None)
        last = number == job.attempt and end is not None and job.status.terminal
        views.append(
            AttemptView(
                number=number, started_at=start.at, ended_at=end_at,
                started=iso(start.at) or "", ended=iso(end_at),
                status=end.status if end else JobStatus.RUNNING, worker=start.detail,
                reason=end_detail, exit_code=job.exit_code if last else None,
                stdout=log_key(job.id, number, "stdout"),
                stderr=log_key(job.id, number, "stderr"),
            )
        )  # fmt: skip
    return views


def counts_view(counts: Mapping[JobStatus, int]) -> CountsView:
    full = {status: counts.get(status, 0) for status in JobStatus}
    total = sum(full.values())
    finished = sum(n for status, n in full.items() if status.terminal)
    return CountsView(
        counts=full, total=total, done=finished / total if total else 1.0,
        settled=full[JobStatus.QUEUED] + full[JobStatus.RUNNING] == 0,
    )  # fmt: skip


# -- cursors -----------------------------------------------------------------------------------


def encode_cursor(seq: int, newest_first: bool, filters: str) -> str:
    """An opaque cursor: the last seq seen, the direction, and a digest of the filters."""
    body = json.dumps([seq, newest_first, filters], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(body).decode().rstrip("=")


def decode_cursor(cursor: str, filters: str) -> tuple[int, bool]:
    """(seq, newest_first) of a cursor made by `encode_cursor` for the same `filters`."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        seq, newest_first, made_for = json.loads(raw)
        valid = isinstance(seq, int) and isinstance(newest_first, bool)
    except (ValueError, TypeError, binascii.Error):
        valid = False
    if not valid:
        raise CursorError(f"invalid cursor {cursor!r}: pass back a next_cursor unchanged")
    if made_for != filters:
        raise CursorError("this cursor was made for other filters: keep the filters while paging")
    return seq, newest_first


def filters_digest(**filters: object) -> str:
    """A short digest of the filters a cursor is valid for."""
    text = json.dumps(filters, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
