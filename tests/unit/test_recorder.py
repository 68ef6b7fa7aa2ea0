"""sheep.Recorder: ended attempts recorded in batches with the claim of the next jobs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shepard.catalog import Catalog, open_catalog
from shepard.errors import CatalogError
from shepard.model import Job, JobSpec, JobStatus, Outcome, RetryPolicy
from shepard.sheep import RECORD_WITHIN, Heartbeat, Recorder
from shepard.storage import LocalStore

LEASE = 60.0
DONE = Outcome(JobStatus.SUCCEEDED, exit_code=0)
BROKEN = Outcome(JobStatus.FAILED, reason="exit code 3", exit_code=3)


class Parts:
    def __init__(self, tmp_path: Path) -> None:
        self.catalog: Catalog = open_catalog(f"sqlite:///{tmp_path / 'c.db'}")
        self.outputs = LocalStore(tmp_path / "outputs")
        self.heartbeat = Heartbeat(self.catalog, LEASE)
        policy = RetryPolicy(attempts=2, backoff=30.0)
        self.recorder = Recorder(
            self.catalog, self.heartbeat, policy, self.outputs, worker="w", lease=LEASE
        )

    def add(self, n: int, attempts: int = 1) -> list[str]:
        specs = [JobSpec({"ITEM": i}) for i in range(n)]
        return self.catalog.add_jobs(specs, now=time.time(), default_attempts=attempts)

    def job(self, job_id: str) -> Job:
        job = self.catalog.get(job_id)
        assert job is not None
        return job

    def held(self) -> set[str]:
        return set(self.heartbeat._held)


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[Parts]:
    made = Parts(tmp_path)
    yield made
    made.recorder.close()
    made.catalog.close()


def test_flush_records_every_queued_attempt_and_claims_the_next_jobs(parts: Parts) -> None:
    ids = parts.add(6)
    first = parts.recorder.flush(2)
    assert [job.id for job, _ in first] == ids[:2] and parts.held() == set(ids[:2])
    for job, _ in first:
        parts.recorder.add(job, DONE)
    assert parts.job(ids[0]).status is JobStatus.RUNNING  # queued, not recorded yet
    after = parts.recorder.flush(3)
    assert [job.id for job, _ in after] == ids[2:5]
    assert [parts.job(i).status for i in ids[:2]] == [JobStatus.SUCCEEDED] * 2
    assert parts.held() == set(ids[2:5])  # recorded attempts are no longer held
    # the claimed jobs' attempts are held with fresh controls, and running for "w"
    assert all(not control.stop.is_set() for _, control in after)
    assert {parts.job(i).worker for i in ids[2:5]} == {"w"}


def test_a_failure_is_retried_per_the_policy_and_the_job_may_be_claimed_again(
    parts: Parts,
) -> None:
    again, other = parts.add(2, attempts=2)
    for job, _ in parts.recorder.flush(2):
        parts.recorder.add(job, BROKEN)
    began = time.time()
    assert parts.recorder.flush(5) == []  # the retry waits for the policy's backoff (30 s)
    queued = parts.job(again)
    assert queued.status is JobStatus.QUEUED and queued.not_before is not None
    assert queued.not_before >= began + 30
    assert parts.job(other).status is JobStatus.QUEUED


def test_what_waits_is_recorded_by_the_thread_without_a_flush(parts: Parts) -> None:
    (job_id,) = parts.add(1)
    ((job, _),) = parts.recorder.flush(1)
    parts.recorder.add(job, DONE)
    deadline = time.monotonic() + RECORD_WITHIN + 10
    while parts.job(job_id).status is JobStatus.RUNNING:
        assert time.monotonic() < deadline, "never recorded"
        time.sleep(0.02)
    assert parts.job(job_id).status is JobStatus.SUCCEEDED and parts.held() == set()


def test_a_refused_outcome_withdraws_the_results_it_published(parts: Parts) -> None:
    (job_id,) = parts.add(1)
    ((job, _),) = parts.recorder.flush(1)
    key = f"result@{job_id}_1_root.zip"
    parts.outputs.put_bytes(key, b"zip")
    parts.catalog.cancel([job_id], now=time.time())  # the attempt is no longer current
    parts.recorder.add(job, Outcome(JobStatus.SUCCEEDED, exit_code=0, outputs=(key,)))
    assert parts.recorder.flush(0) == []
    assert parts.job(job_id).status is JobStatus.CANCELLED
    assert list(parts.outputs.list()) == []


def test_close_records_what_is_still_queued(parts: Parts) -> None:
    (job_id,) = parts.add(1)
    ((job, _),) = parts.recorder.flush(1)
    parts.recorder.add(job, DONE)
    parts.recorder.close()
    assert parts.job(job_id).status is JobStatus.SUCCEEDED


def test_a_failing_catalog_loses_nothing_the_leases_cannot_recover(
    parts: Parts, monkeypatch: pytest.MonkeyPatch
) -> None:
    (job_id,) = parts.add(1)
    ((job, _),) = parts.recorder.flush(1)
    parts.recorder.add(job, DONE)

    def broken(*args: object, **kwargs: object) -> None:
        raise CatalogError("catalog unreachable")

    monkeypatch.setattr(parts.catalog, "finish_and_claim", broken)
    with pytest.raises(CatalogError):
        parts.recorder.flush(1)
    # not held any more: its lease runs out and the job runs again
    assert parts.held() == set() and parts.job(job_id).status is JobStatus.RUNNING
