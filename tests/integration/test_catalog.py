"""The catalog contract (JobStore), run against every catalog implementation (see conftest)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from shepard.catalog import Catalog, states
from shepard.catalog.states import MAX_LOST, Facts
from shepard.model import Ended, JobEvent, JobSpec, JobStatus, Outcome, ParamValue
from tests.integration.conftest import CatalogFactory

T0 = 1_700_000_000.0
LEASE = 60.0


def specs(n: int, **fields: Any) -> Iterator[JobSpec]:
    return (JobSpec(params={"ITEM": i}, **fields) for i in range(n))


def add(catalog: Catalog, n: int, *, attempts: int = 3, **fields: Any) -> list[str]:
    return catalog.add_jobs(specs(n, **fields), now=T0, default_attempts=attempts)


def claim_one(catalog: Catalog, now: float, job_id: str | None = None) -> tuple[str, int]:
    only = None if job_id is None else [job_id]
    (job,) = catalog.claim("w", now=now, lease=LEASE, job_ids=only)
    return job.id, job.attempt


FAILED_3 = Outcome(JobStatus.FAILED, reason="exit code 3", exit_code=3)


# -- submission ------------------------------------------------------------------------------


def big(catalog: Catalog, sql: int, emulated: int) -> int:
    """A size past the catalog's write chunks: SQL inserts 20,000 rows a statement, DynamoDB
    writes 25 items a call (eight calls at once), which moto's server takes at a few hundred
    items a second, so a smaller size crosses as many chunks there."""
    return emulated if catalog.url.startswith("dynamodb:") else sql


def test_bulk_add_returns_ids_in_order_and_counts(catalog: Catalog) -> None:
    n = big(catalog, 45_000, 1_000)  # more than two insert chunks
    ids = add(catalog, n)
    assert len(ids) == len(set(ids)) == n
    oldest = catalog.page(limit=3, newest_first=False)
    assert [j.id for j in oldest] == ids[:3]
    assert [j.params for j in oldest] == [{"ITEM": 0}, {"ITEM": 1}, {"ITEM": 2}]
    newest = catalog.page(limit=1)[0]
    assert (newest.id, newest.params) == (ids[-1], {"ITEM": n - 1})
    assert catalog.counts()[JobStatus.QUEUED] == n


def test_add_keeps_every_spec_field(catalog: Catalog) -> None:
    params: dict[str, ParamValue] = {"NAME": 'é "quoted"\n', "N": -7, "FLAG": True}
    spec = JobSpec(params, bundle_key="in/b.zip", max_attempts=5, timeout=1.5, batch="b1")
    plain_id, full_id = catalog.add_jobs([JobSpec({}), spec], now=T0, default_attempts=2)
    plain, full = catalog.get(plain_id), catalog.get(full_id)
    assert plain is not None and full is not None
    assert (plain.params, plain.max_attempts, plain.is_invoked) == ({}, 2, True)
    assert full.params == params
    assert (full.bundle_key, full.max_attempts, full.timeout, full.batch) == (
        "in/b.zip", 5, 1.5, "b1"
    )  # fmt: skip
    assert (full.status, full.attempt, full.submitted_at, full.seq) == (
        JobStatus.QUEUED, 0, T0, plain.seq + 1
    )  # fmt: skip


def test_add_is_atomic(catalog: Catalog) -> None:
    def failing() -> Iterator[JobSpec]:
        yield from specs(big(catalog, 25_000, 600))  # past the first chunk, sent already
        raise RuntimeError("bad spec")

    with pytest.raises(RuntimeError, match="bad spec"):
        catalog.add_jobs(failing(), now=T0, default_attempts=1)
    assert sum(catalog.counts().values()) == 0
    assert catalog.add_jobs([], now=T0, default_attempts=1) == []


# -- claiming --------------------------------------------------------------------------------


def test_claim_takes_oldest_first_up_to_limit(catalog: Catalog) -> None:
    ids = add(catalog, 5)
    first = catalog.claim("w1", now=T0 + 1.5, lease=LEASE, limit=2)
    assert [j.id for j in first] == ids[:2]
    job = first[0]
    assert (job.status, job.attempt, job.worker) == (JobStatus.RUNNING, 1, "w1")
    assert (job.started_at, job.lease_until) == (int(T0 + 1.5), T0 + 1.5 + LEASE)
    rest = catalog.claim("w2", now=T0 + 2, lease=LEASE, limit=10)
    assert [j.id for j in rest] == ids[2:]
    assert catalog.claim("w3", now=T0 + 3, lease=LEASE) == []
    assert catalog.counts()[JobStatus.RUNNING] == 5


def test_claim_restricted_to_job_ids(catalog: Catalog) -> None:
    ids = add(catalog, 4)
    claimed = catalog.claim("remote", now=T0, lease=LEASE, limit=5, job_ids=[ids[2]])
    assert [j.id for j in claimed] == [ids[2]]
    assert catalog.claim("remote", now=T0, lease=LEASE, job_ids=[ids[2]]) == []  # running
    assert catalog.claim("remote", now=T0, lease=LEASE, job_ids=[]) == []
    assert [j.id for j in catalog.claim("w", now=T0, lease=LEASE)] == [ids[0]]


def test_concurrent_claimers_never_share_a_job(catalog_factory: CatalogFactory) -> None:
    # Separate catalog instances (separate engines and pools) stand in for separate processes.
    claimers = [catalog_factory() for _ in range(4)]
    ids = claimers[0].add_jobs(specs(500), now=T0, default_attempts=1)
    claimed: list[list[str]] = [[] for _ in claimers]
    start = threading.Barrier(len(claimers))

    def run(index: int) -> None:
        start.wait()
        while batch := claimers[index].claim(f"w{index}", now=T0, lease=LEASE, limit=7):
            claimed[index].extend(j.id for j in batch)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(claimers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        every = Counter(job_id for part in claimed for job_id in part)
        assert set(every) == set(ids)
        assert set(every.values()) == {1}
        assert claimers[0].counts()[JobStatus.RUNNING] == 500
    finally:
        for claimer in claimers:
            claimer.close()


def test_started_at_strictly_increases_within_one_second(catalog: Catalog) -> None:
    (job_id,) = add(catalog, 1, attempts=4)
    starts = []
    for attempt in (1, 2, 3):
        now = T0 + attempt / 10  # every attempt within the same second
        assert claim_one(catalog, now) == (job_id, attempt)
        job = catalog.get(job_id)
        assert job is not None and job.started_at is not None
        starts.append(job.started_at)
        assert catalog.finish(job_id, attempt, FAILED_3, now=now, retry_at=now) is JobStatus.QUEUED
    assert starts == [int(T0), int(T0) + 1, int(T0) + 2]


CLAIMED_FIELDS = ("attempt", "started_at", "lease_until", "worker", "not_before", "finished_at")


def test_a_claim_writes_what_the_state_machine_says(catalog: Catalog) -> None:
    # claim and place are set-based statements for speed: they must agree with states.claimed
    (job_id,) = add(catalog, 1, attempts=4)
    for attempt in (1, 2, 3):
        now = T0 + attempt / 10  # every attempt within the same second
        before = catalog.get(job_id)
        assert before is not None
        facts = Facts(
            before.status, before.attempt, before.max_attempts, 0, None, before.started_at
        )
        expected = states.claimed(facts, worker="w", now=now, lease=LEASE)
        (job,) = catalog.claim("w", now=now, lease=LEASE)
        assert expected is not None and job.status is expected.status
        assert {k: getattr(job, k) for k in CLAIMED_FIELDS} == {
            k: expected.fields[k] for k in CLAIMED_FIELDS
        }
        assert catalog.release(job.id, job.attempt, now=now, detail="again") is JobStatus.QUEUED


# -- leases and results ----------------------------------------------------------------------


def test_heartbeat_extends_current_attempts_only(catalog: Catalog) -> None:
    a, b, c = add(catalog, 3)
    catalog.claim("w", now=T0, lease=LEASE, limit=2)
    held = [(a, 1), (b, 0), (c, 1), ("no-such-job", 1)]  # b: stale attempt; c: not running
    assert catalog.heartbeat(held, now=T0 + 30, lease=LEASE) == {a}
    job_a, job_b = catalog.get(a), catalog.get(b)
    assert job_a is not None and job_a.lease_until == T0 + 30 + LEASE
    assert job_b is not None and job_b.lease_until == T0 + LEASE
    assert catalog.heartbeat([], now=T0, lease=LEASE) == set()


def test_finish_is_fenced_by_attempt(catalog: Catalog) -> None:
    (job_id,) = add(catalog, 1)
    _, attempt = claim_one(catalog, T0)
    before, history = catalog.get(job_id), catalog.events(job_id)
    done = Outcome(JobStatus.SUCCEEDED, outputs=("out/x",))
    assert catalog.finish(job_id, attempt + 1, done, now=T0 + 1) is None
    assert catalog.finish(job_id, attempt - 1, done, now=T0 + 1) is None
    assert catalog.finish("no-such-job", attempt, done, now=T0 + 1) is None
    assert catalog.get(job_id) == before
    assert catalog.events(job_id) == history
    assert catalog.finish(job_id, attempt, done, now=T0 + 2) is JobStatus.SUCCEEDED
    assert catalog.finish(job_id, attempt, done, now=T0 + 3) is None  # no longer running


def test_finish_success_records_outputs(catalog: Catalog) -> None:
    (job_id,) = add(catalog, 1)
    claim_one(catalog, T0)
    done = Outcome(JobStatus.SUCCEEDED, exit_code=0, outputs=("out/a.txt", "out/b.txt"))
    assert catalog.finish(job_id, 1, done, now=T0 + 5) is JobStatus.SUCCEEDED
    job = catalog.get(job_id)
    assert job is not None
    assert (job.status, job.outputs, job.exit_code) == (JobStatus.SUCCEEDED, done.outputs, 0)
    assert (job.finished_at, job.lease_until, job.reason) == (T0 + 5, None, None)


def test_finish_with_retry_requeues_and_claim_waits_for_not_before(catalog: Catalog) -> None:
    (job_id,) = add(catalog, 1, attempts=2)
    claim_one(catalog, T0)
    status = catalog.finish(job_id, 1, FAILED_3, now=T0 + 10, retry_at=T0 + 15)
    assert status is JobStatus.QUEUED
    job = catalog.get(job_id)
    assert job is not None
    assert (job.status, job.not_before, job.reason, job.exit_code) == (
        JobStatus.QUEUED, T0 + 15, "exit code 3", 3
    )  # fmt: skip
    assert catalog.events(job_id)[-1].detail == "retry in 5s after: exit code 3"
    assert catalog.claim("w", now=T0 + 14.9, lease=LEASE) == []
    assert claim_one(catalog, T0 + 15) == (job_id, 2)


def test_finish_fails_when_attempts_are_exhausted(catalog: Catalog) -> None:
    (job_id,) = add(catalog, 1, attempts=1)
    claim_one(catalog, T0)
    failed = Outcome(JobStatus.FAILED, reason="exit code 2", exit_code=2, error_bundle="err/1")
    assert catalog.finish(job_id, 1, failed, now=T0 + 1, retry_at=T0 + 5) is JobStatus.FAILED
    job = catalog.get(job_id)
    assert job is not None
    assert (job.status, job.reason, job.exit_code, job.error_bundle, job.finished_at) == (
        JobStatus.FAILED, "exit code 2", 2, "err/1", T0 + 1
    )  # fmt: skip
    assert (job.not_before, job.lease_until) == (None, None)
    assert catalog.events(job_id)[-1].detail == "exit code 2"


def test_not_retryable_failure_with_attempts_left_fails(catalog: Catalog) -> None:
    (job_id,) = add(catalog, 1, attempts=3)
    claim_one(catalog, T0)
    no_retry = Outcome(JobStatus.FAILED, reason="exit code 64", exit_code=64, retryable=False)
    assert catalog.finish(job_id, 1, no_retry, now=T0 + 1, retry_at=T0 + 2) is JobStatus.FAILED
    (retry_id,) = add(catalog, 1, attempts=3)
    claim_one(catalog, T0, retry_id)
    assert catalog.finish(retry_id, 1, FAILED_3, now=T0 + 1) is JobStatus.FAILED  # no retry_at


def test_finish_and_claim_ends_attempts_and_starts_the_next_in_one_go(
    catalog: Catalog,
) -> None:
    first, second, third, fourth = add(catalog, 4)
    claim_one(catalog, T0)
    done = Outcome(JobStatus.SUCCEEDED, exit_code=0, outputs=("out/a",))
    statuses, claimed = catalog.finish_and_claim(
        [Ended(first, 1, done)], now=T0 + 2.5, worker="w2", lease=LEASE
    )
    assert statuses == [JobStatus.SUCCEEDED]
    assert [(j.id, j.attempt, j.worker, j.status) for j in claimed] == [
        (second, 1, "w2", JobStatus.RUNNING)
    ]
    assert (claimed[0].started_at, claimed[0].lease_until) == (int(T0 + 2.5), T0 + 2.5 + LEASE)
    job = catalog.get(first)
    assert job is not None and (job.status, job.outputs) == (JobStatus.SUCCEEDED, ("out/a",))
    assert [(e.status, e.detail) for e in catalog.events(second)][-1] == (JobStatus.RUNNING, "w2")
    # refused (stale attempt): nothing recorded for it, but the claim still happens
    statuses, claimed = catalog.finish_and_claim(
        [Ended(first, 1, done)], now=T0 + 3, worker="w2", lease=LEASE, limit=2
    )
    assert statuses == [None] and [j.id for j in claimed] == [third, fourth]
    # several attempts at once, each with its own fate; no claim
    several = [
        Ended(second, 1, FAILED_3, retry_at=T0 + 4),
        Ended(third, 1, done),
        Ended(fourth, 1, FAILED_3),
    ]
    statuses, claimed = catalog.finish_and_claim(
        several, now=T0 + 4, worker="w2", lease=LEASE, limit=0
    )
    assert (statuses, claimed) == ([JobStatus.QUEUED, JobStatus.SUCCEEDED, JobStatus.FAILED], [])
    assert [e.status for e in catalog.events(third)][-1] is JobStatus.SUCCEEDED
    assert [e.status for e in catalog.events(fourth)][-1] is JobStatus.FAILED


def test_finish_and_claim_may_take_back_a_job_it_requeued(catalog: Catalog) -> None:
    (job_id,) = add(catalog, 1, attempts=2)
    claim_one(catalog, T0)
    statuses, claimed = catalog.finish_and_claim(
        [Ended(job_id, 1, FAILED_3, T0 + 1)], now=T0 + 1, worker="w", lease=LEASE
    )
    assert statuses == [JobStatus.QUEUED] and [(j.id, j.attempt) for j in claimed] == [(job_id, 2)]
    history = [(e.attempt, e.status) for e in catalog.events(job_id)]
    assert history[-2:] == [(1, JobStatus.QUEUED), (2, JobStatus.RUNNING)]


def test_page_filters_by_worker(catalog: Catalog) -> None:
    ids = add(catalog, 4)
    catalog.claim("w1", now=T0, lease=LEASE, limit=2)
    catalog.claim("w2", now=T0, lease=LEASE, limit=1)
    mine = catalog.page(status=JobStatus.RUNNING, worker="w1", newest_first=False)
    assert [j.id for j in mine] == ids[:2]
    assert [j.id for j in catalog.page(worker="w2")] == [ids[2]]
    assert catalog.page(worker="w3") == []


def test_expire_leases_requeues_lost_attempts_without_spending_them(catalog: Catalog) -> None:
    lost_id, alive_id = catalog.add_jobs([JobSpec({}), JobSpec({})], now=T0, default_attempts=1)
    claim_one(catalog, T0, lost_id)  # lease until T0 + 60
    claim_one(catalog, T0 + 50, alive_id)  # lease until T0 + 110
    assert catalog.expire_leases(now=T0 + LEASE + 1, retry_at=T0 + 100) == [lost_id]
    lost, alive = catalog.get(lost_id), catalog.get(alive_id)
    assert lost is not None and alive is not None
    assert (lost.status, lost.not_before, lost.max_attempts) == (JobStatus.QUEUED, T0 + 100, 2)
    assert lost.reason == "lease expired (worker lost)"
    assert alive.status is JobStatus.RUNNING
    assert [e.status for e in catalog.events(lost_id)][-1] is JobStatus.QUEUED
    # The lost worker is fenced out.
    assert catalog.heartbeat([(lost_id, 1)], now=T0 + 62, lease=LEASE) == set()
    assert catalog.finish(lost_id, 1, Outcome(JobStatus.SUCCEEDED), now=T0 + 62) is None
    assert catalog.expire_leases(now=T0 + LEASE + 1) == []
    assert claim_one(catalog, T0 + 100) == (lost_id, 2)


def test_a_job_that_keeps_losing_its_worker_fails(catalog: Catalog) -> None:
    [job_id] = catalog.add_jobs([JobSpec({})], now=T0, default_attempts=5)
    now = T0
    for attempt in range(1, MAX_LOST + 1):
        assert claim_one(catalog, now, job_id) == (job_id, attempt)
        now += LEASE + 1
        assert catalog.expire_leases(now=now, retry_at=now) == [job_id]
    job = catalog.get(job_id)
    assert job is not None and job.status is JobStatus.FAILED
    assert job.reason == f"lease expired (worker lost) {MAX_LOST} times"
    assert job.finished_at == now


def test_release_requeues_without_spending_an_attempt(catalog: Catalog) -> None:
    (job_id,) = add(catalog, 1, attempts=1)
    claim_one(catalog, T0)
    assert catalog.release(job_id, 2, now=T0 + 1, detail="released") is None  # stale attempt
    assert catalog.release(job_id, 1, now=T0 + 1, detail="released: shut down") is JobStatus.QUEUED
    job = catalog.get(job_id)
    assert job is not None
    assert (job.status, job.attempt, job.max_attempts, job.lease_until) == (
        JobStatus.QUEUED, 1, 2, None
    )  # fmt: skip
    assert catalog.events(job_id)[-1] == JobEvent(
        job_id, 1, JobStatus.QUEUED, T0 + 1, "released: shut down"
    )
    assert catalog.heartbeat([(job_id, 1)], now=T0 + 2, lease=LEASE) == set()
    assert catalog.release(job_id, 1, now=T0 + 2, detail="again") is None  # no longer running
    assert claim_one(catalog, T0 + 2) == (job_id, 2)  # the next attempt is still allowed


# -- user actions ----------------------------------------------------------------------------


def test_cancel_queued_and_running(catalog: Catalog) -> None:
    running, queued, untouched = add(catalog, 3)
    claim_one(catalog, T0, running)
    assert catalog.cancel([queued, running], now=T0 + 1) == [running, queued]
    assert catalog.heartbeat([(running, 1)], now=T0 + 2, lease=LEASE) == set()
    assert catalog.finish(running, 1, Outcome(JobStatus.SUCCEEDED), now=T0 + 2) is None
    job = catalog.get(running)
    assert job is not None
    assert (job.status, job.finished_at, job.lease_until) == (JobStatus.CANCELLED, T0 + 1, None)
    assert catalog.cancel([running], now=T0 + 3) == []  # terminal: unchanged
    assert catalog.cancel(now=T0 + 4, statuses=[JobStatus.RUNNING]) == []
    assert catalog.cancel(now=T0 + 4) == [untouched]
    assert catalog.counts()[JobStatus.CANCELLED] == 3


def test_requeue_failed_since_continues_attempts(catalog: Catalog) -> None:
    early, late, ok = add(catalog, 3, attempts=1)
    for job_id, now in ((early, T0 + 10), (late, T0 + 20)):
        claim_one(catalog, now, job_id)
        catalog.finish(job_id, 1, FAILED_3, now=now)
    claim_one(catalog, T0 + 20, ok)
    catalog.finish(ok, 1, Outcome(JobStatus.SUCCEEDED), now=T0 + 21)

    assert catalog.requeue(now=T0 + 30, since=T0 + 15, extra_attempts=2) == [late]
    job = catalog.get(late)
    assert job is not None
    assert (job.status, job.attempt, job.max_attempts, job.finished_at) == (
        JobStatus.QUEUED, 1, 3, None
    )  # fmt: skip
    assert [j.id for j in catalog.page(status=JobStatus.FAILED)] == [early]
    (again,) = catalog.claim("w", now=T0 + 30, lease=LEASE)
    assert (again.id, again.attempt, again.started_at) == (late, 2, int(T0 + 30))
    assert catalog.requeue([early, ok], now=T0 + 31) == [early]  # ok is not FAILED
    assert catalog.requeue([ok], now=T0 + 31, statuses=[JobStatus.SUCCEEDED]) == [ok]


def test_events_history_in_order(catalog: Catalog) -> None:
    (job_id,) = add(catalog, 1, attempts=2)
    claim_one(catalog, T0 + 1)
    catalog.finish(job_id, 1, FAILED_3, now=T0 + 2, retry_at=T0 + 3)
    claim_one(catalog, T0 + 3)
    catalog.finish(job_id, 2, Outcome(JobStatus.SUCCEEDED), now=T0 + 4)
    history = catalog.events(job_id)
    assert [(e.status, e.attempt, e.at) for e in history] == [
        (JobStatus.QUEUED, 0, T0),
        (JobStatus.RUNNING, 1, T0 + 1),
        (JobStatus.QUEUED, 1, T0 + 2),
        (JobStatus.RUNNING, 2, T0 + 3),
        (JobStatus.SUCCEEDED, 2, T0 + 4),
    ]
    assert history[1].detail == "w"
    assert catalog.events("no-such-job") == []
    assert catalog.get("no-such-job") is None


def test_counts_include_every_status(catalog: Catalog) -> None:
    assert catalog.counts() == {status: 0 for status in JobStatus}
    a, _b, c = add(catalog, 3)
    claim_one(catalog, T0, a)
    catalog.cancel([c], now=T0)
    assert catalog.counts() == {
        JobStatus.QUEUED: 1,
        JobStatus.RUNNING: 1,
        JobStatus.SUCCEEDED: 0,
        JobStatus.FAILED: 0,
        JobStatus.CANCELLED: 1,
    }


def test_counts_by_batch(catalog: Catalog) -> None:
    first = add(catalog, 2, batch="b1")
    add(catalog, 3, batch="b2")
    add(catalog, 1)
    claim_one(catalog, T0, first[0])
    b1 = catalog.counts(batch="b1")
    assert (b1[JobStatus.QUEUED], b1[JobStatus.RUNNING], b1[JobStatus.FAILED]) == (1, 1, 0)
    assert catalog.counts(batch="b2")[JobStatus.QUEUED] == 3
    assert catalog.counts(batch="none-such") == {status: 0 for status in JobStatus}
    assert catalog.counts()[JobStatus.QUEUED] == 5


def test_page_both_directions_with_status_filter(catalog: Catalog) -> None:
    ids = add(catalog, 10)
    seqs = {job.id: job.seq for job in catalog.page(limit=100)}
    for job_id in ids[1::2]:
        claim_one(catalog, T0, job_id)

    newest = catalog.page(limit=3)
    assert [j.id for j in newest] == ids[9:6:-1]
    following = catalog.page(limit=3, before_seq=newest[-1].seq)
    assert [j.id for j in following] == ids[6:3:-1]
    oldest = catalog.page(limit=4, newest_first=False, after_seq=seqs[ids[1]])
    assert [j.id for j in oldest] == ids[2:6]
    running = catalog.page(status=JobStatus.RUNNING, limit=2, newest_first=False)
    assert [j.id for j in running] == [ids[1], ids[3]]
    running_back = catalog.page(status=JobStatus.RUNNING, limit=10, before_seq=seqs[ids[7]])
    assert [j.id for j in running_back] == [ids[5], ids[3], ids[1]]
    window = catalog.page(limit=10, after_seq=seqs[ids[2]], before_seq=seqs[ids[5]])
    assert [j.id for j in window] == [ids[4], ids[3]]


# -- opening ---------------------------------------------------------------------------------


def test_two_threads_open_a_new_catalog_at_once(catalog_factory: CatalogFactory) -> None:
    start = threading.Barrier(4)
    opened: list[Catalog] = []
    errors: list[BaseException] = []

    def run() -> None:
        start.wait()
        try:
            opened.append(catalog_factory())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        assert [c.counts()[JobStatus.QUEUED] for c in opened] == [0] * 4
    finally:
        for catalog in opened:
            catalog.close()
