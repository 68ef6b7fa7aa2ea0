"""What the dashboard's buttons and forms do: cancel, retry, submit, upload, tokens.

Each route checks the session, its CSRF value and that the token may write (`Dashboard.acting`),
builds the same request model the REST API takes (CancelRequest, RetryRequest,
SubmitRequest) and calls the service method the API calls, then redirects back with a message
(`Accept: application/json` gets the view instead). Moving a form onto an `/api/v1` route is
changing its URL and its authentication, nothing else.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError

from shepard.errors import ShepardError
from shepard.model import JobStatus
from shepard.views import CancelRequest, RangeSpec, RetryRequest, SubmitRequest
from shepard.web.pages import flock_page
from shepard.web.ui import Dashboard

Ids = Annotated[list[str] | None, Form()]
Text = Annotated[str, Form()]


def add(r: APIRouter, ui: Dashboard) -> None:
    flock = ui.flock

    @r.post("/actions/cancel")
    def cancel(
        request: Request, ids: Ids = None, csrf: Text = "", back: Text = "/jobs"
    ) -> Response:
        ui.acting(request, csrf)
        try:
            req = CancelRequest(ids=ids or None)
        except ValidationError:
            return ui.back(back, "Select the jobs to cancel first.", error=True)
        done = flock.cancel_jobs(req.ids)
        return _answer(request, ui, back, done, f"Cancelled {_jobs(done.count)}.")

    @r.post("/actions/retry")
    def retry(request: Request, ids: Ids = None, csrf: Text = "", back: Text = "/jobs") -> Response:
        ui.acting(request, csrf)
        if not ids:
            return ui.back(back, "Select the jobs to retry first.", error=True)
        req = RetryRequest(ids=list(ids), statuses=[JobStatus.FAILED, JobStatus.CANCELLED])
        done = flock.retry_jobs(req.ids, statuses=req.statuses, extra_attempts=req.extra_attempts)
        skipped = len(ids) - done.count
        note = f" ({skipped} not failed or cancelled, left alone)" if skipped else ""
        return _answer(request, ui, back, done, f"Queued {_jobs(done.count)} again{note}.")

    @r.post("/actions/submit")
    def submit(
        request: Request,
        csrf: Text = "",
        params: Text = "",
        items: Text = "",
        item_key: Text = "NAME",
        range_name: Text = "",
        range_start: Text = "",
        range_end: Text = "",
        batch: Text = "",
        attempts: Text = "",
        timeout: Text = "",
    ) -> Response:
        ui.acting(request, csrf)
        try:
            req = _submit_request(
                params, items, item_key, range_name, range_start, range_end, batch, attempts,
                timeout,
            )  # fmt: skip
            done = flock.submit_request(req)
        except (ShepardError, ValueError) as exc:
            return ui.back("/submit", _message(exc), error=True)
        where = f"/jobs?batch={done.batch}"
        return _answer(request, ui, where, done, f"Submitted {_jobs(done.count)} as {done.batch}.")

    @r.post("/actions/upload")
    def upload(request: Request, bundle: UploadFile, csrf: Text = "", batch: Text = "") -> Response:
        ui.acting(request, csrf)
        name = (bundle.filename or "").rsplit("/", 1)[-1].rsplit("\\", 1)[-1]
        if not name.lower().endswith(".zip"):
            return ui.back("/submit", f"{name or 'that file'} is not a .zip bundle.", error=True)
        try:
            done = flock.submit_bundle_stream(bundle.file, name, batch=batch.strip() or None)
        except ShepardError as exc:
            return ui.back("/submit", _message(exc), error=True)
        return _answer(
            request, ui, f"/jobs/{done.ids[0]}", done, f"Bundle {name} submitted as one job."
        )

    @r.post("/actions/tokens")
    def create_token(
        request: Request, csrf: Text = "", name: Text = "", read_only: Text = ""
    ) -> Response:
        session = ui.acting(request, csrf)
        try:
            view, secret = flock.create_token(name.strip(), read_only=bool(read_only))
        except ShepardError as exc:
            return ui.back("/flock", _message(exc), error=True)
        # the secret is shown once, on this answer, never in a URL or a cookie
        return flock_page(ui, request, session, new_token=view, new_secret=secret)

    @r.post("/actions/tokens/revoke")
    def revoke_token(request: Request, csrf: Text = "", name: Text = "") -> Response:
        ui.acting(request, csrf)
        gone = flock.revoke_token(name)
        text = f"Token {name} revoked." if gone else f"There is no token {name}."
        return ui.back("/flock", text, error=not gone)


def _submit_request(
    params: str,
    items: str,
    item_key: str,
    range_name: str,
    range_start: str,
    range_end: str,
    batch: str,
    attempts: str,
    timeout: str,
) -> SubmitRequest:
    """The SubmitRequest a filled-in submit form stands for: shared parameters (a JSON object
    or KEY=VALUE lines), then a range, or work items (one job per line), or one job."""
    shared = _params(params)
    fields: dict[str, Any] = {
        "batch": batch.strip() or None,
        "attempts": int(attempts) if attempts.strip() else None,
        "timeout": float(timeout) if timeout.strip() else None,
    }
    lines = [line.strip() for line in items.splitlines() if line.strip()]
    if lines and range_name.strip():
        raise ShepardError("give work items or a range, not both")
    if lines:
        key = item_key.strip() or "NAME"
        return SubmitRequest(jobs=[{**shared, key: line} for line in lines], **fields)
    if range_name.strip():
        try:
            start, end = int(range_start), int(range_end)
        except ValueError:
            raise ShepardError("a range needs whole numbers for its start and end") from None
        spec = RangeSpec(name=range_name.strip(), start=start, end=end)
        return SubmitRequest(params=shared, range=spec, **fields)
    return SubmitRequest(params=shared, **fields)


def _params(text: str) -> dict[str, Any]:
    text = text.strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ShepardError(f"parameters are not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise ShepardError("parameters must be a JSON object")
        return value
    found: dict[str, Any] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ShepardError(f"parameters line {n}: write KEY=VALUE (or a JSON object)")
        found[key.strip()] = value.strip()
    return found


def _answer(request: Request, ui: Dashboard, where: str, view: BaseModel, text: str) -> Response:
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse(view.model_dump(mode="json"))
    return ui.back(where, text)


def _message(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(str(e.get("msg", e)).removeprefix("Value error, ") for e in exc.errors())
    return str(exc)


def _jobs(n: int) -> str:
    return f"{n} job" if n == 1 else f"{n:,} jobs"
