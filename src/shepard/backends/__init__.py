"""Backends run queued jobs (contracts in base.py). The registry of backend kinds lives here.

A new backend is one line in KINDS: its kind (the value of `backend.kind`), the class that
runs jobs and the pydantic class of its `[backend.<kind>]` section, both as "module:Name" and
imported on first use, so reading a flock.toml loads no backend's code, only its config class.
The flock configuration and `shepard init --backend` take their list of kinds from here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import BaseModel

    from shepard.backends.base import Backend, BackendContext, SchedulerBackend


@dataclass(frozen=True)
class Kind:
    backend: str  # "module:Class" of the backend
    config: str  # "module:Class" of its [backend.<kind>] section
    summary: str  # what it is, in a few words (for `shepard init --help`)


KINDS: dict[str, Kind] = {
    "local": Kind(
        "shepard.backends.local:LocalBackend",
        "shepard.backends.localconfig:LocalConfig",
        "worker slots on this machine",
    ),
    "slurm": Kind(
        "shepard.backends.slurm.backend:SlurmBackend",
        "shepard.backends.slurm.config:SlurmConfig",
        "tasks of Slurm job arrays (docs/slurm.md)",
    ),
    "aws-batch": Kind(
        "shepard.backends.aws_batch.backend:BatchBackend",
        "shepard.backends.aws_batch.config:BatchConfig",
        "children of AWS Batch array jobs (docs/aws-batch.md)",
    ),
}


def kinds() -> list[str]:
    """The registered backend kinds, sorted."""
    return sorted(KINDS)


def _load(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _kind(kind: str) -> Kind:
    try:
        return KINDS[kind]
    except KeyError:
        raise ValueError(f"no backend {kind!r}; known: {', '.join(kinds())}") from None


def config_class(kind: str) -> type[BaseModel]:
    """The pydantic class of `[backend.<kind>]`; ValueError for an unknown kind."""
    cls: type[BaseModel] = _load(_kind(kind).config)
    return cls


def backend_class(kind: str) -> Any:
    """The backend class registered as `kind`, imported on first use."""
    return _load(_kind(kind).backend)


def open_backend(kind: str, ctx: BackendContext) -> Backend | SchedulerBackend:
    """The backend of `kind` built for `ctx`, ready to be driven by a Dispatcher."""
    backend: Backend | SchedulerBackend = backend_class(kind).from_context(ctx)
    return backend


def open_scheduler(kind: str, ctx: BackendContext) -> SchedulerBackend | None:
    """The scheduler backend of `kind`, for acting on its tasks from any process (e.g.
    `cancel`); None when the backend runs jobs in-process (local)."""
    cls = backend_class(kind)
    if not getattr(cls, "scheduler", False):
        return None
    backend: SchedulerBackend = cls.from_context(ctx)
    return backend


__all__ = [
    "KINDS",
    "Kind",
    "backend_class",
    "config_class",
    "kinds",
    "open_backend",
    "open_scheduler",
]
