"""What `shepard init` does beyond parsing its options: the payload command's paths, and a
flock created whole or not at all."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

from shepard.cli.common import err_console
from shepard.config import FlockConfig
from shepard.errors import ShepardError, StorageError
from shepard.flock import Flock

# A word of a command that can only be a path: no quotes, no shell syntax, no variables.
_PLAIN = re.compile(r"[\w./+@%,:-]+")
_SCRIPT = re.compile(r".+\.(py|sh|bash|R|r|pl|jl|rb|js|lua|php)")


def resolve_command(command: str | None, base: Path) -> str | None:
    """`command` with each word that names an existing file or folder relative to `base`
    (the folder `init` runs in) replaced by its absolute path.

    The payload runs in each job's own work folder, where a relative path means nothing; the
    path `init` was given is the one the user meant. Words that look like a script but name
    nothing in `base` are left as they are, with a warning (the file may come later, e.g.
    with a quick-deploy folder).
    """
    if command is None:
        return None
    words = re.split(r"(\s+)", command)
    for i, word in enumerate(words):
        if not _PLAIN.fullmatch(word) or word.startswith("-") or Path(word).is_absolute():
            continue
        path = base / word
        if path.is_file() or ("/" in word and path.exists()):
            words[i] = shlex.quote(str(path.resolve()))
        elif _SCRIPT.fullmatch(word):
            err_console.print(
                f"[yellow]warning:[/] {word} is not in {base}: the payload runs in each job's "
                "work folder, so give its absolute path (or create it here before `init`)",
                soft_wrap=True,
            )
    return "".join(words)


def create_flock(folder: Path, cfg: FlockConfig) -> Flock:
    """Create the flock `cfg` in `folder`; on any failure, remove whatever this call made
    (the folders it created, the files it added) and raise ShepardError saying why."""
    _check_target(folder)
    first_new = _first_missing(folder)
    before = set(folder.iterdir()) if first_new is None else set()
    try:
        return Flock.create(folder, cfg)
    except BaseException as exc:
        _undo(folder, first_new, before)
        if isinstance(exc, StorageError):  # a store that cannot be made or reached
            raise ShepardError(f"cannot create the flock in {folder}: {exc}") from None
        if isinstance(exc, OSError):
            where = exc.filename or folder
            raise ShepardError(
                f"cannot create the flock in {folder}: {where}: {exc.strerror or exc}"
            ) from None
        raise


def _check_target(folder: Path) -> None:
    """Refuse a `folder` that is a file, or that lies below one."""
    if folder.exists() and not folder.is_dir():
        raise ShepardError(f"cannot create a flock in {folder}: it exists and is not a folder")
    for parent in folder.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise ShepardError(f"cannot create a flock in {folder}: {parent} is not a folder")
            return


def _first_missing(folder: Path) -> Path | None:
    """The outermost of `folder` and its parents that does not exist yet (None: it exists)."""
    missing = None
    for path in (folder.absolute(), *folder.absolute().parents):
        if path.exists():
            return missing
        missing = path
    return missing


def _undo(folder: Path, first_new: Path | None, before: set[Path]) -> None:
    if first_new is not None:
        shutil.rmtree(first_new, ignore_errors=True)
        return
    for path in set(folder.iterdir()) - before:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
