"""What a killed `batch` or `submit` leaves behind, and its removal at the next start.

A `batch` zips its folder into `work/.batch-*` and copies the zip into the inputs store
(through a `.tmp-*` file, renamed when complete), then registers the job. Killed midway, it
leaves any of these three, which nothing else would ever remove:

- `work/.batch-*` folders: each holds LOCK_NAME, locked (flock) by its live process for as
  long as it exists, so a folder whose lock can be taken is proven abandoned and goes at once
  (a folder without the lock file goes once older than GRACE_S);
- a partial write in the inputs store (a folder's `.tmp-*` file, S3's unfinished multipart
  upload), which a live copy keeps writing to: it goes once older than TMP_GRACE_S
  (`ObjectStore.discard_partial`);
- a bundle stored but never registered: an input bundle no job names, older than GRACE_S (a
  bundle is registered right after it is stored; the grace covers a registration waiting for
  a busy catalog).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from shepard.catalog.base import Catalog
from shepard.errors import StorageError
from shepard.storage import ObjectStore

log = logging.getLogger(__name__)

BATCH_PREFIX = ".batch-"
LOCK_NAME = ".lock"
GRACE_S = 3600.0
TMP_GRACE_S = 600.0


@dataclass
class Swept:
    """What one sweep removed."""

    folders: int = 0
    tmp_files: int = 0
    bundles: int = 0
    bytes: int = 0

    def __bool__(self) -> bool:
        return bool(self.folders or self.tmp_files or self.bundles)


@contextlib.contextmanager
def held(folder: Path) -> Iterator[None]:
    """Lock `folder` (a `work/.batch-*` folder) as in use by this process until the block ends."""
    with open(folder / LOCK_NAME, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def sweep(work: Path, inputs: ObjectStore, catalog: Catalog, *, now: float | None = None) -> Swept:
    """Remove the leftovers the module docstring lists; never fails (an error is logged)."""
    now = time.time() if now is None else now
    swept = Swept()
    try:
        _sweep_folders(work, now, swept)
        swept.tmp_files += inputs.discard_partial(older_than=now - TMP_GRACE_S)
        _sweep_bundles(inputs, catalog, now, swept)
    except (OSError, StorageError) as exc:
        log.warning("could not remove the leftovers of killed submissions: %s", exc)
    if swept:
        log.info(
            "removed leftovers of killed submissions: %d folder(s), %d partial file(s), "
            "%d unregistered bundle(s), %d bytes",
            swept.folders, swept.tmp_files, swept.bundles, swept.bytes,
        )  # fmt: skip
    return swept


def _sweep_folders(work: Path, now: float, swept: Swept) -> None:
    if not work.is_dir():
        return
    for folder in work.glob(BATCH_PREFIX + "*"):
        if folder.is_dir() and _abandoned(folder, now):
            swept.bytes += _size(folder)
            shutil.rmtree(folder, ignore_errors=True)
            swept.folders += 1


def _abandoned(folder: Path, now: float) -> bool:
    try:
        fh: IO[str] = open(folder / LOCK_NAME)  # noqa: SIM115 - closed below
    except FileNotFoundError:  # made before locks existed, or not yet locked: judge by age
        return _older(folder, now, GRACE_S)
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # its process is alive
        return True  # our lock is dropped with the file when the folder goes


def _sweep_bundles(inputs: ObjectStore, catalog: Catalog, now: float, swept: Swept) -> None:
    old = [
        info
        for info in inputs.scan()
        if info.key.endswith(".zip") and info.modified < now - GRACE_S
    ]
    if not old:
        return
    referenced = catalog.referenced_bundles([info.key for info in old])
    for info in old:
        if info.key not in referenced:
            swept.bytes += info.size
            inputs.delete(info.key)
            swept.bundles += 1


def _older(path: Path, now: float, grace: float) -> bool:
    try:
        return path.stat().st_mtime < now - grace
    except FileNotFoundError:
        return False


def _size(folder: Path) -> int:
    total = 0
    for dirpath, _, names in os.walk(folder):
        for name in names:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total
