"""Read access to the flock's result, error and log objects, by key (`/api/v1/objects`).

What the CLI's remote mode reads through (`shepard retrieve` lists and copies every result;
`shepard logs -f` reads a growing log from an offset), so it works against any store a
server has, folder or S3. Only the `outputs`, `errors` and `logs` stores are exposed, read
only; the keys are checked by the store as for every other caller.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Request, Response
from fastapi.responses import StreamingResponse

from shepard.server.auth import Reader, flock_of
from shepard.storage import ObjectStore
from shepard.storage.base import NoSuchObject

READABLE = ("outputs", "errors", "logs")
CHUNK = 1 << 16


def _store(request: Request, name: str) -> ObjectStore:
    if name not in READABLE:
        raise HTTPException(404, f"no store {name!r} here: use one of {', '.join(READABLE)}")
    return flock_of(request).store(name)


def _start(header: str | None) -> int:
    """The first byte of an open `Range: bytes=N-` header (0 without one)."""
    if not header:
        return 0
    unit, _, spec = header.partition("=")
    first, dash, last = spec.partition("-")
    if unit.strip() != "bytes" or not dash or last.strip() or not first.strip().isdigit():
        raise HTTPException(416, "only open ranges are served: `Range: bytes=N-`")
    return int(first)


MISSING: dict[int | str, dict[str, Any]] = {404: {"description": "No such store or object"}}
RANGE: dict[int | str, dict[str, Any]] = {
    **MISSING,
    416: {"description": "A range other than an open `bytes=N-`"},
}


def router() -> APIRouter:
    api = APIRouter(prefix="/api/v1/objects", tags=["objects"])

    @api.get(
        "/{store}",
        summary="List a store's objects (JSON lines of key and size)",
        responses=MISSING,
    )
    def listing(request: Request, store: str, _token: Reader, prefix: str = "") -> Response:
        found = _store(request, store)

        def lines() -> Iterator[bytes]:
            for info in found.scan(prefix):
                yield (json.dumps({"key": info.key, "size": info.size}) + "\n").encode()

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    @api.head("/{store}/{key:path}", summary="An object's size", responses=MISSING)
    def head(request: Request, store: str, key: str, _token: Reader) -> Response:
        try:
            info = _store(request, store).stat(key)
        except NoSuchObject:
            raise HTTPException(404, f"no object {key!r} in {store}") from None
        return Response(headers={"Content-Length": str(info.size), "Accept-Ranges": "bytes"})

    @api.get(
        "/{store}/{key:path}",
        summary="An object, streamed (open byte ranges served)",
        responses=RANGE,
    )
    def get(
        request: Request,
        store: str,
        key: str,
        _token: Reader,
        range_: Annotated[str | None, Header(alias="range")] = None,
    ) -> Response:
        found, start = _store(request, store), _start(range_)
        try:
            size = found.stat(key).size
            reader = found.open_read(key, start=min(start, size))
        except NoSuchObject:
            raise HTTPException(404, f"no object {key!r} in {store}") from None

        def body() -> Iterator[bytes]:
            with reader:
                while chunk := reader.read(CHUNK):
                    yield chunk

        headers = {"Content-Length": str(max(size - start, 0)), "Accept-Ranges": "bytes"}
        if range_:
            headers["Content-Range"] = f"bytes {start}-{max(size - 1, start)}/{size}"
        return StreamingResponse(
            body(),
            status_code=206 if range_ else 200,
            media_type="application/octet-stream",
            headers=headers,
        )

    return api
