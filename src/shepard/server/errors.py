"""The project's errors as HTTP answers: JSON `{"detail": ...}` with an actionable status."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from shepard.catalog.base import IdempotencyConflict
from shepard.errors import CatalogError, CatalogMissing, JobNotFound, ShepardError
from shepard.views import CursorError


def status_of(exc: ShepardError) -> int:
    if isinstance(exc, JobNotFound):
        return 404
    if isinstance(exc, IdempotencyConflict):
        return 409
    if isinstance(exc, CatalogMissing | CursorError):
        return 503 if isinstance(exc, CatalogMissing) else 400
    if isinstance(exc, CatalogError):
        return 503  # busy or unreachable: worth retrying later
    return 400


def install(app: FastAPI) -> None:
    @app.exception_handler(ShepardError)
    async def _shepard_error(request: Request, exc: ShepardError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status_of(exc))
