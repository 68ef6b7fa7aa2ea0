"""Input bundles: zips whose root holds `inputs.json` (or `inputs.txt`) with the job's parameters.

Reading a bundle from a store touches only the zip's end records, its central directory and the
inputs member (range reads through `RangeFile`), so a bundle of many gigabytes costs a few
requests. Every function checks the archive before trusting it: entry names must be safe
relative paths, symlink entries are refused, and the entry count, declared sizes and
compression ratios must stay within `LimitsConfig`. Every failure raises BundleError naming
the bundle, the problem and what to do about it (parameter problems included).
"""

from __future__ import annotations

import contextlib
import io
import lzma
import os
import re
import stat
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from shepard.config import LimitsConfig
from shepard.errors import BundleError, ParamsError
from shepard.model import ParamValue
from shepard.params import parse_params_json
from shepard.storage.base import ObjectStore
from shepard.storage.rangefile import RangeFile

INPUTS_NAMES = ("inputs.json", "inputs.txt")
"""Names of the inputs file at a bundle's root, in order of precedence."""

RATIO_FLOOR = 1 << 20
"""Entries (and bundles) smaller than this, uncompressed, never trip the compression-ratio check."""

_CHUNK = 1 << 20
_DRIVE = re.compile(r"[A-Za-z]:")
_LOCAL_HEADER = b"PK\x03\x04"
# What zipfile and its decompressors raise on damaged data:
_ZIP_ERRORS: tuple[type[Exception], ...] = (zipfile.BadZipFile, zlib.error, lzma.LZMAError)
_ZIP_ERRORS += (EOFError, NotImplementedError, ValueError, struct.error, OSError)
_Entries = dict[tuple[str, ...], zipfile.ZipInfo]


def read_bundle(store: ObjectStore, key: str, limits: LimitsConfig) -> dict[str, ParamValue]:
    """Check the bundle stored at `key` and return the parameters of its inputs file.

    Only the zip's metadata and the inputs member are read. Raises BundleError for an unusable
    bundle or inputs file, StorageError if `key` cannot be read.
    """
    with RangeFile(store, key) as raw:
        return _read_params(raw, raw.size, key, limits)


def read_bundle_bytes(data: bytes, name: str, limits: LimitsConfig) -> dict[str, ParamValue]:
    """`read_bundle` for a bundle held in memory, named `name` in messages (for small objects
    fetched whole: the bytes checked are then exactly the bytes stored)."""
    return _read_params(io.BytesIO(data), len(data), name, limits)


def read_bundle_file(
    path: Path, limits: LimitsConfig, *, name: str | None = None
) -> dict[str, ParamValue]:
    """`read_bundle` for a local zip file, named `name` in messages (default: its path; an
    upload kept in a temporary file is named as its sender named it)."""
    with _open_local(path) as fh:
        return _read_params(fh, os.fstat(fh.fileno()).st_size, name or str(path), limits)


def make_bundle(folder: Path, dest: Path, limits: LimitsConfig) -> Path:
    """Zip the contents of `folder` (DEFLATE, zip64 when needed) into `dest`; return `dest`.

    The folder's inputs file is validated before anything is zipped. Symlinks to regular files
    inside the folder are stored as plain files; any other symlink (pointing outside the folder,
    to a folder, or dangling) and any special file is refused with one BundleError listing
    them all. `dest` itself is never included. The zip is written to a temporary file next to
    `dest`, checked like `read_bundle_file` would, then renamed; on error `dest` is untouched.
    """
    root = folder.expanduser().resolve()
    if not root.is_dir():
        raise BundleError(f"cannot bundle {str(folder)!r}: it is not a folder")
    if dest.is_dir():
        raise BundleError(f"cannot write the bundle to {str(dest)!r}: it is a folder")
    _check_folder_inputs(root, limits)
    plan = _plan(root, dest.expanduser().resolve(), limits)
    _write_zip(plan, dest, limits)
    return dest


def extract_bundle(path: Path, dest: Path, limits: LimitsConfig) -> None:
    """Unpack the bundle at `path` into the folder `dest` (created if needed).

    Applies the checks of `read_bundle` to the entries (the inputs file is not required) and
    enforces the limits again on the bytes actually decompressed, so lying sizes are caught.
    Nothing is ever written outside `dest`. On BundleError `dest` may hold part of the bundle
    (never the entry that failed); discard it. OSError if `dest` cannot be written.
    """
    name = str(path)
    with _open_local(path) as fh, _open_zip(fh, name) as zf:
        entries = _check_archive(zf, name, limits)
        root = dest.expanduser().resolve()
        root.mkdir(parents=True, exist_ok=True)
        used = 0
        for parts, info in entries.items():
            used += _extract_entry(zf, info, _target(root, parts, name), name, limits, used)


