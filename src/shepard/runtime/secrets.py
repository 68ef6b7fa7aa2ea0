"""Secrets: the files every payload finds in `$ROOT_INPUT_NAME/secrets/`.

The flock's secrets store (`shepard.secrets.SecretStore`) holds them encrypted; each job gets
them decrypted into its own `secrets/` folder. A worker process decrypts each secret once and
keeps the plaintext in memory (keyed by its file's mtime, size and inode), so thousands of jobs
do not decrypt thousands of times; the key is loaded only when something must be decrypted, so
a flock without secrets needs neither a key nor any work beyond listing an empty folder, and
while that folder stays unchanged, not even that (one stat per job).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from shepard.keys import SecretKeyError
from shepard.runtime.workspace import SetupError
from shepard.secrets import SecretCache, SecretDecryptError, SecretStore, private_folder

SETTLED = 2.0
"""Seconds after its last change from which a folder's mtime is trusted to tell the next change:
a change made within the same clock tick as the one before may leave the mtime as it was."""

_CACHE = SecretCache()  # per worker process, shared by its worker threads
_EMPTY: dict[str, tuple[int, int]] = {}  # source folders found empty: (inode, mtime_ns) then


def place_secrets(source: Path, dest: Path) -> None:
    """Create `dest` with mode 0700 and decrypt every secret stored in `source` into it.

    Each file is created with mode 0600, so it is never readable by others, not even for a
    moment. A missing or empty `source` means no secrets: `dest` is still created, empty. An
    existing `dest` (a reused slot) must be empty; its mode is set back to 0700.

    Raises SetupError (not retryable: another attempt would meet the same key) when the key is
    missing or does not decrypt the secrets; the message never includes secret content.
    OSError propagates.
    """
    folder = str(source)
    try:
        info = os.stat(folder)
    except OSError:
        info = None
    if info is not None and _EMPTY.get(folder) == (info.st_ino, info.st_mtime_ns):
        private_folder(dest)  # still empty: no entry was added or removed since
        return
    try:
        placed = SecretStore(source).materialise(dest, cache=_CACHE)
    except (SecretKeyError, SecretDecryptError) as exc:
        raise SetupError(f"cannot decrypt the flock's secrets: {exc}", retryable=False) from exc
    if info is not None and not placed and time.time() - info.st_mtime > SETTLED:
        _EMPTY[folder] = (info.st_ino, info.st_mtime_ns)
    else:
        _EMPTY.pop(folder, None)


def forget_secrets() -> None:
    """Drop the decrypted secrets this process keeps in memory, and what it knows of folders."""
    _CACHE.clear()
    _EMPTY.clear()
