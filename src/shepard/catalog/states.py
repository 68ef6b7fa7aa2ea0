"""The job state machine: what each event does to a job, as pure functions (no I/O).

Every catalog implementation reads the facts of a job's row (`Facts`), asks one of these
functions what an event does to it, and writes the answer (`Change`) in its own transaction.
So the rules (retries and their backoff, lost workers and MAX_LOST, cancel, a user's retry,
fencing) are written once, here, and tested without a database (tests/unit/test_states.py).

A function returns None when the event does not apply to the job as it is: the attempt named
is not the job's current running one (fencing: a worker that lost its lease can never
overwrite what a newer attempt recorded), or the job is not in a status the event acts on.
The catalog then changes nothing and records nothing.

The transitions:

    QUEUED  --claimed-->  RUNNING  --finished--> SUCCEEDED | FAILED | CANCELLED
                                   --finished--> QUEUED (a retryable failure with attempts left)
                                   --released--> QUEUED (an attempt given back; not spent)
                                   --lost------> QUEUED (not spent) | FAILED (MAX_LOST-th loss)
    QUEUED (placed) --unplaced--> QUEUED | FAILED (MAX_LOST-th loss)
    QUEUED | RUNNING --cancelled--> CANCELLED
    SUCCEEDED | FAILED | CANCELLED --requeued--> QUEUED (with extra attempts)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shepard.model import JobStatus, Outcome, RetryPolicy

MAX_LOST = 3
"""A job whose worker (or engine task) vanishes this many times fails instead of running
again: it is most likely the job itself that kills them (e.g. by exhausting memory)."""

LEASE_EXPIRED = "lease expired (worker lost)"
CANCELLED_BY_USER = "cancelled by user"
REQUEUED_BY_USER = "requeued by user"


@dataclass(frozen=True, slots=True)
class Facts:
    """What the state machine reads of a job's row."""

    status: JobStatus
    attempt: int  # the current (or last) attempt; 0 = never started
    max_attempts: int
    lost: int = 0  # how many of its workers (or placements) were lost so far
    placement: str | None = None
    started_at: int | None = None  # START_TIME of the current attempt


@dataclass(frozen=True, slots=True)
class Change:
    """What an event does to a job: its new `status`, the other columns to set (`fields`,
    by column name, absolute values) and the history entry to record (`detail`; the event's
    status is the new status, its attempt the job's attempt)."""

    status: JobStatus
    fields: dict[str, Any] = field(default_factory=dict)
    detail: str | None = None

    def values(self) -> dict[str, Any]:
        """Every column to set, status included (status as its stored text)."""
        return {"status": self.status.value, **self.fields}


def retry_time(policy: RetryPolicy, attempt: int, outcome: Outcome, now: float) -> float | None:
    """When `attempt` (ended with `outcome`) may be followed by another, as the policy says:
    None for no retry (not a failure, marked not retryable, or an exit code the policy
    excludes); else `now` plus the backoff for that attempt. Whether attempts are left is
    the catalog's to check (see `finished`)."""
    if outcome.status is not JobStatus.FAILED or not outcome.retryable:
        return None
    if outcome.exit_code is not None and outcome.exit_code in policy.no_retry_exit_codes:
        return None
    return now + policy.delay(attempt)


def is_current(facts: Facts, attempt: int) -> bool:
    """The fence: `attempt` is the job's current attempt and it is running."""
    return facts.status is JobStatus.RUNNING and facts.attempt == attempt


def start_time(previous: int | None, now: float) -> int:
    """START_TIME of a new attempt: `now` in whole seconds, but always after the previous
    attempt's, so that the names of the outputs of two attempts never collide."""
    start = int(now)
    return previous + 1 if previous is not None and previous >= start else start


def claimed(facts: Facts, *, worker: str, now: float, lease: float) -> Change | None:
    """A QUEUED job handed to `worker` (by `claim`, or `claim_placed`, which also clears the
    placement): a new attempt starts, leased until now + lease. Claim selection (due, not
    placed, oldest first) is the catalog's query; this is what the claim writes."""
    if facts.status is not JobStatus.QUEUED:
        return None
    fields = {
        "attempt": facts.attempt + 1,
        "started_at": start_time(facts.started_at, now),
        "lease_until": now + lease,
        "worker": worker,
        "not_before": None,
        "finished_at": None,
        "placement": None,
    }
    return Change(JobStatus.RUNNING, fields, worker)


def finished(
    facts: Facts, attempt: int, outcome: Outcome, *, now: float, retry_at: float | None
) -> Change | None:
    """`attempt` ended with `outcome`. A FAILED, retryable outcome for which the caller asks a
    retry (`retry_at`, see `retry_time`) goes back to QUEUED, not before `retry_at`, while
    attempts are left; anything else ends the job in the outcome's status. The last error
    bundle stays recorded after a later attempt succeeds. Raises ValueError for an outcome
    that is not terminal."""
    if not outcome.status.terminal:
        raise ValueError(f"an attempt cannot end as {outcome.status.value!r}")
    if not is_current(facts, attempt):
        return None
    retry = (
        outcome.status is JobStatus.FAILED
        and outcome.retryable
        and retry_at is not None
        and facts.attempt < facts.max_attempts
    )
    fields: dict[str, Any] = {
        "not_before": retry_at if retry else None,
        "finished_at": None if retry else now,
        "lease_until": None,
        "reason": outcome.reason,
        "exit_code": outcome.exit_code,
        "outputs": tuple(outcome.outputs),
    }
    if outcome.error_bundle is not None:
        fields["error_bundle"] = outcome.error_bundle
    if retry:
        detail: str | None = f"retry in {(retry_at or now) - now:g}s after: {outcome.reason}"
    else:
        detail = outcome.reason
    if outcome.detail:
        detail = f"{detail}; {outcome.detail}" if detail else outcome.detail
    return Change(JobStatus.QUEUED if retry else outcome.status, fields, detail)


