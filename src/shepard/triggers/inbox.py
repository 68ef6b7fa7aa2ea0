"""The inbox trigger: whatever is put into a flock's `inbox` store becomes jobs while
`shepard up` runs. `open_inbox` picks the implementation by asking the stores:

- both the inbox and the inputs store are folders: `FolderInbox` (folder_inbox.py), which
  claims each file with one rename (thousands of bundles a second);
- otherwise (S3, or a folder inbox beside an S3 inputs store): `ObjectInbox`
  (object_inbox.py), which works through the store API and makes registration exactly-once
  in the catalog.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator

from shepard.flock import Flock
from shepard.triggers.arrivals import REJECTED
from shepard.triggers.folder_inbox import SETTLE, FolderInbox, folder_of
from shepard.triggers.object_inbox import POLL, ObjectInbox
from shepard.triggers.object_rejected import count_rejected_objects
from shepard.triggers.rejected import REASON_SUFFIX
from shepard.triggers.scan import Inbox, ScanResult


def open_inbox(
    flock: Flock,
    *,
    interval: float | None = None,
    on_registered: Callable[[], None] | None = None,
    on_result: Callable[[ScanResult], None] | None = None,
) -> Inbox:
    """The watcher of the flock's inbox, scanning every `interval` seconds when idle
    (default: 0.5 s for a folder inbox, 1 s otherwise). Close it when done."""
    inbox = folder_of(flock.store("inbox"))
    if inbox is not None and folder_of(flock.store("inputs")) is not None:
        return FolderInbox(
            flock, interval=interval or SETTLE, on_registered=on_registered, on_result=on_result
        )
    return ObjectInbox(
        flock,
        interval=interval or POLL,
        settle=SETTLE if inbox is not None else 0.0,  # files in a folder may be written in place
        on_registered=on_registered,
        on_result=on_result,
    )


@contextlib.contextmanager
def watching(
    flock: Flock,
    *,
    wakeup: threading.Event | None = None,
    interval: float | None = None,
    on_result: Callable[[ScanResult], None] | None = None,
) -> Iterator[Inbox]:
    """Watch the flock's inbox in a background thread while the block runs.

    `wakeup` is set whenever jobs were registered, so a dispatcher waiting on it starts them
    at once. Leaving the block stops the watcher after its current chunk.
    """
    inbox = open_inbox(
        flock,
        interval=interval,
        on_registered=wakeup.set if wakeup else None,
        on_result=on_result,
    )
    halt = threading.Event()
    thread = threading.Thread(target=inbox.run, args=(halt,), name="shepard-inbox", daemon=True)
    thread.start()
    try:
        yield inbox
    finally:
        halt.set()
        thread.join()
        inbox.close()


def count_rejected(flock: Flock) -> int:
    """Bundles in the flock's inbox/rejected/ (those that still have their reason file)."""
    store = flock.store("inbox")
    folder = folder_of(store)
    if folder is None:
        return count_rejected_objects(store)
    count = 0
    for _folder, dirnames, filenames in os.walk(folder / REJECTED):  # links are not followed
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        names = set(filenames)
        count += sum(1 for n in filenames if n + REASON_SUFFIX in names and n[:1] != ".")
    return count
