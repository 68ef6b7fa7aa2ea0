"""The service layer: the methods of `Flock` that answer in views (views.py).

`FlockService` (a base of `Flock`) holds them; the functions above it do the work. These are
what the CLI, the HTTP API, the dashboard and notebooks call. Nothing here changes
process-wide state, so they are safe to call from the threads of a server.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, cast

from shepard import config
from shepard.catalog.base import PartPage, StoredToken
from shepard.errors import JobNotFound, ShepardError, StorageError
from shepard.joblogs import check_stream
from shepard.model import JobSpec, JobStatus
from shepard.runtime import log_key
from shepard.storage.base import ObjectStore
from shepard.storage.rangefile import RangeFile
from shepard.views import (
    MAX_PAGE,
    ActionResult,
    AttemptView,
    BatchView,
    CountsView,
    EventView,
    FlockView,
    InboxView,
    JobDetail,
    JobPage,
    JobView,
    OutputView,
    SubmitRequest,
    SubmitResult,
    ThroughputView,
    TokenView,
    WorkerView,
    attempt_views,
    counts_view,
    decode_cursor,
    encode_cursor,
    event_view,
    filters_digest,
    job_view,
)

if TYPE_CHECKING:
    from shepard.flock import Flock
    from shepard.flockinfo import LiveCounts

SMALL_SUBMISSION = 1000
"""A request of up to this many jobs is registered in one short transaction
(`Flock.register`); a larger one goes the staged way (`Flock.submit`)."""

LOG_CHUNK = 1 << 16
"""Bytes `read_log` returns at most by default (what `follow_log` yields at most at once)."""


def _list_jobs(
    flock: Flock,
    *,
    status: JobStatus | str | None = None,
    batch: str | None = None,
    tag: str | None = None,
    since: float | datetime | None = None,
    limit: int = 50,
    cursor: str | None = None,
    newest_first: bool = True,
    param: tuple[str, str] | None = None,
    text: str | None = None,
) -> JobPage:
    """One page of jobs; see `Flock.jobs`."""
    if not 1 <= limit <= MAX_PAGE:
        raise ShepardError(f"limit must be between 1 and {MAX_PAGE}, not {limit}")
    wanted = _status(status)
    after = _epoch(since) if isinstance(since, datetime) else since
    digest = filters_digest(status=wanted, batch=batch, tag=tag, since=after)
    if param is not None or text is not None:  # cursors made before these filters stay valid
        digest = filters_digest(prior=digest, param=param, text=text)
    last: int | None = None
    if cursor is not None:
        last, newest_first = decode_cursor(cursor, digest)
    rows = flock.catalog.page(
        status=wanted, batch=batch, tag=tag, since=after, limit=limit + 1,
        before_seq=last if newest_first else None,
        after_seq=None if newest_first else last,
        newest_first=newest_first, param=param, text=text,
    )  # fmt: skip
    stopped = rows.read_to if isinstance(rows, PartPage) else None
    more, rows = len(rows) > limit, rows[:limit]
    if more:
        following: str | None = encode_cursor(rows[-1].seq, newest_first, digest)
    elif stopped is not None:  # a short page, maybe empty, with jobs left to read after it
        following = encode_cursor(stopped, newest_first, digest)
    else:
        following = None
    return JobPage(items=[job_view(job) for job in rows], next_cursor=following)


def _epoch(moment: datetime) -> float:
    """Epoch seconds of `moment`; a naive datetime is UTC (as `shepard show` prints times)."""
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _status(status: JobStatus | str | None) -> JobStatus | None:
    if status is None or isinstance(status, JobStatus):
        return status
    try:
        return JobStatus(status.lower())
    except ValueError:
        names = ", ".join(s.value for s in JobStatus)
        raise ShepardError(f"unknown status {status!r}: use one of {names}") from None


def _submit_request(flock: Flock, request: SubmitRequest) -> SubmitResult:
    """Register the request's jobs; see `Flock.submit_request`."""
    if request.idempotency_key is None and request.size() <= SMALL_SUBMISSION:
        sub = flock.register(
            list(request.param_sets()), batch=request.batch, max_attempts=request.attempts,
            timeout=request.timeout, validated=True,
        )  # fmt: skip
        return SubmitResult(ids=sub.ids, batch=sub.batch, count=sub.count)
    if request.idempotency_key is None:
        sub = flock.submit(
            request.param_sets(), batch=request.batch, max_attempts=request.attempts,
            timeout=request.timeout, validated=True,
        )  # fmt: skip
        # a request's body holds every job already: its answer may list every id
        ids = sub.ids if len(sub.ids) == sub.count else list(flock.batch_ids(sub.batch))
        return SubmitResult(ids=ids, batch=sub.batch, count=sub.count)
    from shepard.flock import new_batch_label

    config.check_job_limits(request.attempts, request.timeout)
    flock.check_resources()
    label = request.batch or new_batch_label()
    specs = (
        JobSpec(params, None, request.attempts, request.timeout, label)
        for params in request.param_sets()
    )
    done = flock.catalog.add_jobs_once(
        request.idempotency_key, request.fingerprint(), label, specs,
        now=flock.clock(), default_attempts=flock.config.retry.attempts,
    )  # fmt: skip
    return SubmitResult(ids=done.ids, batch=done.batch, count=len(done.ids), replayed=done.replayed)


