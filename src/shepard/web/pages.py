"""The dashboard's pages: sign-in, overview, jobs, one job, submit, flock. Each is rendered on
the server from the service layer; a request without a session is sent to sign in."""

from __future__ import annotations

import json
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Query, Request, status
from fastapi.responses import RedirectResponse, Response, StreamingResponse

from shepard import tokens
from shepard.errors import JobNotFound, ShepardError
from shepard.model import JobStatus
from shepard.views import MAX_PAGE, CursorError
from shepard.web.session import PRE_COOKIE, Session
from shepard.web.ui import Dashboard

PAGE_SIZES = (25, 50, 100, 200)
RETRYABLE = (JobStatus.FAILED, JobStatus.CANCELLED)


def add(r: APIRouter, ui: Dashboard) -> None:
    flock = ui.flock

    @r.get("/signin")
    def signin_page(request: Request, next: str = "/") -> Response:
        cookie, nonce = ui.signer.signin_cookie()
        response = ui.render(request, "signin.html", None, nonce=nonce, next=_local(next))
        response.set_cookie(
            PRE_COOKIE, cookie, httponly=True, samesite="strict", secure=ui.settings.tls,
            path="/signin", max_age=3600,
        )  # fmt: skip
        return response

    @r.post("/signin")
    def signin(
        request: Request,
        token: Annotated[str, Form()] = "",
        nonce: Annotated[str, Form()] = "",
        next: Annotated[str, Form()] = "/",
    ) -> Response:
        if not ui.signer.signin_ok(request.cookies.get(PRE_COOKIE), nonce):
            again = f"/signin?next={quote(_local(next), safe='')}"
            return ui.back(again, "The form expired: try again.", error=True)
        secret = token.strip()
        view = flock.verify_token(secret) if secret else None
        if view is None:
            cookie, fresh = ui.signer.signin_cookie()
            response = ui.render(
                request, "signin.html", None, status_code=status.HTTP_401_UNAUTHORIZED,
                nonce=fresh, next=_local(next),
                error="Unknown or revoked token. Make one with `shepard token create NAME`.",
            )  # fmt: skip
            response.set_cookie(
                PRE_COOKIE, cookie, httponly=True, samesite="strict", secure=ui.settings.tls,
                path="/signin", max_age=3600,
            )  # fmt: skip
            return response
        done = RedirectResponse(_local(next), status.HTTP_303_SEE_OTHER)
        ui.set_session(done, tokens.digest(secret))
        done.delete_cookie(PRE_COOKIE, path="/signin")
        return done

    @r.post("/signout")
    def signout() -> Response:
        # SameSite=Strict keeps other sites from posting here with the cookie; signing out
        # needs no more than that
        response = RedirectResponse("/signin", status.HTTP_303_SEE_OTHER)
        ui.clear_session(response)
        return response

    @r.get("/")
    def overview(request: Request) -> Response:
        session = ui.session(request)
        if session is None:
            return ui.to_signin(request)
        from shepard.web.live import overview_context

        return ui.render(request, "overview.html", session, **overview_context(ui))

    @r.get("/jobs")
    def jobs(
        request: Request,
        status_: Annotated[str, Query(alias="status")] = "",
        batch: str = "",
        tag: str = "",
        item: str = "",
        q: str = "",
        order: str = "newest",
        cursor: str = "",
        limit: int = 50,
    ) -> Response:
        session = ui.session(request)
        if session is None:
            return ui.to_signin(request)
        filters = {"status": status_, "batch": batch, "tag": tag, "item": item, "q": q}
        filters = {k: v.strip() for k, v in filters.items()}
        limit = limit if limit in PAGE_SIZES else 50
        error, page = None, None
        try:
            page = flock.jobs(
                status=filters["status"] or None, batch=filters["batch"] or None,
                tag=filters["tag"] or None, param=_item_filter(filters["item"]),
                text=filters["q"] or None, limit=min(limit, MAX_PAGE),
                cursor=cursor or None, newest_first=order != "oldest",
            )  # fmt: skip
        except (CursorError, ShepardError) as exc:
            error = str(exc)
        return ui.render(
            request, "jobs.html", session, page=page, error=error, filters=filters,
            order="oldest" if order == "oldest" else "newest", limit=limit,
            statuses=[s.value for s in JobStatus], sizes=PAGE_SIZES, cursor=cursor,
            status_code=400 if error else 200,
        )  # fmt: skip

    @r.get("/jobs/{job_id}")
    def job(request: Request, job_id: str) -> Response:
        session = ui.session(request)
        if session is None:
            return ui.to_signin(request)
        try:
            detail = flock.job_detail(job_id)
        except JobNotFound:
            return ui.render(
                request, "missing.html", session, status_code=404,
                what=f"No job {job_id} in this flock.",
            )  # fmt: skip
        return ui.render(
            request, "job.html", session, d=detail, payload=flock.config.payload,
            retryable=detail.job.status in RETRYABLE,
        )  # fmt: skip

    @r.get("/jobs/{job_id}/outputs/{key:path}")
    def download(request: Request, job_id: str, key: str) -> Response:
        session = ui.session(request)
        if session is None:
            return ui.to_signin(request)
        known = {o.key: o for o in flock.outputs(job_id)}
        if key not in known:
            raise JobNotFound(f"job {job_id} has no output {key!r}")
        stream = flock.open_output(job_id, key)

        def chunks() -> object:
            with stream:
                while block := stream.read(1 << 16):
                    yield block

        name = key.rsplit("/", 1)[-1].replace('"', "")
        return StreamingResponse(
            chunks(),  # type: ignore[arg-type]
            media_type="application/zip" if name.endswith(".zip") else "application/octet-stream",
            headers={
                "Content-Disposition": f'attachment; filename="{name}"',
                "Content-Length": str(known[key].size),
            },
        )

    @r.get("/submit")
    def submit_page(request: Request) -> Response:
        session = ui.session(request)
        if session is None:
            return ui.to_signin(request)
        return ui.render(request, "submit.html", session, inbox=flock.inbox(limit=0))

    @r.get("/flock")
    def flock_settings(request: Request) -> Response:
        session = ui.session(request)
        if session is None:
            return ui.to_signin(request)
        return flock_page(ui, request, session)


def flock_page(ui: Dashboard, request: Request, session: Session, **extra: Any) -> Response:
    flock = ui.flock
    view = flock.describe()
    return ui.render(
        request, "flock.html", session, view=view,
        config_text=json.dumps(view.config, indent=2, sort_keys=True),
        tokens=None if session.read_only else flock.list_tokens(),
        inbox=flock.inbox(limit=100), **extra,
    )  # fmt: skip


def _item_filter(item: str) -> tuple[str, str] | None:
    """`KEY=VALUE` filters on that parameter; a bare value on the NAME parameter."""
    if not item:
        return None
    key, sep, value = item.partition("=")
    return (key.strip(), value.strip()) if sep and key.strip() else ("NAME", item)


def _local(target: str) -> str:
    """`target` if it is a path of this site, else `/` (no open redirects)."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
