"""The folder inbox: every bundle that appears in a flock's `inbox/` folder becomes one job.

Used when the inbox and inputs stores are both folders (`shepard.triggers.inbox.open_inbox`);
other stores use `shepard.triggers.object_inbox`.

One scan (`FolderInbox.scan_once`) moves files through three steps:

1. Observe. The inbox is walked, subfolders included (names starting with '.' and the
   top-level `rejected/` folder are skipped), and each file's (size, mtime, inode) is
   remembered with the time it was first seen. A file is *stable* once the same signature was
   seen by two scans at least `settle` seconds apart. A stable file is taken when it is a
   complete zip: its end-of-central-directory record parses and points at a central directory
   that ends exactly where that record (or its zip64 record) begins, which a file still being
   written practically never satisfies. A stable file that is not a complete zip is left
   alone until it has not changed for `give_up` seconds, then taken too (and, as a rule,
   rejected). Symbolic links and special files are rejected at once, without being opened.
2. Claim, under the inbox lock. One watcher at a time (thread, process or host sharing the
   folder) holds flock(2) on `inbox/.shepard-inbox.lock`; a watcher that cannot get it skips
   the rest of its scan, since the holder is taking the files. For each chunk, the holder
   first writes the planned (file, key) pairs to the claim journal
   `inbox/.shepard-inbox.claims`, then claims each file with ONE os.rename into the inputs
   store under a new key `inbox-<time-ordered id>-<name>`. A rename that finds the file gone
   (another watcher took it first, or it was removed) is skipped, and a claimed file that no
   longer has the signature it was observed with (rewritten at the last moment) is put back.
3. Register. Each claimed file is validated with `read_bundle_file`; the good ones are
   registered in ONE `add_jobs` transaction per chunk, each with its key as its `batch` label,
   and the bad ones are moved to `inbox/rejected/<name>` next to `<name>.reason.txt`. Then
   the journal is deleted.

A watcher that takes the lock and finds a journal knows that the previous holder stopped
between steps 2 and 3 (killed, or an error such as an unreachable catalog). Each journaled
key still in the inputs store and with no job whose batch is that key (an indexed lookup) is
validated and registered, or rejected, now; the others are left alone. A killed `shepard up`
therefore loses nothing and registers nothing twice, whichever watcher takes over, and
recovery costs one chunk rather than the whole history of the inbox. The journal is not
fsynced: like the SQLite catalog (synchronous=NORMAL), this survives a killed process, not a
power cut.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from shepard.errors import ConfigError, StorageError
from shepard.flock import Flock
from shepard.model import JobSpec, new_job_id
from shepard.storage import ObjectStore, check_key
from shepard.triggers.arrivals import (
    check_bundles,
    is_complete_zip,
    refused_unopened,
    walk_inbox,
)
from shepard.triggers.rejected import move_aside_unless_file, reject
from shepard.triggers.scan import Rejection, ScanResult

log = logging.getLogger(__name__)

KEY_PREFIX = "inbox-"
"""Input-store keys of bundles taken from the inbox start with this."""

LOCK_NAME = ".shepard-inbox.lock"
JOURNAL_NAME = ".shepard-inbox.claims"
SETTLE = 0.5
"""Seconds a file's size and mtime must stay unchanged (seen by two scans) before it is taken."""

GIVE_UP = 60.0
"""Seconds a stable file that is not a complete zip waits before it is taken (and rejected)."""

CHUNK = 1000
"""Files claimed and registered per journal and per catalog transaction."""

_MAX_NAME_BYTES = 200  # of the original name inside a key: file names stop at 255 bytes
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

_Signature = tuple[int, int, int]  # size, mtime_ns, inode


@dataclass(frozen=True, slots=True)
class _Seen:
    sig: _Signature
    since: float  # clock() when this signature was first seen
    complete: bool | None = None  # a complete zip? (checked once the file is stable)
    failed: bool = False  # claiming it failed: leave it until it changes


@dataclass(frozen=True, slots=True)
class _Candidate:
    rel: str
    sig: _Signature  # as observed; sig[1] (mtime) orders files roughly by arrival
    problem: str | None = None  # reject as is, without opening it


