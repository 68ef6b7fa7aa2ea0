"""Backends run queued jobs. Register new engines in BACKENDS (name -> import path)."""

from __future__ import annotations

import importlib
import threading
from typing import TYPE_CHECKING, Any

from shepard.backends.base import Backend, EngineBackend

if TYPE_CHECKING:
    from shepard.flock import Flock

BACKENDS: dict[str, str] = {
    "local": "shepard.backends.local:LocalBackend",
    "slurm": "shepard.backends.slurm:SlurmBackend",
}


def backend_class(kind: str) -> Any:
    """The class registered as `kind`, imported on first use (engines pull in their own needs)."""
    try:
        module, _, name = BACKENDS[kind].partition(":")
    except KeyError:
        raise ValueError(f"no backend {kind!r}; known: {', '.join(sorted(BACKENDS))}") from None
    return getattr(importlib.import_module(module), name)


def open_backend(
    flock: Flock,
    *,
    workers: int | None = None,
    worker_id: str,
    wakeup: threading.Event | None = None,
) -> Backend | EngineBackend:
    """The flock's backend (`backend.kind`), ready to be driven by a Dispatcher."""
    backend: Backend | EngineBackend = backend_class(flock.config.backend.kind).from_flock(
        flock, workers=workers, worker_id=worker_id, wakeup=wakeup
    )
    return backend


def open_engine(flock: Flock) -> EngineBackend | None:
    """The flock's engine backend, for acting on its tasks from any process (e.g. `cancel`);
    None when the flock's backend runs jobs in-process (local)."""
    cls = backend_class(flock.config.backend.kind)
    if not getattr(cls, "engine", False):
        return None
    engine: EngineBackend = cls.from_flock(flock, workers=None, worker_id="", wakeup=None)
    return engine


__all__ = ["BACKENDS", "Backend", "EngineBackend", "backend_class", "open_backend", "open_engine"]
