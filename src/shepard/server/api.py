"""The REST API under /api/v1 (docs/server.md): thin routes over the service layer.

Every route calls `Flock` methods and answers in the models of views.py, the same ones the
CLI's --json prints; nothing here decides anything about jobs. Routes declared with `def`
run in the server's thread pool (the catalog and the stores are thread-safe); the ones that
receive a body as a stream are `async` and hand the blocking steps to the pool.
"""

from __future__ import annotations

import posixpath
import threading
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Literal

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response
from fastapi import status as http
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from shepard.errors import JobNotFound, ShepardError
from shepard.model import JobStatus
from shepard.server import uploads
from shepard.server.auth import Reader, Writer, flock_of
from shepard.server.metrics import Metrics
from shepard.server.streams import StoppableStream, file_chunks
from shepard.views import (
    MAX_PAGE,
    ActionResult,
    CancelRequest,
    CountsView,
    FlockView,
    JobDetail,
    JobPage,
    NewToken,
    NewTokenRequest,
    OutputView,
    RetryRequest,
    SubmitRequest,
    SubmitResult,
    TokenView,
)

if TYPE_CHECKING:
    from shepard.flock import Flock
    from shepard.submitgroup import SubmitGroup

FOLLOW_POLL = 0.5
"""Seconds between two looks at a followed log (and at whether its client is still there)."""

ERRORS = {
    400: {"description": "Bad request: the message says what to change"},
    401: {"description": "No token, or an unknown or revoked one"},
    404: {"description": "No such job (or output)"},
}
WRITE_ERRORS = {**ERRORS, 403: {"description": "The token is read-only"}}

API = "/api/v1"
# the prefix is the router's own, so that each route's `path` is the whole template (the
# metrics label requests by it)
router = APIRouter(prefix=API, responses=ERRORS)  # type: ignore[arg-type]


def wake(request: Request, metrics_jobs: int, *, bundle: bool = False) -> None:
    """After jobs were registered: count them, and wake the dispatcher of this process."""
    metrics: Metrics | None = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.submitted(metrics_jobs, bundle=bundle)
    wakeup: threading.Event | None = getattr(request.app.state, "wakeup", None)
    if wakeup is not None:
        wakeup.set()


# -- submitting -----------------------------------------------------------------------------


@router.post(
    "/jobs",
    status_code=http.HTTP_201_CREATED,
    responses={**WRITE_ERRORS, 409: {"description": "Idempotency key reused for another request"}},  # type: ignore[dict-item]
)
def submit_jobs(
    body: SubmitRequest,
    request: Request,
    _: Writer,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=200,
            description="Sending a request again with the same key registers nothing new.",
        ),
    ] = None,
) -> SubmitResult:
    """Register parameter-only jobs: one `params` object, a list of `jobs`, or a `range`
    (sharing `params`), all or nothing."""
    if idempotency_key is not None:
        if body.idempotency_key not in (None, idempotency_key):
            raise ShepardError(
                "the Idempotency-Key header and the body's idempotency_key differ: send one"
            )
        body = body.model_copy(update={"idempotency_key": idempotency_key})
    submissions: SubmitGroup = request.app.state.submissions  # written together with others
    result = submissions.submit_request(body)
    if not result.replayed:
        wake(request, result.count)
    return result


