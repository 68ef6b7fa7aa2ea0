"""Streamed answers (downloads, logs) that free their thread when the client goes away.

A synchronous body iterator is pulled one `next()` at a time in a worker thread, and nothing
can interrupt a `next()` that waits (a log followed while the job runs quietly). These bodies
take a `stop` event, checked between two polls; `StoppableStream` sets it however the response
ends (sent, client gone, server shutting down), so the thread is free within one poll.

Their threads come from a pool of their own (`STREAMS` at once, per application), not from
the one that runs the routes: a hundred dashboards following logs must not leave no thread
to answer a submission.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import BinaryIO

import anyio
from anyio import CapacityLimiter, to_thread
from starlette.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

CHUNK = 1 << 20
"""Bytes read from a store per chunk of a download."""
STREAMS = 256
"""Threads that streamed bodies may use at once, per application (more streams wait)."""
_DONE = object()


def stream_limiter() -> CapacityLimiter:
    """The thread budget of one application's streams (kept in its state)."""
    return CapacityLimiter(STREAMS)


async def pulled(content: Iterator[bytes], limiter: CapacityLimiter) -> AsyncIterator[bytes]:
    """`content`, each `next()` run in a thread counted by `limiter`."""
    while True:
        chunk = await to_thread.run_sync(next, content, _DONE, limiter=limiter)
        if chunk is _DONE:
            return
        assert isinstance(chunk, bytes)
        yield chunk


class StoppableStream(StreamingResponse):
    """A streamed response whose body iterator is told to stop (`stop`) when it ends."""

    def __init__(
        self,
        content: Iterator[bytes],
        stop: threading.Event,
        limiter: CapacityLimiter,
        *,
        media_type: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(pulled(content, limiter), media_type=media_type, headers=headers)
        self.stop = stop

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Starlette notices a client gone only when a send fails (ASGI 2.4 servers), and a
        # quiet log sends nothing: listen for the disconnect here, for every server
        async with anyio.create_task_group() as tasks:

            async def watch() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                self.stop.set()
                tasks.cancel_scope.cancel()

            tasks.start_soon(watch)
            try:
                await super().__call__(scope, _never, send)
            finally:
                self.stop.set()
                tasks.cancel_scope.cancel()


async def _never() -> Message:
    """A receive channel with nothing in it (the disconnect is `StoppableStream`'s to hear)."""
    await anyio.sleep_forever()
    raise AssertionError("unreachable")


def file_chunks(fh: BinaryIO, stop: threading.Event, chunk: int = CHUNK) -> Iterator[bytes]:
    """The rest of `fh`, chunk by chunk, until its end or `stop`; closes it."""
    with fh:
        while not stop.is_set() and (data := fh.read(chunk)):
            yield data
