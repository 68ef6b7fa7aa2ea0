"""Files arriving in an inbox: walking it, telling a complete zip from one still being
written, refusing what must not be opened, and validating the rest (for
shepard.triggers.inbox, which moves them through its steps)."""

from __future__ import annotations

import logging
import os
import stat
import struct
from collections.abc import Iterator, Mapping
from pathlib import Path

from shepard.bundle import read_bundle_file
from shepard.config import LimitsConfig
from shepard.errors import BundleError, ParamsError
from shepard.model import ParamValue
from shepard.params import check_env_size

log = logging.getLogger(__name__)

REJECTED = "rejected"
"""Folder of the inbox where bad bundles go, each with `<name>.reason.txt`."""

_EOCD, _EOCD_SIZE = b"PK\x05\x06", 22
_LOCATOR64, _LOCATOR64_SIZE = b"PK\x06\x07", 20
_EOCD64, _EOCD64_SIZE = b"PK\x06\x06", 56
_CENTRAL = b"PK\x01\x02"


def walk_inbox(root: Path) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """(path relative to root, entry) of every non-folder under root, skipping hidden names
    and the top-level rejected/ folder; folder symlinks are not followed."""
    stack = [(str(root), "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:  # unreadable, too deep, a name too long: skip that folder only
            log.warning("cannot read inbox folder %r: %s", folder, exc.strerror or exc)
            continue
        for entry in entries:
            name = entry.name
            if name.startswith(".") or (not prefix and name == REJECTED):
                continue
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                continue
            if is_dir:
                stack.append((entry.path, f"{prefix}{name}/"))
            else:
                yield prefix + name, entry


def refused_unopened(mode: int, rel: str) -> str | None:
    """Why a file of `mode` is rejected without being opened (link, fifo, socket...), or None."""
    if stat.S_ISLNK(mode):
        return f"{rel!r} is a symbolic link: move the file itself into the inbox"
    if not stat.S_ISREG(mode):
        return f"{rel!r} is not a regular file (fifo, socket or device): remove it"
    return None


def is_complete_zip(path: str | Path, size: int) -> bool:
    """True if the `size`-byte file at `path` ends with a zip's end records and its central
    directory ends where they begin, i.e. the whole archive has been written (prefixed zips,
    e.g. self-extracting ones, do not qualify and wait for the give-up time instead)."""
    if size < _EOCD_SIZE:
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return False
    try:
        base = size - min(size, _EOCD_SIZE + 0xFFFF)
        tail = os.pread(fd, size - base, base)
        if len(tail) != size - base:
            return False  # shorter than it was a moment ago: still changing
        at = tail.rfind(_EOCD)
        while at >= 0:
            if at + _EOCD_SIZE <= len(tail):
                (comment,) = struct.unpack_from("<H", tail, at + 20)
                if at + _EOCD_SIZE + comment == len(tail):
                    return _directory_fits(fd, tail, base, base + at)
            at = tail.rfind(_EOCD, 0, at)
        return False
    except (OSError, struct.error):
        return False
    finally:
        os.close(fd)


def _directory_fits(fd: int, tail: bytes, base: int, eocd: int) -> bool:
    """Whether the central directory named by the end record at `eocd` ends right before it
    (or before its zip64 record) and starts with a central directory header. `tail` holds
    the file's bytes from offset `base` to its end."""

    def read(offset: int, length: int) -> bytes:
        if offset >= base:
            return tail[offset - base : offset - base + length]
        return os.pread(fd, length, offset)

    cd_size, cd_offset = struct.unpack_from("<II", tail, eocd - base + 12)
    end = eocd
    if eocd >= _LOCATOR64_SIZE:
        locator = read(eocd - _LOCATOR64_SIZE, _LOCATOR64_SIZE)
        if locator[:4] == _LOCATOR64:
            (end,) = struct.unpack_from("<Q", locator, 8)
            record = read(end, _EOCD64_SIZE)
            if len(record) < _EOCD64_SIZE or record[:4] != _EOCD64:
                return False
            cd_size, cd_offset = struct.unpack_from("<QQ", record, 40)
    if cd_offset + cd_size != end:
        return False
    return cd_size == 0 or read(cd_offset, 4) == _CENTRAL


Outcome = tuple[dict[str, ParamValue] | None, str]  # (params, "") or (None, why it is refused)


def check_bundles(
    checks: list[tuple[str, str]], limits: LimitsConfig, env: Mapping[str, str] | None = None
) -> list[Outcome]:
    """Validate each (path, name as dropped) with read_bundle_file, and its parameters with
    the flock's payload.env (`env`) against the environment's size limits."""
    outcomes: list[Outcome] = []
    for path, rel in checks:
        try:
            params = read_bundle_file(Path(path), limits)
            check_env_size(params, env or {}, source=f"parameters of bundle {rel!r}")
            outcomes.append((params, ""))
        except (
            BundleError,
            ParamsError,
        ) as exc:  # name the file as it was dropped, not its new key
            outcomes.append((None, str(exc).replace(repr(path), repr(rel))))
        except Exception as exc:  # whatever it is, one file must not block the inbox
            outcomes.append((None, f"bundle {rel!r} could not be read: {exc}"))
    return outcomes
