"""The parts of a flock that the CLI's job commands read, over a server's REST API.

`RemoteFlock` answers what `joblogs` (finding and following logs) and `retrieval` (copying
results) ask of a flock, so `shepard logs -f` and `shepard retrieve` behave the same against a
server as on a flock folder. `RemoteStore` is a server's read-only view of one store.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import BinaryIO

from shepard.errors import JobNotFound
from shepard.model import Job, JobEvent, JobStatus
from shepard.remote.client import Client
from shepard.storage import NoSuchObject, ObjectInfo
from shepard.views import EventView, JobView

_CHUNK = 1 << 20


def job_of(view: JobView) -> Job:
    """The model's Job for a JobView (what a server sends; no catalog position)."""
    return Job(
        id=view.id, seq=0, status=view.status, params=view.params, bundle_key=view.bundle,
        attempt=view.attempt, max_attempts=view.max_attempts, timeout=view.timeout,
        batch=view.batch, submitted_at=view.submitted_at, started_at=view.started_at,
        finished_at=view.finished_at, worker=view.worker, reason=view.reason,
        exit_code=view.exit_code, outputs=tuple(view.outputs), error_bundle=view.error_bundle,
        placement=view.placement,
    )  # fmt: skip


def event_of(job_id: str, view: EventView) -> JobEvent:
    return JobEvent(job_id, view.attempt, view.status, view.at, view.detail)


class RemoteStore:
    """One of a server's stores (outputs, errors, logs), read through /api/v1/objects."""

    def __init__(self, client: Client, name: str) -> None:
        self._client, self.name = client, name

    def url(self, key: str) -> str:
        return f"{self._client.server}/api/v1/objects/{self.name}/{key}"

    def list(self, prefix: str = "") -> Iterator[str]:
        return (key for key, _size in self._client.scan(self.name, prefix))

    def size(self, key: str) -> int:
        return self.stat(key).size

    def stat(self, key: str) -> ObjectInfo:
        try:
            return ObjectInfo(key, self._client.size(self.name, key), 0.0)
        except JobNotFound:  # the API's 404
            raise NoSuchObject(f"no object {key!r} in {self.name}") from None

    def open_read(self, key: str, *, start: int = 0) -> AbstractContextManager[BinaryIO]:
        return self._client.open_object(self.name, key, start)

    def get_file(self, key: str, dest: Path) -> None:
        with self.open_read(key) as src, dest.open("wb") as out:
            while chunk := src.read(_CHUNK):
                out.write(chunk)


class RemoteFlock:
    """A served flock as the log and retrieval code read it (joblogs.JobSource)."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def job(self, job_id: str) -> Job:
        return job_of(self.client.job(job_id).job)

    def events(self, job_id: str) -> list[JobEvent]:
        return [event_of(job_id, e) for e in self.client.job(job_id).events]

    def log_keys(self, job: Job) -> list[tuple[int, str, str]]:
        """Every started attempt's log keys, as the server lists them (a missing log reads as
        empty, as on a flock folder)."""
        return [(a.number, a.stdout, a.stderr) for a in self.client.job(job.id).attempts]

    def logs_store(self) -> RemoteStore:
        return RemoteStore(self.client, "logs")

    def store(self, name: str) -> RemoteStore:
        return RemoteStore(self.client, name)

    def counts(self, batch: str | None = None) -> dict[JobStatus, int]:
        found = self.client.counts(batch).counts
        return {s: found.get(s, 0) for s in JobStatus}
