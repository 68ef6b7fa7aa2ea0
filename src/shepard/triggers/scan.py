"""What every inbox implementation shares: the result of one scan, and the `Inbox` contract.

Two implementations exist (see `shepard.triggers.inbox.open_inbox`, which picks one by asking
the stores): `FolderInbox` claims files of a folder inbox by renaming them into a folder
inputs store; `ObjectInbox` works on any store (S3, memory, a folder next to an S3 inputs
store) and makes registration exactly-once in the catalog.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Rejection:
    """A file or object the inbox refused, and why."""

    name: str  # its key (path relative to the inbox) when it was dropped
    reason: str
    where: str  # where it is now, under inbox/rejected/: a file path or an s3:// URL


@dataclass
class ScanResult:
    """What one scan did."""

    jobs: list[str] = field(default_factory=list)  # ids of the jobs registered
    keys: list[str] = field(default_factory=list)  # their bundle keys (= batch labels)
    rejected: list[Rejection] = field(default_factory=list)
    recovered: int = 0  # bundles an interrupted watcher had taken, settled by this scan
    waiting: int = 0  # seen but not taken yet (still changing, or not a complete zip yet)
    busy: bool = False  # another watcher held the inbox lock, so nothing was claimed here
    left: list[str] = field(default_factory=list)  # keys not taken for a passing error

    @property
    def registered(self) -> int:
        return len(self.jobs)


class Inbox(Protocol):
    """A watcher that turns what appears in a flock's inbox store into jobs.

    Every implementation guarantees: each bundle put into the inbox becomes exactly one job,
    whatever number of watchers (threads, processes, machines) watch it; a bad one is moved
    to `inbox/rejected/NAME` next to `NAME.reason.txt`; nothing in the inbox stops the
    watcher from taking the rest. One instance is used by one thread at a time.
    """

    @property
    def location(self) -> str:
        """The inbox's URL for people (a folder path or `s3://bucket/prefix/inbox`)."""
        ...

    @property
    def interval(self) -> float:
        """Seconds `run` waits between two scans that found nothing to do."""
        ...

    def scan_once(self, stop: threading.Event | None = None) -> ScanResult:
        """Look at the inbox once: register what is ready, reject what is bad. Raises on
        failures that concern every bundle (catalog unreachable); setting `stop` ends the
        scan early, leaving the rest for the next one."""
        ...

    def run(self, stop: threading.Event) -> None:
        """Scan every `interval` seconds until `stop` is set; errors are logged, not raised."""
        ...

    def close(self) -> None:
        """Release what the watcher holds (a lock file, threads)."""
        ...
