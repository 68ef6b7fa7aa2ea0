"""The app factory: one FastAPI application serving one flock."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI

from shepard import __version__
from shepard.server import errors
from shepard.server.settings import ServeSettings
from shepard.web import router as dashboard

if TYPE_CHECKING:
    from shepard.flock import Flock

API = "/api/v1"


def create_app(flock: Flock, settings: ServeSettings | None = None) -> FastAPI:
    """The application for `flock`: health, the REST API under /api/v1 (and, when asked,
    shepherd's routes and the dashboard). The caller owns the flock (and closes it)."""
    settings = settings or ServeSettings()
    app = FastAPI(
        title=f"Shepard: {flock.config.name}",
        version=__version__,
        openapi_url=f"{API}/openapi.json",
        docs_url=f"{API}/docs",
        redoc_url=None,
    )
    app.state.flock = flock
    app.state.settings = settings
    errors.install(app)

    app.include_router(dashboard(flock, settings))

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """Liveness, without auth: 200 while the server answers."""
        return {"status": "ok"}

    return app
