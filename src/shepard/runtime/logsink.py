"""Where an attempt's stdout and stderr are written, and how they reach the logs store.

The payload writes both streams to local files (a child process or a container engine needs
a file). When the logs store is a folder (`local_path` gives a path), those files are the
store's own objects: written in place, readable live, nothing to upload. Otherwise (S3) they
are spool files under `<workspace_root>/.logs/`, uploaded under the same `log_key`s every
UPLOAD_EVERY seconds while they grow and once more when the attempt ends, then removed: a
follower (`shepard logs -f`) sees them with that delay. An empty stream is never stored: every
reader (`joblogs`, the service layer's `read_log` / `follow_log`) reads a missing log of an
attempt that started as empty, so a trivial job pays no request at all for its logs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from pathlib import Path

from shepard.runtime.context import log_key
from shepard.storage import ObjectStore

UPLOAD_EVERY = 3.0
"""Seconds between two uploads of a growing log to a store that is not a folder."""

SPOOL = ".logs"  # under the workspace root: the spool files of logs bound for S3

log = logging.getLogger(__name__)


class AttemptLogs:
    """The (stdout, stderr) files of one attempt and their way into `store`.

    `paths` is what the payload writes to. `start()` begins the periodic uploads (none for a
    folder store); `close()` ends them, uploads what was written last and removes the spool
    files. Upload failures never fail the job: they are logged, and the next upload retries.
    """

    def __init__(
        self,
        store: ObjectStore,
        job_id: str,
        attempt: int,
        spool: Path,
        *,
        every: float = UPLOAD_EVERY,
    ) -> None:
        self.store, self.every = store, every
        self.keys = (log_key(job_id, attempt, "stdout"), log_key(job_id, attempt, "stderr"))
        out, err = (store.local_path(key) for key in self.keys)
        self.uploads = out is None or err is None
        if out is None or err is None:
            name = f"{job_id}.{attempt}"
            out, err = spool / f"{name}.stdout", spool / f"{name}.stderr"
        self.paths: tuple[Path, Path] = (out, err)
        self._sent = [-1, -1]  # bytes of each file at its last upload
        self._stop: threading.Event | None = None  # made only for uploads: jobs are short
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start uploading the files while they grow (only when the store is not a folder)."""
        if self.uploads and self._thread is None:
            stop = self._stop = threading.Event()
            self._thread = threading.Thread(
                target=self._loop, args=(stop,), name="log-upload", daemon=True
            )
            self._thread.start()

    def close(self) -> None:
        """Stop the uploads, store the final logs, remove the spool files. Never raises."""
        if not self.uploads:
            return
        if self._stop is not None and self._thread is not None:
            self._stop.set()
            self._thread.join()
        self._upload()
        for path in self.paths:
            with contextlib.suppress(OSError):
                path.unlink()

    def _loop(self, stop: threading.Event) -> None:
        while not stop.wait(self.every):
            self._upload()

    def _upload(self) -> None:
        """Upload each file that changed since its last upload; an empty one never goes up
        (a missing log reads as empty)."""
        for i, (path, key) in enumerate(zip(self.paths, self.keys, strict=True)):
            size = _size(path)
            if not size or size == self._sent[i]:
                continue  # the payload never started, wrote nothing, or nothing new
            try:
                self.store.put_file(key, path)
                self._sent[i] = size
            except Exception as exc:  # a log never fails its job
                log.warning("could not store the log %s: %s", self.store.url(key), exc)


def _size(path: Path) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None