def _attempts(flock: Flock, job_id: str) -> list[AttemptView]:
    return attempt_views(flock.job(job_id), flock.events(job_id), log_key)


def _outputs(flock: Flock, job_id: str, *, errors: bool = True) -> list[OutputView]:
    """The job's result objects (and, with `errors`, its last error bundle) that exist."""
    job = flock.job(job_id)
    found = [("outputs", key) for key in job.outputs]
    if errors and job.error_bundle:
        found.append(("errors", job.error_bundle))
    views = []
    for name, key in found:
        store = flock.store(name)
        try:
            size = store.size(key)
        except StorageError:
            continue  # removed from the store since
        views.append(
            OutputView(key=key, size=size, url=object_url(store.location, key), store=name)
        )
    return views


def object_url(location: str, key: str) -> str:
    """Where object `key` of the store at `location` is, for people and tools."""
    return f"{location.rstrip('/')}/{key}"


def _open_output(flock: Flock, job_id: str, key: str | None = None) -> BinaryIO:
    """A seekable binary stream of one of the job's outputs; see `Flock.open_output`."""
    job = flock.job(job_id)
    known = {k: "outputs" for k in job.outputs}
    if job.error_bundle:
        known[job.error_bundle] = "errors"
    if key is None:
        if len(job.outputs) != 1:
            raise ShepardError(
                f"job {job_id} has {len(job.outputs)} outputs: name the one to open"
                + (f" ({', '.join(job.outputs)})" if job.outputs else "")
            )
        key = job.outputs[0]
    if key not in known:
        raise JobNotFound(f"job {job_id} has no output {key!r}")
    return open_object(flock, known[key], key)


def open_object(flock: Flock, store: str, key: str) -> BinaryIO:
    """The one place that streams an object out of a store (range reads, buffered)."""
    return io.BufferedReader(RangeFile(flock.store(store), key), buffer_size=LOG_CHUNK)


def _read_log(
    flock: Flock,
    job_id: str,
    attempt: int | None = None,
    stream: str = "stdout",
    offset: int = 0,
    size: int = LOG_CHUNK,
) -> bytes:
    """Up to `size` bytes of a log from `offset` (b"" at its end, or when it does not exist
    yet); see `Flock.read_log`."""
    key = _log(flock, job_id, attempt, stream)
    if offset < 0 or size < 1:
        raise ShepardError("offset must be >= 0 and size >= 1")
    return _read(flock.store("logs"), key, offset, size)


def _read(store: ObjectStore, key: str, offset: int, size: int) -> bytes:
    try:
        return store.read_range(key, offset, size)
    except StorageError:
        if store.exists(key):
            raise
        return b""  # not written yet


def _log(flock: Flock, job_id: str, attempt: int | None, stream: str) -> str:
    check_stream(stream)
    job = flock.job(job_id)
    number = job.attempt if attempt is None else attempt
    if number < 1 or number > job.attempt:
        runs = "has not run yet" if job.attempt == 0 else f"has had {job.attempt} attempt(s)"
        raise ShepardError(f"job {job_id} has no attempt {number}: it {runs}")
    return log_key(job_id, number, stream)


