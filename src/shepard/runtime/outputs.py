"""Result zips: each non-empty output folder of a successful attempt becomes one object.

Names: `[TAG_]result@<UUID>_<START_TIME>_<root|efs|lustre>.zip`. A zip holds files and
folders only: see `output_entries` for what becomes of symbolic links. START_TIME differs between
attempts, so a late upload of a superseded attempt can never overwrite a newer one's results.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import struct
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO

from shepard.model import Params
from shepard.params import find_key
from shepard.runtime.contract import TAG
from shepard.runtime.workspace import Workspace, walk_tree
from shepard.storage import ObjectStore

MAX_TAG = 100
IN_MEMORY_ZIP = (
    4 << 20
)  # outputs up to this many bytes (and SMALL_ZIP_ENTRIES) are zipped in memory
SMALL_ZIP_ENTRIES = 1000  # far from zip64's limits, whatever the sizes
TINY = 256  # files shorter than this are compressed with a small zlib state (see deflate)
_UNSAFE_TAG_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


def sanitize_tag(value: str) -> str:
    """`value` made safe for an object name: characters other than ASCII letters, digits, `.`,
    `_` and `-` become `_`; leading dots and dashes are stripped; at most MAX_TAG characters."""
    return _UNSAFE_TAG_CHARS.sub("_", value).lstrip(".-")[:MAX_TAG]


def output_key(params: Params, job_id: str, start_time: int, kind: str) -> str:
    """The key of the result zip of one output folder (`kind`: root, efs or lustre)."""
    tag = sanitize_tag(find_key(params, TAG) or "")
    prefix = f"{tag}_" if tag else ""
    return f"{prefix}result@{job_id}_{start_time}_{kind}.zip"


def zip_outputs(ws: Workspace, *, log: Path | None = None) -> list[tuple[str, Path]]:
    """Zip every output folder of `ws` that holds at least one file (anywhere inside).

    Returns (kind, zip path) pairs; the zips are temporary files in `ws.root` (removed with the
    workspace, or moved into a store by `publish`). Empty folders yield no zip. Symbolic links
    follow `output_entries`; a line for each link left out is appended to the file `log` (the
    attempt's stderr log).
    """
    zips: list[tuple[str, Path]] = []
    warn = None if log is None else lambda line: _append_line(log, line)
    for kind, folder in ws.output_folders():
        path = zip_folder(folder, ws.root / f".shepard-result-{kind}.zip", warn=warn)
        if path is not None:
            zips.append((kind, path))
    return zips


def zip_folder(
    folder: Path, dest: Path, *, warn: Callable[[str], None] | None = None
) -> Path | None:
    """Zip the content of `folder` (paths relative to it) into the new file `dest` (or, when
    `dest` exists, a new file with a random name next to it); return the zip's path.

    DEFLATE, zip64 allowed, folder entries included; what goes in is `output_entries`
    (symlinks to files inside `folder` as those files, other links left out and told to
    `warn`); FIFOs, sockets and devices are skipped. None (and no file) when nothing but
    folders is left, at any depth. Small outputs (the many tiny results of short jobs) are
    built in memory by `small_zip` and written in one go.
    """
    entries = output_entries(folder, warn)
    if all(entry.is_dir(follow_symlinks=False) for _name, entry in entries):
        return None
    small = len(entries) <= SMALL_ZIP_ENTRIES and _total_size(entries) <= IN_MEMORY_ZIP
    fd, path = _new_file(dest)
    try:
        if small:
            _write_all(fd, small_zip(entries))
        else:
            with os.fdopen(fd, "wb", closefd=False) as out:
                _write_zip(out, entries)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)
    return path


def output_entries(
    folder: Path, warn: Callable[[str], None] | None = None
) -> list[tuple[str, os.DirEntry[str]]]:
    """(name in the zip, entry) of what a result zip of `folder` holds, parents first.

    The runtime contract for links: a symbolic link to a regular file inside `folder` is
    stored as that file (its content, under the link's name); any other link (pointing
    outside the folder, dangling, or to a folder) is left out, and `warn` gets one line saying
    so. The entries that are links in the list are to be read through (followed).
    """
    root = os.path.realpath(folder)
    kept: list[tuple[str, os.DirEntry[str]]] = []
    for rel, entry, _depth in walk_tree(folder):
        name = _arcname(rel)
        if entry.is_symlink():
            problem = _link_problem(root, entry.path)
            if problem is not None:
                if warn is not None:
                    warn(f"shepard: outputs: left out {name!r}, a symbolic link {problem}")
                continue
        kept.append((name, entry))
    return kept


def _link_problem(root: str, path: str) -> str | None:
    """Why the link at `path` is not stored as the file it points to, or None."""
    try:
        target = os.readlink(path)
    except OSError as exc:
        return f"that cannot be read ({exc.strerror or exc})"
    real = os.path.realpath(path)
    if not real.startswith(root + os.sep):
        return f"to {target!r}, outside the output folder (copy the file in instead)"
    if not os.path.exists(real):
        return f"to {target!r}, which does not exist"
    if not os.path.isfile(real):
        return f"to {target!r}, which is not a regular file (links to folders are not followed)"
    return None


def _append_line(path: Path, line: str) -> None:
    """Add `line` to the log at `path`; a log that cannot be written loses the line only."""
    with contextlib.suppress(OSError), open(path, "a", encoding="utf-8", errors="replace") as fh:
        fh.write(line + "\n")


_LOCAL = struct.Struct("<4s5H3L2H")
_CENTRAL = struct.Struct("<4s6H3L5H2L")
_END = struct.Struct("<4s4H2LH")
_VERSION = 20  # what zipfile writes for DEFLATE and folders
_MADE_BY = 3 << 8 | _VERSION  # Unix
_UTF8_NAME = 0x800


def small_zip(entries: list[tuple[str, os.DirEntry[str]]]) -> bytes:
    """The zip `zipfile` writes for these entries (files DEFLATEd, folders stored, links
    read through, Unix modes and times kept), built with a few struct.pack calls: for a tiny
    output, zipfile's own bookkeeping costs several times the compression. No zip64: for
    at most SMALL_ZIP_ENTRIES entries of IN_MEMORY_ZIP bytes in all."""
    parts: list[bytes] = []
    central: list[bytes] = []
    offset = 0
    for arcname, entry in entries:
        info = entry.stat(follow_symlinks=True)  # links kept by output_entries are read through
        name, data, method, attr = _member(arcname, entry, info.st_mode)
        if name is None:
            continue  # FIFOs, sockets, devices
        crc = zlib.crc32(data)
        packed = deflate(data) if method == zipfile.ZIP_DEFLATED else data
        when = _dos_time(info.st_mtime)
        raw = name.encode("utf-8")
        flags = 0 if name.isascii() else _UTF8_NAME
        sizes = (crc, len(packed), len(data), len(raw))
        head = (_VERSION, flags, method, *when, *sizes)
        parts += (_LOCAL.pack(b"PK\x03\x04", *head, 0), raw, packed)
        central += (_CENTRAL.pack(b"PK\x01\x02", _MADE_BY, *head, 0, 0, 0, 0, attr, offset), raw)
        offset += _LOCAL.size + len(raw) + len(packed)
    directory = b"".join(central)
    count = len(central) // 2
    end = _END.pack(b"PK\x05\x06", 0, 0, count, count, len(directory), offset, 0)
    return b"".join(parts) + directory + end


def deflate(data: bytes) -> bytes:
    """Raw DEFLATE of `data` at zlib's default level, as zipfile compresses. Under TINY bytes
    (a job's number or status line), zlib's state is made small: the full-size one (about
    256 KB, set up for every file) takes 30 times longer to prepare than a few bytes take to
    compress. For data this short the output is byte for byte the same (a
    test compares them over many inputs)."""
    if len(data) < TINY:
        compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -9, 2)
    else:
        compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()


def _member(arcname: str, entry: os.DirEntry[str], mode: int) -> tuple[str | None, bytes, int, int]:
    """(name in the zip, content, compression, external attributes) of one entry (`mode`:
    of the file a link points to), as zipfile's `write` makes them."""
    if stat.S_ISDIR(mode):
        return arcname + "/", b"", zipfile.ZIP_STORED, (mode & 0xFFFF) << 16 | 0x10
    if stat.S_ISREG(mode):
        return arcname, _read_all(entry.path), zipfile.ZIP_DEFLATED, (mode & 0xFFFF) << 16
    return None, b"", 0, 0


def _dos_time(mtime: float) -> tuple[int, int]:
    """(time, date) fields of a zip entry, clamped to the years zip can hold."""
    t = time.localtime(mtime)
    if t.tm_year < 1980:
        return 0, 33  # 1980-01-01 00:00:00
    if t.tm_year > 2107:
        return 23 << 11 | 59 << 5 | 29, 127 << 9 | 12 << 5 | 31
    return t.tm_hour << 11 | t.tm_min << 5 | t.tm_sec // 2, (
        (t.tm_year - 1980) << 9 | t.tm_mon << 5 | t.tm_mday
    )


def _read_all(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _write_zip(out: IO[bytes], entries: list[tuple[str, os.DirEntry[str]]]) -> None:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, strict_timestamps=False) as zf:
        for arcname, entry in entries:
            _add_entry(zf, arcname, entry)


def _total_size(entries: list[tuple[str, os.DirEntry[str]]]) -> int:
    total = 0
    for _name, entry in entries:
        if entry.is_file():  # links kept by output_entries are files
            total += entry.stat().st_size
            if total > IN_MEMORY_ZIP:
                break
    return total


def publish(store: ObjectStore, zips: list[tuple[str, Path]], keys: list[str]) -> None:
    """Store each zip under the matching key (`move_in`: a rename into a folder store, an
    upload, multipart when large, to S3).

    All or nothing: when one put fails, the keys already stored are deleted (best effort) and
    the StorageError propagates.
    """
    done: list[str] = []
    try:
        for (_kind, path), key in zip(zips, keys, strict=True):
            store_file(store, key, path)
            done.append(key)
    except BaseException:
        for key in done:
            with contextlib.suppress(Exception):
                store.delete(key)
        raise


def store_file(store: ObjectStore, key: str, path: Path) -> None:
    """Put the file at `path` into `store` under `key`; the file is consumed (moved in)."""
    store.move_in(key, path)


def _new_file(path: Path) -> tuple[int, Path]:
    try:
        return os.open(path, _CREATE, 0o644), path
    except FileExistsError:  # e.g. the payload made a file of that name
        fd, name = tempfile.mkstemp(prefix=path.stem + "-", suffix=path.suffix, dir=path.parent)
        return fd, Path(name)


def _add_entry(zf: zipfile.ZipFile, arcname: str, entry: os.DirEntry[str]) -> None:
    """Add a folder or a regular file (a kept link: the file it points to) to `zf`; skip
    anything else (FIFOs, sockets)."""
    if entry.is_dir(follow_symlinks=False) or entry.is_file():
        zf.write(entry.path, arcname)


def _arcname(rel: str) -> str:
    """`rel` as valid UTF-8 (undecodable bytes of a file name become U+FFFD)."""
    return rel.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
