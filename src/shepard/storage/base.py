"""The ObjectStore contract shared by every storage implementation."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

from shepard.errors import StorageError


def check_key(key: str) -> str:
    """Return `key` if it is a safe relative object key, else raise StorageError.

    A key is a `/`-separated relative path: no empty, `.` or `..` segments, no leading `/`,
    no backslashes or NUL bytes. This keeps every key inside its store on every backend.
    """
    if not key or key.startswith("/") or "\\" in key or "\x00" in key:
        raise StorageError(f"invalid object key {key!r}")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise StorageError(f"invalid object key {key!r}")
    return key


@runtime_checkable
class ObjectStore(Protocol):
    """A flat namespace of immutable-once-written objects addressed by key.

    Guarantees every implementation must give:
    - `put_*` is atomic: a reader sees either no object or the whole new object.
    - `get_*`/`read_range`/`size` raise StorageError naming the key when it does not exist.
    - `list(prefix)` yields keys (not folders) that start with `prefix`, in sorted order.
    - `delete` of a missing key is not an error.
    """

    @property
    def location(self) -> str:
        """Where the store lives, for people and for payloads (INPUTS_BUCKET, ...)."""
        ...

    def put_file(self, key: str, path: Path) -> None: ...

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def get_file(self, key: str, dest: Path) -> None: ...

    def get_bytes(self, key: str) -> bytes: ...

    def read_range(self, key: str, start: int, length: int) -> bytes:
        """Return up to `length` bytes from offset `start` (fewer at the end of the object)."""
        ...

    def size(self, key: str) -> int: ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str = "") -> Iterator[str]: ...

    def delete(self, key: str) -> None: ...