def _follow_log(
    flock: Flock,
    job_id: str,
    attempt: int | None = None,
    stream: str = "stdout",
    *,
    poll: float = 0.5,
    stop: threading.Event | None = None,
    sleep: Callable[[float], None] = time.sleep,
    offset: int = 0,
) -> Iterator[bytes]:
    """Chunks of one attempt's log as it grows; see `Flock.follow_log`."""
    if offset < 0:
        raise ShepardError("offset must be >= 0")
    job = flock.job(job_id)
    while attempt is None and job.attempt == 0 and not job.status.terminal:
        if stop is not None and stop.is_set():
            return
        sleep(poll)
        job = flock.job(job_id)
    number = attempt or job.attempt
    if number == 0:
        return  # ended before it ever started: no log
    key, logs = _log(flock, job_id, number, stream), flock.store("logs")
    while True:
        over = job.attempt != number or job.status is not JobStatus.RUNNING
        # read what is there; once the attempt is over, its payload has exited and this
        # read takes the last bytes it wrote
        while chunk := _read(logs, key, offset, LOG_CHUNK):
            offset += len(chunk)
            yield chunk
        if over or (stop is not None and stop.is_set()):
            return
        sleep(poll)
        job = flock.job(job_id)


def _wait_for(
    flock: Flock,
    batch: str | None,
    *,
    timeout: float | None,
    poll: float,
    sleep: Callable[[float], None],
    clock: Callable[[], float],
    stop: threading.Event | None = None,
) -> CountsView:
    """Counts of `batch` once it is settled, or when `timeout` runs out; see `Flock.wait_for`."""
    if poll <= 0:
        raise ShepardError("poll must be a positive number of seconds")
    deadline = None if timeout is None else clock() + timeout
    while True:
        counts = counts_view(flock.catalog.counts(batch=batch))
        if counts.settled or (stop is not None and stop.is_set()):
            return counts
        left = None if deadline is None else deadline - clock()
        if left is not None and left <= 0:
            return counts
        sleep(poll if left is None else min(poll, left))


def _count(flock: Flock, batch: str | None = None) -> CountsView:
    return counts_view(flock.catalog.counts(batch=batch))


