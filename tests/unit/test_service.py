"""The service layer of `Flock`: paging, idempotent submissions, waits, attempts, outputs, logs.

Jobs are moved through their lives on the catalog directly (a head elsewhere runs them), with
a scripted clock, so nothing here runs a payload or waits for wall time.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pydantic
import pytest

import shepard
from shepard.catalog.base import IdempotencyConflict
from shepard.config import FlockConfig, PayloadConfig
from shepard.errors import JobNotFound, ShepardError
from shepard.flock import Flock
from shepard.model import JobStatus, Outcome
from shepard.profiles import Profile, ProfileStore
from shepard.runtime import log_key
from shepard.views import (
    CountsView,
    CursorError,
    EventView,
    JobView,
    RangeSpec,
    SubmitRequest,
    job_view,
)

T0 = 1_800_000_000.0


class Clock:
    """A scripted clock; `sleep` moves it on (and can run a hook, e.g. finish some jobs)."""

    def __init__(self, now: float = T0) -> None:
        self.now = now
        self.slept: list[float] = []
        self.on_sleep: Callable[[], None] = lambda: None

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        self.on_sleep()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def flock(tmp_path: Path, clock: Clock) -> Iterator[Flock]:
    cfg = FlockConfig(name="svc", payload=PayloadConfig(command="true"))
    Flock.create(tmp_path / "flock", cfg).close()
    opened = Flock(shepard.open(tmp_path / "flock").dir, clock=clock)
    yield opened
    opened.close()


def run_one(flock: Flock, job_id: str, outcome: Outcome, *, at: float) -> None:
    """Claim `job_id` and end its attempt with `outcome`, as a worker elsewhere would."""
    (job,) = flock.catalog.claim("head:1", now=at, lease=60, job_ids=[job_id])
    flock.catalog.finish(job.id, job.attempt, outcome, now=at + 1, retry_at=at + 2)


# -- paging ----------------------------------------------------------------------------------


def test_pages_cover_every_job_once_while_new_jobs_arrive(flock: Flock) -> None:
    first = flock.submit([{"ITEM": i} for i in range(7)]).ids
    page = flock.jobs(limit=3)
    assert [j.id for j in page.items] == first[::-1][:3]
    flock.submit([{"ITEM": 100 + i} for i in range(5)])  # newer jobs: not on the next pages
    seen = [j.id for j in page.items]
    while page.next_cursor:
        page = flock.jobs(limit=3, cursor=page.next_cursor)
        seen += [j.id for j in page.items]
    assert seen == first[::-1]


def test_oldest_first_paging_reaches_jobs_submitted_meanwhile(flock: Flock) -> None:
    first = flock.submit([{"ITEM": i} for i in range(4)]).ids
    page = flock.jobs(limit=3, newest_first=False)
    later = flock.submit([{"ITEM": 9}]).ids
    assert page.next_cursor is not None
    rest = flock.jobs(limit=3, cursor=page.next_cursor)  # the cursor keeps the direction
    assert [j.id for j in page.items + rest.items] == first + later
    assert rest.next_cursor is None


def test_filters_combine(flock: Flock, clock: Clock) -> None:
    a = flock.submit([{"TAG": "Red", "I": 1}, {"tag": "red", "I": 2}, {"TAG": "blue"}], batch="a")
    clock.now += 100
    b = flock.submit([{"Tag": "RED"}, {"OTHER": "red"}], batch="b")
    run_one(flock, a.ids[0], Outcome(JobStatus.FAILED, reason="x"), at=clock.now)

    def ids(**filters: object) -> list[str]:
        return [j.id for j in flock.jobs(newest_first=False, **filters).items]  # type: ignore[arg-type]

    assert ids(tag="red") == [a.ids[0], a.ids[1], b.ids[0]]
    assert ids(tag="red", batch="a") == a.ids[:2]
    assert ids(tag="red", since=T0 + 50) == [b.ids[0]]
    assert ids(since=datetime.fromtimestamp(T0 + 50, UTC).replace(tzinfo=None)) == b.ids
    assert ids(tag="red", status="failed") == [a.ids[0]]
    assert ids(status=JobStatus.QUEUED, batch="a") == a.ids[1:]
    assert ids(tag="green") == []


def test_tag_matches_numbers_and_booleans_as_payloads_see_them(flock: Flock) -> None:
    ids = flock.submit([{"TAG": 7}, {"TAG": True}, {"TAG": "7"}]).ids
    assert [j.id for j in flock.jobs(tag="7", newest_first=False).items] == [ids[0], ids[2]]
    assert [j.id for j in flock.jobs(tag="TRUE").items] == [ids[1]]


def test_cursor_for_other_filters_or_garbage_is_refused(flock: Flock) -> None:
    flock.submit([{"TAG": "x"} for _ in range(3)], batch="b")
    cursor = flock.jobs(tag="x", limit=1).next_cursor
    assert cursor is not None
    with pytest.raises(CursorError, match="other filters"):
        flock.jobs(tag="y", limit=1, cursor=cursor)
    with pytest.raises(CursorError, match="invalid cursor"):
        flock.jobs(cursor="not-a-cursor")
    with pytest.raises(ShepardError, match="limit"):
        flock.jobs(limit=0)
    with pytest.raises(ShepardError, match="unknown status 'done'"):
        flock.jobs(status="done")


# -- idempotent submissions -----------------------------------------------------------------


def test_same_idempotency_key_registers_once(flock: Flock) -> None:
    request = SubmitRequest(params={"X": "a"}, range=RangeSpec(name="I", start=1, end=3),
                            idempotency_key="k1")  # fmt: skip
    first = flock.submit_request(request)
    again = flock.submit_request(request)
    assert first.count == 3 and not first.replayed
    assert (again.ids, again.batch, again.replayed) == (first.ids, first.batch, True)
    assert flock.count().total == 3
    assert [j.params for j in flock.jobs(batch=first.batch, newest_first=False).items] == [
        {"X": "a", "I": 1}, {"X": "a", "I": 2}, {"X": "a", "I": 3},
    ]  # fmt: skip


def test_reused_key_with_another_request_is_refused(flock: Flock) -> None:
    flock.submit_request(SubmitRequest(params={"X": "a"}, idempotency_key="k"))
    with pytest.raises(IdempotencyConflict, match="'k' was already used"):
        flock.submit_request(SubmitRequest(params={"X": "b"}, idempotency_key="k"))
    assert flock.count().total == 1


def test_request_without_key_takes_jobs_batch_attempts_timeout(flock: Flock) -> None:
    done = flock.submit_request(
        SubmitRequest(jobs=[{"A": 1}, {"A": 2}], batch="mine", attempts=4, timeout=9.5)
    )
    jobs = [flock.get_job(i) for i in done.ids]
    assert done.batch == "mine" and done.count == 2 and not done.replayed
    assert {(j.batch, j.max_attempts, j.timeout) for j in jobs} == {("mine", 4, 9.5)}


@pytest.mark.parametrize(
    "body, message",
    [
        ({}, "nothing to submit"),
        ({"jobs": []}, "`jobs` is empty"),
        ({"jobs": [{}], "params": {}}, "not both"),
        ({"params": {}, "attempts": 0}, "greater than or equal to 1"),
        ({"params": {}, "attempts": 101}, "less than or equal to 100"),
        ({"params": {}, "timeout": 0}, "greater than 0"),
        ({"params": {}, "timeout": float("inf")}, "finite"),
        ({"range": {"name": "I", "start": 3, "end": 1}}, "before its start"),
    ],
)
def test_bad_requests_are_refused_with_a_reason(body: dict[str, object], message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        SubmitRequest.model_validate(body)


def test_bad_parameters_in_a_request_register_nothing(flock: Flock) -> None:
    with pytest.raises(ShepardError, match="jobs item 2"):
        flock.submit_request(SubmitRequest(jobs=[{"A": 1}, {"A": [1]}], idempotency_key="k"))
    assert flock.count().total == 0
    assert flock.submit_request(SubmitRequest(jobs=[{"A": 1}], idempotency_key="k")).count == 1


# -- waiting without running ----------------------------------------------------------------


def test_wait_for_sees_jobs_another_head_runs(flock: Flock, clock: Clock) -> None:
    sub = flock.submit([{"I": i} for i in range(3)])
    pending = list(sub.ids)

    def head_runs_one() -> None:
        run_one(flock, pending.pop(0), Outcome(JobStatus.SUCCEEDED), at=clock.now)

    clock.on_sleep = head_runs_one
    counts = flock.wait_for(sub.batch, poll=2.0, sleep=clock.sleep, clock=clock)
    assert counts.settled and counts.done == 1.0 and counts.counts[JobStatus.SUCCEEDED] == 3
    assert clock.slept == [2.0, 2.0, 2.0]


def test_wait_for_returns_unsettled_counts_at_its_timeout(flock: Flock, clock: Clock) -> None:
    sub = flock.submit([{"I": 1}])
    counts = flock.wait_for(sub.batch, timeout=5, poll=2, sleep=clock.sleep, clock=clock)
    assert not counts.settled and counts.counts[JobStatus.QUEUED] == 1
    assert clock.slept == [2, 2, 1]
    assert flock.get_job(sub.ids[0]).attempt == 0  # nothing ran


# -- one job: view, attempts, outputs, logs -------------------------------------------------


def test_views_round_trip_through_json(flock: Flock, clock: Clock) -> None:
    (job_id,) = flock.submit([{"TAG": "t", "N": 3, "B": False}], batch="b").ids
    run_one(flock, job_id, Outcome(JobStatus.FAILED, reason="exit code 3", exit_code=3), at=T0)
    view = flock.get_job(job_id)
    assert JobView.model_validate_json(view.model_dump_json()) == view
    assert (view.tag, view.submitted, view.status) == ("t", "2027-01-15T08:00:00Z", "failed")
    assert (view.exit_code, view.finished, view.started_at) == (3, "2027-01-15T08:00:01Z", int(T0))
    for event in flock.history(job_id):
        assert EventView.model_validate_json(event.model_dump_json()) == event
    counts = flock.count("b")
    assert CountsView.model_validate_json(counts.model_dump_json()) == counts
    with pytest.raises(JobNotFound):
        flock.get_job("nope")


def test_attempts_tell_how_each_ended(flock: Flock, clock: Clock) -> None:
    (job_id,) = flock.submit([{"I": 1}], max_attempts=3).ids
    run_one(flock, job_id, Outcome(JobStatus.FAILED, reason="exit code 3", exit_code=3), at=T0)
    run_one(flock, job_id, Outcome(JobStatus.FAILED, reason="exit code 4", exit_code=4), at=T0 + 9)
    flock.retry_jobs([job_id])  # this kind of event must not change attempt 2
    first, second = flock.attempts(job_id)[:2]
    assert (first.number, first.status) == (1, "queued")
    assert first.reason == "retry in 1s after: exit code 3"
    assert (second.number, second.status, second.exit_code) == (2, "queued", None)
    assert first.worker == "head:1" and first.stdout == log_key(job_id, 1, "stdout")


def test_outputs_listed_and_streamed(flock: Flock) -> None:
    (job_id,) = flock.submit([{"I": 1}]).ids
    data = bytes(range(256)) * 1000
    flock.store("outputs").put_bytes("result.zip", data)
    run_one(flock, job_id, Outcome(JobStatus.SUCCEEDED, outputs=("result.zip",)), at=T0)
    (out,) = flock.outputs(job_id)
    assert (out.key, out.size, out.store) == ("result.zip", len(data), "outputs")
    assert out.url == f"{flock.store('outputs').location}/result.zip"
    with flock.open_output(job_id) as fh:
        assert fh.read(10) == data[:10]
        fh.seek(-5, 2)
        assert fh.read() == data[-5:]
    with pytest.raises(JobNotFound, match=r"no output 'other\.zip'"):
        flock.open_output(job_id, "other.zip")


def test_read_log_by_offsets_and_follow_until_the_attempt_ends(flock: Flock, clock: Clock) -> None:
    (job_id,) = flock.submit([{"I": 1}]).ids
    with pytest.raises(ShepardError, match="has not run yet"):
        flock.read_log(job_id)
    assert len(flock.catalog.claim("w", now=T0, lease=60)) == 1
    logs = flock.store("logs")
    assert flock.read_log(job_id) == b""  # nothing written yet
    logs.put_bytes(log_key(job_id, 1, "stdout"), b"hello ")
    assert flock.read_log(job_id, offset=2, size=3) == b"llo"

    def more() -> None:  # the payload writes, then its attempt ends
        if len(clock.slept) == 1:
            logs.put_bytes(log_key(job_id, 1, "stdout"), b"hello world\n")
        else:
            flock.catalog.finish(job_id, 1, Outcome(JobStatus.SUCCEEDED), now=clock.now)

    clock.on_sleep = more
    chunks = list(flock.follow_log(job_id, sleep=clock.sleep))
    assert b"".join(chunks) == b"hello world\n" and len(clock.slept) == 2


def test_cancel_and_retry_answer_with_the_ids_changed(flock: Flock) -> None:
    ids = flock.submit([{"I": i} for i in range(3)]).ids
    done = flock.cancel_jobs(ids[:2])
    assert (done.action, done.ids, done.count) == ("cancel", ids[:2], 2)
    again = flock.retry_jobs(statuses=[JobStatus.CANCELLED])
    assert (again.action, again.ids) == ("retry", ids[:2])


def test_job_view_is_built_from_the_model_alone(flock: Flock) -> None:
    (job_id,) = flock.submit([{"I": 1}]).ids
    assert job_view(flock.job(job_id)) == flock.get_job(job_id)


# -- shepard.open ----------------------------------------------------------------------------


def test_open_by_folder_or_profile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flock: Flock
) -> None:
    monkeypatch.setenv("SHEPARD_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.delenv("SHEPARD_PROFILE", raising=False)
    ProfileStore.from_env().save(Profile("work", flock=flock.dir.folder))
    opened = shepard.open(profile="work")
    assert opened.dir.folder == flock.dir.folder
    opened.close()
    with pytest.raises(ShepardError, match="no profile in effect"):
        shepard.open()
    with pytest.raises(ShepardError, match="not both"):
        shepard.open(tmp_path, profile="work")
    with pytest.raises(ShepardError, match="no flock at"):
        shepard.open(tmp_path / "nowhere")


def test_importing_shepard_loads_nothing_until_a_name_is_used() -> None:
    script = (
        "import sys, shepard; heavy = ('shepard.flock', 'pydantic', 'sqlalchemy');"
        "print([m for m in sys.modules if m.startswith(heavy)]); shepard.JobView;"
        "print('shepard.views' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["[]", "True"]
