"""The app factory: one FastAPI application serving one flock."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse

from shepard import __version__
from shepard.server import api, errors
from shepard.server.limits import BodyLimit
from shepard.server.metrics import Metrics, Timing
from shepard.server.settings import ServeSettings
from shepard.server.streams import stream_limiter
from shepard.server.tokencache import TokenCache
from shepard.submitgroup import SubmitGroup
from shepard.web import router as dashboard

if TYPE_CHECKING:
    from shepard.flock import Flock
    from shepard.server.running import JobRunner

API = api.API


def create_app(
    flock: Flock, settings: ServeSettings | None = None, *, runner: JobRunner | None = None
) -> FastAPI:
    """The application for `flock`: health, the REST API under /api/v1 (and, when asked,
    shepherd's routes and the dashboard). The caller owns the flock (and closes it).

    `runner`: the flock's dispatcher and inbox (`shepard serve` without --no-dispatch),
    started and stopped with the application (its lifespan)."""
    settings = settings or ServeSettings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if runner is not None:
            runner.start()
        try:
            yield
        finally:
            if runner is not None:
                await run_in_threadpool(runner.close)

    app = FastAPI(
        lifespan=lifespan,
        title=f"Shepard: {flock.config.name}",
        version=__version__,
        openapi_url=f"{API}/openapi.json",
        docs_url=f"{API}/docs",
        redoc_url=None,
    )
    app.state.flock = flock
    app.state.settings = settings
    app.state.runner = runner
    app.state.wakeup = runner.wakeup if runner is not None else None
    app.state.metrics = metrics = Metrics()
    app.state.tokens = TokenCache(flock.verify_token)
    app.state.submissions = SubmitGroup(flock)
    app.state.streams = stream_limiter()  # threads of streamed bodies (server/streams.py)
    errors.install(app)
    app.add_middleware(BodyLimit, limit=settings.max_body)
    app.add_middleware(Timing, metrics=metrics)  # outermost: times refusals too
    app.include_router(api.router, tags=["jobs"])

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse)
    def prometheus(request: Request) -> str:
        """The flock's jobs per status, submissions and request latencies, in Prometheus'
        text format. No token needed (like /healthz): it shows counts, never job data."""
        counts = {s.value: n for s, n in flock.counts().items()}
        text = metrics.render(counts)
        dispatching = int(runner is not None and runner.running)
        return text + (
            "# HELP shepard_dispatcher_up Whether this server runs the flock's jobs.\n"
            f"# TYPE shepard_dispatcher_up gauge\nshepard_dispatcher_up {dispatching}\n"
        )

    from shepard.server import objects

    app.include_router(objects.router())

    if settings.shepherd:  # shepherd's routes: /start-job, /jobs/{id}/..., /status
        from shepard.server import shepherd

        app.include_router(shepherd.router(flock, settings))

    app.include_router(dashboard(flock, settings))

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """Liveness, without auth: 200 while the server answers."""
        return {"status": "ok"}

    return app
