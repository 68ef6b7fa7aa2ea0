"""The `fetch` (S3 -> local) and `store` (local -> S3) steps, with the original's path rules
(`s3lib.get_files`, `fw_entrypoint.py`), through the flock's S3 client settings.

Fetch: `key` is a prefix; no object -> 218; a failed download -> 217; one object goes to
`dest` (a folder: `dest/<name>`; a path ending with the object's name, or the exact key:
`dest`; otherwise `dest/<name>`); several go under `dest`, keeping their key less the prefix's
folder part (all of `key` when it ends with `/`). `expand` extracts `.7z` archives into their
folder and deletes them; `excludeFilePattern` then deletes matching entries of the fetched
folder. Fixed here: an existing `dest` ending in `.7z` is used as a cache without the
original's crash, a single object to a `dest/` that does not exist yet is placed inside it,
matching folders are deleted too, and a failed extraction exits 211 instead of 0.

Store: a missing source -> 43; an empty folder is skipped; a folder is uploaded file by file
(`.DS_Store` left out) under `dest/`; a file goes to `dest` (or `dest/<name>` when `dest` ends
with `/`); `compress` uploads `<source>.7z`, `compressSubDirectories` one `<dest>/<sub>.7z`
per subfolder; `removeOnStore` (default true) deletes the archive afterwards. An upload
failure -> 215 (216 for a folder); a failed compression -> 212 (the original exited 0).
"""

from __future__ import annotations

import os
import posixpath
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from shepard.tasks import sevenzip
from shepard.tasks.runner import (
    COMPRESS_FAILED,
    DOWNLOAD_FAILED,
    EXTRACT_FAILED,
    NO_OBJECT,
    STORE_NO_SOURCE,
    UPLOAD_FAILED,
    UPLOAD_THREADS_FAILED,
    Context,
    Step,
)

THREADS = 10
LIST_PAGE = 1000  # keys per listing request (S3's largest page)
SHARED_MEMORY = Path("/dev/shm")


class TransferFailed(Exception):
    """A download or upload failed; `code` is the step's exit code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


# -- fetch -------------------------------------------------------------------------------------


def fetch(step: Step, ctx: Context) -> int:
    """Run one `fetch` step; its exit code."""
    bucket, key, dest = str(step["bucket"]), str(step["key"]), str(step["dest"])
    expand = bool(step.get("expand", False))
    if expand and key.endswith(".7z") and not dest.endswith(".7z"):
        dest = posixpath.join(dest, posixpath.basename(key))
    local = ctx.path(dest)
    try:
        if dest.endswith(".7z") and local.exists():
            ctx.say(f"fetch [{step['name']}]: {dest} is here already: not downloaded again")
        else:
            keys = list(list_keys(ctx.s3(), bucket, key))
            if not keys:
                ctx.say(f"fetch [{step['name']}]: no object found under s3://{bucket}/{key}")
                return NO_OBJECT
            download(ctx, bucket, key, keys, dest)
    except TransferFailed as exc:
        ctx.say(f"fetch [{step['name']}]: {exc}")
        return exc.code
    if expand:
        try:
            expand_archives(local, ctx)
        except sevenzip.SevenZipError as exc:
            ctx.say(f"fetch [{step['name']}]: {exc}")
            return EXTRACT_FAILED
    remove_excluded(ctx.path(dest.replace(".7z", "")), step.get("excludeFilePattern") or [])
    return 0


def list_keys(client: Any, bucket: str, prefix: str) -> Iterator[str]:
    """Every key under `prefix`, every page (folder markers ending with `/` left out)."""
    try:
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix, PaginationConfig={"PageSize": LIST_PAGE}
        )
        for page in pages:
            for obj in page.get("Contents", ()):
                if not obj["Key"].endswith("/"):
                    yield obj["Key"]
    except Exception as exc:
        raise TransferFailed(DOWNLOAD_FAILED, f"cannot list s3://{bucket}/{prefix}: {exc}") from exc


def local_paths(key: str, keys: list[str], dest: str, dest_is_dir: bool) -> dict[str, str]:
    """Where each object goes (the original's rules, see the module docstring)."""
    if len(keys) == 1:
        only = keys[0]
        name = posixpath.basename(only)
        if dest_is_dir or dest.endswith("/"):
            return {only: posixpath.join(dest, name)}
        if dest.endswith(name) or only == key:
            return {only: dest}
        return {only: posixpath.join(dest, name)}
    base = key if key.endswith("/") else posixpath.dirname(key)
    cut = len(base.rstrip("/")) + 1 if base else 0
    return {k: posixpath.join(dest, k[cut:]) for k in keys}


def download(ctx: Context, bucket: str, key: str, keys: list[str], dest: str) -> None:
    """Download `keys`, THREADS at a time; TransferFailed(217) when any download fails."""
    targets = local_paths(key, keys, dest, ctx.path(dest).is_dir())
    client = ctx.s3()

    def one(item: tuple[str, str]) -> None:
        obj, path = item
        local = ctx.path(path)
        local.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(bucket, obj, str(local))

    _threaded(one, list(targets.items()), DOWNLOAD_FAILED, "download")
    ctx.say(f"fetched {len(targets)} object(s) from s3://{bucket}/{key}")


def expand_archives(local: Path, ctx: Context) -> None:
    """`local` ending in `.7z`: extract it into its folder, delete it. A folder: the same
    for every `.7z` under it. Anything else: SevenZipError."""
    if local.name.endswith(".7z") and local.is_file():
        archives = [local]
    elif local.is_dir():
        archives = sorted(local.rglob("*.7z"))
    else:
        raise sevenzip.SevenZipError(f"cannot expand {local}: not a .7z file nor a folder")
    for archive in archives:
        sevenzip.extract(archive, archive.parent)
        archive.unlink()
        ctx.say(f"expanded {archive.name}")


def remove_excluded(folder: Path, patterns: list[str]) -> None:
    """Delete the entries of `folder` (not recursively) matching any glob of `patterns`."""
    if not patterns or not folder.is_dir():
        return
    for pattern in patterns:
        for path in folder.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)


