"""The payload logs of a job's attempts: finding them and following them live (`shepard logs`).

Each attempt's stdout and stderr are objects in the flock's logs store (see `runtime.log_key`),
read through the store API only. In a folder store the payload writes them directly, so they
grow while it runs; in S3 they are uploaded every few seconds while they grow
(runtime/logsink.py), so a follower sees them with that delay. Following polls the object's
size and the catalog. Following a job goes through its attempts in turn and ends when the job is
succeeded, failed or cancelled; following one named attempt ends when that attempt is over.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from shepard.errors import ShepardError
from shepard.model import Job, JobEvent, JobStatus
from shepard.runtime import log_key
from shepard.storage import NoSuchObject, ObjectInfo

STREAMS = ("stdout", "stderr")
POLL = 0.2  # seconds between two looks at the log file and the catalog
_CHUNK = 1 << 16


class LogStore(Protocol):
    """What reading a log needs of the logs store (an ObjectStore, or the remote mode's view
    of a server's, shepard.remote.objects)."""

    def url(self, key: str) -> str: ...

    def stat(self, key: str) -> ObjectInfo: ...

    def open_read(self, key: str, *, start: int = 0) -> AbstractContextManager[BinaryIO]: ...


class JobSource(Protocol):
    """What finding and following logs needs of a flock (a Flock, or shepard.remote's
    RemoteFlock speaking to a server)."""

    def job(self, job_id: str) -> Job: ...

    def events(self, job_id: str) -> list[JobEvent]: ...

    def log_keys(self, job: Job) -> list[tuple[int, str, str]]: ...

    def logs_store(self) -> LogStore: ...


@dataclass(frozen=True)
class LogRef:
    """One log of one attempt: `key` in the logs `store`."""

    job_id: str
    attempt: int
    stream: str
    store: LogStore
    key: str

    @property
    def url(self) -> str:
        """Where the log is, for people (a file path, or s3://...)."""
        return self.store.url(self.key)


@dataclass(frozen=True)
class FollowEnd:
    """Why following stopped: how the followed attempt ended and where the job is now."""

    job_id: str
    attempt: int  # the attempt followed (0: the job ended before it ever started)
    status: JobStatus  # the job's status now
    current: int  # the job's current (or last) attempt
    detail: str | None  # the reason recorded when the followed attempt ended

    @property
    def requeued(self) -> bool:
        """The followed attempt ended but the job went back to the queue (or runs again)."""
        return not self.status.terminal

    @property
    def message(self) -> str:
        job, detail = self.job_id, f": {self.detail}" if self.detail else ""
        if self.requeued:
            return (
                f"job {job} was requeued after attempt {self.attempt}{detail}; "
                f"follow it to its end with `shepard logs {job} --follow`"
            )
        if self.attempt == 0:
            return f"job {job} {self.status.value} before it started{detail}"
        if self.attempt != self.current:
            return (
                f"attempt {self.attempt} of job {job} ended{detail}; "
                f"the job {self.status.value} at attempt {self.current}"
            )
        return f"job {job} {self.status.value} (attempt {self.attempt}){detail}"


def log_ref(flock: JobSource, job_id: str, attempt: int, stream: str = "stdout") -> LogRef:
    """Where `attempt`'s `stream` log lives (the object need not exist yet)."""
    check_stream(stream)
    return LogRef(job_id, attempt, stream, flock.logs_store(), log_key(job_id, attempt, stream))


def pick_log(
    flock: JobSource, job: Job, *, attempt: int | None = None, stream: str = "stdout"
) -> LogRef:
    """The log to show: `attempt`'s, else the latest attempt's (a log that is missing, as an
    empty stream is in S3, reads as empty).

    Raises ShepardError saying why when there is none.
    """
    check_stream(stream)
    if attempt is None:
        if job.attempt == 0:
            raise ShepardError(
                f"job {job.id} has no logs yet: it is {job.status.value} and has not started"
            )
        attempt = job.attempt
    if attempt < 1 or attempt > job.attempt:
        runs = "has not run yet" if job.attempt == 0 else f"has had {job.attempt} attempt(s)"
        raise ShepardError(f"job {job.id} has no attempt {attempt}: it {runs}")
    return log_ref(flock, job.id, attempt, stream)


def copy_log(ref: LogRef, write: Callable[[bytes], None]) -> int:
    """Write the whole log (as it is now); return the number of bytes written."""
    return _pump(ref, 0, write)


def follow(
    flock: JobSource,
    job_id: str,
    write: Callable[[bytes], None],
    *,
    attempt: int | None = None,
    stream: str = "stdout",
    stop: threading.Event | None = None,
    poll: float = POLL,
    on_wait: Callable[[str], None] | None = None,
) -> FollowEnd | None:
    """Write a job's log as it grows until the job ends, across its attempts; say how it ended.

    Without `attempt`: from the running attempt's start, or, for a queued job (new, or waiting
    for a retry), from the start of the attempt that runs next; each later attempt follows
    (`on_wait` is told when waiting for an attempt to start, and gets a separator line when
    a new attempt begins), until the job is succeeded, failed or cancelled. A job already
    over: its latest log, printed whole, and its end at once. With `attempt`: that attempt
    only, until it is over (the job may go on with another). Returns None when `stop` was
    set first.
    """
    stop = stop or threading.Event()
    job = flock.job(job_id)
    if attempt is None and job.status.terminal and job.attempt == 0:
        return _never_started(job)  # e.g. cancelled while queued
    if attempt is not None or job.status.terminal:
        ref = pick_log(flock, job, attempt=attempt, stream=stream)
        return _follow_attempt(flock, ref, write, stop, poll)
    # Earlier attempts are not replayed: `--attempt N` (or `logs`) shows them.
    followed = job.attempt if job.status is JobStatus.QUEUED else job.attempt - 1
    while True:
        waited = _await_start(flock, job, stop, poll, on_wait)
        if waited is None:
            return None
        job = waited
        if job.status.terminal and job.attempt == followed:  # ended without running again
            return _ending(flock, job, followed) if followed else _never_started(job)
        end: FollowEnd | None = None
        for number in range(followed + 1, job.attempt + 1):  # none skipped, however quick
            if on_wait and number > 1:
                on_wait(f"--- job {job_id}: attempt {number} ---")
            end = _follow_attempt(flock, log_ref(flock, job_id, number, stream), write, stop, poll)
            if end is None:
                return None
            followed = number
        if end is not None and end.status.terminal and end.current == followed:
            return end
        if end is None and stop.wait(poll):
            return None
        job = flock.job(job_id)


def _await_start(
    flock: JobSource,
    job: Job,
    stop: threading.Event,
    poll: float,
    on_wait: Callable[[str], None] | None,
) -> Job | None:
    """`job` as soon as it is no longer queued (None when `stop` was set first); `on_wait`
    is told once what we wait for."""
    if job.status is JobStatus.QUEUED and on_wait:
        if job.attempt == 0:
            on_wait(f"job {job.id} is queued; waiting for it to start")
        else:
            on_wait(
                f"job {job.id} is queued for attempt {job.attempt + 1} after attempt "
                f"{job.attempt}{_why(job)}; waiting for it to start"
            )
    while job.status is JobStatus.QUEUED:
        if stop.wait(poll):
            return None
        job = flock.job(job.id)
    return job


def _why(job: Job) -> str:
    return f" ({job.reason})" if job.reason else ""


def _never_started(job: Job) -> FollowEnd:
    return FollowEnd(job.id, 0, job.status, job.attempt, job.reason)


def _follow_attempt(
    flock: JobSource,
    ref: LogRef,
    write: Callable[[bytes], None],
    stop: threading.Event,
    poll: float,
) -> FollowEnd | None:
    """Write `ref`'s log as it grows until its attempt is over; None when `stop` was set."""
    offset = 0
    job = flock.job(ref.job_id)
    while True:
        offset = _pump(ref, offset, write)
        if job.attempt != ref.attempt or job.status is not JobStatus.RUNNING:
            # The attempt is over and its payload has exited: take what it wrote last.
            _pump(ref, offset, write)
            return _ending(flock, job, ref.attempt)
        if stop.wait(poll):
            return None
        job = flock.job(ref.job_id)


def _ending(flock: JobSource, job: Job, attempt: int) -> FollowEnd:
    detail = job.reason
    if not job.status.terminal or job.attempt != attempt:
        # What ended this attempt is in its events (a retry, a lost worker, a shutdown, ...).
        details = [
            e.detail for e in flock.events(job.id)
            if e.attempt == attempt and e.status is not JobStatus.RUNNING and e.detail
        ]  # fmt: skip
        detail = "; ".join(details) or None
    return FollowEnd(job.id, attempt, job.status, job.attempt, detail)


def _pump(ref: LogRef, offset: int, write: Callable[[bytes], None]) -> int:
    """Write what the log holds from `offset` on; return the new offset (missing: the same).

    One `stat` when nothing is new; else a streamed read from `offset` to the size seen."""
    try:
        size = ref.store.stat(ref.key).size
        if size <= offset:
            return offset
        with ref.store.open_read(ref.key, start=offset) as fh:
            while offset < size and (chunk := fh.read(min(_CHUNK, size - offset))):
                write(chunk)
                offset += len(chunk)
    except NoSuchObject:
        pass  # not written yet, or replaced while read: the next look takes it
    return offset


def check_stream(stream: str) -> None:
    """ShepardError unless `stream` is one of STREAMS."""
    if stream not in STREAMS:
        raise ShepardError(f"unknown log stream {stream!r}: use one of {', '.join(STREAMS)}")
