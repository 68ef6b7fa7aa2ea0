"""ObjectStore on a local (or shared, NFS-mounted) folder."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from shepard.errors import StorageError
from shepard.storage.base import check_key

_TMP_PREFIX = ".tmp-"


class LocalStore:
    """Objects are files under `root`; keys map to relative paths.

    Writes go to a temporary file in the destination folder and are renamed into place, so a
    reader never sees half an object, and a crash leaves only `.tmp-*` files, which `list` skips.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self._folder = str(self.root)

    @property
    def location(self) -> str:
        return str(self.root)

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def path(self, key: str) -> Path:
        """The file that holds `key` (which need not exist)."""
        return self.root / check_key(key)

    def put_file(self, key: str, path: Path) -> None:
        with open(path, "rb") as src:
            self._write(key, lambda dst: shutil.copyfileobj(src, dst, 1 << 20))

    def put_bytes(self, key: str, data: bytes) -> None:
        self._write(key, lambda dst: dst.write(data))

    def move_in(self, key: str, path: Path) -> None:
        """Move a local file into the store (a rename when on the same filesystem)."""
        dest = os.path.join(self._folder, check_key(key))  # plain strings: once per job
        try:
            try:
                os.replace(path, dest)
            except FileNotFoundError:  # the key's folder, most likely: one more try
                if not os.path.lexists(path):
                    raise
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                os.replace(path, dest)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise _storage_error("write", key, exc) from exc
            self.put_file(key, path)
            path.unlink()

    def get_file(self, key: str, dest: Path) -> None:
        src = self._existing(key)
        try:
            shutil.copyfile(src, dest)
        except OSError as exc:
            raise _storage_error("copy", key, exc) from exc

    def get_bytes(self, key: str) -> bytes:
        return self._existing(key).read_bytes()

    def read_range(self, key: str, start: int, length: int) -> bytes:
        with open(self._existing(key), "rb") as fh:
            fh.seek(start)
            return fh.read(length)

    def size(self, key: str) -> int:
        return self._existing(key).stat().st_size

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def list(self, prefix: str = "") -> Iterator[str]:
        if not self.root.is_dir():
            return
        keys: list[str] = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            rel = os.path.relpath(dirpath, self.root)
            base = "" if rel == "." else rel.replace(os.sep, "/") + "/"
            if prefix and not (base.startswith(prefix) or prefix.startswith(base)):
                dirnames.clear()
                continue
            keys.extend(
                base + name
                for name in filenames
                if not name.startswith(_TMP_PREFIX) and (base + name).startswith(prefix)
            )
        yield from sorted(keys)

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(key).unlink()

    def _existing(self, key: str) -> Path:
        path = self.path(key)
        if not path.is_file():
            raise StorageError(f"no object {key!r} in {self.root}")
        return path

    def _write(self, key: str, fill: object) -> None:
        dest = self.path(key)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=dest.parent)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fill(fh)  # type: ignore[operator]
                os.replace(tmp, dest)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as exc:
            raise _storage_error("write", key, exc) from exc


def _storage_error(action: str, key: str, exc: OSError) -> StorageError:
    if exc.errno == errno.ENOSPC:
        return StorageError(f"cannot {action} {key!r}: the disk is full ({exc.filename or ''})")
    return StorageError(f"cannot {action} {key!r}: {exc.strerror or exc}")
