"""What the dashboard shows beyond the jobs: throughput and its estimate, batches, running
work, the configuration without secrets, the inbox's rejected files, and the job filters by
parameter and by text. Jobs are moved on the catalog directly with a scripted clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import shepard
from shepard.config import FlockConfig, PayloadConfig
from shepard.errors import ShepardError
from shepard.flock import Flock
from shepard.model import JobStatus, Outcome
from tests.unit.test_service import Clock, run_one

T0 = 1_800_000_000.0  # a whole minute


@pytest.fixture
def clock() -> Clock:
    return Clock(T0 + 30)


@pytest.fixture
def flock(tmp_path: Path, clock: Clock) -> Iterator[Flock]:
    cfg = FlockConfig(
        name="info", payload=PayloadConfig(command="true", env={"API_TOKEN": "hush", "A": "b"})
    )
    Flock.create(tmp_path / "flock", cfg).close()
    opened = Flock(shepard.open(tmp_path / "flock").dir, clock=clock)
    yield opened
    opened.close()


def test_throughput_counts_ends_per_minute_and_estimates_the_rest(
    flock: Flock, clock: Clock
) -> None:
    ids = flock.submit([{"I": i} for i in range(10)]).ids
    ok, bad = Outcome(JobStatus.SUCCEEDED), Outcome(JobStatus.FAILED, reason="x")
    run_one(flock, ids[0], ok, at=T0 - 100)  # ends two minutes before the current one
    run_one(flock, ids[1], ok, at=T0 + 1)
    run_one(flock, ids[2], bad, at=T0 + 2)
    run_one(flock, ids[3], ok, at=T0 + 3)
    view = flock.throughput(minutes=5)
    assert [m.start for m in view.minutes] == [T0 - 240 + 60 * i for i in range(5)]
    assert [(m.succeeded, m.failed) for m in view.minutes] == [(0, 0)] * 2 + [(1, 0), (0, 0)] + [
        (2, 1)
    ]
    assert view.remaining == 6
    # 4 ended over the last 4.5 minutes (the current one half gone): 6 more need ~6.75 min
    assert view.per_minute == pytest.approx(4 / 4.5)
    assert view.eta_seconds == pytest.approx(6 / (4 / 4.5) * 60)
    with pytest.raises(ShepardError, match="minutes must be between"):
        flock.throughput(minutes=0)


def test_no_estimate_without_recent_ends_and_zero_when_done(flock: Flock, clock: Clock) -> None:
    (job,) = flock.submit([{"I": 1}]).ids
    assert flock.throughput().eta_seconds is None
    run_one(flock, job, Outcome(JobStatus.SUCCEEDED), at=clock.now)
    assert flock.throughput().eta_seconds == 0.0


def test_batches_and_running_work(flock: Flock, clock: Clock) -> None:
    a = flock.submit([{"I": i} for i in range(3)], batch="first").ids
    flock.submit([{"I": 9}], batch="second")
    run_one(flock, a[0], Outcome(JobStatus.SUCCEEDED), at=clock.now)
    flock.catalog.claim("host:7", now=clock.now, lease=60, job_ids=[a[1]])
    batches = flock.batches()
    assert [b.batch for b in batches] == ["second", "first"]
    assert batches[1].counts.counts[JobStatus.SUCCEEDED] == 1
    assert batches[1].counts.total == 3
    (worker,) = flock.running()
    assert (worker.worker, worker.running, worker.jobs) == ("host:7", 1, [a[1]])


def test_describe_hides_secrets(flock: Flock) -> None:
    view = flock.describe()
    assert view.name == "info" and view.backend == "local"
    assert view.config["payload"]["env"] == {"API_TOKEN": "***", "A": "***"}
    assert "hush" not in view.model_dump_json()
    assert set(view.stores) >= {"inbox", "inputs", "outputs", "logs"}


def test_inbox_lists_rejected_files_with_their_reasons(flock: Flock) -> None:
    inbox = flock.store("inbox")
    inbox.put_bytes("waiting.zip", b"PK")
    inbox.put_bytes("rejected/sub/bad.zip", b"nope")
    inbox.put_bytes("rejected/sub/bad.zip.reason.txt", b"not a zip file\n")
    inbox.put_bytes("rejected/half.zip", b"no reason beside it yet")
    view = flock.inbox()
    assert view.waiting == 1
    assert [(r.key, r.reason, r.size) for r in view.rejected] == [
        ("sub/bad.zip", "not a zip file", 4)
    ]
    assert not view.more_rejected


def test_jobs_filter_by_parameter_and_text(flock: Flock) -> None:
    ids = flock.submit(
        [{"NAME": "alpha", "N": 1}, {"name": "Beta", "N": 2}, {"N": 3, "NOTE": "50%_off"}]
    ).ids

    def found(**filters: object) -> list[str]:
        return [j.id for j in flock.jobs(newest_first=False, **filters).items]  # type: ignore[arg-type]

    assert found(param=("NAME", "beta")) == [ids[1]]
    assert found(param=("n", "3")) == [ids[2]]
    assert found(text="ALPH") == [ids[0]]
    assert found(text="%_") == [ids[2]]  # LIKE's wildcards are taken literally
    assert found(text="0%_o") == [ids[2]]
    assert found(text="x%") == []
    page = flock.jobs(limit=1, text="n")
    rest = flock.jobs(limit=1, text="n", cursor=page.next_cursor)
    assert rest.items[0].id != page.items[0].id
    with pytest.raises(ShepardError, match="other filters"):
        flock.jobs(limit=1, text="other", cursor=page.next_cursor)


def test_live_counts_add_the_changes_to_a_full_count(flock: Flock, clock: Clock) -> None:
    ids = flock.submit([{"I": i} for i in range(4)]).ids
    live = flock.live_counts()
    assert live.get() == flock.count()  # the full count
    live.FULL = 3600.0  # from now on only the changes are read

    def no_full_count(*, batch: str | None = None) -> dict[JobStatus, int]:
        raise AssertionError("counted everything again")

    flock.catalog.counts = no_full_count  # type: ignore[method-assign]
    run_one(flock, ids[0], Outcome(JobStatus.SUCCEEDED), at=clock.now)
    flock.submit([{"I": 9}])
    flock.cancel_jobs([ids[1]])
    counted = live.get()
    del flock.catalog.counts  # the catalog's own method again
    assert counted == flock.count()
    assert counted.counts[JobStatus.QUEUED] == 3
