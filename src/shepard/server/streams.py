"""Streamed answers (downloads, logs) that free their thread when the client goes away.

Starlette runs a synchronous body iterator in its thread pool, one `next()` at a time, and
stops asking when the client disconnects, but it cannot interrupt a `next()` that waits (a
log followed while the job runs quietly). These bodies take a `stop` event, checked between
two polls; `StoppableStream` sets it however the response ends (sent, client gone, server
shutting down), so the thread is back in the pool within one poll.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import BinaryIO

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

CHUNK = 1 << 20
"""Bytes read from a store per chunk of a download."""


class StoppableStream(StreamingResponse):
    """A streamed response whose body iterator is told to stop (`stop`) when it ends."""

    def __init__(
        self,
        content: Iterator[bytes],
        stop: threading.Event,
        *,
        media_type: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(content, media_type=media_type, headers=headers)
        self.stop = stop

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.stop.set()


def file_chunks(fh: BinaryIO, stop: threading.Event, chunk: int = CHUNK) -> Iterator[bytes]:
    """The rest of `fh`, chunk by chunk, until its end or `stop`; closes it."""
    with fh:
        while not stop.is_set() and (data := fh.read(chunk)):
            yield data
