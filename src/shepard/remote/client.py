"""A small HTTP client of the REST API (`/api/v1`), answering in the service layer's views."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

import httpx

from shepard.errors import CatalogError, JobNotFound, ShepardError
from shepard.remote import SERVER_ENV, TOKEN_ENV
from shepard.views import (
    ActionResult,
    CancelRequest,
    CountsView,
    JobDetail,
    JobPage,
    RetryRequest,
    SubmitRequest,
    SubmitResult,
)

API = "/api/v1"
CHUNK = 1 << 16
TIMEOUT = httpx.Timeout(30.0, connect=10.0)


class RemoteError(ShepardError):
    """The server refused a request or could not be reached."""


class Client:
    """The REST API of one server, with one token. Errors become ShepardErrors with the
    server's own message (404 → JobNotFound, 503 → CatalogError)."""

    def __init__(self, server: str, token: str | None, *, timeout: httpx.Timeout = TIMEOUT):
        if not server.startswith(("http://", "https://")):
            raise RemoteError(f"{SERVER_ENV}={server!r} is not a URL: use http(s)://HOST:PORT")
        if not token:
            raise RemoteError(
                f"{SERVER_ENV} is set but {TOKEN_ENV} is not: set it to a token made on the "
                "server's flock with `shepard token create NAME`"
            )
        self.server = server.rstrip("/")
        self._http = httpx.Client(
            base_url=self.server,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            follow_redirects=False,
        )

    @classmethod
    def from_env(cls) -> Client:
        return cls(os.environ.get(SERVER_ENV, ""), os.environ.get(TOKEN_ENV))

    def close(self) -> None:
        self._http.close()

    # -- plumbing ----------------------------------------------------------------------------

    def request(self, method: str, path: str, **options: Any) -> httpx.Response:
        try:
            answer = self._http.request(method, path, **options)
        except httpx.TransportError as exc:
            raise RemoteError(f"cannot reach the server at {self.server}: {exc}") from None
        check(answer)
        return answer

    @contextmanager
    def stream(self, method: str, path: str, **options: Any) -> Iterator[httpx.Response]:
        try:
            with self._http.stream(method, path, **options) as answer:
                if answer.is_error:
                    answer.read()
                    check(answer)
                yield answer
        except httpx.TransportError as exc:
            raise RemoteError(f"lost the server at {self.server}: {exc}") from None

    # -- the API -----------------------------------------------------------------------------

    def submit(self, request: SubmitRequest) -> SubmitResult:
        body = request.model_dump(mode="json", exclude_none=True)
        headers = {}
        if request.idempotency_key:
            headers["Idempotency-Key"] = body.pop("idempotency_key")
        answer = self.request("POST", f"{API}/jobs", json=body, headers=headers)
        return SubmitResult.model_validate(answer.json())

    def submit_bundle(self, path: Path, name: str) -> SubmitResult:
        with path.open("rb") as fh:
            answer = self.request(
                "POST", f"{API}/bundles", params={"name": name},
                files={"bundle": (name, fh, "application/zip")},
            )  # fmt: skip
        return SubmitResult.model_validate(answer.json())

    def jobs(self, **filters: Any) -> JobPage:
        query = {k: v for k, v in filters.items() if v is not None}
        return JobPage.model_validate(self.request("GET", f"{API}/jobs", params=query).json())

    def job(self, job_id: str) -> JobDetail:
        answer = self.request("GET", f"{API}/jobs/{_segment(job_id)}")
        return JobDetail.model_validate(answer.json())

    def counts(self, batch: str | None = None) -> CountsView:
        query = {"batch": batch} if batch else {}
        return CountsView.model_validate(self.request("GET", f"{API}/counts", params=query).json())

    def cancel(self, request: CancelRequest) -> ActionResult:
        body = request.model_dump(mode="json", exclude_none=True)
        return ActionResult.model_validate(self.request("POST", f"{API}/cancel", json=body).json())

    def retry(self, request: RetryRequest) -> ActionResult:
        body = request.model_dump(mode="json", exclude_none=True)
        return ActionResult.model_validate(self.request("POST", f"{API}/retry", json=body).json())

    def flock(self) -> dict[str, Any]:
        info: dict[str, Any] = self.request("GET", f"{API}/flock").json()
        return info

    # -- objects (server/objects.py) -----------------------------------------------------------

    def scan(self, store: str, prefix: str = "") -> Iterator[tuple[str, int]]:
        with self.stream("GET", f"{API}/objects/{store}", params={"prefix": prefix}) as answer:
            for line in answer.iter_lines():
                if line.strip():
                    item = json.loads(line)
                    yield item["key"], int(item["size"])

    def size(self, store: str, key: str) -> int:
        answer = self.request("HEAD", f"{API}/objects/{store}/{_path(key)}")
        return int(answer.headers["content-length"])

    @contextmanager
    def open_object(self, store: str, key: str, start: int = 0) -> Iterator[BinaryIO]:
        headers = {"Range": f"bytes={start}-"} if start else {}
        with self.stream("GET", f"{API}/objects/{store}/{_path(key)}", headers=headers) as answer:
            yield io.BufferedReader(_Body(answer), CHUNK)


class _Body(io.RawIOBase):
    """A streamed response body as a raw binary reader."""

    def __init__(self, answer: httpx.Response) -> None:
        self._chunks = answer.iter_bytes()
        self._left = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._left:
            self._left = next(self._chunks, b"")
        n = min(len(buffer), len(self._left))
        buffer[:n] = self._left[:n]
        self._left = self._left[n:]
        return n


def check(answer: httpx.Response) -> None:
    """Raise the error a failed answer stands for, with the server's message."""
    if not answer.is_error:
        return
    try:
        detail = answer.json().get("detail", answer.text)
    except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
        detail = answer.text.strip() or answer.reason_phrase
    if not isinstance(detail, str):  # FastAPI's validation errors: a list of problems
        detail = "; ".join(_problem(p) for p in detail) if isinstance(detail, list) else str(detail)
    code = answer.status_code
    if code == 404:
        raise JobNotFound(detail)
    if code == 401:
        raise RemoteError(f"the server refused the token ({detail}); check {TOKEN_ENV}")
    if code == 403:
        raise RemoteError(f"not allowed: {detail}")
    if code == 503:
        raise CatalogError(f"the server cannot answer now ({detail}); try again")
    if code >= 500:
        raise RemoteError(f"the server failed ({code}): {detail}")
    raise ShepardError(detail)


def _problem(problem: Any) -> str:
    if isinstance(problem, dict):
        where = ".".join(str(p) for p in problem.get("loc", ()) if p != "body")
        return f"{where}: {problem.get('msg', problem)}" if where else str(problem.get("msg"))
    return str(problem)


def _segment(text: str) -> str:
    return quote(text, safe="")


def _path(key: str) -> str:
    return "/".join(_segment(part) for part in key.split("/"))
