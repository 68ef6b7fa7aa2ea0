"""The ObjectStore contract shared by every storage implementation.

A store is a flat namespace of objects addressed by `/`-separated keys: a local folder
(`LocalStore`) or an S3 bucket and prefix (`S3Store`). Code above `storage/` speaks only this
protocol, so it never needs to know which one it holds. `tests/integration/test_stores.py` runs
one suite over every implementation; a new one passes it unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from shepard.errors import StorageError

# Bytes per part of a multipart upload and per piece of a streamed read or copy.
PART_SIZE = 8 << 20


class NoSuchObject(StorageError):
    """The key names no object (it never existed, or it was deleted or moved away)."""


@dataclass(frozen=True)
class ObjectInfo:
    """What a listing knows of one object, without reading it."""

    key: str
    size: int  # bytes
    modified: float  # last write, seconds since the epoch (a file's mtime, S3's LastModified)
    etag: str = ""  # a fingerprint of the content where the store keeps one (S3's ETag), else ""


@dataclass(frozen=True)
class StoreOptions:
    """Settings an implementation may use; each ignores what does not concern it.

    `endpoint_url` and `region` override boto3's standard chain (AWS_ENDPOINT_URL,
    AWS_ENDPOINT_URL_S3, AWS_REGION, profiles) for S3; unset, that chain decides.
    `multipart_threshold` and `part_size` tune S3 uploads (files at least that large go up in
    parts of `part_size` bytes, `max_concurrency` at a time).
    """

    endpoint_url: str | None = None
    region: str | None = None
    multipart_threshold: int = PART_SIZE
    part_size: int = PART_SIZE
    max_concurrency: int = 4


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


def join_key(prefix: str, key: str) -> str:
    """`prefix/key` without doubled or leading slashes (either part may be empty)."""
    prefix = prefix.strip("/")
    return f"{prefix}/{key}" if prefix and key else prefix or key


@runtime_checkable
class ObjectStore(Protocol):
    """A flat namespace of objects addressed by key, on a folder, S3 or anything like them.

    Guarantees every implementation gives:
    - Writes are atomic: a reader, a listing or `exists` sees either no object or the whole
      new object, never part of it; a write that fails or is abandoned leaves no object (and
      leaves an older object of the same key intact).
    - Reads of a missing key raise `NoSuchObject` (a StorageError) naming the key; every other
      failure raises StorageError with a message a user can act on (no such bucket, access
      denied, endpoint unreachable, disk full, ...). Keys are checked with `check_key`.
    - Listings yield keys in sorted (code point) order, lazily: a huge prefix is never held
      in memory; an object written during a listing may or may not appear in it.
    - Deleting a missing key is not an error.
    - Methods may be called from several threads at once; a store is cheap to keep and
      should be opened once per process and shared.
    """

    @property
    def location(self) -> str:
        """The store's URL for people and payloads (INPUTS_BUCKET, ...): a folder path or
        `s3://bucket/prefix`. `url(key)` is the same for one object."""
        ...

    def url(self, key: str) -> str:
        """Where `key` lives, for people: a file path, or `s3://bucket/prefix/key`."""
        ...

    def local_path(self, key: str) -> Path | None:
        """The file that holds (or would hold) `key` when the store is a folder, else None.

        For code that truly needs a file (a command to run, a log to append to): take the
        fast path when it is not None, otherwise download (`get_file`) or upload (`put_file`).
        Writing to the path directly bypasses the store's atomic writes.
        """
        ...

    def ensure(self) -> None:
        """Make the store usable, or raise StorageError saying why it is not: a folder is
        created; an S3 bucket must already exist and be reachable (none is ever created)."""
        ...

    # -- writing ---------------------------------------------------------------------------

    def put_bytes(self, key: str, data: bytes) -> None:
        """Store `data` as `key`, replacing any object of that key (atomic)."""
        ...

    def put_file(self, key: str, path: Path) -> None:
        """Store a copy of the local file `path` as `key` (atomic; S3: multipart when large)."""
        ...

    def put_stream(self, key: str, stream: BinaryIO) -> None:
        """Store everything `stream.read()` returns until its end as `key` (atomic), with
        bounded memory: the stream need not be seekable nor its size known."""
        ...

    def move_in(self, key: str, path: Path) -> None:
        """Store the local file `path` as `key` and remove `path` (a rename when the store is
        a folder on the same filesystem). On failure `path` is left in place."""
        ...

    def open_write(self, key: str) -> AbstractContextManager[BinaryIO]:
        """A writer for `key`, to use in a `with` block: the object appears (atomically)
        when the block ends without an exception. An exception in the block, or a writer
        never closed (a crash), leaves no object. The writer is not seekable; `tell()`
        gives the bytes written so far. Memory stays bounded (S3 sends parts as they fill)."""
        ...

    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Create `key` holding `data` only if no object has that key; True if this call
        created it. Atomic across threads, processes and machines sharing the store: of
        concurrent callers exactly one gets True (S3: PutObject with `If-None-Match: *`;
        a folder: a hard link, which fails when the name exists). Use it for claims."""
        ...

    def copy(self, src: str, dst: str) -> None:
        """Copy object `src` to `dst` within the store (atomic for `dst`; S3: server-side)."""
        ...

    def copy_from(self, src: ObjectStore, src_key: str, dst_key: str) -> None:
        """Copy object `src_key` of another store (any kind) into this one as `dst_key`
        (atomic for `dst_key`): server-side between stores of one S3 service, a file upload
        from a folder, else streamed through this process with bounded memory. NoSuchObject
        when `src_key` is gone."""
        ...

    def move(self, src: str, dst: str) -> None:
        """Move object `src` to `dst` within the store. A folder renames (atomic); S3 copies
        then deletes, so for a moment (or after a crash in between) both keys exist. Raises
        NoSuchObject when `src` is gone, e.g. moved by a concurrent caller."""
        ...

    def delete(self, key: str) -> None:
        """Remove `key`; a missing key is not an error."""
        ...

    def delete_many(self, keys: Iterable[str]) -> None:
        """Remove every key of `keys` (S3: 1,000 per request); missing keys are skipped."""
        ...

    # -- reading ---------------------------------------------------------------------------

    def get_bytes(self, key: str) -> bytes:
        """The whole object (use `open_read` or `get_file` for large ones)."""
        ...

    def get_file(self, key: str, dest: Path) -> None:
        """Write the object to the local file `dest` (its folder must exist); S3 downloads
        large objects in parallel ranges. On failure `dest` is not a complete copy."""
        ...

    def open_read(self, key: str, *, start: int = 0) -> BinaryIO:
        """A reader of the object from byte `start` on, streamed (bounded memory); close it
        (it is a context manager). It may not be seekable: for random access, e.g. a zip's
        central directory, use `RangeFile` (range reads). Raises NoSuchObject at once."""
        ...

    def read_range(self, key: str, start: int, length: int) -> bytes:
        """Up to `length` bytes from offset `start` (fewer at the end of the object, none
        past it); one request on S3."""
        ...

    def stat(self, key: str) -> ObjectInfo:
        """The object's size and last-write time; NoSuchObject when it does not exist."""
        ...

    def size(self, key: str) -> int:
        """The object's size in bytes (`stat(key).size`)."""
        ...

    def exists(self, key: str) -> bool:
        """Whether an object (complete: writes are atomic) has this key."""
        ...

    def list(
        self, prefix: str = "", *, start_after: str = "", recursive: bool = True
    ) -> Iterator[str]:
        """The keys that start with `prefix` (a string prefix, not only a folder), sorted,
        yielded lazily page by page. `start_after` skips keys up to and including it (to resume
        a listing). With `recursive=False` only keys with no `/` after the prefix are yielded
        (the objects directly "in" a folder prefix such as `inbox/`)."""
        ...

    def scan(
        self, prefix: str = "", *, start_after: str = "", recursive: bool = True
    ) -> Iterator[ObjectInfo]:
        """As `list`, with each object's size and last-write time (free on S3's listing)."""
        ...

    def discard_partial(self, *, older_than: float) -> int:
        """Remove what writes that never completed left behind, when it was started before
        `older_than` (epoch seconds): a folder's `.tmp-*` files, S3's unfinished multipart
        uploads. Returns how many were removed. Never touches a completed object, and never
        a write started after `older_than` (it may still be running)."""
        ...

    def folders(self, prefix: str = "") -> Iterator[str]:
        """The "sub-folders" directly under `prefix`: distinct key parts up to the next `/`
        after the prefix, each ending with `/`, sorted (S3: common prefixes, delimiter `/`).
        With prefix `quick-deploy/` a store holding `quick-deploy/a/run.sh` yields
        `quick-deploy/a/`."""
        ...