# --- reading -----------------------------------------------------------------------------------


def _open_local(path: Path) -> IO[bytes]:
    try:
        return open(path, "rb")
    except OSError as exc:
        raise BundleError(f"cannot open bundle {str(path)!r}: {exc.strerror or exc}") from exc


def _read_params(
    fh: IO[bytes] | RangeFile, size: int, name: str, limits: LimitsConfig
) -> dict[str, ParamValue]:
    """The parameters of the bundle readable through `fh` (`size` bytes long)."""
    if size == 0:
        raise _fail(name, "is an empty file (0 bytes), not a zip archive: upload the zip again")
    with _open_zip(fh, name) as zf:
        info = _find_inputs(_check_archive(zf, name, limits), name)
        text = _read_inputs(zf, info, name, limits)
    try:
        return parse_params_json(text, source=f"{info.filename} in bundle {name!r}")
    except ParamsError as exc:
        raise BundleError(str(exc)) from exc


def _open_zip(fh: IO[bytes] | RangeFile, name: str) -> zipfile.ZipFile:
    """Open `fh` as a zip, telling "not a zip at all" apart from "a damaged zip"."""
    try:
        return zipfile.ZipFile(fh)
    except _ZIP_ERRORS as exc:
        fh.seek(0)
        if fh.read(len(_LOCAL_HEADER)) != _LOCAL_HEADER:
            raise _fail(name, "is not a zip archive: create the bundle with a zip tool") from exc
        raise _fail(
            name, f"is a truncated or corrupt zip archive ({exc}): upload or create it again"
        ) from exc


def _check_archive(zf: zipfile.ZipFile, name: str, limits: LimitsConfig) -> _Entries:
    """Check every entry and the declared sizes; return the entries by normalised path."""
    infos = zf.infolist()
    if len(infos) > limits.max_entries:
        raise _fail(name, f"has {len(infos)} entries, {_over(limits, 'max_entries')}")
    entries: _Entries = {}
    for info in infos:
        parts = _entry_parts(info, name)
        if parts in entries:
            raise _fail(name, f"has two entries named {info.filename!r}: remove one")
        if parts:
            entries[parts] = info
        _check_ratio(name, f"entry {info.filename!r}", info.file_size, info.compress_size, limits)
    _check_nesting(entries, name)
    total = sum(info.file_size for info in infos)
    if total > limits.max_bundle_bytes:
        raise _fail(name, f"expands to {total} bytes, {_over(limits, 'max_bundle_bytes')}")
    _check_ratio(name, "the bundle", total, sum(info.compress_size for info in infos), limits)
    return entries


def _entry_parts(info: zipfile.ZipInfo, name: str) -> tuple[str, ...]:
    """The path segments of a safe entry (without `.` and empty ones); BundleError otherwise."""
    raw = info.orig_filename
    problem = _name_problem(raw)
    if problem is None and stat.S_ISLNK(info.external_attr >> 16):
        problem = "is a symbolic link, which bundles may not hold: store the file itself"
    parts = tuple(part for part in raw.split("/") if part not in ("", "."))
    if problem is None and not parts and not info.is_dir():
        problem = "has an empty name"
    if problem is not None:
        raise _fail(name, f"has an entry {raw!r} that {problem}")
    return parts


def _check_nesting(entries: _Entries, name: str) -> None:
    """Refuse a file entry that is also used as a folder by another entry (`a` and `a/b`)."""
    files = {parts for parts, info in entries.items() if not info.is_dir()}
    for parts in entries:
        for depth in range(1, len(parts)):
            if parts[:depth] in files:
                clash = "/".join(parts[:depth])
                raise _fail(name, f"has a file {clash!r} and entries inside it: remove one")


def _name_problem(raw: str) -> str | None:
    """Why the entry name `raw` could escape or confuse the extraction folder, or None."""
    if "\x00" in raw:
        return "contains a NUL byte"
    if "\\" in raw:
        return "contains a backslash: zip paths must use / (re-create the zip with a zip tool)"
    if raw.startswith("/") or _DRIVE.match(raw):
        return "is an absolute path: zip the folder's contents with relative paths"
    if ".." in raw.split("/"):
        return "has a '..' segment pointing outside the bundle: use paths inside the folder"
    return None