# -- store -------------------------------------------------------------------------------------


def store(step: Step, ctx: Context) -> int:
    """Run one `store` step; its exit code."""
    name, bucket, dest = step["name"], str(step["bucket"]), str(step["dest"])
    source = ctx.path(str(step["source"]))
    if not source.exists():
        ctx.say(f"error: source path for store task [{name}] does not exist: {step['source']}")
        return STORE_NO_SOURCE
    subdirs = bool(step.get("compressSubDirectories", False))
    if source.is_dir() and not subdirs and not any(source.iterdir()):
        ctx.say(f"store [{name}]: skipping empty output directory {step['source']}")
        return 0
    try:
        if subdirs:
            for sub in sorted(p for p in source.iterdir() if p.is_dir()):
                _store_archive(step, ctx, sub, bucket, _join(dest, f"{sub.name}.7z"))
        elif step.get("compress", False):
            _store_archive(step, ctx, source, bucket, _file_key(dest, f"{source.name}.7z"))
        elif source.is_dir():
            upload_folder(ctx, source, bucket, dest)
        else:
            upload(ctx, source, bucket, _file_key(dest, source.name))
    except sevenzip.SevenZipError as exc:
        ctx.say(f"store [{name}]: {exc}")
        return COMPRESS_FAILED
    except TransferFailed as exc:
        ctx.say(f"store [{name}]: {exc}")
        return exc.code
    return 0


def _store_archive(step: Step, ctx: Context, source: Path, bucket: str, key: str) -> None:
    archive = archive_path(source, ctx, shared=bool(step.get("compressInSharedMemory", False)))
    sevenzip.compress(archive, source)
    try:
        upload(ctx, archive, bucket, key)
    finally:
        if step.get("removeOnStore", True):
            archive.unlink(missing_ok=True)


def archive_path(source: Path, ctx: Context, *, shared: bool) -> Path:
    """`<source>.7z`, or `/dev/shm/<source path>.7z` for `compressInSharedMemory`."""
    if not shared:
        return source.with_name(f"{source.name}.7z")
    relative = os.path.relpath(source, ctx.cwd)
    if relative.startswith(".."):
        relative = source.name
    return SHARED_MEMORY / f"{relative}.7z"


def upload(ctx: Context, path: Path, bucket: str, key: str) -> None:
    """Upload one file; TransferFailed(215) on failure."""
    try:
        ctx.s3().upload_file(str(path), bucket, key)
    except Exception as exc:
        raise TransferFailed(
            UPLOAD_FAILED, f"cannot upload {path} to s3://{bucket}/{key}: {exc}"
        ) from exc
    ctx.say(f"stored s3://{bucket}/{key}")


def upload_folder(ctx: Context, source: Path, bucket: str, dest: str) -> None:
    """Upload every file under `source` to `<dest>/<relative path>`; TransferFailed(216)."""
    files = sorted(p for p in source.rglob("*") if p.is_file() and "DS_Store" not in p.name)
    client = ctx.s3()

    def one(path: Path) -> None:
        client.upload_file(str(path), bucket, _join(dest, path.relative_to(source).as_posix()))

    _threaded(one, files, UPLOAD_THREADS_FAILED, "upload")
    ctx.say(f"stored {len(files)} file(s) under s3://{bucket}/{dest.rstrip('/')}/")


def _threaded(fn: Any, items: list[Any], code: int, verb: str) -> None:
    with ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix=verb) as pool:
        futures = [pool.submit(fn, item) for item in items]
        errors = [f.exception() for f in futures]
    failed = [e for e in errors if e is not None]
    if failed:
        raise TransferFailed(code, f"{len(failed)} {verb}(s) failed, first: {failed[0]}")


def _join(prefix: str, name: str) -> str:
    return f"{prefix.rstrip('/')}/{name}" if prefix else name


def _file_key(dest: str, name: str) -> str:
    return f"{dest}{name}" if dest.endswith("/") else dest
