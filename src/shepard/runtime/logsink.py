"""Where an attempt's stdout and stderr are written, and how they reach the logs store.

The payload writes both streams to local files (a child process or a container engine needs
a file). When the logs store is a folder (`local_path` gives a path), those files are the
store's own objects: written in place, readable live, nothing to upload. A stream that stays
empty is not kept there: at the end its file is renamed to a spare beside it (a hidden
`.tmp-` name, which listings skip), and the next attempt of the same worker slot renames the
spare into place instead of creating a file. On a disk, creating and removing files is most
of what a trivial job costs (bench/peers.py: ext4 spends 0.05 to 1 ms of system time per
file created, depending on what was removed just before); with spares, a job that prints
nothing creates no log file at all. Otherwise (S3) they are spool files under
`<workspace_root>/.logs/`, uploaded under the same `log_key`s every UPLOAD_EVERY seconds while
they grow and once more when the attempt ends, then removed: a follower (`shepard logs -f`)
sees them with that delay. An empty stream is never stored: every reader (`joblogs`, the
service layer's `read_log` / `follow_log`) reads a missing log of an attempt that started as
empty, so a trivial job pays no request at all for its logs. One thread per process makes the
periodic uploads of every running attempt (`_Uploads`), started at the first attempt that
needs it; a thread started and joined per attempt made every job wait for that thread to wake
up and end (S3 jobs run one by one, as bench/e2e_s3.py's profile does: 7.4-7.8 ms a job
before, 5.6-5.8 ms after, machine load average 4-6).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from pathlib import Path

from shepard.runtime.context import log_key
from shepard.storage import ObjectStore
from shepard.storage.local import TMP_PREFIX

UPLOAD_EVERY = 3.0
"""Seconds between two uploads of a growing log to a store that is not a folder."""

IDLE = 0.5
"""Seconds the upload thread of a process waits for another attempt before it ends (a runner
of short jobs starts the next one within milliseconds)."""

SPOOL = ".logs"  # under the workspace root: the spool files of logs bound for S3

log = logging.getLogger(__name__)


class AttemptLogs:
    """The (stdout, stderr) files of one attempt and their way into `store`.

    `paths` is what the payload writes to. `start()` puts the spares in place (folder store)
    or begins the periodic uploads (other stores); `close()` ends them, uploads what was
    written last and removes the spool files, or turns the empty files of a folder store back
    into spares. Upload failures never fail the job: they are logged, and the next upload
    retries. `spare` names the spares of the caller's worker slot (one attempt at a time);
    without it, a folder store's files are created and kept, empty or not.
    """

    def __init__(
        self,
        store: ObjectStore,
        job_id: str,
        attempt: int,
        spool: Path,
        *,
        every: float = UPLOAD_EVERY,
        spare: str | None = None,
    ) -> None:
        self.store, self.every = store, every
        self.keys = (log_key(job_id, attempt, "stdout"), log_key(job_id, attempt, "stderr"))
        out, err = (store.local_path(key) for key in self.keys)
        self.uploads = out is None or err is None
        if out is None or err is None:
            name = f"{job_id}.{attempt}"
            out, err = spool / f"{name}.stdout", spool / f"{name}.stderr"
        self.paths: tuple[Path, Path] = (out, err)
        self.spares: tuple[Path, Path] | None = None
        if spare is not None and not self.uploads:
            self.spares = (
                out.with_name(f"{TMP_PREFIX}spare-{spare}.stdout"),
                err.with_name(f"{TMP_PREFIX}spare-{spare}.stderr"),
            )
        self._sent = [-1, -1]  # bytes of each file at its last upload
        self._lock = threading.Lock()  # one upload at a time: the periodic one or the last
        self._started = self._closed = False

    def start(self) -> None:
        """Put the spares in place of the log files (a folder store), or start uploading the
        files while they grow (other stores). The payload truncates or creates the files."""
        if self.spares is not None:
            for spare, path in zip(self.spares, self.paths, strict=True):
                with contextlib.suppress(OSError):  # no spare (yet): the payload creates it
                    os.rename(spare, path)
        if self.uploads and not self._started:
            self._started = True
            _uploads().add(self)

    def close(self) -> None:
        """Stop the uploads, store the final logs, remove the spool files (or keep a folder
        store's empty files as spares). Never raises; call it once the payload has ended."""
        if not self.uploads:
            self._keep_spares()
            return
        if self._started:
            _uploads().remove(self)
        with self._lock:  # waits for a periodic upload under way
            self._closed = True
            self._upload()
        for path in self.paths:
            with contextlib.suppress(OSError):
                path.unlink()

    def _keep_spares(self) -> None:
        """Turn the empty log files back into spares: an empty stream is not kept."""
        if self.spares is None:
            return
        for path, spare in zip(self.paths, self.spares, strict=True):
            if _size(path) == 0:
                with contextlib.suppress(OSError):
                    os.rename(path, spare)

    def upload_now(self) -> None:
        """The periodic upload (from the process's upload thread); nothing once closed."""
        with self._lock:
            if not self._closed:
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


class _Uploads:
    """The thread of one process that uploads the growing logs of its running attempts, each
    every `AttemptLogs.every` seconds, from its `add` to its `remove`. It ends once it had no
    attempt for `IDLE` seconds (a process that ran one attempt is soon single-threaded again,
    as forking runners wants: backends/forked.py), and the next `add` starts it again."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: dict[AttemptLogs, float] = {}  # attempt -> when its next upload is due
        self._thread: threading.Thread | None = None
        self._wake = 0.0  # when the thread wakes up next by itself

    def add(self, logs: AttemptLogs) -> None:
        with self._cond:
            due = self._due[logs] = time.monotonic() + logs.every
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="log-upload", daemon=True)
                self._thread.start()
            elif due < self._wake:  # else no need to wake it (and switch to it) per attempt
                self._cond.notify()

    def remove(self, logs: AttemptLogs) -> None:
        with self._cond:
            self._due.pop(logs, None)

    def _loop(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                ready = [logs for logs, due in self._due.items() if due <= now]
                if not self._due:
                    self._wake = now + IDLE
                    self._cond.wait(IDLE)
                    if not self._due:
                        self._thread = None
                        return
                    continue
                if not ready:
                    self._wake = min(self._due.values())
                    self._cond.wait(self._wake - now)
                    continue
                for logs in ready:
                    self._due[logs] = now + logs.every
            for logs in ready:  # outside the lock: an upload may take a while
                try:
                    logs.upload_now()
                except Exception:  # the thread serves every attempt: it must go on
                    log.exception("uploading the logs of an attempt failed")


_shared: tuple[int, _Uploads] | None = None  # (pid, uploads): a thread does not cross a fork


def _uploads() -> _Uploads:
    """This process's upload thread (made again in a forked child, which has none running)."""
    global _shared
    pid = os.getpid()
    if _shared is None or _shared[0] != pid:
        _shared = (pid, _Uploads())
    return _shared[1]


def _size(path: Path) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None