def _check_ratio(name: str, what: str, size: int, compressed: int, limits: LimitsConfig) -> None:
    """Refuse `size` uncompressed bytes from `compressed` bytes beyond the allowed ratio."""
    if size < RATIO_FLOOR:
        return
    ratio = size / max(compressed, 1)
    if ratio > limits.max_compression_ratio:
        raise _fail(
            name,
            f"looks like a zip bomb: {what} expands {ratio:.0f} times ({compressed} bytes to "
            f"{size}), {_over(limits, 'max_compression_ratio')}",
        )


def _find_inputs(entries: _Entries, name: str) -> zipfile.ZipInfo:
    """The root inputs file (`inputs.json` wins over `inputs.txt`); BundleError if missing."""
    for candidate in INPUTS_NAMES:
        info = entries.get((candidate,))
        if info is not None and not info.is_dir():
            return info
    near = [(p, i.filename) for p, i in entries.items() if p[-1].lower() in INPUTS_NAMES]
    near = [(p, filename) for p, filename in near if not filename.endswith("/")]
    if near and len(near[0][0]) == 1:
        raise _fail(name, f"has {near[0][1]}, but names are case-sensitive: rename it")
    if near:
        raise _fail(
            name,
            f"has no inputs file at its root but found {near[0][1]}: the inputs file must be at "
            "the zip's root — zip the folder's contents, not the folder",
        )
    raise _fail(
        name,
        "has no inputs.json or inputs.txt at its root: add one holding the job's parameters "
        "as a JSON object",
    )


def _read_inputs(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, limits: LimitsConfig
) -> str:
    """The text of the inputs member, read with a bounded decompression."""
    limit = limits.max_inputs_bytes
    size = info.file_size
    data = b"" if size > limit else b"".join(_chunks(zf, info, name, limit + 1))
    if max(size, len(data)) > limit:
        raise _fail(name, f"has a {size}-byte {info.filename}, {_over(limits, 'max_inputs_bytes')}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _fail(
            name, f"has {info.filename} that is not UTF-8 (byte {exc.start}): save it as UTF-8"
        ) from exc


def _over(limits: LimitsConfig, setting: str) -> str:
    """The end of a message about exceeding the limit `setting` of the flock config."""
    value = getattr(limits, setting)
    shown = f"{value:g}" if isinstance(value, float) else str(value)
    return f"more than limits.{setting} = {shown}: make it smaller or raise that limit"


def _chunks(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, limit: int | None = None
) -> Iterator[bytes]:
    """Decompressed data of `info` (at most `limit` bytes); BundleError if it is damaged."""
    if info.flag_bits & 0x1:
        raise _fail(name, f"has an encrypted entry {info.filename!r}: zip it without a password")
    left = limit
    try:
        with zf.open(info) as src:
            while left is None or left > 0:
                chunk = src.read(_CHUNK if left is None else min(_CHUNK, left))
                if not chunk:
                    return
                left = None if left is None else left - len(chunk)
                yield chunk
    except _ZIP_ERRORS as exc:
        raise _fail(
            name, f"has a corrupt entry {info.filename!r} ({exc}): create the zip again"
        ) from exc


# --- extracting --------------------------------------------------------------------------------


def _target(root: Path, parts: tuple[str, ...], name: str) -> Path:
    """Where entry `parts` goes under `root`, after checking that it stays inside."""
    target = root.joinpath(*parts)
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.parent.resolve().is_relative_to(root):
        raise _fail(name, f"would write {'/'.join(parts)!r} outside {str(root)!r}")
    return target


def _extract_entry(
    zf: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    target: Path,
    name: str,
    limits: LimitsConfig,
    used: int,
) -> int:
    """Write one entry to `target`, counting actual bytes against the limits; return them."""
    if info.is_dir():
        target.mkdir(exist_ok=True)
        return 0
    mode = 0o777 if (info.external_attr >> 16) & 0o100 else 0o666
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    written = 0
    try:
        with os.fdopen(os.open(target, flags, mode), "wb") as out:
            for chunk in _chunks(zf, info, name):
                written += len(chunk)
                _check_actual(name, info, written, used + written, limits)
                out.write(chunk)
        if written != info.file_size:
            raise _fail(name, f"has entry {info.filename!r} whose size is wrong: zip it again")
    except BaseException:
        with contextlib.suppress(OSError):
            target.unlink()
        raise
    return written


