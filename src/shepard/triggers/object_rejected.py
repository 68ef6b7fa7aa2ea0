"""`rejected/` of an inbox kept in an object store (S3, memory): where objects that are not
usable bundles go, each next to `<key>.reason.txt`, as in a folder inbox.

Names are reserved with `put_if_absent` on the reason object, so two watchers rejecting at
once never write over each other's rejected objects, and an earlier rejection of the same
name is kept (the newer one becomes `<stem>-2<suffix>`, `-3`, ...). Moving never raises:
an object that cannot be moved stays in the inbox, with a warning in the log.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from pathlib import PurePosixPath

from shepard.errors import StorageError
from shepard.storage import NoSuchObject, ObjectStore
from shepard.triggers.arrivals import REJECTED
from shepard.triggers.rejected import REASON_SUFFIX

log = logging.getLogger(__name__)

PREFIX = REJECTED + "/"
NAMES_TRIED = 20
"""Numbered names tried (`x-2.zip` ... `x-20.zip`) before a unique one is made up."""

MAX_KEY_BYTES = 1000  # S3 keys stop at 1,024 bytes: room for the store's prefix is kept


def reject_object(inbox: ObjectStore, key: str, reason: str) -> str | None:
    """Move the inbox's object `key` to `rejected/<key>` (or a free name near it) and write
    the reason beside it; return its new key. None when it vanished meanwhile (taken or
    removed) or could not be moved (logged)."""
    note = (reason + "\n").encode("utf-8", "replace")
    try:
        for dest in _candidates(key):
            if inbox.exists(dest) or not inbox.put_if_absent(dest + REASON_SUFFIX, note):
                continue  # the name is taken: by an earlier rejection, or a concurrent watcher
            try:
                inbox.move(key, dest)
            except BaseException:
                inbox.delete(dest + REASON_SUFFIX)
                raise
            log.info("inbox: rejected %r: %s", key, reason)
            return dest
    except NoSuchObject:
        return None  # gone meanwhile: nothing to reject
    except StorageError as exc:
        log.warning("inbox: cannot move %r to %s (%s); it stays in the inbox", key, PREFIX, exc)
        return None
    log.warning("inbox: %r is bad (%s) but no free name was found under %s", key, reason, PREFIX)
    return None


def count_rejected_objects(inbox: ObjectStore) -> int:
    """Objects under the inbox's rejected/ that still have their reason object (names with a
    segment starting with '.' left out)."""
    keys = {key for key in inbox.list(PREFIX) if not is_hidden(key)}
    return sum(1 for key in keys if key + REASON_SUFFIX in keys)


def is_hidden(key: str) -> bool:
    """Whether a segment of `key` starts with '.' (such objects are left alone, as hidden
    files are in a folder inbox)."""
    return any(part.startswith(".") for part in key.split("/"))


def _candidates(key: str) -> list[str]:
    """The names to try for a rejected `key`: its own, numbered ones, then a unique one."""
    base = PREFIX + key
    if len((base + "-99" + REASON_SUFFIX).encode()) > MAX_KEY_BYTES:
        base = PREFIX + _short(key)
    path = PurePosixPath(base)
    numbered = [str(path.with_name(f"{path.stem}-{n}{path.suffix}")) for n in range(2, NAMES_TRIED)]
    unique = str(path.with_name(f"{path.stem}-{uuid.uuid4().hex[:12]}{path.suffix}"))
    return [base, *numbered, unique]


def _short(key: str) -> str:
    """A short flat name for a key too long to be kept under rejected/ (its start, a hash, and
    its suffix)."""
    suffix = PurePosixPath(key).suffix[:16]
    head = key.replace("/", "--").encode()[:160].decode("utf-8", "ignore")
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return f"{head}-{digest}{suffix}"
