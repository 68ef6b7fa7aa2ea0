"""Secrets: the files every payload finds in `$ROOT_INPUT_NAME/secrets/`.

The flock's secrets store (`shepard.secrets.SecretStore`, a folder or S3) holds them
encrypted; each job gets them decrypted into its own `secrets/` folder. A worker process
decrypts each secret once and keeps the plaintext in memory (keyed by its object's size and
last-write time), so thousands of jobs do not decrypt thousands of times; the key is loaded
only when something must be decrypted, so a flock without secrets needs neither a key nor
any work beyond listing an empty store. While a folder store stays unchanged, not even that
(one stat per job); a store elsewhere (S3) found empty is listed again at most every SETTLED
seconds.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from shepard.keys import SecretKeyError
from shepard.runtime.workspace import SetupError
from shepard.secrets import SecretCache, SecretDecryptError, SecretStore, private_folder
from shepard.storage import ObjectStore

SETTLED = 2.0
"""Seconds after its last change from which a folder's mtime is trusted to tell the next change
(a change made within the same clock tick as the one before may leave the mtime as it was);
also how long a store elsewhere found empty is taken to stay empty."""

_CACHE = SecretCache()  # per worker process, shared by its worker threads
_EMPTY: dict[str, tuple[int, int]] = {}  # folders found empty: (inode, mtime_ns) then
_EMPTY_AT: dict[str, float] = {}  # stores elsewhere found empty: when (time.monotonic())


def place_secrets(source: ObjectStore, dest: Path) -> None:
    """Create `dest` with mode 0700 and decrypt every secret stored in `source` into it.

    Each file is created with mode 0600, so it is never readable by others, not even for a
    moment. A missing or empty store means no secrets: `dest` is still created, empty. An
    existing `dest` (a reused slot) must be empty; its mode is set back to 0700.

    Raises SetupError (not retryable: another attempt would meet the same key) when the key is
    missing or does not decrypt the secrets; the message never includes secret content.
    OSError and StorageError propagate.
    """
    secrets = SecretStore(source)
    folder = secrets.local_folder
    if folder is None:
        _place_from_store(secrets, dest)
        return
    where = str(folder)
    try:
        info = os.stat(where)
    except OSError:
        info = None
    if info is not None and _EMPTY.get(where) == (info.st_ino, info.st_mtime_ns):
        private_folder(dest)  # still empty: no entry was added or removed since
        return
    placed = _materialise(secrets, dest)
    if info is not None and not placed and time.time() - info.st_mtime > SETTLED:
        _EMPTY[where] = (info.st_ino, info.st_mtime_ns)
    else:
        _EMPTY.pop(where, None)


def _place_from_store(secrets: SecretStore, dest: Path) -> None:
    where = secrets.store.location
    seen = _EMPTY_AT.get(where)
    if seen is not None and time.monotonic() - seen < SETTLED:
        private_folder(dest)  # found empty a moment ago: one listing less per job
        return
    if _materialise(secrets, dest):
        _EMPTY_AT.pop(where, None)
    else:
        _EMPTY_AT[where] = time.monotonic()


def _materialise(secrets: SecretStore, dest: Path) -> list[str]:
    try:
        return secrets.materialise(dest, cache=_CACHE)
    except (SecretKeyError, SecretDecryptError) as exc:
        raise SetupError(f"cannot decrypt the flock's secrets: {exc}", retryable=False) from exc


def forget_secrets() -> None:
    """Drop the decrypted secrets this process keeps in memory, and what it knows of stores."""
    _CACHE.clear()
    _EMPTY.clear()
    _EMPTY_AT.clear()
