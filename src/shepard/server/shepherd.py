"""shepherd's HTTP API (iterait/shepherd v0.5.3) over a flock: `shepard serve --shepherd`.

The routes answer as shepherd's do for its clients (shapes, status codes, messages; see
docs/shepherd.md), and do better where shepherd was broken: JSON 404/405 for unknown routes,
nothing recorded for an unknown sheep, a server-side limit on `wait_ready`, byte-exact
payload sizes, job ids checked as bucket names, a reused job id refused by looking.
The jobs are ordinary Shepard jobs (server/shepherd_jobs.py, runtime/buckets.py).
"""

from __future__ import annotations

import asyncio
import json
import mimetypes
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from shepard.errors import ShepardError, StorageError
from shepard.runtime import buckets
from shepard.server import errors
from shepard.server import shepherd_jobs as jobs
from shepard.server.auth import reader, writer
from shepard.server.settings import ServeSettings

if TYPE_CHECKING:
    from shepard.flock import Flock

T = TypeVar("T")
CHUNK = 256 << 10
WAIT_LIMIT = 600.0
"""Seconds `wait_ready` waits at most by default (shepherd waited forever)."""
_POLL_FIRST, _POLL_MAX = 0.02, 0.5


def router(flock: Flock, settings: ServeSettings) -> APIRouter:
    """shepherd's routes for `flock`; with `settings.shepherd_token` they need API tokens
    (reading: any token; `/start-job`: one that may write)."""
    try:
        import boto3  # noqa: F401  (the job buckets are on S3)
    except ImportError:
        raise ShepardError(
            "--shepherd needs boto3 for the job buckets: pip install 'shepard[server,aws]'"
        ) from None
    read = [Depends(reader)] if settings.shepherd_token else []
    write = [Depends(writer)] if settings.shepherd_token else []
    api = APIRouter(tags=["shepherd"], include_in_schema=False)
    limit = settings.max_body

    @api.post("/start-job", dependencies=write)
    async def start_job(request: Request) -> Response:
        try:
            body = await read_json(request, limit)
            start = jobs.parse_start_job(body)
            del body
            await run_in_threadpool(jobs.start_job, flock, start)
        except jobs.Refusal as refusal:
            return message(refusal.status, refusal.message)
        except StorageError as exc:
            return refused(exc)
        except ShepardError as exc:  # the catalog: busy or unreachable
            return message(errors.status_of(exc), str(exc))
        return JSONResponse({"success": True})

    @api.get("/jobs/{job_id}/status", dependencies=read)
    def job_status(job_id: str) -> Response:
        return answer(lambda: JSONResponse(jobs.job_status(flock, job_id)))

    @api.get("/jobs/{job_id}/wait_ready", dependencies=read)
    async def wait_ready(job_id: str, timeout: float = WAIT_LIMIT) -> Response:
        """The status once the job is done or failed; after `timeout` seconds (at most
        WAIT_LIMIT), 202 with the status as it is, so that a client asks again."""
        deadline = time.monotonic() + max(0.0, min(timeout, WAIT_LIMIT))
        pause = _POLL_FIRST
        while True:
            try:
                record = await run_in_threadpool(jobs.job_status, flock, job_id)
            except jobs.Refusal as refusal:
                return message(refusal.status, refusal.message)
            except StorageError as exc:
                return refused(exc)
            except ShepardError as exc:
                return message(errors.status_of(exc), str(exc))
            if jobs.finished(record):
                return JSONResponse(record)
            left = deadline - time.monotonic()
            if left <= 0:
                return JSONResponse(record, status_code=202)
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 1.5, _POLL_MAX)

    def result(job_id: str, name: str) -> Response:
        record = jobs.job_status(flock, job_id)
        if record.get("status") == buckets.FAILED:
            details = record.get("error_details") or {}
            return message(500, str(details.get("message") or "the job failed"))
        if record.get("status") != buckets.DONE:
            return JSONResponse({"ready": False}, status_code=202)
        return stream_file(job_id, buckets.OUTPUTS, name, known=True)

    @api.get("/jobs/{job_id}/result", dependencies=read)
    def default_result(job_id: str) -> Response:
        return answer(lambda: result(job_id, jobs.DEFAULT_OUTPUT))

    @api.get("/jobs/{job_id}/result/{result_file:path}", dependencies=read)
    def named_result(job_id: str, result_file: str) -> Response:
        return answer(lambda: result(job_id, result_file))

    @api.get("/jobs/{job_id}/input", dependencies=read)
    def default_input(job_id: str) -> Response:
        return answer(lambda: stream_file(job_id, buckets.INPUTS, jobs.DEFAULT_INPUT))

    @api.get("/jobs/{job_id}/input/{input_file:path}", dependencies=read)
    def named_input(job_id: str, input_file: str) -> Response:
        return answer(lambda: stream_file(job_id, buckets.INPUTS, input_file))

    @api.get("/status", dependencies=read)
    def status() -> Response:
        return answer(lambda: JSONResponse({"sheep": jobs.sheep(flock)}))

    return api


async def read_json(request: Request, limit: int) -> object:
    """The body parsed as JSON, read as it arrives and refused (413) as soon as it exceeds
    `limit` bytes: held once, never copied whole before parsing."""
    kind = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if kind != "application/json" and not kind.endswith("+json"):
        raise jobs.Refusal(400, f"Unsupported content type `{kind}`: send application/json")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large(limit)
    try:
        return json.loads(body)
    except ValueError:
        raise jobs.Refusal(400, "The request body must be a JSON object") from None


def too_large(limit: int) -> jobs.Refusal:
    return jobs.Refusal(413, f"The request body is larger than {limit} bytes, the server's limit")


def stream_file(job_id: str, folder: str, name: str, *, known: bool = False) -> Response:
    """The object, streamed with its Content-Length; the type guessed from its name."""
    bucket, key, size = jobs.job_file(job_id, folder, name, known=known)
    reader_ = bucket.open_read(key)

    def chunks() -> Iterator[bytes]:
        with reader_:
            while data := reader_.read(CHUNK):
                yield data

    kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return StreamingResponse(chunks(), media_type=kind, headers={"Content-Length": str(size)})


def answer(make: Callable[[], Response]) -> Response:
    """`make()`, with refusals and storage errors as shepherd's `{"message": ...}`."""
    try:
        return make()
    except jobs.Refusal as refusal:
        return message(refusal.status, refusal.message)
    except StorageError as exc:
        return refused(exc)
    except ShepardError as exc:  # the catalog: busy or unreachable
        return message(errors.status_of(exc), str(exc))


def refused(exc: StorageError) -> Response:
    refusal = jobs.storage_refusal(exc)
    return message(refusal.status, refusal.message)


def message(status: int, text: str) -> JSONResponse:
    body: dict[str, Any] = {"message": text}
    return JSONResponse(body, status_code=status)
