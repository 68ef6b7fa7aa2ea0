"""Shepard: turn any script or container image into a scalable, tracked batch workflow.

The Python API (see docs/python.md)::

    import shepard
    flock = shepard.open("myflock")          # a flock folder, or shepard.open(profile="work")
    sub = flock.submit([{"ITEM": 1}, {"ITEM": 2}])
    flock.wait_for(sub.batch, timeout=600)   # while `shepard up` runs them

Names are imported on first use, so `import shepard` (and the CLI's start-up) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    from shepard.catalog.base import IdempotencyConflict
    from shepard.errors import JobNotFound, ShepardError
    from shepard.flock import Flock, Submission
    from shepard.model import JobStatus
    from shepard.views import (
        ActionResult,
        AttemptView,
        CountsView,
        CursorError,
        EventView,
        JobPage,
        JobView,
        OutputView,
        SubmitRequest,
        SubmitResult,
    )

__version__ = "0.1.0"

_VIEWS = "shepard.views"
_LAZY = {
    "Flock": "shepard.flock",
    "Submission": "shepard.flock",
    "JobStatus": "shepard.model",
    "ShepardError": "shepard.errors",
    "JobNotFound": "shepard.errors",
    "IdempotencyConflict": "shepard.catalog.base",
    "ActionResult": _VIEWS,
    "AttemptView": _VIEWS,
    "CountsView": _VIEWS,
    "CursorError": _VIEWS,
    "EventView": _VIEWS,
    "JobPage": _VIEWS,
    "JobView": _VIEWS,
    "OutputView": _VIEWS,
    "SubmitRequest": _VIEWS,
    "SubmitResult": _VIEWS,
}

__all__ = [
    "ActionResult",
    "AttemptView",
    "CountsView",
    "CursorError",
    "EventView",
    "Flock",
    "IdempotencyConflict",
    "JobNotFound",
    "JobPage",
    "JobStatus",
    "JobView",
    "OutputView",
    "ShepardError",
    "Submission",
    "SubmitRequest",
    "SubmitResult",
    "open",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'shepard' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def open(folder: str | Path | None = None, *, profile: str | None = None) -> Flock:
    """Open a flock: the folder holding its flock.toml, or the flock a profile names
    (`profile=`), or, with neither, the flock of the profile in effect (SHEPARD_PROFILE or
    the one chosen with `shepard set-profile`). Close it with `flock.close()` when done.

    Raises ConfigError (a ShepardError) saying what is missing.
    """
    from shepard.errors import ConfigError
    from shepard.flock import Flock
    from shepard.profiles import ProfileStore

    if folder is not None and profile is not None:
        raise ConfigError("open a flock by folder or by profile, not both")
    if folder is not None:
        return Flock.open(folder)
    store = ProfileStore.from_env()
    if profile is not None:
        named = store.load(profile).flock
        if named is None:
            raise ConfigError(
                f"profile {profile!r} names no flock "
                f"(set one with `shepard configure {profile} --flock PATH`)"
            )
        return Flock.open(named)
    active = store.active_flock()
    if active is None:
        raise ConfigError("no flock given and no profile in effect: pass a folder or profile=")
    return Flock.open(active[0])
