"""The task side of a scheduler backend (scheduler_task.py): a placed job run by its array
task, a sheep serving the queue, and what SIGTERM (scancel, a time limit) does to both."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shepard import config, scheduler_task
from shepard.backends import arraytasks
from shepard.config import FlockConfig
from shepard.errors import ShepardError
from shepard.flock import Flock
from shepard.model import JobStatus
from shepard.scheduler_task import claim_margin, run_array_task, serve


def make_flock(tmp_path: Path, command: str, timeout: float | None = None) -> Flock:
    cfg = FlockConfig.model_validate(
        {
            "name": "f",
            "backend": {"kind": "slurm", "lease": 30},
            "payload": {"command": command, "timeout": timeout},
        }
    )
    Flock.create(tmp_path / "flock", cfg).close()
    return Flock(config.load(tmp_path / "flock"))


@pytest.fixture
def flock(tmp_path: Path) -> Iterator[Flock]:
    made = make_flock(tmp_path, 'echo "$ITEM" > "$ROOT_OUTPUT_NAME/o.txt"')
    yield made
    made.close()


def place(flock: Flock, n: int, array_id: str = "41") -> tuple[list[str], str]:
    """Place `n` new jobs in array `array_id`, as the Slurm backend does; (ids, manifest)."""
    ids = flock.submit({"ITEM": i} for i in range(n)).ids
    token = arraytasks.new_token(time.time())
    assert flock.catalog.place(token, now=time.time(), limit=n) == ids
    flock.catalog.rename_placement(token, f"{token}@{array_id}")
    arraytasks.write_manifest(flock.store("manifests"), token, ids)
    return ids, arraytasks.manifest_key(token)


def run_placed(
    flock: Flock,
    manifest: str,
    index: int | None,
    env: dict[str, str],
    terminate: threading.Event | None = None,
) -> JobStatus | None:
    return run_array_task(flock.task_setup(), manifest, index, env=env, terminate=terminate)


def task_env(array_id: str, index: int) -> dict[str, str]:
    return {"SLURM_ARRAY_JOB_ID": array_id, "SLURM_ARRAY_TASK_ID": str(index)}


def test_an_array_task_runs_the_job_on_its_manifest_line(flock: Flock) -> None:
    ids, manifest = place(flock, 3)
    assert run_placed(flock, manifest, 1, env=task_env("41", 1)) is JobStatus.SUCCEEDED
    job = flock.job(ids[1])
    assert job.status is JobStatus.SUCCEEDED and job.worker is not None
    assert job.worker.endswith(" slurm 41_1") and job.placement is None
    assert [flock.job(i).status for i in (ids[0], ids[2])] == [JobStatus.QUEUED] * 2
    assert len(list((flock.dir.storage_root / "outputs").glob("*.zip"))) == 1


def test_an_array_task_learns_its_index_from_the_scheduler(flock: Flock) -> None:
    ids, manifest = place(flock, 3)
    assert run_placed(flock, manifest, None, env=task_env("41", 2)) is JobStatus.SUCCEEDED
    assert flock.job(ids[2]).status is JobStatus.SUCCEEDED
    with pytest.raises(ShepardError, match="give --index"):
        run_placed(flock, manifest, None, env={})


def test_a_task_of_another_array_cannot_take_the_job(flock: Flock) -> None:
    ids, manifest = place(flock, 1, array_id="41")
    assert run_placed(flock, manifest, 0, env=task_env("42", 0)) is None
    assert flock.job(ids[0]).status is JobStatus.QUEUED
    flock.cancel(ids)  # a cancelled job is not claimable either
    assert run_placed(flock, manifest, 0, env=task_env("41", 0)) is None


def test_terminate_stops_the_payload_and_reports_nothing(tmp_path: Path) -> None:
    flock = make_flock(tmp_path, "sleep 30")
    ids, manifest = place(flock, 1)
    terminate = threading.Event()  # what the entry point's SIGTERM handler sets
    threading.Timer(1.0, terminate.set).start()
    began = time.monotonic()
    assert run_placed(flock, manifest, 0, env=task_env("41", 0), terminate=terminate) is None
    assert time.monotonic() - began < 10
    job = flock.job(ids[0])
    assert job.status is JobStatus.RUNNING, "left for the reconciler, which knows Slurm's reason"
    assert not any(p.is_file() for p in (flock.dir.store_path("work")).rglob("*"))
    flock.close()


@pytest.mark.parametrize("task_ended", [True, False])
def test_a_payload_killed_by_a_signal_is_reported_unless_its_task_is_ending(
    tmp_path: Path, task_ended: bool
) -> None:
    # Slurm signals the payload and the task's worker at nearly the same time, in any order
    flock = make_flock(tmp_path, "kill -TERM $$")
    ids, manifest = place(flock, 1)
    terminate = threading.Event()
    if task_ended:
        threading.Timer(0.5, terminate.set).start()
    status = run_placed(flock, manifest, 0, env=task_env("41", 0), terminate=terminate)
    job = flock.job(ids[0])
    if task_ended:
        assert status is None and job.status is JobStatus.RUNNING
    else:
        assert status is JobStatus.FAILED and job.reason == "killed by signal SIGTERM"
    flock.close()


def forbid_process_wide_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make signal handlers and working-directory changes fail the test (library code may
    run in a threaded server: only entry points change them)."""

    def refused(*args: object) -> None:
        raise AssertionError(f"process-wide change from library code: {args}")

    monkeypatch.setattr(signal, "signal", refused)
    monkeypatch.setattr(os, "chdir", refused)


