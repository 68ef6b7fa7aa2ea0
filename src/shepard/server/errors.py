"""The project's errors as HTTP answers: JSON `{"detail": ...}` with an actionable status."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from shepard.errors import ShepardError
from shepard.httpstatus import status_of

__all__ = ["install", "status_of"]


def install(app: FastAPI) -> None:
    @app.exception_handler(ShepardError)
    async def _shepard_error(request: Request, exc: ShepardError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status_of(exc))
