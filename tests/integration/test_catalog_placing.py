"""Placements (catalog/placing.py), on SQLite and PostgreSQL: queued jobs handed to an engine's
queue are never handed out twice, are claimed only by their own task, and come back when the
task vanishes."""

from __future__ import annotations

import threading

from shepard.catalog import Catalog
from shepard.catalog.states import MAX_LOST
from shepard.model import JobSpec, JobStatus, Outcome

T0 = 1_700_000_000.0
LEASE = 60.0


def add(catalog: Catalog, n: int, *, attempts: int = 2) -> list[str]:
    specs = (JobSpec(params={"ITEM": i}) for i in range(n))
    return catalog.add_jobs(specs, now=T0, default_attempts=attempts)


def history(catalog: Catalog, job_id: str) -> list[tuple[int, str, str | None]]:
    return [(e.attempt, e.status.value, e.detail) for e in catalog.events(job_id)]


def test_placed_jobs_stay_queued_and_are_never_placed_or_claimed_again(
    catalog: Catalog,
) -> None:
    ids = add(catalog, 5)
    first = catalog.place("t1", now=T0, limit=3)
    assert first == ids[:3]
    assert catalog.place("t2", now=T0, limit=10) == ids[3:]
    assert catalog.place("t3", now=T0, limit=10) == []
    assert catalog.counts()[JobStatus.QUEUED] == 5
    assert catalog.claim("w", now=T0, lease=LEASE, limit=10) == []
    assert catalog.ready(now=T0) == 0
    assert [j.id for j in catalog.placed()] == ids
    assert catalog.placements() == {"t1": 3, "t2": 2}
    catalog.cancel(ids[:1], now=T0)
    assert catalog.placements() == {"t1": 2, "t2": 2}, "only queued jobs count"
    assert catalog.get(ids[0]).placement == "t1"  # type: ignore[union-attr]
    assert history(catalog, ids[1]) == [(0, "queued", None)], "placing is not a transition"


def test_placing_respects_retry_times(catalog: Catalog) -> None:
    (job_id,) = add(catalog, 1)
    (job,) = catalog.claim("w", now=T0, lease=LEASE)
    failed = Outcome(JobStatus.FAILED, reason="exit code 1", exit_code=1)
    catalog.finish(job_id, job.attempt, failed, now=T0, retry_at=T0 + 30)
    assert catalog.place("t", now=T0 + 10, limit=5) == []
    assert catalog.ready(now=T0 + 10) == 0 and catalog.ready(now=T0 + 30) == 1
    assert catalog.place("t", now=T0 + 30, limit=5) == [job_id]


def test_concurrent_placers_take_disjoint_jobs(catalog: Catalog) -> None:
    ids = add(catalog, 400)
    taken: list[list[str]] = []
    lock = threading.Lock()

    def place(n: int) -> None:
        while got := catalog.place(f"t{n}", now=T0, limit=7):
            with lock:
                taken.append(got)

    threads = [threading.Thread(target=place, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    flat = [job_id for chunk in taken for job_id in chunk]
    assert sorted(flat) == sorted(ids) and len(flat) == len(set(flat))


def test_only_the_named_placement_claims_and_the_claim_clears_it(catalog: Catalog) -> None:
    (job_id,) = add(catalog, 1)
    catalog.place("tok", now=T0, limit=1)
    catalog.rename_placement("tok", "tok@77")
    assert catalog.claim_placed("w", job_id, ["tok", "tok@78"], now=T0, lease=LEASE) is None
    job = catalog.claim_placed("w 77_0", job_id, ["tok", "tok@77"], now=T0, lease=LEASE)
    assert job is not None
    assert (job.status, job.attempt, job.placement, job.worker) == (
        JobStatus.RUNNING, 1, None, "w 77_0"
    )  # fmt: skip
    assert job.started_at == int(T0) and job.lease_until == T0 + LEASE
    assert catalog.claim_placed("w", job_id, ["tok@77"], now=T0, lease=LEASE) is None
    assert history(catalog, job_id)[-1] == (1, "running", "w 77_0")
    # failed with a retry: queued again without a placement, so it is handed over afresh
    catalog.finish(job_id, 1, Outcome(JobStatus.FAILED, reason="x"), now=T0, retry_at=T0)
    assert catalog.claim_placed("w", job_id, ["tok@77"], now=T0, lease=LEASE) is None
    assert catalog.place("tok2", now=T0 + 1, limit=1) == [job_id]
    again = catalog.claim_placed("w", job_id, ["tok2"], now=T0 + 1, lease=LEASE)
    assert again is not None and again.attempt == 2 and again.started_at == int(T0) + 1


def test_unplaced_jobs_are_handed_over_again_and_fail_after_max_lost(
    catalog: Catalog,
) -> None:
    ids = add(catalog, 2)
    detail = "slurm task 5_0 ended before it started its job (CANCELLED)"
    for round_ in range(1, MAX_LOST + 1):
        placement = f"t{round_}@5"
        assert catalog.place(placement, now=T0, limit=5) == ids
        assert catalog.unplace(ids[:1], "other", now=T0, detail=detail) == []  # fenced
        assert catalog.unplace(ids[:1], placement, now=T0, detail=detail) == ids[:1]
        catalog.unplace(ids[1:], placement, now=T0, detail="never submitted", lost=False)
        job = catalog.get(ids[0])
        assert job is not None and job.placement is None
        if round_ < MAX_LOST:
            assert job.status is JobStatus.QUEUED
    failed, fine = catalog.get(ids[0]), catalog.get(ids[1])
    assert failed is not None and fine is not None
    assert failed.status is JobStatus.FAILED and failed.reason == f"{detail} ({MAX_LOST} times)"
    assert fine.status is JobStatus.QUEUED, "a submission that never happened is not a loss"
    assert history(catalog, ids[0])[1:] == [(0, "queued", detail)] * (MAX_LOST - 1) + [
        (0, "failed", detail)
    ]


def test_a_lost_running_attempt_is_requeued_without_spending_an_attempt(
    catalog: Catalog,
) -> None:
    (job_id,) = add(catalog, 1, attempts=1)
    reason = "slurm task 9_0 was cancelled outside shepard (CANCELLED)"
    for n in range(1, MAX_LOST + 1):
        (claimed,) = catalog.claim("w", now=T0 + n, lease=LEASE)
        assert catalog.lose(job_id, claimed.attempt + 1, now=T0 + n, reason=reason) is None
        status = catalog.lose(job_id, claimed.attempt, now=T0 + n, reason=reason, retry_at=T0 + n)
        assert status is (JobStatus.QUEUED if n < MAX_LOST else JobStatus.FAILED)
    job = catalog.get(job_id)
    assert job is not None and job.attempt == MAX_LOST
    assert job.reason == f"{reason} ({MAX_LOST} times)"
    assert catalog.lose(job_id, job.attempt, now=T0, reason=reason) is None


def test_a_job_cancelled_while_placed_keeps_its_placement_until_retried(
    catalog: Catalog,
) -> None:
    (job_id,) = add(catalog, 1)
    catalog.place("t@1", now=T0, limit=1)
    catalog.cancel([job_id], now=T0)
    assert catalog.placed_in(["t@1"])[0].status is JobStatus.CANCELLED
    assert catalog.placed() == []
    catalog.requeue([job_id], now=T0, statuses=[JobStatus.CANCELLED])
    job = catalog.get(job_id)
    assert job is not None and job.placement is None and catalog.ready(now=T0) == 1
