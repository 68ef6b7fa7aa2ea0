"""Secrets: the files every payload finds in `$ROOT_INPUT_NAME/secrets/`.

Kept apart so the way secrets are placed (today a plain copy; later decryption) can change
without touching the rest of the runtime.
"""

from __future__ import annotations

import os
from pathlib import Path

_CHUNK = 1 << 20
_READ = os.O_RDONLY | os.O_CLOEXEC
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


def place_secrets(source: Path, dest: Path) -> None:
    """Create `dest` with mode 0700 and copy every regular file directly in `source` into it.

    Each copy is created with mode 0600, so it is never readable by others, not even for a
    moment (modes are only ever narrowed by the umask). Symlinks to regular files are
    followed; folders and other entries are skipped. A missing `source` means no secrets:
    `dest` is still created, empty. An existing `dest` (a reused slot) must be empty; its
    mode is set back to 0700. OSError propagates.
    """
    try:
        os.mkdir(dest, 0o700)
    except FileExistsError:
        os.chmod(dest, 0o700)
    try:
        entries = os.scandir(source)
    except (FileNotFoundError, NotADirectoryError):
        return
    with entries:
        for entry in entries:
            if entry.is_file():
                _copy_private(entry.path, os.path.join(dest, entry.name))


def _copy_private(src: str, dst: str) -> None:
    """Copy `src` to the new file `dst` (mode 0600) with plain system calls (secrets are many
    small files copied for every job, so this stays cheap)."""
    src_fd = os.open(src, _READ)
    try:
        dst_fd = os.open(dst, _CREATE, 0o600)
        try:
            while chunk := os.read(src_fd, _CHUNK):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(dst_fd, view) :]
        finally:
            os.close(dst_fd)
    finally:
        os.close(src_fd)
