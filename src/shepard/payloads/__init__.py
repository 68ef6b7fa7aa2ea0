"""Payload kinds: what runs for a job, and how (`[payload] kind`; see payloads/base.py).
Register a new kind in KINDS (name -> import path)."""

from shepard.payloads.base import (
    KINDS,
    Launch,
    Payload,
    PayloadKind,
    UnknownKind,
    infer_kind,
    kind_class,
    open_payload,
)

__all__ = [
    "KINDS",
    "Launch",
    "Payload",
    "PayloadKind",
    "UnknownKind",
    "infer_kind",
    "kind_class",
    "open_payload",
]
