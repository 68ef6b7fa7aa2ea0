"""The HTTP status that answers each of the project's errors (the REST API and the
serverless flock's API function share it; no web framework needed)."""

from __future__ import annotations

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
