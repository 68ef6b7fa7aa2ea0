"""Secrets: the files every payload finds in `$ROOT_INPUT_NAME/secrets/`.

Kept apart so the way secrets are placed (today a plain copy; later decryption) can change
without touching the rest of the runtime.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

_CHUNK = 1 << 16


def place_secrets(source: Path, dest: Path) -> None:
    """Create `dest` with mode 0700 and copy every regular file directly in `source` into it.

    Each copy is created with mode 0600 (never wider, not even for a moment). Symlinks to
    regular files are followed; folders and other entries are skipped. A missing `source` means
    no secrets: `dest` is still created, empty. OSError propagates.
    """
    os.mkdir(dest, 0o700)
    os.chmod(dest, 0o700)  # mkdir's mode is narrowed by the umask; make it exact
    try:
        entries = sorted(os.scandir(source), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        if entry.is_file():
            _copy_private(Path(entry.path), dest / entry.name)


def _copy_private(src: Path, dst: Path) -> None:
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
        shutil.copyfileobj(inp, out, _CHUNK)
    os.chmod(dst, 0o600)
