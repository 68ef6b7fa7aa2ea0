"""A seekable file over an object of an ObjectStore, read by ranges (for zip central dirs)."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from shepard.storage.base import ObjectStore

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer


class RangeFile(io.RawIOBase):
    """A seekable, read-only binary file over one object of an ObjectStore.

    Data comes from `store.read_range`; each fetch reads at least `readahead` bytes, and a
    fetch near the object's end reads the window ending there, so a zip's end records and a
    small central directory arrive in one request. `requests` counts read_range calls and
    `bytes_fetched` the bytes they returned (the `size` call at construction is not counted).
    """

    def __init__(self, store: ObjectStore, key: str, *, readahead: int = 64 << 10) -> None:
        super().__init__()
        self._store, self._key, self._readahead = store, key, max(1, readahead)
        self.name = key
        self.size = store.size(key)
        self.requests = 0
        self.bytes_fetched = 0
        self._pos = 0
        self._buf = b""
        self._buf_start = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move to `offset` from the start, the current position or the end (SEEK_*)."""
        bases = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}
        if whence not in bases:
            raise ValueError(f"invalid whence {whence!r}")
        if bases[whence] + offset < 0:
            raise OSError(f"negative seek position in {self._key!r}")
        self._pos = bases[whence] + offset
        return self._pos

    def readinto(self, buffer: WriteableBuffer) -> int:
        """Fill `buffer` from the current position; short only at the end of the object."""
        if self.closed:
            raise ValueError("I/O operation on closed file")
        view = memoryview(buffer).cast("B")
        want = min(len(view), max(0, self.size - self._pos))
        done = 0
        while done < want:
            chunk = self._chunk(self._pos + done, want - done)
            if not chunk:
                break
            view[done : done + len(chunk)] = chunk
            done += len(chunk)
        self._pos += done
        return done

    def _chunk(self, start: int, length: int) -> bytes:
        """Up to `length` bytes at `start`, from the buffer or else from one new fetch."""
        if not 0 <= start - self._buf_start < len(self._buf):
            span = max(length, self._readahead)
            self._buf_start = max(0, min(start, self.size - span))
            self._buf = self._store.read_range(self._key, self._buf_start, span)
            self.requests += 1
            self.bytes_fetched += len(self._buf)
        offset = start - self._buf_start
        return self._buf[offset : offset + length]
