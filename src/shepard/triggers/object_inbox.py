"""The inbox on any object store (S3 above all): every object put under `inbox/` becomes
exactly one job, whatever number of watchers, on whatever machines, watch it.

One scan (`ObjectInbox.scan_once`):

1. List. The inbox is listed in key order, page by page (S3: 1,000 keys a request), in two
   ranges that leave `rejected/` out: the keys before `rejected/`, then those after it
   (`start_after`), so rejected objects are never listed again. Keys with a segment starting
   with '.' are left alone (as hidden files are in a folder inbox); keys the store API cannot
   address (`a//b`, `..` segments, backslashes) are left too, with one warning each. An object
   in S3 is never seen half-written: a PutObject, and a multipart upload once completed,
   appear atomically. (A folder inbox next to an S3 inputs store is read this way too; its
   files must then keep their size and time for `settle` seconds, seen by two scans.)
2. Take, in parallel (`threads`; a listed page goes to the pool whole, so that the pool
   keeps working while steps 3 and 4 run for the chunk before). An object of up to `SMALL`
   bytes is read whole (one GET), checked as `shepard batch` checks a bundle, and those very
   bytes are written to the inputs store (one conditional PUT: a bundle stored there is
   never replaced); a larger one is checked by range reads (its zip directory and inputs
   file only), then copied (server-side between S3 stores) unless already there, and the
   copy's size compared. An object that vanished since it was listed (another watcher took
   it) is skipped.
3. Register. Each bundle's job is added (`Catalog.add_jobs_once_each`, a chunk at once)
   under an idempotency key made from the object's identity (its URL, size, last-write time
   and ETag as listed), and its bundle is stored under a key made from the same identity.
   Of several watchers that take one object at once, or a watcher that retakes an object
   whose first taker died, exactly one registers its job: the others find the key already
   used and register nothing. That is the claim; no lock or lease is involved, so a watcher
   that dies at any point leaves nothing to take over: the object is still in the inbox and
   the next scan of any watcher finishes the work.
4. Clean up. The registered objects are deleted from the inbox (one request a chunk); the bad
   ones are moved to `rejected/<key>` next to `<key>.reason.txt` (`object_rejected`).

The identity has the precision of the store's listing (S3: whole seconds and the ETag): two
puts of the same bytes under the same key within one second, the first already taken when
the second lands, count as one bundle.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from shepard.bundle import read_bundle, read_bundle_bytes
from shepard.errors import BundleError, ParamsError, StorageError
from shepard.flock import Flock
from shepard.model import JobSpec, ParamValue
from shepard.params import check_env_size
from shepard.storage import NoSuchObject, ObjectInfo, check_key
from shepard.triggers.arrivals import refused_unopened
from shepard.triggers.folder_inbox import KEY_PREFIX, key_name
from shepard.triggers.object_rejected import PREFIX, is_hidden, reject_object
from shepard.triggers.scan import Rejection, ScanResult

log = logging.getLogger(__name__)

POLL = 1.0
"""Seconds between two listings of an inbox that had nothing new."""

SMALL = 1 << 20
"""Objects up to this size are read whole and written again; larger ones are copied."""

THREADS = 8
"""Objects taken at once (each take is a few requests; S3 answers them in parallel)."""

PAGE = 1000  # objects listed before they are taken (one S3 LIST request)
CHUNK = 100  # objects taken, registered and deleted together

_AFTER_REJECTED = PREFIX + "\U0010ffff"  # sorts after nearly every key under rejected/
_MAX_WARNED = 10_000

_Signature = tuple[int, float, str]  # size, last write, etag


@dataclass(frozen=True, slots=True)
class _Taken:
    """An object whose bundle is in the inputs store, ready to register."""

    info: ObjectInfo
    key: str  # its bundle's key in the inputs store
    ident: str  # the object's identity (sha256 hex)
    params: dict[str, ParamValue]


@dataclass(frozen=True, slots=True)
class _Bad:
    info: ObjectInfo
    reason: str


@dataclass(frozen=True, slots=True)
class _Later:
    """An object not taken for a passing store error: the next scan (or event) retakes it."""

    info: ObjectInfo


class ObjectInbox:
    """Turns the objects of a flock's inbox store into jobs (see the module docstring); an
    `Inbox` (shepard.triggers.scan).

    Any number of instances, in any number of processes and machines sharing the stores and
    the catalog, may watch one inbox. `on_registered` is called after a chunk added jobs (to
    wake a dispatcher up); `clock` measures `settle`. StorageError at once when the inbox or
    inputs store cannot be used (no such bucket, access denied).
    """

    def __init__(
        self,
        flock: Flock,
        *,
        interval: float = POLL,
        settle: float = 0.0,
        threads: int = THREADS,
        chunk: int = CHUNK,
        on_registered: Callable[[], None] | None = None,
        on_result: Callable[[ScanResult], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.flock = flock
        self.inbox, self.inputs = flock.store("inbox"), flock.store("inputs")
        self.inbox.ensure()
        self.inputs.ensure()
        self._interval, self.settle, self.chunk = interval, settle, max(1, chunk)
        self.on_registered, self.on_result, self.clock = on_registered, on_result, clock
        self._pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="shepard-inbox")
        self._seen: dict[str, tuple[_Signature, float]] = {}  # with settle: key -> (sig, since)
        self._warned: set[str] = set()
        self._last_error = ""

    @property
    def location(self) -> str:
        return self.inbox.location

    @property
    def interval(self) -> float:
        return self._interval

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def __enter__(self) -> ObjectInbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- scanning -------------------------------------------------------------------------

    def scan_once(self, stop: threading.Event | None = None) -> ScanResult:
        """Look at the inbox once: register what is there, reject what is bad.

        Raises on failures that concern every object (catalog or inbox unreachable); what
        was not registered stays in the inbox for the next scan. Setting `stop` ends the scan
        after the current chunk.
        """
        result = ScanResult()
        listed: set[str] = set()
        page: list[ObjectInfo] = []
        for info in self._ready(self._listing(), listed, result):
            page.append(info)
            if len(page) == PAGE:
                if not self._take_page(page, result, stop):
                    return result
                page = []
        self._take_page(page, result, stop)
        if self.settle:
            self._seen = {key: seen for key, seen in self._seen.items() if key in listed}
        return result

    def take(self, infos: list[ObjectInfo]) -> ScanResult:
        """Take these objects (as `stat` describes them) as a scan takes what it lists: the
        way in for code told of new objects by events (the serverless flock's scheduler)
        rather than by listing. Hidden keys, keys under `rejected/` and keys the store
        cannot address are left alone. Keys not taken for a passing error are in
        `result.left`; raises, as `scan_once` does, on failures that concern every object."""
        result = ScanResult()
        ready = [
            info for info in infos
            if not info.key.startswith(PREFIX) and not is_hidden(info.key)
            and self._addressable(info.key)
        ]  # fmt: skip
        self._take_page(ready, result, None)
        return result

    def run(self, stop: threading.Event) -> None:
        """Scan until `stop` is set, at once again after a scan that took something, else
        after `interval` seconds; errors are logged (once each), not raised."""
        while not stop.is_set():
            busy = False
            try:
                result = self.scan_once(stop)
            except Exception as exc:
                if str(exc) != self._last_error:  # say it once, not every second
                    log.exception("scanning inbox %s failed; retrying", self.location)
                self._last_error = str(exc)
            else:
                self._last_error = ""
                busy = bool(result.jobs or result.rejected or result.recovered)
                if self.on_result is not None and (result.jobs or result.rejected):
                    try:
                        self.on_result(result)
                    except Exception:
                        log.exception("reporting an inbox scan failed")
            if not busy:
                stop.wait(self._interval)

    def _listing(self) -> Iterator[ObjectInfo]:
        """The inbox's objects in key order, rejected/ left out without being listed."""
        for info in self.inbox.scan():
            if info.key >= PREFIX:
                break
            yield info
        for info in self.inbox.scan(start_after=_AFTER_REJECTED):
            if not info.key.startswith(PREFIX):
                yield info

    def _ready(
        self, listing: Iterator[ObjectInfo], listed: set[str], result: ScanResult
    ) -> Iterator[ObjectInfo]:
        """The listed objects to take now: not hidden, addressable, and (with `settle`)
        unchanged for `settle` seconds."""
        now = self.clock()
        for info in listing:
            if is_hidden(info.key) or not self._addressable(info.key):
                continue
            if self.settle:
                listed.add(info.key)
                sig = (info.size, info.modified, info.etag)
                old = self._seen.get(info.key)
                if old is None or old[0] != sig:
                    self._seen[info.key] = (sig, now)
                    result.waiting += 1
                    continue
                if now - old[1] < self.settle:
                    result.waiting += 1
                    continue
            yield info

    def _addressable(self, key: str) -> bool:
        try:
            check_key(key)
        except StorageError:
            self._warn(key, f"inbox: cannot take {key!r}: the name is not a usable object key "
                       "(empty, '.' or '..' segments, a backslash); rename it")  # fmt: skip
            return False
        return True

    def _warn(self, key: str, message: str) -> None:
        """Log `message` about `key` once (the same object is listed again every scan)."""
        if key in self._warned:
            return
        if len(self._warned) >= _MAX_WARNED:
            self._warned.clear()
        self._warned.add(key)
        log.warning("%s", message)

    # -- taking ---------------------------------------------------------------------------

    def _take_page(
        self, page: list[ObjectInfo], result: ScanResult, stop: threading.Event | None
    ) -> bool:
        """Take a listed page chunk by chunk, starting at a random chunk so that watchers
        listing the same page at once mostly take different objects. False if stopped.

        Every object of the page goes to the pool at once, in chunk order: the pool keeps
        the store busy while a chunk's jobs are registered and its objects deleted."""
        chunks = [page[i : i + self.chunk] for i in range(0, len(page), self.chunk)]
        first = random.randrange(len(chunks)) if chunks else 0
        pending = [
            [self._pool.submit(self._prepare, info) for info in chunk]
            for chunk in chunks[first:] + chunks[:first]
        ]
        try:
            for futures in pending:
                if stop is not None and stop.is_set():
                    return False
                self._take(futures, result)
        finally:
            for futures in pending:  # stopped or failed: what has not started is left
                for future in futures:
                    future.cancel()
        return True

    def _take(
        self, futures: list[Future[_Taken | _Bad | _Later | None]], result: ScanResult
    ) -> None:
        outcomes = [future.result() for future in futures]
        taken = [o for o in outcomes if isinstance(o, _Taken)]
        bad = [o for o in outcomes if isinstance(o, _Bad)]
        result.left.extend(o.info.key for o in outcomes if isinstance(o, _Later))
        if taken:
            self._register(taken, result)
            self.inbox.delete_many(t.info.key for t in taken)  # only once they are registered
        for item in bad:
            dest = self._reject(item)
            if dest is not None:
                where = self.inbox.url(dest)
                result.rejected.append(Rejection(item.info.key, item.reason, where))

    def _prepare(self, info: ObjectInfo) -> _Taken | _Bad | _Later | None:
        """Check one object and store its bundle; None when there is nothing to do (it is
        gone), _Later when it must be taken again later."""
        try:
            return self._fetch(info)
        except NoSuchObject:
            return None  # taken by another watcher, or removed, since it was listed
        except (BundleError, ParamsError) as exc:
            return _Bad(info, str(exc))
        except StorageError as exc:  # this object's trouble (or a passing one): next scan
            self._warn(info.key, f"inbox: cannot take {info.key!r} now: {exc}")
            return _Later(info)
        except Exception as exc:  # whatever it is, one object must not block the inbox
            return _Bad(info, f"bundle {info.key!r} could not be read: {exc}")

    def _fetch(self, info: ObjectInfo) -> _Taken | None:
        path = self.inbox.local_path(info.key)
        if path is not None:  # a folder inbox: a fifo would block a read, a link leads away
            try:
                problem = refused_unopened(os.lstat(path).st_mode, info.key)
            except OSError:
                return None  # gone meanwhile
            if problem is not None:
                raise BundleError(problem)
        ident = identity(self.inbox.url(info.key), info)
        key = inputs_key(info, ident)
        limits, env = self.flock.config.limits, self.flock.config.payload.env
        source = f"parameters of bundle {info.key!r}"
        if info.size <= SMALL:
            data = self.inbox.get_bytes(info.key)
            if len(data) != info.size:
                return None  # replaced since it was listed: the next scan sees the new one
            params = read_bundle_bytes(data, info.key, limits)
            check_env_size(params, env, source=source)
            # The bytes checked are the bytes stored. A bundle already stored under this key
            # (by another taker of the same object) is kept: a registered job's bundle never
            # changes, even if the object was replaced in the inbox meanwhile.
            self.inputs.put_if_absent(key, data)
        else:
            params = read_bundle(self.inbox, info.key, limits)
            check_env_size(params, env, source=source)
            if not self.inputs.exists(key):
                self.inputs.copy_from(self.inbox, info.key, key)
                if self.inputs.size(key) != info.size:
                    self.inputs.delete(key)  # replaced since it was listed: retaken next scan
                    return None
        return _Taken(info, key, ident, params)

    def _register(self, taken: list[_Taken], result: ScanResult) -> None:
        """Add each bundle's job under its idempotency key (exactly once across watchers),
        the whole chunk in one catalog transaction."""
        requests = [
            (
                f"inbox:{item.ident}",
                hashlib.sha256(item.key.encode()).hexdigest(),
                item.key,
                [JobSpec(item.params, item.key, None, None, item.key)],
            )
            for item in taken
        ]
        answers = self.flock.catalog.add_jobs_once_each(
            requests, now=self.flock.clock(), default_attempts=self.flock.config.retry.attempts
        )
        for item, done in zip(taken, answers, strict=True):
            if done.replayed:
                result.recovered += 1  # registered by another watcher (or an earlier one)
            else:
                result.jobs.extend(done.ids)
                result.keys.append(item.key)
        if result.jobs and self.on_registered is not None:
            self.on_registered()

    def _reject(self, bad: _Bad) -> str | None:
        return reject_object(self.inbox, bad.info.key, bad.reason)


def identity(url: str, info: ObjectInfo) -> str:
    """The identity of one put of an object, as listed: sha256 hex of its URL, size, last
    write time and ETag. Every watcher listing the same object computes the same one."""
    raw = "\n".join((url, str(info.size), repr(info.modified), info.etag))
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


def inputs_key(info: ObjectInfo, ident: str) -> str:
    """The input-store key of an object's bundle: ordered by the object's last write, unique
    by its identity, ending with its readable name (`inbox-<32 hex>-<name>`, as a folder
    inbox names bundles)."""
    ms = min(max(0, int(info.modified * 1000)), 0xFFFF_FFFF_FFFF)
    return f"{KEY_PREFIX}{ms:012x}{ident[:20]}-{key_name(info.key)}"