@router.post(
    "/bundles",
    status_code=http.HTTP_201_CREATED,
    responses={**WRITE_ERRORS, 413: {"description": "Over the server's --max-body"}},  # type: ignore[dict-item]
    openapi_extra={
        "requestBody": {
            "content": {
                "application/zip": {"schema": {"type": "string", "format": "binary"}},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"bundle": {"type": "string", "format": "binary"}},
                        "required": ["bundle"],
                    }
                },
            },
            "required": True,
        }
    },
)
async def submit_bundle(
    request: Request,
    _: Writer,
    name: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            description="Name of the bundle in the inputs store (like `batch --zip-name`); "
            "default: a new unique name.",
        ),
    ] = None,
) -> SubmitResult:
    """Upload a zip bundle (a raw `application/zip` body, or the multipart field `bundle`),
    validated like `shepard batch BUNDLE.zip` and registered as one job."""
    flock = flock_of(request)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    with flock.upload_folder() as folder:
        if kind == "multipart/form-data":
            async with request.form(max_files=1, max_fields=10) as form:
                upload = form.get("bundle")
                if not isinstance(upload, UploadFile):
                    raise ShepardError("multipart upload without a file field named `bundle`")
                source = posixpath.basename(upload.filename or "") or name or "upload.zip"
                path = await uploads.save_upload(upload, folder)
        else:
            source = name or "upload.zip"
            path = await uploads.save_stream(request.stream(), folder)
        sub = await run_in_threadpool(flock.submit_bundle, path, key=name, source=source)
    wake(request, 1, bundle=True)
    return SubmitResult(ids=sub.ids, batch=sub.batch, count=sub.count)


# -- looking --------------------------------------------------------------------------------


@router.get("/jobs")
def list_jobs(
    request: Request,
    _: Reader,
    status: JobStatus | None = None,
    batch: str | None = None,
    tag: Annotated[str | None, Query(description="The TAG parameter (any case)")] = None,
    since: Annotated[
        datetime | None,
        Query(description="Submitted at or after: epoch seconds or ISO 8601 (UTC when naive)"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page")] = None,
    order: Literal["newest", "oldest"] = "newest",
) -> JobPage:
    """A page of jobs, newest (or oldest) first; pass `next_cursor` back, with the same
    filters, for the next page."""
    return flock_of(request).jobs(
        status=status, batch=batch, tag=tag, since=since, limit=limit, cursor=cursor,
        newest_first=order == "newest",
    )  # fmt: skip


@router.get("/jobs/{job_id}")
def get_job(job_id: str, request: Request, _: Reader) -> JobDetail:
    """One job with its history, attempts and outputs."""
    return flock_of(request).job_detail(job_id)


@router.get(
    "/jobs/{job_id}/logs",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
def job_logs(
    job_id: str,
    request: Request,
    _: Reader,
    stream: Literal["stdout", "stderr"] = "stdout",
    attempt: Annotated[int | None, Query(ge=1, description="Default: the current one")] = None,
    offset: Annotated[int, Query(ge=0, description="Bytes to skip")] = 0,
    follow: Annotated[bool, Query(description="Stream until the attempt ends")] = False,
) -> Response:
    """An attempt's stdout or stderr, as bytes; with `follow=true`, streamed as it grows
    until that attempt ends (a job not started yet is waited for). The attempt served is in
    the `X-Shepard-Attempt` header when known."""
    flock = flock_of(request)
    job = flock.get_job(job_id)
    number = attempt or job.attempt
    if not follow or number:
        flock.read_log(job_id, number or None, stream, offset, 1)  # 400 for a bad attempt
    headers = {"X-Shepard-Attempt": str(number)} if number else {}
    stop = threading.Event()
    if follow:
        body = flock.follow_log(job_id, attempt, stream, poll=FOLLOW_POLL, stop=stop, offset=offset)
    else:
        body = _log_chunks(flock, job_id, number, stream, offset, stop)
    limiter = request.app.state.streams
    return StoppableStream(body, stop, limiter, media_type="text/plain", headers=headers)


def _log_chunks(
    flock: Flock, job_id: str, attempt: int, stream: str, offset: int, stop: threading.Event
) -> Iterator[bytes]:
    while not stop.is_set() and (data := flock.read_log(job_id, attempt, stream, offset)):
        offset += len(data)
        yield data


@router.get("/jobs/{job_id}/outputs")
def job_outputs(job_id: str, request: Request, _: Reader) -> list[OutputView]:
    """The job's result objects (and its last error bundle, `store: errors`)."""
    return flock_of(request).outputs(job_id)


@router.get(
    "/jobs/{job_id}/outputs/{key:path}",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {"schema": {"type": "string"}}}}},
)
def download_output(job_id: str, key: str, request: Request, _: Reader) -> Response:
    """One output (or the error bundle) of the job, streamed from its store."""
    flock = flock_of(request)
    found = {view.key: view for view in flock.outputs(job_id)}
    if key not in found:
        raise JobNotFound(f"job {job_id} has no output {key!r}")
    stop = threading.Event()
    fh = flock.open_output(job_id, key)
    filename = posixpath.basename(key).replace('"', "")
    headers = {
        "Content-Length": str(found[key].size),
        "Content-Disposition": f'attachment; filename="{filename}"',
    }
    kind = "application/zip" if key.lower().endswith(".zip") else "application/octet-stream"
    limiter = request.app.state.streams
    return StoppableStream(file_chunks(fh, stop), stop, limiter, media_type=kind, headers=headers)


