"""Backends run claimed jobs. Register new engines in BACKENDS (name -> import path)."""

from __future__ import annotations

from shepard.backends.base import Backend

BACKENDS: dict[str, str] = {
    "local": "shepard.backends.local:LocalBackend",
}

__all__ = ["BACKENDS", "Backend"]
