"""The dashboard's router: its pages, actions, live streams and static files."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import Response

from shepard.web import actions, live, pages
from shepard.web.ui import Dashboard

if TYPE_CHECKING:
    from shepard.flock import Flock
    from shepard.server.settings import ServeSettings


def router(flock: Flock, settings: ServeSettings) -> APIRouter:
    """Every dashboard route for `flock` (pages at /, /jobs, /jobs/{id}, /submit, /flock)."""
    ui = Dashboard(flock, settings)
    r = APIRouter(include_in_schema=False)

    @r.get("/static/{name}")
    def static(request: Request, name: str) -> Response:
        asset = ui.assets.get(name)
        if asset is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no asset {name}")
        etag = f'"{asset.etag}"'
        headers = {"ETag": etag, "Cache-Control": "public, max-age=86400"}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
        return Response(asset.body, media_type=asset.media_type, headers=headers)

    pages.add(r, ui)
    actions.add(r, ui)
    live.add(r, ui)
    return r
