"""The job state machine (catalog/states.py), without a database: every event against every
kind of job, by example and by property."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shepard.catalog import states
from shepard.catalog.states import MAX_LOST, Facts
from shepard.model import JobStatus, Outcome, RetryPolicy

NOW = 1_700_000_000.0
RUNNING_2_OF_3 = Facts(JobStatus.RUNNING, attempt=2, max_attempts=3, started_at=int(NOW) - 9)
FAILED = Outcome(JobStatus.FAILED, reason="exit code 3", exit_code=3)

facts = st.builds(
    Facts,
    status=st.sampled_from(JobStatus),
    attempt=st.integers(0, 20),
    max_attempts=st.integers(1, 20),
    lost=st.integers(0, MAX_LOST - 1),
    placement=st.sampled_from([None, "a", "b"]),
    started_at=st.none() | st.integers(int(NOW) - 100, int(NOW) + 100),
)
outcomes = st.builds(
    Outcome,
    status=st.sampled_from([s for s in JobStatus if s.terminal]),
    reason=st.none() | st.text(max_size=5),
    exit_code=st.none() | st.integers(0, 255),
    retryable=st.booleans(),
    error_bundle=st.none() | st.just("e.zip"),
)
retry_ats = st.none() | st.floats(NOW, NOW + 1000)


# -- finishing an attempt ----------------------------------------------------------------------


def test_a_failure_with_attempts_left_is_retried_after_the_backoff() -> None:
    change = states.finished(RUNNING_2_OF_3, 2, FAILED, now=NOW, retry_at=NOW + 10)
    assert change is not None and change.status is JobStatus.QUEUED
    assert change.fields["not_before"] == NOW + 10 and change.fields["finished_at"] is None
    assert change.detail == "retry in 10s after: exit code 3"


def test_the_last_attempt_fails_for_good() -> None:
    last = Facts(JobStatus.RUNNING, attempt=3, max_attempts=3)
    change = states.finished(last, 3, FAILED, now=NOW, retry_at=NOW + 10)
    assert change is not None and change.status is JobStatus.FAILED
    assert (change.fields["finished_at"], change.fields["not_before"]) == (NOW, None)
    assert change.detail == "exit code 3"


def test_no_retry_without_a_retry_time_or_when_not_retryable() -> None:
    for outcome, retry_at in ((FAILED, None), (Outcome(JobStatus.FAILED, retryable=False), NOW)):
        change = states.finished(RUNNING_2_OF_3, 2, outcome, now=NOW, retry_at=retry_at)
        assert change is not None and change.status is JobStatus.FAILED


def test_a_success_records_its_outputs_and_keeps_the_last_error_bundle() -> None:
    ok = Outcome(JobStatus.SUCCEEDED, outputs=("o/a.zip",), detail="image x")
    change = states.finished(RUNNING_2_OF_3, 2, ok, now=NOW, retry_at=NOW + 10)
    assert change is not None and change.status is JobStatus.SUCCEEDED
    assert change.fields["outputs"] == ("o/a.zip",) and "error_bundle" not in change.fields
    assert change.detail == "image x"


def test_finishing_is_fenced_by_attempt_and_status() -> None:
    assert states.finished(RUNNING_2_OF_3, 1, FAILED, now=NOW, retry_at=None) is None
    queued = Facts(JobStatus.QUEUED, attempt=2, max_attempts=3)
    assert states.finished(queued, 2, FAILED, now=NOW, retry_at=None) is None


def test_an_attempt_cannot_end_as_running() -> None:
    with pytest.raises(ValueError, match="cannot end as 'running'"):
        states.finished(RUNNING_2_OF_3, 2, Outcome(JobStatus.RUNNING), now=NOW, retry_at=None)


@given(facts, st.integers(0, 20), outcomes, retry_ats)
def test_finishing_properties(
    job: Facts, attempt: int, outcome: Outcome, retry_at: float | None
) -> None:
    change = states.finished(job, attempt, outcome, now=NOW, retry_at=retry_at)
    if job.status is not JobStatus.RUNNING or job.attempt != attempt:
        assert change is None
        return
    assert change is not None
    retried = change.status is JobStatus.QUEUED
    assert retried == (
        outcome.status is JobStatus.FAILED
        and outcome.retryable
        and retry_at is not None
        and attempt < job.max_attempts
    )
    assert change.status in (JobStatus.QUEUED, outcome.status)
    assert change.fields["lease_until"] is None
    assert (change.fields["finished_at"] is None) == retried
    assert change.fields["not_before"] == (retry_at if retried else None)
    assert "attempt" not in change.fields and "max_attempts" not in change.fields


# -- the retry policy --------------------------------------------------------------------------


@given(facts, outcomes, retry_ats)
def test_a_fenced_writer_may_skip_the_facts_when_no_retry_is_possible(
    job: Facts, outcome: Outcome, retry_at: float | None
) -> None:
    """What a catalog decides from `fenced(attempt)` (without reading the row) is what it
    would decide from the row, whenever the write's fence lets it through."""
    if states.needs_facts(outcome, retry_at) or not states.is_current(job, job.attempt):
        return
    shortcut = states.finished(states.fenced(job.attempt), job.attempt, outcome, now=NOW,
                               retry_at=retry_at)  # fmt: skip
    assert shortcut == states.finished(job, job.attempt, outcome, now=NOW, retry_at=retry_at)


def test_only_a_retry_needs_the_facts() -> None:
    assert states.needs_facts(FAILED, NOW + 5)
    assert not states.needs_facts(FAILED, None)
    assert not states.needs_facts(Outcome(JobStatus.FAILED, retryable=False), NOW + 5)
    assert not states.needs_facts(Outcome(JobStatus.SUCCEEDED), NOW + 5)


