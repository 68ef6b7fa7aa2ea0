"""Request size limits, enforced before a body is read into memory.

A request whose Content-Length is over the limit is refused with 413 at once, its body never
read. A body sent without a length (chunked) is counted as it arrives and refused with 413
as soon as it passes the limit, so a route that streams a body to disk (bundles) never holds
more than one chunk of it, and one that parses it (JSON) never more than the limit.
"""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int, size: int | None = None) -> None:
        said = f" of {size:,} bytes" if size is not None else ""
        super().__init__(
            413,
            f"request body{said} is over this server's limit of {limit:,} bytes "
            "(`shepard serve --max-body`)",
        )


class BodyLimit:
    """ASGI middleware: at most `limit` bytes of body per HTTP request."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        api = str(scope.get("path", "")).startswith("/api/")
        if declared == -1:
            await _answer(send, 400, "invalid Content-Length header", api)
            return
        if declared is not None and declared > self.limit:
            await _answer(send, 413, BodyTooLarge(self.limit, declared).detail, api)
            return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge as exc:  # raised where no exception handler caught it
            if started:
                raise
            await _answer(send, 413, exc.detail, api)


def _content_length(scope: Scope) -> int | None:
    """The declared body length; None when not given, -1 when malformed."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return -1
            return length if length >= 0 else -1
    return None


async def _answer(send: Send, status: int, detail: str, api: bool) -> None:
    """A JSON refusal: `{"detail": ...}` on the REST API; elsewhere (shepherd's routes, whose
    clients read `message`, and the dashboard) with `message` too."""
    answer = {"detail": detail} if api else {"detail": detail, "message": detail}
    body = json.dumps(answer).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