def folder_of(store: ObjectStore) -> Path | None:
    """The folder holding a store's objects, or None when the store is not a folder."""
    path = store.local_path("x")  # a folder store's folder is its keys' parent
    return None if path is None else path.parent


class FolderInbox:
    """Turns the files of a flock's inbox folder into jobs (see the module docstring); an
    `Inbox` (shepard.triggers.scan).

    One instance is used by one thread at a time; any number of instances, in any number of
    processes, may watch the same inbox. `on_registered` is called after each catalog
    transaction that added jobs (to wake a dispatcher up); `clock` measures the settle and
    give-up times. ConfigError when the inbox or inputs store is not a folder.
    """

    def __init__(
        self,
        flock: Flock,
        *,
        settle: float = SETTLE,
        give_up: float = GIVE_UP,
        chunk: int = CHUNK,
        interval: float = SETTLE,
        on_registered: Callable[[], None] | None = None,
        on_result: Callable[[ScanResult], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.flock = flock
        self.settle, self.give_up, self.chunk = settle, give_up, max(1, chunk)
        self._interval = interval
        self.on_registered, self.on_result, self.clock = on_registered, on_result, clock
        inbox, inputs = folder_of(flock.store("inbox")), folder_of(flock.store("inputs"))
        if inbox is None or inputs is None:
            raise ConfigError(
                f"the folder inbox needs the inbox and inputs stores in folders, not "
                f"{flock.store('inbox').location} and {flock.store('inputs').location}"
            )
        self.inbox, self.inputs_dir = inbox, inputs
        self.inbox.mkdir(parents=True, exist_ok=True)
        self.inputs_dir.mkdir(parents=True, exist_ok=True)
        self._inbox_dir, self._inputs_dir = str(self.inbox), str(self.inputs_dir)  # hot paths
        self._journal = self.inbox / JOURNAL_NAME
        self._lock_path = self.inbox / LOCK_NAME
        self._lock_fd = self._open_lock()
        self._seen: dict[str, _Seen] = {}
        self._last_error = ""

    def close(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    @property
    def location(self) -> str:
        return str(self.inbox)

    @property
    def interval(self) -> float:
        return self._interval

    def __enter__(self) -> FolderInbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- scanning -------------------------------------------------------------------------

    def scan_once(self, stop: threading.Event | None = None) -> ScanResult:
        """Look at the inbox once: register what is ready, reject what is bad.

        Raises on failures that concern every file (catalog unreachable, disk full); the
        claims of the current chunk are then settled by the next scan of any watcher.
        Setting `stop` ends the scan after the current chunk.
        """
        result = ScanResult()
        candidates = self._observe(result)
        if not candidates and not os.path.lexists(self._journal):
            return result
        if not self._lock():
            result.busy = True
            result.waiting += len(candidates)
            return result
        try:
            self._recover(result)
            for start in range(0, len(candidates), self.chunk):
                if stop is not None and stop.is_set():
                    break
                self._take(candidates[start : start + self.chunk], result)
        finally:
            self._unlock()
        return result

    def run(self, stop: threading.Event) -> None:
        """Scan every `interval` seconds until `stop` is set; errors are logged, not raised."""
        while not stop.is_set():
            try:
                result = self.scan_once(stop)
            except Exception as exc:
                if str(exc) != self._last_error:  # say it once, not every half second
                    log.exception("scanning inbox %s failed; retrying", self.inbox)
                self._last_error = str(exc)
            else:
                self._last_error = ""
                if self.on_result is not None and (result.jobs or result.rejected):
                    try:
                        self.on_result(result)
                    except Exception:
                        log.exception("reporting an inbox scan failed")
            stop.wait(self._interval)

    def _observe(self, result: ScanResult) -> list[_Candidate]:
        """Walk the inbox, update what was seen, and return the files to take now."""
        now = self.clock()
        seen: dict[str, _Seen] = {}
        ready: list[_Candidate] = []
        for rel, entry in walk_inbox(self.inbox):
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue  # gone meanwhile, or not ours to look at
            sig = (st.st_size, st.st_mtime_ns, st.st_ino)
            old = self._seen.get(rel)
            problem = refused_unopened(st.st_mode, rel)
            if problem is not None:  # rejected at once, unless that already failed
                seen[rel] = old if old is not None and old.sig == sig else _Seen(sig, now)
                if seen[rel].failed:
                    result.waiting += 1
                else:
                    ready.append(_Candidate(rel, sig, problem))
                continue
            if old is None or old.sig != sig:
                seen[rel] = _Seen(sig, now)
                result.waiting += 1
                continue
            if not old.failed and now - old.since >= self.settle and old.complete is None:
                old = _Seen(old.sig, old.since, is_complete_zip(entry.path, st.st_size))
            seen[rel] = old
            stable = not old.failed and now - old.since >= self.settle
            if stable and (old.complete or now - old.since >= self.give_up):
                ready.append(_Candidate(rel, sig))
            else:
                result.waiting += 1
        self._seen = seen
        ready.sort(key=lambda c: (c.sig[1], c.rel))
        return ready

    # -- claiming and registering -----------------------------------------------------------

    def _take(self, chunk: list[_Candidate], result: ScanResult) -> None:
        plan: list[tuple[_Candidate, str]] = []
        for candidate in chunk:
            if candidate.problem is not None:
                try:
                    self._reject(
                        self.inbox / candidate.rel, candidate.rel, candidate.problem, result
                    )
                except OSError as exc:
                    log.warning("cannot move %s to rejected/ (%s)", candidate.rel, exc)
                    self._failed(candidate.rel)
            else:
                plan.append((candidate, _new_key(candidate.rel)))
        if not plan:
            return
        self._journal.write_text("".join(json.dumps([c.rel, key]) + "\n" for c, key in plan))
        claimed = [(c.rel, key) for c, key in plan if self._claim(c.rel, key, c.sig)]
        self._settle(claimed, result)
        self._journal.unlink(missing_ok=True)

    def _claim(self, rel: str, key: str, sig: _Signature) -> bool:
        """Move inbox/`rel` to the inputs store as `key`; False if it is not ours to take."""
        src, dest = os.path.join(self._inbox_dir, rel), os.path.join(self._inputs_dir, key)
        for _ in range(2):
            try:
                os.rename(src, dest)
                return self._unchanged(src, dest, sig)
            except FileNotFoundError:
                if not os.path.lexists(src):
                    return False  # another watcher took it first, or it was removed
                self.inputs_dir.mkdir(parents=True, exist_ok=True)  # the store was removed
            except OSError as exc:
                if exc.errno == errno.EXDEV:
                    raise StorageError(
                        f"cannot move {rel!r} from {self.inbox} into the inputs store "
                        f"{self.inputs_dir}: they are on different filesystems; keep inbox/ "
                        "and inputs/ on one filesystem"
                    ) from exc
                log.warning("cannot take %s from the inbox (%s): left until it changes", rel, exc)
                self._failed(rel)
                break
        return False

    def _failed(self, rel: str) -> None:
        """Leave `rel` alone until it changes: moving it failed, and would fail again."""
        seen = self._seen.get(rel)
        if seen is not None:
            self._seen[rel] = replace(seen, failed=True)

    @staticmethod
    def _unchanged(src: str, dest: str, sig: _Signature) -> bool:
        """After claiming: whether the file is still the one observed. One that was replaced or
        written to since goes back to the inbox (when its name there is free) to be observed
        again, so a file rewritten in place at the last moment is not taken half-written."""
        try:
            st = os.stat(dest)
        except OSError:
            return True
        if (st.st_size, st.st_mtime_ns, st.st_ino) == sig:
            return True
        try:
            os.link(dest, src)  # fails if a new file took the name meanwhile
        except OSError:
            return True  # cannot give it back: validation decides
        try:
            os.unlink(dest)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(src)  # never leave it both claimed and in the inbox
            return True
        return False

    def _settle(self, claimed: list[tuple[str, str]], result: ScanResult) -> None:
        """Validate claimed bundles; register the good ones in one transaction, reject the rest."""
        specs: list[JobSpec] = []
        keys: list[str] = []
        bad: list[tuple[str, str, str]] = []
        checks = [(os.path.join(self._inputs_dir, key), rel) for rel, key in claimed]
        outcomes = check_bundles(checks, self.flock.config.limits, self.flock.config.payload.env)
        for (rel, key), (params, reason) in zip(claimed, outcomes, strict=True):
            if params is None:
                bad.append((rel, key, reason))
            else:
                specs.append(JobSpec(params, key, None, None, key))
                keys.append(key)
        if specs:
            ids = self.flock.catalog.add_jobs(
                specs, now=self.flock.clock(), default_attempts=self.flock.config.retry.attempts
            )
            result.jobs.extend(ids)
            result.keys.extend(keys)
            if self.on_registered is not None:
                self.on_registered()
        for rel, key, reason in bad:
            self._reject(Path(self._inputs_dir, key), rel, reason, result)

    def _reject(self, src: Path, rel: str, reason: str, result: ScanResult) -> None:
        """Move `src` to inbox/rejected/ with its reason (see `rejected.reject`)."""
        dest = reject(self.inbox, src, rel, reason)
        if dest is not None:
            result.rejected.append(Rejection(rel, reason, str(dest)))

    def _recover(self, result: ScanResult) -> None:
        """Settle the journaled claims of a watcher that stopped before registering them."""
        move_aside_unless_file(self.inbox, self._journal)
        try:
            text = self._journal.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return
        pending: list[tuple[str, str]] = []
        for line in text.splitlines():
            entry = _journal_entry(line)
            if entry is None:
                continue  # a torn last line: its renames never started
            rel, key = entry
            stored = os.path.isfile(os.path.join(self._inputs_dir, key))
            if stored and not any(self.flock.counts(batch=key).values()):
                pending.append((rel, key))
        if pending:
            log.warning("inbox: settling %d claim(s) of an interrupted scan", len(pending))
            self._settle(pending, result)
            result.recovered += len(pending)
        self._journal.unlink(missing_ok=True)

    # -- the inbox lock ---------------------------------------------------------------------

    def _open_lock(self) -> int:
        # A folder or a link made in the lock file's place is moved aside, as rejected.
        move_aside_unless_file(self.inbox, self._lock_path)
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        return os.open(self._lock_path, flags, 0o644)

    def _lock(self) -> bool:
        """Take the inbox lock without waiting; False if another watcher holds it."""
        for _ in range(3):
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            # The lock file must still be the one at the path (someone may have deleted it).
            mine = os.fstat(self._lock_fd)
            try:
                there = os.stat(self._lock_path)
                if (there.st_dev, there.st_ino) == (mine.st_dev, mine.st_ino):
                    return True
            except FileNotFoundError:
                pass
            os.close(self._lock_fd)
            self._lock_fd = self._open_lock()
        return False

    def _unlock(self) -> None:
        fcntl.flock(self._lock_fd, fcntl.LOCK_UN)


# -- helpers ------------------------------------------------------------------------------------


def _new_key(rel: str) -> str:
    """A new, time-ordered input-store key that keeps the dropped file's name readable."""
    return f"{KEY_PREFIX}{new_job_id().replace('-', '')}-{key_name(rel)}"


def key_name(rel: str) -> str:
    """The name `rel` (a path in the inbox) as the last part of an input-store key: folders
    joined with `--`, control characters and backslashes as `_`, at most 200 bytes."""
    name = _CONTROL.sub("_", rel.replace("/", "--").replace("\\", "_"))
    name = name.encode("utf-8", "replace").decode("utf-8")  # undecodable bytes become '?'
    raw = name.encode()
    if len(raw) > _MAX_NAME_BYTES:
        suffix = Path(name).suffix[:16]
        head = raw[: _MAX_NAME_BYTES - len(suffix.encode())].decode("utf-8", "ignore")
        name = head + suffix
    return name


def _journal_entry(line: str) -> tuple[str, str] | None:
    """(rel, key) from one journal line, or None if the line is torn or not plausible.

    `rel` is any name a file in the inbox can have (backslashes and newlines included); it
    only names the file in messages and under rejected/, where `rejected_path` cleans it."""
    try:
        rel, key = json.loads(line)
        if not (isinstance(rel, str) and isinstance(key, str) and key.startswith(KEY_PREFIX)):
            return None
        check_key(key)
    except (ValueError, TypeError, StorageError):
        return None
    return rel, key
