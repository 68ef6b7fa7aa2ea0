"""Live parts of the dashboard, as server-sent events: the overview, a job's status and its
log tail. The browser's EventSource reconnects by itself, so each stream ends after
`STREAM_LIFE` seconds (a server can then stop without waiting on open streams).

What the overview shows is computed at most once per `Paced` interval and shared by every
open page, so that ten open dashboards cost what one does; the interval grows with what a
computation costs (a tenth of the time at most, as `PacedCounts` does for the CLI).
"""

from __future__ import annotations

import codecs
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Generic, TypeVar

import anyio
from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import StreamingResponse

from shepard.errors import JobNotFound
from shepard.model import JobStatus
from shepard.web.ui import Dashboard

T = TypeVar("T")
STREAM_LIFE = 25.0
TICK = 0.25
"""Seconds between two looks at a cached value by an open stream."""
TAIL = 64 << 10
"""Bytes of a log shown when a page opens on it (its end)."""
SSE_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


class Paced(Generic[T]):
    """A value recomputed when asked, at most every max(`floor`, `share` x its cost) seconds."""

    def __init__(self, compute: Callable[[], T], floor: float, share: float = 10) -> None:
        self._compute, self._floor, self._share = compute, floor, share
        self._lock = threading.Lock()
        self._value: T | None = None
        self._at, self._cost = float("-inf"), 0.0

    def get(self) -> T:
        with self._lock:
            if self._value is not None and time.monotonic() - self._at < max(
                self._floor, self._share * self._cost
            ):
                return self._value
            began = time.monotonic()
            self._value = self._compute()
            self._at, self._cost = began, time.monotonic() - began
            return self._value


class Overview:
    """The overview's parts, each paced on its own: counts and running work fast, the
    throughput, batches and inbox more slowly."""

    def __init__(self, ui: Dashboard) -> None:
        flock = ui.flock
        live = flock.live_counts()
        self.counts = Paced(live.get, 0.2, share=0)  # LiveCounts paces its full counts
        self.running = Paced(flock.running, 0.5)
        self.batches = Paced(flock.batches, 1.0)
        self.throughput = Paced(lambda: flock.throughput(remaining=self._left()), 2.0)
        self.inbox = Paced(lambda: flock.inbox(limit=0), 5.0)

    def _left(self) -> int:
        counts = self.counts.get().counts
        return counts[JobStatus.QUEUED] + counts[JobStatus.RUNNING]


def overview_context(ui: Dashboard) -> dict[str, Any]:
    o = ui.overview
    flock = ui.flock
    return {
        "counts": o.counts.get(), "running": o.running.get(), "batches": o.batches.get(),
        "throughput": o.throughput.get(), "inbox": o.inbox.get(),
        "backend": flock.config.backend.kind, "workers": flock.config.backend.workers,
        "statuses": list(JobStatus),
    }  # fmt: skip


def add(r: APIRouter, ui: Dashboard) -> None:
    flock = ui.flock

    @r.get("/live/overview")
    async def live_overview(request: Request) -> StreamingResponse:
        await _signed_in(ui, request)

        def render() -> str:
            return ui.fragment("_overview_live.html", **overview_context(ui))

        return _stream(request, _changes(request, render))

    @r.get("/live/jobs/{job_id}")
    async def live_job(request: Request, job_id: str) -> StreamingResponse:
        session = await _signed_in(ui, request)

        def render() -> str:
            detail = flock.job_detail(job_id)
            return ui.fragment("_job_live.html", d=detail, session=session)

        try:
            await anyio.to_thread.run_sync(flock.get_job, job_id)
        except JobNotFound:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id}") from None
        return _stream(request, _changes(request, render, every=0.5))

    @r.get("/live/jobs/{job_id}/log")
    async def live_log(request: Request, job_id: str, stream: str = "stdout") -> StreamingResponse:
        await _signed_in(ui, request)
        if stream not in ("stdout", "stderr"):
            raise HTTPException(status.HTTP_400_BAD_REQUEST, "stream is stdout or stderr")
        try:
            await anyio.to_thread.run_sync(flock.get_job, job_id)
        except JobNotFound:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id}") from None
        return _stream(request, _log_events(ui, request, job_id, stream))


async def _signed_in(ui: Dashboard, request: Request) -> Any:
    session = await anyio.to_thread.run_sync(ui.session, request)
    if session is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "sign in first")
    return session


def _stream(request: Request, events: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)


def event(name: str, data: str) -> str:
    """One server-sent event; every line of `data` gets its own `data:` field."""
    lines = "".join(f"data: {line}\n" for line in data.split("\n"))
    return f"event: {name}\n{lines}\n"


async def _changes(
    request: Request, render: Callable[[], str], *, every: float = TICK
) -> AsyncIterator[str]:
    """An `html` event whenever what `render` makes changes, until the stream's life ends."""
    yield "retry: 1000\n\n"
    last, began = None, time.monotonic()
    while time.monotonic() - began < STREAM_LIFE:
        try:
            html = await anyio.to_thread.run_sync(render)
        except JobNotFound:
            return
        if html != last:
            last = html
            yield event("html", html)
        if await request.is_disconnected():
            return
        await anyio.sleep(every)


async def _log_events(
    ui: Dashboard, request: Request, job_id: str, stream: str
) -> AsyncIterator[str]:
    """The log of the job's current attempt: its last `TAIL` bytes, then what it writes.
    Events: `attempt` (the attempt shown, the text starts over), `chunk` (JSON text to
    append), `end` (the attempt is over and every byte was sent)."""
    flock = ui.flock
    yield "retry: 1000\n\n"
    began = time.monotonic()
    shown, offset = 0, 0
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    while time.monotonic() - began < STREAM_LIFE:
        job = await anyio.to_thread.run_sync(flock.get_job, job_id)
        if job.attempt == 0:
            if job.status.terminal:
                yield event("end", json.dumps("never ran"))
                return
        else:
            if job.attempt != shown:
                shown = job.attempt
                size = await anyio.to_thread.run_sync(flock.log_size, job_id, shown, stream)
                offset = max(0, size - TAIL)
                decoder = codecs.getincrementaldecoder("utf-8")("replace")
                yield event("attempt", json.dumps({"attempt": shown, "skipped": offset}))
            over = job.attempt != shown or job.status is not JobStatus.RUNNING
            while True:
                chunk = await anyio.to_thread.run_sync(
                    flock.read_log, job_id, shown, stream, offset
                )
                if not chunk:
                    break
                offset += len(chunk)
                yield event("chunk", json.dumps(decoder.decode(chunk)))
            if over and job.status.terminal:
                yield event("end", json.dumps(job.status.value))
                return
        if await request.is_disconnected():
            return
        await anyio.sleep(0.3)
