"""ObjectStore on a local (or shared, NFS-mounted) folder."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from shepard.errors import StorageError
from shepard.storage.base import NoSuchObject, ObjectInfo, ObjectStore, check_key

TMP_PREFIX = ".tmp-"
"""Names of files in a store's folders that are not objects: listings skip them."""
_TMP_PREFIX = TMP_PREFIX
_COPY_CHUNK = 1 << 20
_NO_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV}  # link() unsupported


class LocalStore:
    """Objects are files under `root`; keys map to relative paths (see ObjectStore).

    Writes go to a temporary file in the destination folder and are renamed into place, so a
    reader never sees half an object, and a crash leaves only `.tmp-*` files, which listings
    skip. Empty folders are not objects and are never listed.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self._folder = str(self.root)

    @classmethod
    def from_url(cls, url: str, options: object = None) -> LocalStore:
        """A store on the folder named by `url`: a path, or `file://PATH`."""
        return cls(url.removeprefix("file://"))

    @property
    def location(self) -> str:
        return str(self.root)

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def url(self, key: str) -> str:
        return str(self.path(key))

    def path(self, key: str) -> Path:
        """The file that holds `key` (which need not exist)."""
        return self.root / check_key(key)

    def local_path(self, key: str) -> Path | None:
        return self.path(key)

    def ensure(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create the store folder {self.root}: {exc}") from exc

    # -- writing ---------------------------------------------------------------------------

    def put_file(self, key: str, path: Path) -> None:
        with open(path, "rb") as src:
            self._write(key, lambda dst: shutil.copyfileobj(src, dst, _COPY_CHUNK))

    def put_bytes(self, key: str, data: bytes) -> None:
        self._write(key, lambda dst: dst.write(data))

    def put_stream(self, key: str, stream: BinaryIO) -> None:
        self._write(key, lambda dst: shutil.copyfileobj(stream, dst, _COPY_CHUNK))

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

    @contextlib.contextmanager
    def open_write(self, key: str) -> Iterator[BinaryIO]:
        tmp, fh = self._temp_for(key)
        try:
            with fh:
                yield fh
            os.replace(tmp, self.path(key))
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def put_if_absent(self, key: str, data: bytes) -> bool:
        # The whole object is written aside, then hard-linked to its name: link() fails when
        # the name exists, atomically, also on NFS, and a reader never sees a partial object.
        tmp, fh = self._temp_for(key)
        try:
            with fh:
                fh.write(data)
            os.link(tmp, self.path(key))
            return True
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in _NO_LINKS:
                raise _storage_error("write", key, exc) from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return self._create_exclusive(key, data)

    def _create_exclusive(self, key: str, data: bytes) -> bool:
        """put_if_absent on a filesystem without hard links: O_EXCL still lets one creator
        win, but a reader may see the object before its data is all written."""
        try:
            fd = os.open(self.path(key), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            return False
        except OSError as exc:
            raise _storage_error("write", key, exc) from exc
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return True

    def copy(self, src: str, dst: str) -> None:
        with self._open(src) as fh:
            self._write(dst, lambda out: shutil.copyfileobj(fh, out, _COPY_CHUNK))

    def copy_from(self, src: ObjectStore, src_key: str, dst_key: str) -> None:
        with src.open_read(src_key) as stream:
            self.put_stream(dst_key, stream)

    def move(self, src: str, dst: str) -> None:
        source, dest = self.path(src), self.path(dst)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, dest)
        except FileNotFoundError as exc:
            raise NoSuchObject(f"no object {src!r} in {self.root}") from exc
        except OSError as exc:
            raise _storage_error("move", src, exc) from exc

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(key).unlink()

    def discard_partial(self, *, older_than: float) -> int:
        removed = 0
        for path in self.root.rglob(_TMP_PREFIX + "*") if self.root.is_dir() else ():
            with contextlib.suppress(FileNotFoundError):
                if path.is_file() and path.stat().st_mtime < older_than:
                    path.unlink()
                    removed += 1
        return removed

    def delete_many(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.delete(key)

    # -- reading ---------------------------------------------------------------------------

    def get_file(self, key: str, dest: Path) -> None:
        src = self._existing(key)
        try:
            shutil.copyfile(src, dest)
        except OSError as exc:
            raise _storage_error("copy", key, exc) from exc

    def get_bytes(self, key: str) -> bytes:
        with self._open(key) as fh:
            return fh.read()

    def open_read(self, key: str, *, start: int = 0) -> BinaryIO:
        fh = self._open(key)
        if start:
            fh.seek(start)
        return fh

    def read_range(self, key: str, start: int, length: int) -> bytes:
        with self._open(key) as fh:
            fh.seek(start)
            return fh.read(length)

    def stat(self, key: str) -> ObjectInfo:
        try:
            st = os.stat(self.path(key))
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise NoSuchObject(f"no object {key!r} in {self.root}") from exc
        if not os.path.isfile(self.path(key)):
            raise NoSuchObject(f"no object {key!r} in {self.root}")
        return ObjectInfo(key, st.st_size, st.st_mtime)

    def size(self, key: str) -> int:
        return self._existing(key).stat().st_size

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def list(
        self, prefix: str = "", *, start_after: str = "", recursive: bool = True
    ) -> Iterator[str]:
        for key, _entry in self._walk(self._folder, "", prefix, start_after, recursive):
            yield key

    def scan(
        self, prefix: str = "", *, start_after: str = "", recursive: bool = True
    ) -> Iterator[ObjectInfo]:
        for key, entry in self._walk(self._folder, "", prefix, start_after, recursive):
            with contextlib.suppress(FileNotFoundError):  # deleted since it was listed
                st = entry.stat()
                yield ObjectInfo(key, st.st_size, st.st_mtime)

    def folders(self, prefix: str = "") -> Iterator[str]:
        base = prefix.rpartition("/")[0]
        base = base + "/" if base else ""
        folder = os.path.join(self._folder, *base.split("/"))
        for name in sorted(_subfolders(folder)):
            sub = base + name + "/"
            if sub.startswith(prefix) and next(self.list(sub), None) is not None:
                yield sub

    # -- helpers ---------------------------------------------------------------------------

    def _walk(
        self, folder: str, base: str, prefix: str, start_after: str, recursive: bool
    ) -> Iterator[tuple[str, os.DirEntry[str]]]:
        """(key, entry) of the files under `folder` (keys start with `base`), in key order.

        Sorting each folder's names with a `/` after sub-folder names gives the global
        order of the keys, so the walk streams and skips whole folders outside the window.
        """
        try:
            with os.scandir(folder) as it:
                entries = [(e.name + "/" if e.is_dir() else e.name, e) for e in it]
        except (FileNotFoundError, NotADirectoryError):
            return
        for name, entry in sorted(entries, key=lambda pair: pair[0]):
            key = base + name
            if name.endswith("/"):
                if _wanted_folder(key, prefix, start_after, recursive):
                    yield from self._walk(entry.path, key, prefix, start_after, recursive)
            elif (
                key.startswith(prefix)
                and key > start_after
                and not name.startswith(_TMP_PREFIX)
                and (recursive or "/" not in key[len(prefix) :])
            ):
                yield key, entry

    def _existing(self, key: str) -> Path:
        path = self.path(key)
        if not path.is_file():
            raise NoSuchObject(f"no object {key!r} in {self.root}")
        return path

    def _open(self, key: str) -> BinaryIO:
        try:
            return open(self.path(key), "rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise NoSuchObject(f"no object {key!r} in {self.root}") from exc
        except OSError as exc:
            raise _storage_error("read", key, exc) from exc

    def _temp_for(self, key: str) -> tuple[str, BinaryIO]:
        """A new temporary file beside where `key` goes (its folder created), open to write."""
        dest = self.path(key)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=dest.parent)
        except OSError as exc:
            raise _storage_error("write", key, exc) from exc
        return tmp, os.fdopen(fd, "wb")

    def _write(self, key: str, fill: Callable[[BinaryIO], object]) -> None:
        try:
            with self.open_write(key) as fh:
                fill(fh)
        except OSError as exc:
            raise _storage_error("write", key, exc) from exc


def _wanted_folder(folder: str, prefix: str, start_after: str, recursive: bool) -> bool:
    """Whether the keys under `folder` (ending with `/`) may match the listing."""
    if start_after > folder and not start_after.startswith(folder):
        return False  # every key in it sorts before start_after
    if prefix.startswith(folder):
        return True
    return recursive and folder.startswith(prefix)


def _subfolders(folder: str) -> Iterator[str]:
    with contextlib.suppress(FileNotFoundError, NotADirectoryError), os.scandir(folder) as it:
        yield from (e.name for e in it if e.is_dir())


def _storage_error(action: str, key: str, exc: OSError) -> StorageError:
    if exc.errno == errno.ENOSPC:
        return StorageError(f"cannot {action} {key!r}: the disk is full ({exc.filename or ''})")
    return StorageError(f"cannot {action} {key!r}: {exc.strerror or exc}")