@router.get("/counts")
def counts(request: Request, _: Reader, batch: str | None = None) -> CountsView:
    """Jobs per status (of one batch, or of the whole flock)."""
    return flock_of(request).count(batch)


@router.get("/flock")
def flock_info(request: Request, _: Reader) -> FlockView:
    """The flock served: name, backend, payload kind, stores, config without secrets."""
    return flock_of(request).describe()


# -- acting ---------------------------------------------------------------------------------


@router.post("/jobs/{job_id}/cancel", responses=WRITE_ERRORS)  # type: ignore[arg-type]
def cancel_job(job_id: str, request: Request, _: Writer) -> ActionResult:
    """Cancel one job: queued, it never starts; running, it is stopped. `ids` is empty when
    it had already ended."""
    flock = flock_of(request)
    flock.get_job(job_id)  # 404 for an unknown id
    return flock.cancel_jobs([job_id])


@router.post("/cancel", responses=WRITE_ERRORS)  # type: ignore[arg-type]
def cancel(body: CancelRequest, request: Request, _: Writer) -> ActionResult:
    """Cancel jobs as `shepard cancel` does: by ids, `all`, or every job in `status`."""
    return flock_of(request).cancel_jobs(body.ids or None, status=body.status)


@router.post("/retry", responses=WRITE_ERRORS)  # type: ignore[arg-type]
def retry(body: RetryRequest, request: Request, _: Writer) -> ActionResult:
    """Queue ended jobs again as new attempts, as `shepard retry` does."""
    since = None if body.since is None else _epoch(body.since)
    result = flock_of(request).retry_jobs(
        body.ids, statuses=body.statuses, since=since, tag=body.tag,
        extra_attempts=body.extra_attempts,
    )  # fmt: skip
    if result.count:
        wake(request, 0)
    return result


def _epoch(moment: datetime) -> float:
    from datetime import UTC

    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


# -- tokens ---------------------------------------------------------------------------------


@router.get("/tokens", responses=WRITE_ERRORS)  # type: ignore[arg-type]
def list_tokens(request: Request, _: Writer) -> list[TokenView]:
    """The flock's API tokens (never their secrets)."""
    return flock_of(request).list_tokens()


@router.post("/tokens", status_code=http.HTTP_201_CREATED, responses=WRITE_ERRORS)  # type: ignore[arg-type]
def create_token(body: NewTokenRequest, request: Request, _: Writer) -> NewToken:
    """Make a token; its secret is in this answer only."""
    view, secret = flock_of(request).create_token(body.name, read_only=body.read_only)
    return NewToken(token=view, secret=secret)


@router.delete(
    "/tokens/{name}",
    status_code=http.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=WRITE_ERRORS,  # type: ignore[arg-type]
)
def revoke_token(name: str, request: Request, _: Writer) -> Response:
    """Revoke a token at once (this one too, if named)."""
    if not flock_of(request).revoke_token(name):
        raise HTTPException(http.HTTP_404_NOT_FOUND, f"no token named {name!r}")
    request.app.state.tokens.forget()
    return Response(status_code=http.HTTP_204_NO_CONTENT)
