"""ObjectStore in memory: a fake for tests, with the contract of the real stores.

`memory://NAME` opens the namespace NAME of this process (every open of one name sees the same
objects; other processes see nothing). Code that runs on it cannot be relying on files: it
has no `local_path`. It passes the same suite as folders and S3 (tests/integration/test_stores.py).
"""

from __future__ import annotations

import builtins
import contextlib
import io
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from shepard.storage.base import NoSuchObject, ObjectInfo, ObjectStore, check_key

_Object = tuple[bytes, float]  # data, time of the write
_spaces: dict[str, dict[str, _Object]] = {}
_spaces_lock = threading.Lock()


class MemoryStore:
    """Objects held in a dict of this process, under one lock (see ObjectStore)."""

    def __init__(self, name: str = "") -> None:
        self.name = name
        with _spaces_lock:
            self._objects = _spaces.setdefault(name, {})
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, options: object = None) -> MemoryStore:
        return cls(url.removeprefix("memory://").strip("/"))

    @property
    def location(self) -> str:
        return f"memory://{self.name}"

    def __repr__(self) -> str:
        return f"MemoryStore({self.name!r})"

    def url(self, key: str) -> str:
        return f"{self.location}/{check_key(key)}"

    def local_path(self, key: str) -> Path | None:
        return None

    def ensure(self) -> None:
        pass

    # -- writing ---------------------------------------------------------------------------

    def put_bytes(self, key: str, data: bytes) -> None:
        check_key(key)
        with self._lock:
            self._objects[key] = (bytes(data), time.time())

    def put_file(self, key: str, path: Path) -> None:
        self.put_bytes(key, path.read_bytes())

    def put_stream(self, key: str, stream: BinaryIO) -> None:
        self.put_bytes(key, stream.read())

    def move_in(self, key: str, path: Path) -> None:
        self.put_file(key, path)
        path.unlink()

    @contextlib.contextmanager
    def open_write(self, key: str) -> Iterator[BinaryIO]:
        check_key(key)
        buffer = io.BytesIO()
        yield buffer
        self.put_bytes(key, buffer.getvalue())

    def put_if_absent(self, key: str, data: bytes) -> bool:
        check_key(key)
        with self._lock:
            if key in self._objects:
                return False
            self._objects[key] = (bytes(data), time.time())
            return True

    def copy(self, src: str, dst: str) -> None:
        self.put_bytes(dst, self.get_bytes(src))

    def copy_from(self, src: ObjectStore, src_key: str, dst_key: str) -> None:
        with src.open_read(src_key) as stream:
            self.put_stream(dst_key, stream)

    def move(self, src: str, dst: str) -> None:
        check_key(dst)
        with self._lock:
            if check_key(src) not in self._objects:
                raise self._missing(src)
            self._objects[dst] = self._objects.pop(src)

    def delete(self, key: str) -> None:
        with self._lock:
            self._objects.pop(check_key(key), None)

    def discard_partial(self, *, older_than: float) -> int:
        return 0  # a write here is one step under the lock: nothing is ever left half-done

    def delete_many(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.delete(key)

    # -- reading ---------------------------------------------------------------------------

    def get_bytes(self, key: str) -> bytes:
        return self._get(key)[0]

    def get_file(self, key: str, dest: Path) -> None:
        dest.write_bytes(self.get_bytes(key))

    def open_read(self, key: str, *, start: int = 0) -> BinaryIO:
        return io.BytesIO(self.get_bytes(key)[start:])

    def read_range(self, key: str, start: int, length: int) -> bytes:
        return self.get_bytes(key)[start : start + max(0, length)]

    def stat(self, key: str) -> ObjectInfo:
        data, modified = self._get(key)
        return ObjectInfo(key, len(data), modified)

    def size(self, key: str) -> int:
        return len(self.get_bytes(key))

    def exists(self, key: str) -> bool:
        with self._lock:
            return check_key(key) in self._objects

    def list(
        self, prefix: str = "", *, start_after: str = "", recursive: bool = True
    ) -> Iterator[str]:
        for info in self.scan(prefix, start_after=start_after, recursive=recursive):
            yield info.key

    def scan(
        self, prefix: str = "", *, start_after: str = "", recursive: bool = True
    ) -> Iterator[ObjectInfo]:
        with self._lock:
            snapshot = sorted(
                (key, len(data), modified)
                for key, (data, modified) in self._objects.items()
                if key.startswith(prefix) and key > start_after
            )
        for key, size, modified in snapshot:
            if recursive or "/" not in key[len(prefix) :]:
                yield ObjectInfo(key, size, modified)

    def folders(self, prefix: str = "") -> Iterator[str]:
        seen: builtins.list[str] = []
        for key in self.list(prefix):
            rest = key[len(prefix) :]
            if "/" in rest:
                folder = prefix + rest.split("/", 1)[0] + "/"
                if not seen or seen[-1] != folder:
                    seen.append(folder)
        yield from seen

    def _get(self, key: str) -> _Object:
        with self._lock:
            found = self._objects.get(check_key(key))
        if found is None:
            raise self._missing(key)
        return found

    def _missing(self, key: str) -> NoSuchObject:
        return NoSuchObject(f"no object {key!r} in {self.location}")
