"""The dashboard's shared parts: templates, sessions, flash messages, static files.

One `Dashboard` per app (made by `router`), holding no process-wide state: its templates,
the signer of its cookies and the caches of the live views belong to it alone.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from fastapi import HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from itsdangerous import BadSignature, URLSafeSerializer
from jinja2 import Environment, PackageLoader, select_autoescape

from shepard.web import present
from shepard.web.session import COOKIE, MAX_AGE, Session, Signer, load_key, same

if TYPE_CHECKING:
    from shepard.flock import Flock
    from shepard.server.settings import ServeSettings

FLASH = "shepard_flash"
STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


class Dashboard:
    """What every dashboard route needs: the flock, its settings, templates and cookies."""

    def __init__(self, flock: Flock, settings: ServeSettings) -> None:
        self.flock = flock
        self.settings = settings
        self.signer = Signer(load_key(flock.dir.folder))
        self._flash = URLSafeSerializer(load_key(flock.dir.folder), salt="shepard-flash")
        self.env = Environment(
            loader=PackageLoader("shepard.web", "templates"),
            autoescape=select_autoescape(default=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(
            item=present.work_item, duration=present.duration, size=present.size,
            chart=present.chart,
        )  # fmt: skip
        self.assets = _load_assets()
        self.env.globals["asset"] = lambda name: f"/static/{name}?v={self.assets[name].etag}"
        from shepard.web.live import Overview

        self.overview = Overview(self)

    # -- sessions ---------------------------------------------------------------------------

    def session(self, request: Request) -> Session | None:
        """The signed-in token of this request, or None (no cookie, bad signature, expired,
        or the token was revoked since)."""
        found = self.signer.read_session(request.cookies.get(COOKIE))
        if found is None:
            return None
        digest, csrf = found
        token = self.flock.verify_token_digest(digest)
        if token is None:
            return None
        return Session(name=token.name, read_only=token.read_only, csrf=csrf, digest=digest)

    def to_signin(self, request: Request) -> RedirectResponse:
        """Where a page sends a request without a session (back here after signing in)."""
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/signin?next={quote(target, safe='')}", status.HTTP_303_SEE_OTHER)

    def acting(self, request: Request, csrf: str) -> Session:
        """The session of a request that changes something: 401 without one, 403 for a
        read-only token or a missing or wrong CSRF value."""
        session = self.session(request)
        if session is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "sign in first")
        sent = csrf or request.headers.get("x-csrf-token", "")
        if not sent or not same(sent, session.csrf):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "bad or missing CSRF token: reload")
        if session.read_only:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"token {session.name!r} is read-only")
        return session

    def set_session(self, response: Response, digest: str) -> None:
        value, _csrf = self.signer.session_cookie(digest)
        response.set_cookie(
            COOKIE, value, max_age=MAX_AGE, httponly=True, samesite="strict",
            secure=self.settings.tls, path="/",
        )  # fmt: skip

    def clear_session(self, response: Response) -> None:
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")

    # -- rendering --------------------------------------------------------------------------

    def render(
        self,
        request: Request,
        template: str,
        session: Session | None,
        *,
        status_code: int = 200,
        **context: Any,
    ) -> HTMLResponse:
        flash = self._read_flash(request)
        html = self.env.get_template(template).render(
            request=request, session=session, flock_name=self.flock.config.name,
            flash=flash, path=request.url.path, **context,
        )  # fmt: skip
        response = HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)
        response.headers["Cache-Control"] = "no-store"
        if flash is not None:
            response.delete_cookie(FLASH, path="/")
        return response

    def fragment(self, template: str, **context: Any) -> str:
        return self.env.get_template(template).render(**context)

    def back(self, where: str, message: str, *, error: bool = False) -> RedirectResponse:
        """303 to `where` (a path of this site, else `/`) with a message shown once."""
        if not where.startswith("/") or where.startswith("//") or "\\" in where:
            where = "/"
        response = RedirectResponse(where, status.HTTP_303_SEE_OTHER)
        value = self._flash.dumps({"m": message[:2000], "e": error})
        response.set_cookie(FLASH, value, httponly=True, samesite="strict", path="/", max_age=60)
        return response

    def _read_flash(self, request: Request) -> dict[str, Any] | None:
        raw = request.cookies.get(FLASH)
        if not raw:
            return None
        try:
            data = self._flash.loads(raw)
        except BadSignature:
            return None
        return data if isinstance(data, dict) else None


def _load_assets() -> dict[str, Asset]:
    """The static files shipped in the package, read once."""
    found = {}
    for entry in resources.files("shepard.web").joinpath("static").iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in STATIC_TYPES:
            body = entry.read_bytes()
            etag = hashlib.sha256(body).hexdigest()[:12]
            found[entry.name] = Asset(body, STATIC_TYPES[suffix], etag)
    return found