class FlockService:
    """The methods of `Flock` that answer in views: the service layer that the CLI, the HTTP
    API and notebooks share. Only ever a base of `Flock` (see `_flock`)."""

    def jobs(
        self,
        *,
        status: JobStatus | str | None = None,
        batch: str | None = None,
        tag: str | None = None,
        since: float | datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
        newest_first: bool = True,
        param: tuple[str, str] | None = None,
        text: str | None = None,
    ) -> JobPage:
        """A page of jobs, newest first (or oldest first), filtered by status, batch label,
        tag (the TAG parameter, key and value in any case), any parameter (`param`: (key,
        value), compared as the tag is), text anywhere in the parameters (`text`, any case)
        and submission time (`since`: epoch seconds, or a datetime, UTC when naive). Pass
        `next_cursor` back as `cursor`, with the same filters, for the next page: paging is
        by position, so jobs submitted meanwhile never shift a page (newest first, they
        appear only on a new first page). A page may hold fewer than `limit` jobs, even none,
        and still have a `next_cursor`: on a DynamoDB catalog a page filtered by parameters
        stops after reading a bounded number of jobs (docs/dynamodb.md). Raises CursorError
        for a cursor made for other filters."""
        return _list_jobs(
            _flock(self), status=status, batch=batch, tag=tag, since=since, limit=limit,
            cursor=cursor, newest_first=newest_first, param=param, text=text,
        )  # fmt: skip

    def get_job(self, job_id: str) -> JobView:
        """One job; JobNotFound if the flock has no such job."""
        return job_view(_flock(self).job(job_id))

    def job_detail(self, job_id: str) -> JobDetail:
        """The job with its history, attempts and outputs; JobNotFound if there is none."""
        flock = _flock(self)
        job = flock.job(job_id)
        return JobDetail(
            job=job_view(job),
            events=[event_view(e) for e in flock.events(job_id)],
            attempts=_attempts(flock, job_id),
            outputs=_outputs(flock, job_id),
        )

    def history(self, job_id: str) -> list[EventView]:
        """The job's history, oldest first (an empty list for an unknown id)."""
        return [event_view(e) for e in _flock(self).events(job_id)]

    def attempts(self, job_id: str) -> list[AttemptView]:
        """The job's attempts, first first, with how each ended and its log keys."""
        return _attempts(_flock(self), job_id)

    def outputs(self, job_id: str, *, errors: bool = True) -> list[OutputView]:
        """The job's result objects (and its last error bundle) with sizes and locations."""
        return _outputs(_flock(self), job_id, errors=errors)

    def open_output(self, job_id: str, key: str | None = None) -> BinaryIO:
        """A seekable binary stream of one of the job's outputs (or its error bundle), read
        from the store as it is consumed; `key` may be left out when there is one output.
        Close it after use (it is a context manager)."""
        return _open_output(_flock(self), job_id, key)

    def read_log(
        self,
        job_id: str,
        attempt: int | None = None,
        stream: str = "stdout",
        offset: int = 0,
        size: int = LOG_CHUNK,
    ) -> bytes:
        """Up to `size` bytes of an attempt's stdout or stderr from `offset` (default: the
        current attempt). b"" at the end, or while the attempt has written nothing yet."""
        return _read_log(_flock(self), job_id, attempt, stream, offset, size)

    def follow_log(
        self,
        job_id: str,
        attempt: int | None = None,
        stream: str = "stdout",
        *,
        poll: float = 0.5,
        stop: threading.Event | None = None,
        sleep: Callable[[float], None] = time.sleep,
        offset: int = 0,
    ) -> Iterator[bytes]:
        """Yield an attempt's log as it grows, from byte `offset`, until that attempt is over
        (or `stop` is set). Without `attempt`: the current one; a job not started yet is
        waited for first."""
        return _follow_log(
            _flock(self), job_id, attempt, stream, poll=poll, stop=stop, sleep=sleep,
            offset=offset,
        )  # fmt: skip

    def count(self, batch: str | None = None) -> CountsView:
        """Jobs per status (of one batch, or of the whole flock), with the total."""
        return _count(_flock(self), batch)

    def wait_for(
        self,
        batch: str | None,
        *,
        timeout: float | None = None,
        poll: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        stop: threading.Event | None = None,
    ) -> CountsView:
        """Wait, without running anything, until no job of `batch` (None: of the flock) is
        queued or running, or `timeout` seconds passed, or `stop` is set; return the counts
        (`settled` tells which). Something else runs the jobs: `shepard up`, a server."""
        return _wait_for(
            _flock(self), batch, timeout=timeout, poll=poll, sleep=sleep, clock=clock, stop=stop
        )

    def submit_request(self, request: SubmitRequest) -> SubmitResult:
        """Register a SubmitRequest's jobs in one transaction. With an `idempotency_key`,
        a request repeated with that key registers nothing more and returns the first
        answer (`replayed` set); the key with a different request raises
        IdempotencyConflict."""
        return _submit_request(_flock(self), request)

    def cancel_jobs(
        self, job_ids: Sequence[str] | None = None, *, status: JobStatus | None = None
    ) -> ActionResult:
        """`cancel` answering in a view: the named jobs, or every queued and running job
        (only those in `status` when given)."""
        statuses = [status] if status else [JobStatus.QUEUED, JobStatus.RUNNING]
        ids = _flock(self).cancel(job_ids, statuses=statuses)
        return ActionResult(action="cancel", ids=ids, count=len(ids))

    def retry_jobs(
        self,
        job_ids: Sequence[str] | None = None,
        *,
        statuses: Sequence[JobStatus] = (JobStatus.FAILED,),
        since: float | None = None,
        tag: str | None = None,
        extra_attempts: int = 1,
    ) -> ActionResult:
        """`retry` answering in a view (same arguments)."""
        ids = _flock(self).retry(
            job_ids, statuses=statuses, since=since, tag=tag, extra_attempts=extra_attempts
        )
        return ActionResult(action="retry", ids=ids, count=len(ids))

    def describe(self) -> FlockView:
        """The flock as a server shows it: names, backend, stores, and its config with
        secrets removed (see `flockview.redacted`)."""
        from shepard.flockview import flock_view

        return flock_view(_flock(self))

    @contextlib.contextmanager
    def upload_folder(self) -> Iterator[Path]:
        """A private folder in the flock's work folder for a file being received (an
        uploaded bundle), removed after the block; marked in use so that a sweep of what
        killed commands left (leftovers.py) never takes it, and swept if this process dies."""
        from shepard import leftovers

        flock = _flock(self)
        work = flock.dir.store_path("work")
        work.mkdir(parents=True, exist_ok=True)
        with (
            tempfile.TemporaryDirectory(dir=work, prefix=leftovers.BATCH_PREFIX) as tmp,
            leftovers.held(Path(tmp)),
        ):
            yield Path(tmp)

    def submit_bundle_stream(
        self, stream: BinaryIO, name: str, *, batch: str | None = None
    ) -> SubmitResult:
        """Register one bundle job from a zip read from `stream` (an upload), stored in the
        inputs store as `name`. The zip is spooled to the flock's work folder first, checked
        like any bundle, and nothing is kept when it is refused."""
        import shutil

        with self.upload_folder() as folder:
            path = folder / "bundle.zip"
            with path.open("wb") as out:
                shutil.copyfileobj(stream, out, LOG_CHUNK)
            sub = _flock(self).submit_bundle(path, key=name, batch=batch)
        return SubmitResult(ids=sub.ids, batch=sub.batch, count=sub.count)

    def log_size(self, job_id: str, attempt: int | None = None, stream: str = "stdout") -> int:
        """Bytes an attempt's stdout or stderr holds so far (0 before it is written)."""
        flock = _flock(self)
        key = _log(flock, job_id, attempt, stream)
        try:
            return flock.store("logs").size(key)
        except StorageError:
            return 0

    # -- the flock as a whole (flockinfo.py) -------------------------------------------------

    def throughput(self, *, minutes: int = 60, remaining: int | None = None) -> ThroughputView:
        """Jobs ended per minute (succeeded, failed) over the last `minutes`, and when the
        queued and running jobs should be done at the pace of the last ten minutes (pass
        `remaining`, their number, when it is known, to spare a count)."""
        from shepard import flockinfo

        return flockinfo.throughput(_flock(self), minutes=minutes, remaining=remaining)

    def live_counts(self) -> LiveCounts:
        """An object whose `get()` gives the jobs per status, cheap enough to ask every
        fraction of a second at a million jobs (for live pages; see flockinfo.LiveCounts)."""
        from shepard import flockinfo

        return flockinfo.LiveCounts(_flock(self))

    def batches(self, *, limit: int = 8) -> list[BatchView]:
        """The most recent batches (those of the newest jobs) with their counts."""
        from shepard import flockinfo

        return flockinfo.batches(_flock(self), limit=limit)

    def running(self) -> list[WorkerView]:
        """Who runs what now: each worker with its running jobs, busiest first."""
        from shepard import flockinfo

        return flockinfo.running(_flock(self))

    def inbox(self, *, limit: int = 100) -> InboxView:
        """The inbox: where it is, how many files wait there, and the newest `limit`
        rejected files with their reasons."""
        from shepard import flockinfo

        return flockinfo.inbox_view(_flock(self), limit=limit)

    # -- API tokens (shepard.tokens) --------------------------------------------------------

    def create_token(self, name: str, *, read_only: bool = False) -> tuple[TokenView, str]:
        """A new API token: its view and its secret, which is not kept and cannot be shown
        again. ShepardError for a bad or taken name."""
        from shepard import tokens

        flock = _flock(self)
        secret = tokens.new_secret()
        stored = StoredToken(
            name=tokens.check_name(name), digest=tokens.digest(secret), read_only=read_only,
            created_at=flock.clock(), last_used_at=None,
        )  # fmt: skip
        flock.catalog.add_token(stored)
        return tokens.token_view(stored), secret

    def list_tokens(self) -> list[TokenView]:
        """Every API token, by name (no secrets)."""
        from shepard import tokens

        return [tokens.token_view(t) for t in _flock(self).catalog.tokens()]

    def revoke_token(self, name: str) -> bool:
        """Remove an API token at once; False if there was none of that name."""
        return _flock(self).catalog.revoke_token(name)

    def verify_token(self, secret: str) -> TokenView | None:
        """The token whose secret this is, or None (unknown or revoked)."""
        from shepard import tokens

        if not secret.startswith(tokens.PREFIX):
            return None
        flock = _flock(self)
        found = flock.catalog.find_token(tokens.digest(secret), now=flock.clock())
        return None if found is None else tokens.token_view(found)

    def verify_token_digest(self, digest: str) -> TokenView | None:
        """The token whose secret has this sha256 digest (what a signed dashboard session
        holds instead of the secret), or None (unknown or revoked)."""
        from shepard import tokens

        flock = _flock(self)
        found = flock.catalog.find_token(digest, now=flock.clock())
        return None if found is None else tokens.token_view(found)


def _flock(service: FlockService) -> Flock:
    """The Flock that `service` is part of (FlockService is a base of Flock alone)."""
    return cast("Flock", service)
