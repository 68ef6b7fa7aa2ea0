"""What the dashboard (and `GET /api/v1/flock`) shows about a flock beyond its jobs: the
throughput and its time-to-finish estimate, the configuration without secrets, the inbox and
its rejected files. Plain functions over a `Flock`, called through `FlockService`."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from shepard.errors import ShepardError, StorageError
from shepard.model import JobStatus
from shepard.views import (
    BatchView,
    CountsView,
    InboxView,
    MinuteView,
    RejectedView,
    ThroughputView,
    WorkerView,
    counts_view,
    iso,
)

if TYPE_CHECKING:
    from shepard.flock import Flock

RECENT = 10
"""Minutes the time-to-finish estimate looks back over."""
MAX_REASON = 2000
"""Characters of a rejection reason shown (the rest is cut)."""


class LiveCounts:
    """Jobs per status, kept current cheaply for a page that shows them live: a full count
    now and then (every `SHARE` times its cost, at least every `FULL` seconds), and in
    between the full count plus the changes since (`Catalog.count_changes`), whose cost
    follows the activity, not the size of the flock. A full count of a million jobs takes
    0.1-0.8 s here; the changes of a few seconds take milliseconds. When the changes cost
    more than half a full count (a large submission since), the next call counts everything
    again. An instance belongs to its caller (a server's dashboard), never to the process."""

    SHARE = 10
    FULL = 5.0

    def __init__(self, flock: Flock) -> None:
        self._flock = flock
        self._lock = threading.Lock()
        self._base: dict[JobStatus, int] | None = None
        self._marks = (0, 0)
        self._at, self._cost = float("-inf"), 0.0

    def get(self) -> CountsView:
        catalog = self._flock.catalog
        with self._lock:
            began = time.monotonic()
            if self._base is None or began - self._at >= max(self.FULL, self.SHARE * self._cost):
                self._marks = catalog.count_marks()  # first: changes after it are not lost
                self._base = catalog.counts()
                self._at, self._cost = began, time.monotonic() - began
                return counts_view(self._base)
            base = self._base
            event, seq = self._marks
        change = catalog.count_changes(after_event=event, after_seq=seq)
        if time.monotonic() - began > max(self._cost / 2, 0.05):
            # much has happened since (a large submission): cheaper to count it all again
            with self._lock:
                self._at = float("-inf")
        return counts_view({s: max(0, base.get(s, 0) + change.get(s, 0)) for s in JobStatus})


def throughput(
    flock: Flock, *, minutes: int = 60, now: float | None = None, remaining: int | None = None
) -> ThroughputView:
    """Jobs ended per minute over the last `minutes` whole minutes (the current one last),
    and the time the queued and running jobs (`remaining`, counted when None) need at the
    pace of the last ten minutes."""
    if not 1 <= minutes <= 24 * 60:
        raise ShepardError(f"minutes must be between 1 and 1440, not {minutes}")
    now = flock.clock() if now is None else now
    last = int(now // 60)
    first = last - minutes + 1
    ended = flock.catalog.ended_per_minute(since=first * 60.0)
    rows = []
    for minute in range(first, last + 1):
        seen = ended.get(minute, {})
        rows.append(
            MinuteView(
                start=minute * 60.0, time=iso(minute * 60.0) or "",
                succeeded=seen.get(JobStatus.SUCCEEDED, 0), failed=seen.get(JobStatus.FAILED, 0),
            )
        )  # fmt: skip
    if remaining is None:
        counts = flock.catalog.counts()
        remaining = counts.get(JobStatus.QUEUED, 0) + counts.get(JobStatus.RUNNING, 0)
    # the pace over the recent minutes, the current (partial) one counted for its elapsed part
    window = min(RECENT, minutes)
    recent = sum(r.succeeded + r.failed for r in rows[-window:])
    span = (window - 1) + max(now - last * 60.0, 1.0) / 60.0
    pace = recent / span
    eta = 0.0 if remaining == 0 else (remaining / pace * 60.0 if pace > 0 else None)
    return ThroughputView(minutes=rows, per_minute=pace, remaining=remaining, eta_seconds=eta)


def batches(flock: Flock, *, limit: int = 8) -> list[BatchView]:
    """The `limit` most recent batches, newest first, each counted through the
    `(batch, status)` index."""
    labels = flock.catalog.recent_batches(limit=limit)
    return [BatchView(batch=b, counts=counts_view(flock.catalog.counts(batch=b))) for b in labels]


def running(flock: Flock, *, scan: int = 1000) -> list[WorkerView]:
    """The workers of the (up to `scan`) running jobs, busiest first."""
    by_worker: dict[str, list[str]] = {}
    for job in flock.catalog.page(status=JobStatus.RUNNING, limit=scan):
        by_worker.setdefault(job.worker or "(placed)", []).append(job.id)
    views = [WorkerView(worker=w, running=len(ids), jobs=ids[:10]) for w, ids in by_worker.items()]
    return sorted(views, key=lambda v: (-v.running, v.worker))


def inbox_view(flock: Flock, *, limit: int = 100, count_limit: int = 10_000) -> InboxView:
    """Files waiting in the inbox (counted up to `count_limit`) and the newest `limit`
    rejected ones with their reasons, read through the store API (folder or S3 alike)."""
    from shepard.triggers.arrivals import REJECTED  # the triggers package imports flock.py
    from shepard.triggers.rejected import REASON_SUFFIX

    store = flock.store("inbox")
    waiting = 0
    for key in store.list():
        if key.startswith(REJECTED + "/") or key.rsplit("/", 1)[-1].startswith("."):
            continue
        waiting += 1
        if waiting >= count_limit:
            break
    found = []
    for info in store.scan(REJECTED + "/"):
        name = info.key.rsplit("/", 1)[-1]
        if name.startswith(".") or info.key.endswith(REASON_SUFFIX):
            continue
        found.append(info)
    found.sort(key=lambda i: i.modified, reverse=True)
    rejected = []
    for info in found[:limit]:
        try:
            raw = store.read_range(info.key + REASON_SUFFIX, 0, MAX_REASON * 4)
        except StorageError:
            continue  # no reason beside it (yet): not a rejection the inbox finished
        rejected.append(
            RejectedView(
                key=info.key[len(REJECTED) + 1 :], size=info.size, at=info.modified,
                time=iso(info.modified) or "",
                reason=raw.decode("utf-8", "replace").strip()[:MAX_REASON],
            )
        )  # fmt: skip
    return InboxView(
        location=store.location, waiting=waiting, rejected=rejected,
        more_rejected=len(found) > limit,
    )  # fmt: skip