def test_a_task_and_a_sheep_change_nothing_process_wide(
    flock: Flock, monkeypatch: pytest.MonkeyPatch
) -> None:
    _ids, manifest = place(flock, 1)
    flock.submit({"ITEM": i} for i in range(3))
    forbid_process_wide_changes(monkeypatch)
    assert run_placed(flock, manifest, 0, env=task_env("41", 0)) is JobStatus.SUCCEEDED
    assert serve(flock.task_setup(), time_limit=None, idle=0.3) == 3


def test_terminate_stops_a_sheep_and_its_running_payload(tmp_path: Path) -> None:
    flock = make_flock(tmp_path, "sleep 30")
    ids = flock.submit({"ITEM": i} for i in range(2)).ids
    terminate = threading.Event()
    threading.Timer(1.0, terminate.set).start()
    began = time.monotonic()
    serve(flock.task_setup(), time_limit=None, idle=60, terminate=terminate)
    assert time.monotonic() - began < 10
    assert flock.job(ids[1]).status is JobStatus.QUEUED
    flock.close()


def test_a_sheep_runs_jobs_until_the_queue_stays_empty(flock: Flock) -> None:
    ids = flock.submit({"ITEM": i} for i in range(5)).ids
    began = time.monotonic()
    assert serve(flock.task_setup(), time_limit=None, idle=0.5) == 5
    assert time.monotonic() - began < 20
    assert {flock.job(i).status for i in ids} == {JobStatus.SUCCEEDED}
    assert list(flock.dir.store_path("work").iterdir()) == [], "job folders are removed"


def test_a_sheep_records_short_jobs_in_batches(
    flock: Flock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Short jobs: several claimed at a time, their outcomes recorded together, each job's
    result still its own; the sheep's folder is gone afterwards and its cwd is back."""
    ids = flock.submit({"ITEM": i} for i in range(40)).ids
    calls: list[int] = []
    real = flock.catalog.finish_and_claim

    def counted(*args: Any, **kwargs: Any) -> object:
        calls.append(kwargs["limit"])
        return real(*args, **kwargs)

    monkeypatch.setattr(flock.catalog, "finish_and_claim", counted)
    here = os.getcwd()
    assert serve(flock.task_setup(), time_limit=None, idle=0.3) == 40
    assert os.getcwd() == here
    assert {flock.job(i).status for i in ids} == {JobStatus.SUCCEEDED}
    assert len(calls) < 30 and max(calls) > 1
    outputs = flock.dir.store_path("outputs")
    assert len(list(outputs.glob("result@*_root.zip"))) == 40
    assert list(flock.dir.store_path("work").iterdir()) == []


def test_jobs_a_sheep_claimed_but_did_not_start_go_back_unspent(
    flock: Flock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The time limit comes while jobs claimed ahead wait: they are released, not lost, and
    keep every attempt they had."""
    ids = flock.submit({"ITEM": i} for i in range(10)).ids
    start, ran = time.time(), []
    real = scheduler_task._attempt

    def attempt(*args: Any, **kwargs: Any) -> Any:
        ran.append(args[0].id)
        return real(*args, **kwargs)

    def clock() -> float:  # past the deadline once two jobs have run
        return start + (200 if len(ran) >= 2 else 0)

    monkeypatch.setattr(scheduler_task, "_attempt", attempt)
    assert serve(flock.task_setup(), time_limit=150.0, idle=0.3, clock=clock) == 2
    jobs = [flock.job(i) for i in ids]
    assert sum(j.status is JobStatus.SUCCEEDED for j in jobs) == 2
    waiting = [j for j in jobs if j.status is JobStatus.QUEUED]
    assert len(waiting) == 8
    released = [j for j in waiting if j.attempt == 1]
    assert released, "the job claimed ahead was released"
    assert all(j.max_attempts == 2 for j in released)  # the unstarted attempt is not spent


@pytest.mark.parametrize(("limit", "ran"), [(150.0, 1), (120.0, 0)])
def test_a_sheep_near_its_time_limit_takes_no_more_jobs(
    flock: Flock, limit: float, ran: int
) -> None:
    flock.submit([{"ITEM": 1}])
    start = time.time()
    times = iter([start])

    def clock() -> float:  # the sheep starts, then finds 100 s have passed
        return next(times, time.time() + 100)

    # it keeps 30 s for the end: with 150 s it may still start a job, with 120 s not
    assert serve(flock.task_setup(), time_limit=limit, idle=0.2, clock=clock) == ran


def test_the_claim_margin_leaves_room_for_a_job_to_finish(tmp_path: Path) -> None:
    plain = make_flock(tmp_path / "a", "true").runtime_context()
    timed = make_flock(tmp_path / "b", "true", timeout=600).runtime_context()
    assert claim_margin(3600, plain) == 180  # 5%
    assert claim_margin(120, plain) == 30  # at least 30 s
    assert claim_margin(3600, timed) == 630  # the timeout, plus 30 s to store results
    assert claim_margin(600, timed) == 300  # never more than half the limit


def test_a_sheep_started_by_hand_serves_a_flock_without_a_scheduler(tmp_path: Path) -> None:
    cfg = FlockConfig.model_validate({"name": "f", "payload": {"command": "true"}})
    flock = Flock.create(tmp_path / "local", cfg)
    ids = flock.submit({"ITEM": i} for i in range(2)).ids
    try:
        assert serve(flock.task_setup(), time_limit=None, idle=0.2) == 2
        assert {flock.job(i).worker for i in ids} == {f"{socket.gethostname()}:{os.getpid()}"}
    finally:
        flock.close()
