"""What the runtime copies into `$ROOT_INPUT_NAME` before the payload starts.

The input bundle (copied as is, never unpacked) and quick-deploy folders (a folder of the
quick-deploy store whose `run.sh` replaces the flock's command).
"""

from __future__ import annotations

import os
from pathlib import Path

from shepard.errors import StorageError
from shepard.model import Params
from shepard.params import find_key
from shepard.runtime.contract import QUICK_DEPLOY_DIRECTORY
from shepard.runtime.workspace import SECRETS_DIR, SetupError
from shepard.storage import NoSuchObject, ObjectStore, check_key

QUICK_DEPLOY_SCRIPT = "run.sh"


def fetch_bundle(store: ObjectStore, key: str, dest_dir: Path) -> str:
    """Copy object `key` of `store` to `dest_dir/<basename>`; return the basename.

    Raises SetupError when the object is missing or cannot be copied.
    """
    name = key.rsplit("/", 1)[-1]
    if name == SECRETS_DIR:
        raise SetupError(f"input bundle {key!r} clashes with the secrets folder", retryable=False)
    try:
        store.get_file(key, dest_dir / name)  # S3: streamed, in parallel ranges when large
    except NoSuchObject:
        raise SetupError(f"input bundle {key!r} not found in {store.location}") from None
    except StorageError as exc:
        raise SetupError(f"cannot copy input bundle {key!r}: {exc}") from exc
    return name


def quick_deploy_folder(params: Params) -> str | None:
    """The job's QUICK_DEPLOY_DIRECTORY (any case; trailing `/` dropped), or None if unset/empty.

    Raises SetupError (not retryable) unless it is a safe relative folder name: not absolute,
    no `..`, `.` or empty segments, no backslash, and not inside the secrets folder.
    """
    raw = find_key(params, QUICK_DEPLOY_DIRECTORY)
    if not raw:
        return None
    folder = raw.rstrip("/")
    try:
        if raw.startswith("/") or folder.split("/", 1)[0] == SECRETS_DIR:
            raise StorageError(raw)
        check_key(folder)
    except StorageError:
        raise SetupError(
            f"bad {QUICK_DEPLOY_DIRECTORY} {raw!r}: it must be a relative folder name "
            "without '..' (e.g. 'my-tool' or 'tools/v2')",
            retryable=False,
        ) from None
    return folder


def fetch_quick_deploy(store: ObjectStore, folder: str, dest_dir: Path) -> Path:
    """Copy every object under `folder/` of `store` to `dest_dir/folder/`; return that folder.

    Raises SetupError when the store holds nothing under `folder/`, when the folder has no
    `run.sh`, or when a copy fails.
    """
    keys = [k for k in store.list(folder + "/") if not k.endswith("/")]
    if not keys:
        raise SetupError(f"quick-deploy folder {folder} not found in {store.location}")
    try:
        for key in keys:
            target = dest_dir / check_key(key)
            os.makedirs(target.parent, exist_ok=True)
            store.get_file(key, target)
    except (StorageError, OSError) as exc:
        raise SetupError(f"cannot copy quick-deploy folder {folder}: {exc}") from exc
    local = dest_dir / folder
    if not (local / QUICK_DEPLOY_SCRIPT).is_file():
        raise SetupError(
            f"quick-deploy folder {folder} in {store.location} has no {QUICK_DEPLOY_SCRIPT}"
        )
    return local
