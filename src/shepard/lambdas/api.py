"""The API function, behind the stack's function URL (IAM auth): Lambda function URL events,
payload format 2.0 (`requestContext.http.method`, `rawPath`, `rawQueryString`, `body`,
`isBase64Encoded`).

- `POST /jobs`: parameter-only jobs, as `POST /api/v1/jobs` of `shepard serve` takes them
  (views.SubmitRequest: `{"params": {...}}`, `{"jobs": [{...}, ...]}`, `{"range": {"name":
  "ITEM", "start": 1, "end": 100}, "params": {...}}`, with `batch`, `attempts`, `timeout`,
  `idempotency_key`), plus a range written as the CLI's `"ITEM=1-100"` and `tag` (the TAG
  parameter of every job). Answers 201 with views.SubmitResult: the new jobs' ids, their
  batch, their count. Then the scheduler is kicked (the dispatch message on the events
  queue), so the jobs reach Batch within seconds.
- `GET /jobs` (`status`, `batch`, `tag`, `limit`, `cursor`, `order`): views.JobPage.
- `GET /jobs/{id}`: views.JobDetail.

Errors are JSON `{"detail": "..."}`: 400 (a bad request: the message says what to change),
404 (no such job or route), 405, 409 (an idempotency key reused for another request), 413
(a body over MAX_BODY), 422 (a body that does not fit the request's model), 503 (the catalog
is busy or unreachable).
"""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

from pydantic import BaseModel, ValidationError

from shepard.errors import ParamsError, ShepardError
from shepard.flock import Flock
from shepard.httpstatus import status_of
from shepard.lambdas.common import kick, open_flock, setup_logging
from shepard.model import JobStatus
from shepard.views import MAX_PAGE, SubmitRequest

log = logging.getLogger("shepard.lambdas.api")

MAX_BODY = 6 * 1024 * 1024
"""Largest request body taken, in bytes (a function URL's own limit is 6 MB)."""


class HttpError(Exception):
    """An answer other than 2xx, with its status and message."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(str(detail))
        self.status, self.detail = status, detail


def handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """The function's entry point (module docstring)."""
    setup_logging()
    http = (event.get("requestContext") or {}).get("http") or {}
    method = str(http.get("method") or "GET").upper()
    path = "/" + str(event.get("rawPath") or http.get("path") or "/").strip("/")
    try:
        return route(method, path, event)
    except HttpError as exc:
        return answer(exc.status, {"detail": exc.detail})
    except ValidationError as exc:
        return answer(422, {"detail": json.loads(exc.json(include_url=False))})
    except ShepardError as exc:
        return answer(status_of(exc), {"detail": str(exc)})


def route(method: str, path: str, event: Mapping[str, Any]) -> dict[str, Any]:
    parts = [p for p in path.split("/") if p]
    if parts[:1] != ["jobs"] or len(parts) > 2:
        raise HttpError(404, f"no route {path}: POST /jobs, GET /jobs, GET /jobs/{{id}}")
    allowed = "POST, GET" if len(parts) == 1 else "GET"
    if method not in allowed.split(", "):
        raise HttpError(405, f"{method} is not allowed on {path} (allowed: {allowed})")
    flock = open_flock(os.environ)
    if len(parts) == 2:
        return answer(200, flock.job_detail(parts[1]))
    if method == "GET":
        return answer(200, list_jobs(flock, query(event)))
    return answer(201, submit(flock, read_body(event)))


def submit(flock: Flock, body: Any) -> BaseModel:
    """Register the jobs of a POST /jobs body; kick the scheduler."""
    request = SubmitRequest.model_validate(submit_fields(body))
    result = flock.submit_request(request)
    if not result.replayed:
        queue = os.environ.get("SHEPARD_EVENTS_QUEUE", "")
        try:
            kick(queue)
        except Exception as exc:  # the jobs are registered: the reconciler hands them over
            log.warning("could not kick the scheduler (%s): the reconciler's next round "
                        "hands the jobs over", exc)  # fmt: skip
    log.info("submitted %d job(s) in batch %s", result.count, result.batch)
    return result


def submit_fields(body: Any) -> dict[str, Any]:
    """The body as SubmitRequest's fields: a range given as `NAME=START-END` and `tag`
    turned into theirs."""
    if not isinstance(body, dict):
        raise HttpError(422, "the body must be a JSON object")
    fields = dict(body)
    if isinstance(fields.get("range"), str):
        fields["range"] = parse_range(fields["range"])
    tag = fields.pop("tag", None)
    if tag is not None:
        if not isinstance(tag, str) or not tag:
            raise HttpError(422, "`tag` must be a non-empty string")
        if isinstance(fields.get("jobs"), list):
            fields["jobs"] = [
                {**job, "TAG": tag} if isinstance(job, dict) else job for job in fields["jobs"]
            ]
        else:
            fields["params"] = {**(fields.get("params") or {}), "TAG": tag}
    return fields


def parse_range(text: str) -> dict[str, Any]:
    name, _, span = text.partition("=")
    start, sep, end = span.partition("-")
    if not name or not sep or not start.strip().isdigit() or not end.strip().isdigit():
        raise ParamsError(f"range {text!r}: expected NAME=START-END, e.g. ITEM=1-100")
    return {"name": name, "start": int(start), "end": int(end)}


def list_jobs(flock: Flock, params: dict[str, str]) -> BaseModel:
    unknown = set(params) - {"status", "batch", "tag", "limit", "cursor", "order"}
    if unknown:
        raise HttpError(400, f"unknown query parameter(s): {', '.join(sorted(unknown))}")
    status = params.get("status")
    try:
        limit = int(params.get("limit", "50"))
        parsed = JobStatus(status.lower()) if status else None
    except ValueError:
        raise HttpError(400, "limit must be a whole number and status a job status "
                        f"({', '.join(s.value for s in JobStatus)})") from None  # fmt: skip
    if not 1 <= limit <= MAX_PAGE:
        raise HttpError(400, f"limit must be 1 to {MAX_PAGE}")
    order = params.get("order", "newest")
    if order not in ("newest", "oldest"):
        raise HttpError(400, "order must be newest or oldest")
    return flock.jobs(
        status=parsed, batch=params.get("batch"), tag=params.get("tag"), limit=limit,
        cursor=params.get("cursor"), newest_first=order == "newest",
    )  # fmt: skip


def query(event: Mapping[str, Any]) -> dict[str, str]:
    """The query string's parameters (the last value of a repeated one)."""
    parsed = parse_qs(str(event.get("rawQueryString") or ""), keep_blank_values=False)
    return {key: values[-1] for key, values in parsed.items()}


def read_body(event: Mapping[str, Any]) -> Any:
    raw = event.get("body") or ""
    data = raw.encode() if isinstance(raw, str) else bytes(raw)
    if event.get("isBase64Encoded"):
        try:
            data = base64.b64decode(data, validate=True)
        except ValueError:
            raise HttpError(400, "the body is not valid base64") from None
    if len(data) > MAX_BODY:
        raise HttpError(413, f"the body has {len(data)} bytes; at most {MAX_BODY} are taken")
    if not data.strip():
        raise HttpError(400, "the body is empty: send a JSON object")
    try:
        return json.loads(data)
    except ValueError as exc:
        raise HttpError(400, f"the body is not JSON: {exc}") from None


def answer(status: int, body: Any) -> dict[str, Any]:
    """A function URL response: JSON, views as the REST API serialises them."""
    text = body.model_dump_json() if isinstance(body, BaseModel) else json.dumps(body)
    return {"statusCode": status, "headers": {"content-type": "application/json"}, "body": text}