def test_retry_time_follows_the_policy() -> None:
    policy = RetryPolicy(attempts=5, backoff=2, backoff_max=5, no_retry_exit_codes=frozenset({7}))
    assert states.retry_time(policy, 1, FAILED, NOW) == NOW + 2
    assert states.retry_time(policy, 2, FAILED, NOW) == NOW + 4
    assert states.retry_time(policy, 3, FAILED, NOW) == NOW + 5  # capped
    no_retry = Outcome(JobStatus.FAILED, exit_code=7)
    assert states.retry_time(policy, 1, no_retry, NOW) is None
    assert states.retry_time(policy, 1, Outcome(JobStatus.FAILED, retryable=False), NOW) is None
    assert states.retry_time(policy, 1, Outcome(JobStatus.SUCCEEDED), NOW) is None
    assert states.retry_time(policy, 1, Outcome(JobStatus.CANCELLED), NOW) is None


# -- claiming ----------------------------------------------------------------------------------


def test_a_claim_starts_the_next_attempt() -> None:
    queued = Facts(JobStatus.QUEUED, attempt=1, max_attempts=3, placement="p")
    change = states.claimed(queued, worker="w", now=NOW, lease=60)
    assert change is not None and change.status is JobStatus.RUNNING
    assert change.fields["attempt"] == 2 and change.fields["lease_until"] == NOW + 60
    assert change.fields["placement"] is None and change.fields["worker"] == change.detail == "w"


@given(facts)
def test_only_queued_jobs_are_claimed_and_start_times_always_grow(job: Facts) -> None:
    change = states.claimed(job, worker="w", now=NOW + 0.9, lease=1)
    assert (change is None) == (job.status is not JobStatus.QUEUED)
    start = states.start_time(job.started_at, NOW + 0.9)
    assert start >= int(NOW)
    if job.started_at is not None:
        assert start > job.started_at


# -- lost workers, releases, placements -------------------------------------------------------


def test_a_lost_worker_does_not_spend_an_attempt_until_max_lost() -> None:
    job = RUNNING_2_OF_3
    for _ in range(MAX_LOST - 1):
        change = states.expired(job, now=NOW, retry_at=NOW + 5)
        assert change is not None and change.status is JobStatus.QUEUED
        assert change.fields["max_attempts"] == job.max_attempts + 1
        assert change.fields["not_before"] == NOW + 5
        assert change.detail == states.LEASE_EXPIRED
        job = Facts(JobStatus.RUNNING, job.attempt + 1, job.max_attempts + 1, job.lost + 1)
    change = states.expired(job, now=NOW, retry_at=NOW + 5)
    assert change is not None and change.status is JobStatus.FAILED
    assert change.fields["reason"] == f"{states.LEASE_EXPIRED} {MAX_LOST} times"
    assert change.fields["lost"] == MAX_LOST and change.fields["finished_at"] == NOW


def test_losing_is_fenced() -> None:
    gone = states.lost(RUNNING_2_OF_3, 1, now=NOW, reason="r", retry_at=None, times="")
    assert gone is None
    queued = Facts(JobStatus.QUEUED, attempt=2, max_attempts=3)
    assert states.lost(queued, 2, now=NOW, reason="r", retry_at=None, times="") is None


def test_a_release_gives_the_attempt_back() -> None:
    change = states.released(RUNNING_2_OF_3, 2, detail="sheep stopped")
    assert change is not None and change.status is JobStatus.QUEUED
    assert change.fields["max_attempts"] == 4 and change.detail == "sheep stopped"
    assert states.released(RUNNING_2_OF_3, 3, detail="x") is None


@given(facts, st.booleans())
def test_unplacing_properties(job: Facts, count_lost: bool) -> None:
    change = states.unplaced(job, "a", now=NOW, detail="task gone", count_lost=count_lost)
    if job.status is not JobStatus.QUEUED or job.placement != "a":
        assert change is None
        return
    assert change is not None and change.fields["placement"] is None
    if not count_lost:
        assert change.status is JobStatus.QUEUED and "lost" not in change.fields
        return
    assert change.fields["lost"] == job.lost + 1
    failed = job.lost + 1 >= MAX_LOST
    assert change.status is (JobStatus.FAILED if failed else JobStatus.QUEUED)
    if failed:
        assert change.fields["reason"] == f"task gone ({MAX_LOST} times)"


# -- a user's cancel and retry -----------------------------------------------------------------


@given(facts)
def test_only_unfinished_jobs_are_cancelled(job: Facts) -> None:
    change = states.cancelled(job, now=NOW)
    assert (change is None) == job.status.terminal
    if change is not None:
        assert change.status is JobStatus.CANCELLED and change.fields["finished_at"] == NOW
        assert change.fields["reason"] == change.detail == states.CANCELLED_BY_USER
        assert "placement" not in change.fields  # kept until the job is retried


@given(facts, st.integers(1, 5))
def test_only_ended_jobs_are_requeued_with_extra_attempts(job: Facts, extra: int) -> None:
    change = states.requeued(job, extra_attempts=extra)
    assert (change is None) == (not job.status.terminal)
    if change is not None:
        assert change.status is JobStatus.QUEUED
        assert change.fields["max_attempts"] == job.attempt + extra
        assert change.fields["lost"] == 0 and change.fields["placement"] is None


def test_a_requeue_needs_at_least_one_attempt() -> None:
    ended = Facts(JobStatus.FAILED, attempt=1, max_attempts=1)
    with pytest.raises(ValueError, match="at least 1"):
        states.requeued(ended, extra_attempts=0)


def test_values_carry_the_stored_status() -> None:
    change = states.cancelled(RUNNING_2_OF_3, now=NOW)
    assert change is not None and change.values()["status"] == "cancelled"