def needs_facts(outcome: Outcome, retry_at: float | None) -> bool:
    """Whether `finished` needs the row's facts beyond the fence: only a retry asks how many
    attempts are left. When it does not, a caller whose write is itself fenced by `id, attempt,
    status = 'running'` may decide from `fenced(attempt)` and skip reading the row (one
    statement less for every finished attempt, the catalog's hottest path)."""
    return outcome.status is JobStatus.FAILED and outcome.retryable and retry_at is not None


def fenced(attempt: int) -> Facts:
    """The facts a write fenced by `id, attempt, status = 'running'` guarantees when it
    matches; what `finished` reads of them when `needs_facts` is False."""
    return Facts(JobStatus.RUNNING, attempt, attempt)


def released(facts: Facts, attempt: int, *, detail: str) -> Change | None:
    """`attempt` given back unfinished (its sheep shuts down cleanly): QUEUED at once, and the
    attempt is not spent (max_attempts grows by one, so attempt numbers still go up)."""
    if not is_current(facts, attempt):
        return None
    fields = {"max_attempts": facts.max_attempts + 1, "not_before": None, "lease_until": None}
    return Change(JobStatus.QUEUED, fields, detail)


def lost(
    facts: Facts, attempt: int, *, now: float, reason: str, retry_at: float | None, times: str
) -> Change | None:
    """The worker of running `attempt` is gone (its lease expired, or its engine task ended):
    QUEUED again, not before `retry_at`, without spending the attempt; or FAILED once the job
    has lost MAX_LOST workers, with reason `reason` + `times` (e.g. " 3 times")."""
    if not is_current(facts, attempt):
        return None
    if facts.lost < MAX_LOST - 1:
        fields = {
            "not_before": retry_at,
            "lease_until": None,
            "reason": reason,
            "lost": facts.lost + 1,
            "max_attempts": facts.max_attempts + 1,
        }
        return Change(JobStatus.QUEUED, fields, reason)
    fields = {
        "finished_at": now,
        "lease_until": None,
        "lost": facts.lost + 1,
        "reason": f"{reason}{times}",
    }
    return Change(JobStatus.FAILED, fields, reason)


def expired(facts: Facts, *, now: float, retry_at: float | None) -> Change | None:
    """A RUNNING job whose lease ended before `now`: its worker is lost (see `lost`)."""
    return lost(
        facts, facts.attempt, now=now, reason=LEASE_EXPIRED, retry_at=retry_at,
        times=f" {MAX_LOST} times",
    )  # fmt: skip


def unplaced(
    facts: Facts, placement: str, *, now: float, detail: str, count_lost: bool
) -> Change | None:
    """A QUEUED job still placed under `placement` whose engine task ended without claiming
    it: placeable and claimable again. With `count_lost` the task counts as a lost worker,
    and the MAX_LOST-th loss fails the job with `detail` as its reason."""
    if facts.status is not JobStatus.QUEUED or facts.placement != placement:
        return None
    if not count_lost:
        return Change(JobStatus.QUEUED, {"placement": None}, detail)
    if facts.lost < MAX_LOST - 1:
        return Change(JobStatus.QUEUED, {"placement": None, "lost": facts.lost + 1}, detail)
    fields = {
        "placement": None,
        "finished_at": now,
        "lost": facts.lost + 1,
        "reason": f"{detail} ({MAX_LOST} times)",
    }
    return Change(JobStatus.FAILED, fields, detail)


def cancelled(facts: Facts, *, now: float) -> Change | None:
    """A user cancels a job that has not ended (QUEUED or RUNNING; a running attempt's worker
    learns it at its next heartbeat). A placed job keeps its placement until retried."""
    if facts.status.terminal:
        return None
    fields = {"finished_at": now, "lease_until": None, "reason": CANCELLED_BY_USER}
    return Change(JobStatus.CANCELLED, fields, CANCELLED_BY_USER)


def requeued(facts: Facts, *, extra_attempts: int) -> Change | None:
    """A user retries an ended job: QUEUED as new attempts of the same id, with
    `extra_attempts` more allowed, its lost-worker count afresh and no placement. Raises
    ValueError if `extra_attempts` < 1."""
    if extra_attempts < 1:
        raise ValueError(f"extra_attempts must be at least 1, not {extra_attempts}")
    if not facts.status.terminal:
        return None
    fields = {
        "max_attempts": facts.attempt + extra_attempts,
        "lost": 0,
        "placement": None,
        "not_before": None,
        "finished_at": None,
        "lease_until": None,
    }
    return Change(JobStatus.QUEUED, fields, REQUEUED_BY_USER)