def _check_actual(
    name: str, info: zipfile.ZipInfo, written: int, total: int, limits: LimitsConfig
) -> None:
    """Enforce the limits on bytes actually decompressed so far (declared sizes can lie)."""
    if written > info.file_size:
        raise _fail(name, f"has entry {info.filename!r} larger than it declares: zip it again")
    if total > limits.max_bundle_bytes:
        raise _fail(name, f"expands to over {total} bytes, {_over(limits, 'max_bundle_bytes')}")
    _check_ratio(name, f"entry {info.filename!r}", written, info.compress_size, limits)


# --- writing -----------------------------------------------------------------------------------


def _check_folder_inputs(root: Path, limits: LimitsConfig) -> None:
    """Validate the folder's inputs file fully; BundleError if it is missing or invalid."""
    path = next((root / n for n in INPUTS_NAMES if (root / n).is_file()), None)
    if path is None:
        raise BundleError(
            f"folder {str(root)!r} has no inputs.json or inputs.txt: create one holding the "
            "job's parameters as a JSON object"
        )
    try:
        with open(path, "rb") as fh:
            data = fh.read(limits.max_inputs_bytes + 1)
    except OSError as exc:
        raise BundleError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from exc
    if len(data) > limits.max_inputs_bytes:
        raise BundleError(f"{path} is too big: {_over(limits, 'max_inputs_bytes')}")
    try:
        parse_params_json(data.decode("utf-8-sig"), source=str(path))
    except UnicodeDecodeError as exc:
        raise BundleError(f"{path} is not UTF-8 (byte {exc.start}): save it as UTF-8") from exc
    except ParamsError as exc:
        raise BundleError(str(exc)) from exc


def _plan(root: Path, skip: Path, limits: LimitsConfig) -> list[tuple[Path, str]]:
    """(path, name in the zip) of everything to store; refuses unusable links all at once."""
    plan: list[tuple[Path, str]] = []
    refused: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=_walk_error):
        here = Path(dirpath)
        dirnames.sort()
        for path in [here / f for f in sorted(filenames)] + [here / d for d in dirnames]:
            problem = _file_problem(root, path)
            if problem:
                refused.append(f"  - {path.relative_to(root).as_posix()} {problem}")
            elif path.is_file() and path.resolve() != skip:
                plan.append((path, path.relative_to(root).as_posix()))
        if here != root and not dirnames and not filenames:
            plan.append((here, here.relative_to(root).as_posix()))
    if refused:
        raise BundleError(f"cannot bundle {str(root)!r}:\n" + "\n".join(refused))
    _check_plan(root, plan, limits)
    return plan


def _walk_error(exc: OSError) -> None:
    raise BundleError(f"cannot read {str(exc.filename)!r}: {exc.strerror or exc}") from exc


def _file_problem(root: Path, path: Path) -> str | None:
    """Why `path` (a walked file, or a folder link) cannot go into a bundle, or None."""
    if not path.is_symlink():
        mode = path.lstat().st_mode
        ok = stat.S_ISREG(mode) or stat.S_ISDIR(mode)
        return None if ok else "is not a regular file (fifo, socket or device): remove it"
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return "is a dangling or looping symlink: remove it"
    if not target.is_relative_to(root):
        return f"is a symlink to {str(target)!r} outside the folder: copy the file in instead"
    if not target.is_file():
        return "is a symlink to a folder: replace it with the folder itself"
    return None


def _check_plan(root: Path, plan: list[tuple[Path, str]], limits: LimitsConfig) -> None:
    """Refuse a folder with more entries or bytes than a bundle may hold, before zipping it."""
    total = sum(path.stat().st_size for path, _ in plan if path.is_file())
    checks = (("entries", len(plan), "max_entries"), ("bytes", total, "max_bundle_bytes"))
    for what, value, setting in checks:
        if value > getattr(limits, setting):
            raise BundleError(
                f"cannot bundle {str(root)!r}: {value} {what}, {_over(limits, setting)}"
            )


def _write_zip(plan: list[tuple[Path, str]], dest: Path, limits: LimitsConfig) -> None:
    """Zip `plan` into a temporary file, check it like a reader would, rename it to `dest`."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with (
            os.fdopen(fd, "wb") as fh,
            zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED, strict_timestamps=False) as zf,
        ):
            for path, arcname in plan:
                zf.write(path, arcname)
        with open(tmp, "rb") as written:
            _read_params(written, os.fstat(written.fileno()).st_size, str(dest), limits)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fail(name: str, text: str) -> BundleError:
    return BundleError(f"bundle {name!r} {text}")
