"""The inbox's `rejected/` folder: where files that are not usable bundles go, each next to
`<name>.reason.txt`, and where anything found in the way of the inbox's own files (a file
named `rejected`, a folder in place of the claims journal or the lock file) is put aside.

Moving one file there never raises: a name too long or a subfolder that cannot be made falls
back to a short flat name, and a file that cannot be moved at all stays where it is, with a
warning in the log. Whatever is in the inbox, the inbox goes on taking the other files.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import stat
from pathlib import Path

from shepard.model import new_job_id
from shepard.triggers.arrivals import REJECTED

log = logging.getLogger(__name__)

REASON_SUFFIX = ".reason.txt"
MAX_NAME_BYTES = 200  # of a name under rejected/: file names stop at 255 bytes
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def reject(inbox: Path, src: Path, rel: str, reason: str) -> Path | None:
    """Move `src` (dropped in the inbox as `rel`) to inbox/rejected/`rel` (or a free name near
    it, or a flat one) next to its reason file; return where it went.

    None when it vanished meanwhile, or could not be moved at all (then it is left where it
    is and a warning is logged).
    """
    for flat in (False, True):
        note: Path | None = None
        try:
            dest = rejected_path(inbox, flat_name(rel) if flat else rel, flat=flat)
            note = dest.with_name(dest.name + REASON_SUFFIX)
            note.write_text(reason + "\n", encoding="utf-8", errors="replace")
            os.rename(src, dest)
        except OSError as exc:
            if note is not None:
                with contextlib.suppress(OSError):
                    note.unlink(missing_ok=True)
            if not os.path.lexists(src):
                return None  # gone meanwhile: nothing to reject
            log.warning("inbox: cannot move %r to rejected/ (%s)", rel, exc.strerror or exc)
            continue
        log.info("inbox: rejected %r: %s", rel, reason)
        return dest
    log.warning("inbox: %r is bad (%s) but could not be moved to rejected/", rel, reason)
    return None


def rejected_path(inbox: Path, rel: str, *, flat: bool = False) -> Path:
    """A free path for a rejected `rel`: rejected/rel, else rejected/<stem>-N<suffix>.

    Empty, `.` and `..` segments are dropped. Falls back to a flat name when the subfolder
    cannot be made (a file is in the way).
    """
    root = rejected_root(inbox)
    parts = [p for p in rel.split("/") if p not in ("", ".", "..")] or ["unnamed"]
    base = root.joinpath(*parts)
    if not flat and len(parts) > 1:
        try:
            base.parent.mkdir(parents=True, exist_ok=True)
        except OSError:
            base = root / flat_name(rel)
    path, n = base, 1
    while os.path.lexists(path):
        n += 1
        path = base.with_name(f"{base.stem}-{n}{base.suffix}")
    return path


def rejected_root(inbox: Path) -> Path:
    """inbox/rejected/ as a real folder. Whatever else holds that name (a file, a link, a
    fifo dropped by a user) is moved into the folder as a rejected file itself."""
    root = inbox / REJECTED
    try:
        st = os.lstat(root)
    except FileNotFoundError:
        root.mkdir(exist_ok=True)
        return root
    if stat.S_ISDIR(st.st_mode):
        return root
    aside = inbox / f".shepard-rejected-{new_job_id()}"
    os.rename(root, aside)
    root.mkdir(exist_ok=True)
    (root / (REJECTED + REASON_SUFFIX)).write_text(
        f"{REJECTED!r} at the top of the inbox is the folder of rejected bundles: a file of "
        "that name was in its way and was moved here\n",
        encoding="utf-8",
    )
    os.rename(aside, root / REJECTED)
    log.warning("inbox: moved the file %s out of the way of the rejected/ folder", root)
    return root


def move_aside_unless_file(inbox: Path, path: Path) -> None:
    """Move to rejected/ whatever holds `path` (one of the inbox's own files) without being a
    regular file: a folder or a link someone made there, which would stop the inbox."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISREG(st.st_mode):
        return
    dest = rejected_path(inbox, path.name.lstrip("."), flat=True)
    os.rename(path, dest)
    log.warning("inbox: %s was not a regular file; moved to %s", path, dest)


def flat_name(rel: str) -> str:
    """`rel` as one short file name (folders joined with `--`, control characters as `_`),
    for a rejected file whose own path cannot be used."""
    name = _CONTROL.sub("_", rel.replace("/", "--")) or "unnamed"
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) > MAX_NAME_BYTES:
        suffix = Path(name).suffix[:16]
        cut = raw[: MAX_NAME_BYTES - len(suffix.encode("utf-8", "surrogateescape"))]
        name = cut.decode("utf-8", "ignore") + suffix
    return name
