"""Result zips: each non-empty output folder of a successful attempt becomes one object.

Names: `[TAG_]result@<UUID>_<START_TIME>_<root|efs|lustre>.zip`. START_TIME differs between
attempts, so a late upload of a superseded attempt can never overwrite a newer one's results.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
import zipfile
from pathlib import Path

from shepard.model import Params
from shepard.params import find_key
from shepard.runtime.contract import TAG
from shepard.runtime.workspace import Workspace, walk_tree
from shepard.storage import LocalStore, ObjectStore

MAX_TAG = 100
_UNSAFE_TAG_CHARS = re.compile(r"[^A-Za-z0-9._-]")


def sanitize_tag(value: str) -> str:
    """`value` made safe for an object name: characters other than ASCII letters, digits, `.`,
    `_` and `-` become `_`; leading dots and dashes are stripped; at most MAX_TAG characters."""
    return _UNSAFE_TAG_CHARS.sub("_", value).lstrip(".-")[:MAX_TAG]


def output_key(params: Params, job_id: str, start_time: int, kind: str) -> str:
    """The key of the result zip of one output folder (`kind`: root, efs or lustre)."""
    tag = sanitize_tag(find_key(params, TAG) or "")
    prefix = f"{tag}_" if tag else ""
    return f"{prefix}result@{job_id}_{start_time}_{kind}.zip"


def zip_outputs(ws: Workspace) -> list[tuple[str, Path]]:
    """Zip every output folder of `ws` that holds at least one file (anywhere inside).

    Returns (kind, zip path) pairs; the zips are temporary files in `ws.root` (removed with the
    workspace, or moved into a store by `publish`). Empty folders yield no zip.
    """
    zips: list[tuple[str, Path]] = []
    for kind, folder in ws.output_folders():
        path = zip_folder(folder, ws.root)
        if path is not None:
            zips.append((kind, path))
    return zips


def zip_folder(folder: Path, tmp_dir: Path) -> Path | None:
    """Zip the content of `folder` (paths relative to it) into a new file in `tmp_dir`.

    DEFLATE, zip64 allowed, folder entries included; symlinks are stored as links (never
    followed); FIFOs, sockets and devices are skipped. None (and no file) when `folder` holds
    no file, symlink included, at any depth.
    """
    fd, name = tempfile.mkstemp(prefix=".result-", suffix=".zip", dir=tmp_dir)
    path = Path(name)
    try:
        with (
            os.fdopen(fd, "wb") as raw,
            zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED, strict_timestamps=False) as zf,
        ):
            has_files = _add_tree(zf, folder)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    if not has_files:
        path.unlink()
        return None
    return path


def publish(store: ObjectStore, zips: list[tuple[str, Path]], keys: list[str]) -> None:
    """Store each zip under the matching key (moving it when `store` is local).

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
    """Put the file at `path` into `store` under `key`; the file may be consumed (moved)."""
    if isinstance(store, LocalStore):
        store.move_in(key, path)
    else:
        store.put_file(key, path)


def _add_tree(zf: zipfile.ZipFile, folder: Path) -> bool:
    """Add everything under `folder` to `zf`; True if anything but folders was added."""
    has_files = False
    for rel, entry, _depth in walk_tree(folder):
        arcname = _arcname(rel)
        if entry.is_symlink():
            _add_symlink(zf, entry.path, arcname)
        elif entry.is_dir(follow_symlinks=False):
            zf.write(entry.path, arcname)
            continue
        elif entry.is_file(follow_symlinks=False):
            zf.write(entry.path, arcname)
        else:
            continue
        has_files = True
    return has_files


def _add_symlink(zf: zipfile.ZipFile, path: str, arcname: str) -> None:
    info = zipfile.ZipInfo(arcname)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    info.create_system = 3  # Unix, so unzip tools honour the mode bits
    zf.writestr(info, os.readlink(path))


def _arcname(rel: str) -> str:
    """`rel` as valid UTF-8 (undecodable bytes of a file name become U+FFFD)."""
    return rel.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
