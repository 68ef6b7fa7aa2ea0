"""Concurrent small submissions written together: one catalog transaction for many requests.

A server receives single-job submissions from many clients at once, each on its own thread.
Written one by one, each pays a whole write transaction (and SQLite takes them one at a time);
`SubmitGroup` lets the first thread write everything queued meanwhile in ONE `add_jobs`, while
the others wait for their ids (flat combining: no thread of its own, nothing to start or stop).
Each request keeps its own batch label, attempts and timeout, and gets exactly its ids back.
The transaction is all or nothing for the group: a catalog error fails every request in it
(nothing is registered), as it would have failed each alone. Requests with an idempotency key,
and large ones, go the usual way (`Flock.submit_request`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shepard.model import JobSpec
from shepard.views import SubmitRequest, SubmitResult

if TYPE_CHECKING:
    from shepard.flock import Flock

GROUPED = 100
"""Requests of at most this many jobs are written with others."""


@dataclass
class _Waiting:
    label: str
    specs: list[JobSpec]
    done: threading.Event = field(default_factory=threading.Event)
    lead: bool = False
    ids: list[str] | None = None
    error: BaseException | None = None


class SubmitGroup:
    """`submit_request` for many threads at once (see the module's docstring)."""

    def __init__(self, flock: Flock) -> None:
        self.flock = flock
        self._lock = threading.Lock()
        self._queue: list[_Waiting] = []
        self._writing = False

    def submit_request(self, request: SubmitRequest) -> SubmitResult:
        if request.idempotency_key is not None or request.size() > GROUPED:
            return self.flock.submit_request(request)
        label, specs = self.flock.prepare(
            list(request.param_sets()), batch=request.batch, max_attempts=request.attempts,
            timeout=request.timeout, validated=True,
        )  # fmt: skip
        me = _Waiting(label, specs)
        with self._lock:
            self._queue.append(me)
            leading = not self._writing
            self._writing = True
        if not leading:
            me.done.wait()
        if me.ids is None and me.error is None:  # asked to write the next group (see _write)
            self._write()
        if me.error is not None:
            raise me.error
        assert me.ids is not None
        return SubmitResult(ids=me.ids, batch=me.label, count=len(me.ids))

    def _write(self) -> None:
        """Write every queued request in one transaction, then hand the writing over to the
        first request queued meanwhile (or stop writing)."""
        with self._lock:
            group, self._queue = self._queue, []
        try:
            ids = self.flock.catalog.add_jobs(
                [spec for w in group for spec in w.specs], now=self.flock.clock(),
                default_attempts=self.flock.config.retry.attempts,
            )  # fmt: skip
            at = 0
            for w in group:
                w.ids, at = ids[at : at + len(w.specs)], at + len(w.specs)
        except BaseException as exc:
            for w in group:
                w.error = exc
        with self._lock:
            following = self._queue[0] if self._queue else None
            self._writing = following is not None
        for w in group:
            w.done.set()
        if following is not None:
            following.done.set()  # it finds neither ids nor an error: it writes next
