"""Copying a flock's result zips and error bundles to a local folder (`shepard retrieve`).

Result zips are the flock's own outputs, not input bundles: they are unzipped leniently, one
entry at a time. An entry whose name could escape the destination (absolute, `..`), that is a
link (zips of older versions held links), or that cannot be written is left out with a note;
backslashes and control characters in names become `_`. One object that cannot be copied or
unzipped never stops the others: everything is tried, and the report says what went wrong.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from shepard.errors import StorageError

_DRIVE = re.compile(r"[A-Za-z]:")
_ODD = re.compile(r"[\\\x00-\x1f\x7f]")
_CHUNK = 1 << 20


class Source(Protocol):
    """What retrieving needs of a store (an ObjectStore, or the remote mode's view of a
    server's, shepard.remote.objects)."""

    def list(self, prefix: str = "") -> Iterator[str]: ...

    def size(self, key: str) -> int: ...

    def get_file(self, key: str, dest: Path) -> None: ...


@dataclass
class Retrieval:
    """What `retrieve` did."""

    files: list[Path] = field(default_factory=list)  # copied now or already there
    skipped: list[str] = field(default_factory=list)  # entries renamed or left out, and why
    failed: list[str] = field(default_factory=list)  # objects not copied or not unzipped

    @property
    def ok(self) -> bool:
        """True when every object was copied (and unzipped when asked)."""
        return not self.failed


def retrieve_store(
    store: Source,
    target: Path,
    result: Retrieval,
    *,
    unzip: bool,
    wanted: Iterable[str] = (),
    on_file: Callable[[Path], None] | None = None,
) -> None:
    """Copy every object of `store` (only keys holding one of `wanted`, when given) into
    `target`, skipping files already there with the same size; unzip the zips when asked.
    Problems go into `result`; nothing is raised for one object."""
    wanted = list(wanted)
    for key in store.list():
        if wanted and not any(w in key for w in wanted):
            continue
        path = target / key
        try:
            _copy(store, key, path)
        except (StorageError, OSError) as exc:
            result.failed.append(f"{key}: not copied: {_text(exc)}")
            continue
        if unzip and key.endswith(".zip"):
            try:
                result.skipped += extract_results(path, path.with_suffix(""))
            except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
                result.failed.append(f"{key}: copied but not unzipped: {_text(exc)}")
        result.files.append(path)
        if on_file:
            on_file(path)


def extract_results(path: Path, dest: Path) -> list[str]:
    """Unzip the result zip at `path` into the folder `dest`; return what was renamed or left
    out, one line each (`<zip>: <entry>: why`).

    Nothing is written outside `dest`, and no existing link is followed. Raises
    zipfile.BadZipFile (or OSError) only when the zip cannot be opened at all.
    """
    notes: list[str] = []
    root = dest.resolve()
    root.mkdir(parents=True, exist_ok=True)
    done: set[tuple[str, ...]] = set()
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            parts, why = _safe_parts(info)
            if parts is None or parts in done:
                if parts is not None:
                    why = "appears twice in the zip; the first was kept"
                notes.append(f"{path.name}: {info.orig_filename!r}: left out: {why}")
                continue
            if why:
                notes.append(f"{path.name}: {info.orig_filename!r}: {why}")
            done.add(parts)
            problem = _extract(zf, info, root, parts)
            if problem:
                notes.append(f"{path.name}: {info.orig_filename!r}: left out: {problem}")
    return notes


def _safe_parts(info: zipfile.ZipInfo) -> tuple[tuple[str, ...] | None, str]:
    """(path segments to write, note) for an entry; (None, why) for one left out."""
    raw = info.orig_filename
    if info.flag_bits & 0x1:
        return None, "it is encrypted"
    if stat.S_ISLNK(info.external_attr >> 16):
        return None, "it is a symbolic link"
    if raw.startswith("/") or _DRIVE.match(raw):
        return None, "it is an absolute path"
    parts = tuple(part for part in raw.split("/") if part not in ("", "."))
    if ".." in parts:
        return None, "it has a '..' segment, which would leave the folder"
    if not parts:
        return (), ""
    clean = tuple(_ODD.sub("_", part) for part in parts)
    note = "" if clean == parts else f"written as {'/'.join(clean)!r}"
    return clean, note


def _extract(zf: zipfile.ZipFile, info: zipfile.ZipInfo, root: Path, parts: tuple[str, ...]) -> str:
    """Write one entry under `root`; return why it was not written ("" when it was)."""
    target = root.joinpath(*parts)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.parent.resolve().is_relative_to(root):
            return "a link in the destination points outside it"
        if info.is_dir():
            target.mkdir(exist_ok=True)
            return ""
        _write_entry(zf, info, target)
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as exc:
        return _text(exc)
    return ""


def _write_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path) -> None:
    mode = 0o777 if (info.external_attr >> 16) & 0o100 else 0o666
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        with zf.open(info) as src, os.fdopen(os.open(target, flags, mode), "wb") as out:
            shutil.copyfileobj(src, out, _CHUNK)
    except BaseException:
        with contextlib.suppress(OSError):
            if not target.is_symlink():
                target.unlink()
        raise


def _copy(store: Source, key: str, path: Path) -> None:
    if not path.exists() or path.stat().st_size != store.size(key):
        path.parent.mkdir(parents=True, exist_ok=True)
        store.get_file(key, path)


def _text(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}" + (f": {exc.filename}" if exc.filename else "")
    return str(exc) or type(exc).__name__
