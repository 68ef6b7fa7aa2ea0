"""Result zips: each non-empty output folder of a successful attempt becomes one object.

Names: `[TAG_]result@<UUID>_<START_TIME>_<root|efs|lustre>.zip`. A zip holds files and
folders only: see `output_entries` for what becomes of symbolic links. START_TIME differs between
attempts, so a late upload of a superseded attempt can never overwrite a newer one's results.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from shepard.model import Params
from shepard.params import find_key
from shepard.runtime.contract import TAG
from shepard.runtime.workspace import Workspace, walk_tree
from shepard.runtime.zipwriter import IN_MEMORY_ZIP, SMALL_ZIP_ENTRIES, small_zip
from shepard.storage import ObjectStore

MAX_TAG = 100
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
    built in memory by `zipwriter.small_zip` and written in one go.
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
    root: str | None = None  # resolved at the first link: a few system calls per job less
    kept: list[tuple[str, os.DirEntry[str]]] = []
    for rel, entry, _depth in walk_tree(folder):
        name = _arcname(rel)
        if entry.is_symlink():
            root = root or os.path.realpath(folder)
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
