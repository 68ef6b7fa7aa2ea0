"""The Slurm backend's logic against a scripted Slurm (fakeslurm.py) and a SQLite catalog:
chunking, pacing and retries of sbatch, reconciling vanished tasks, cancel, sheep scaling."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from shepard import config
from shepard.backends import arraytasks
from shepard.backends.arrays import STALE
from shepard.backends.slurm.backend import ARRAY_TASK, SHEEP_TASK, SlurmBackend, slurm_identity
from shepard.backends.slurm.ctl import Result, SlurmCtl, SlurmError, comment, token_of
from shepard.catalog.states import MAX_LOST
from shepard.config import FlockConfig
from shepard.errors import ShepardError
from shepard.flock import Flock
from shepard.model import Job, JobStatus, Outcome
from shepard.storage import LocalStore
from tests.unit.fakeslurm import FakeSlurm

T0 = 1_795_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_flock(tmp_path: Path, clock: Clock, **slurm: Any) -> Flock:
    cfg = FlockConfig.model_validate(
        {
            "name": "f",
            "backend": {"kind": "slurm", "slurm": {"submit_rate": 1000, **slurm}},
            "payload": {"command": "true"},
            "retry": {"attempts": 2, "backoff": 5},
        }
    )
    Flock.create(tmp_path / "flock", cfg).close()
    return Flock(config.load(tmp_path / "flock"), clock=clock)


@pytest.fixture
def slurm() -> FakeSlurm:
    return FakeSlurm()


def backend_for(flock: Flock, slurm: FakeSlurm, clock: Clock) -> SlurmBackend:
    return SlurmBackend(flock.backend_context(worker="dispatcher"), ctl=SlurmCtl(slurm))


@pytest.fixture
def flock(tmp_path: Path, clock: Clock) -> Iterator[Flock]:
    made = make_flock(tmp_path, clock)
    yield made
    made.close()


def drain(backend: SlurmBackend, clock: Clock, steps: int = 20) -> None:
    for _ in range(steps):
        backend.dispatch(clock())
        clock.now += 1


def manifest_ids(flock: Flock, token: str) -> list[str]:
    return arraytasks.manifest_ids(flock.store("manifests"), token)


def ended(task: str, state: str | None, flock: Flock, slurm: FakeSlurm, clock: Clock) -> str:
    return backend_for(flock, slurm, clock).arrays.ended(task, state)


def start(flock: Flock, slurm: FakeSlurm, job_id: str, kind: str = ARRAY_TASK) -> Job:
    """Play the part of the job's task: claim it as `worker run` would."""
    job = flock.catalog.get(job_id)
    assert job is not None and job.placement is not None
    token, array_id = arraytasks.split_placement(job.placement)
    assert array_id is not None
    index = manifest_ids(flock, token).index(job_id)
    slurm.set(array_id, index, "RUNNING")
    env = {"SLURM_ARRAY_JOB_ID": array_id, "SLURM_ARRAY_TASK_ID": str(index)}
    claimed = flock.catalog.claim_placed(
        arraytasks.task_worker_id(kind, slurm_identity(env)),
        job_id,
        [job.placement],
        now=flock.clock(),
        lease=60,
    )
    assert claimed is not None
    return claimed


def task_of(flock: Flock, job_id: str) -> tuple[str, int]:
    job = flock.catalog.get(job_id)
    assert job is not None
    ref = arraytasks.task_of(job.worker, {ARRAY_TASK, SHEEP_TASK})
    assert ref is not None
    return ref.array_id, ref.index


# -- array mode: handing jobs over -----------------------------------------------------------


def test_queued_jobs_become_arrays_within_max_array_size(tmp_path: Path, clock: Clock) -> None:
    slurm = FakeSlurm(max_array_size=1001)
    flock = make_flock(tmp_path, clock)
    ids = flock.submit({"ITEM": i} for i in range(2500)).ids
    backend = backend_for(flock, slurm, clock)
    drain(backend, clock)
    sizes = [len(a.states) for a in slurm.arrays.values()]
    assert sizes == [1001, 1001, 498]
    assert flock.catalog.ready(now=clock()) == 0
    for array in slurm.arrays.values():
        token = token_of(array.comment)
        assert token is not None
        listed = manifest_ids(flock, token)
        assert [j.placement for j in flock.catalog.placed_in([f"{token}@{array.id}"])] == [
            f"{token}@{array.id}"
        ] * len(listed)
        assert f"-m shepard.task run --manifest {token}.jobs --flock {flock.dir.folder}" in (
            array.script
        )
        assert f"--output={flock.dir.folder}/slurm-output/{token}/%a.log" in array.options
    placed = [j.id for j in flock.catalog.placed(limit=5000)]
    assert sorted(placed) == sorted(ids), "every job handed over exactly once"
    flock.close()


def test_sbatch_gets_the_flocks_resources_and_options(tmp_path: Path, clock: Clock) -> None:
    slurm = FakeSlurm()
    flock = make_flock(
        tmp_path, clock, partition="short", account="lab", cpus_per_job=4, memory="2G",
        time="30", sbatch_options=["--qos=fast", "--constraint=intel"],
    )  # fmt: skip
    flock.submit([{"A": 1}])
    drain(backend_for(flock, slurm, clock), clock, 2)
    (array,) = slurm.arrays.values()
    assert {
        "--partition=short", "--account=lab", "--cpus-per-task=4", "--mem=2G", "--time=30",
        "--qos=fast", "--constraint=intel", f"--chdir={flock.dir.folder}",
    } <= set(array.options)  # fmt: skip
    assert array.name.startswith("shepard-f-")
    flock.close()


def test_tasks_can_run_a_shepard_installed_elsewhere(tmp_path: Path, clock: Clock) -> None:
    slurm = FakeSlurm()
    flock = make_flock(tmp_path, clock, shepard="/opt/shepard/bin/shepard -v")
    flock.submit([{"A": 1}])
    drain(backend_for(flock, slurm, clock), clock, 2)
    (array,) = slurm.arrays.values()
    assert "\nexec /opt/shepard/bin/shepard -v worker run --manifest " in array.script
    flock.close()


def test_max_job_count_leaves_room_for_everyone_else(tmp_path: Path, clock: Clock) -> None:
    slurm = FakeSlurm(max_job_count=1000)
    slurm.other_jobs = 850
    flock = make_flock(tmp_path, clock)
    flock.submit({"ITEM": i} for i in range(200))
    backend = backend_for(flock, slurm, clock)
    drain(backend, clock, 3)
    assert [len(a.states) for a in slurm.arrays.values()] == [50]  # 90% of 1000, minus 850
    slurm.other_jobs = 0
    for job in flock.catalog.placed():  # their tasks run them and end
        start(flock, slurm, job.id)
        flock.catalog.finish(job.id, 1, Outcome(JobStatus.SUCCEEDED), now=clock())
    for array in slurm.arrays.values():
        array.states = dict.fromkeys(array.states, "COMPLETED")
    drain(backend, clock, 10)
    assert sum(len(a.states) for a in slurm.arrays.values()) == 200
    flock.close()


def test_a_busy_controller_is_retried_with_the_same_array(
    flock: Flock, slurm: FakeSlurm, clock: Clock
) -> None:
    flock.submit({"ITEM": i} for i in range(3))
    slurm.sbatch_failures = [Result(1, "", "sbatch: error: Socket timed out on send/recv\n")] * 2
    backend = backend_for(flock, slurm, clock)
    backend.dispatch(clock())
    assert slurm.arrays == {} and len(flock.catalog.placed()) == 3
    backend.dispatch(clock.now + 0.5)  # backing off: 1 s after the first failure
    assert len(slurm.sbatches()) == 1
    clock.now += 1
    backend.dispatch(clock())  # fails again: now 2 s
    clock.now += 1.5
    backend.dispatch(clock())
    assert len(slurm.sbatches()) == 2
    clock.now += 1
    backend.dispatch(clock())
    (array,) = slurm.arrays.values()
    tokens = {arraytasks.split_placement(j.placement or "")[0] for j in flock.catalog.placed()}
    assert tokens == {token_of(array.comment)}, "the same submission, not a new one"
    assert {j.placement for j in flock.catalog.placed()} == {f"{tokens.pop()}@{array.id}"}


def test_an_sbatch_that_went_through_despite_its_error_is_kept_not_repeated(
    flock: Flock, slurm: FakeSlurm, clock: Clock
) -> None:
    flock.submit([{"A": 1}])
    slurm.sbatch_failures = [Result(1, "", "sbatch: error: Socket timed out on send/recv\n")]
    slurm.submit_despite_failure = True
    backend = backend_for(flock, slurm, clock)
    drain(backend, clock, 5)
    assert len(slurm.sbatches()) == 1 and len(slurm.arrays) == 1
    (array_id,) = slurm.arrays
    assert flock.catalog.placed()[0].placement.endswith(f"@{array_id}")  # type: ignore[union-attr]


def test_a_refused_submission_stops_with_a_clear_error_and_loses_nothing(
    flock: Flock, slurm: FakeSlurm, clock: Clock
) -> None:
    flock.submit([{"A": 1}, {"A": 2}])
    slurm.sbatch_failures = [
        Result(1, "", "sbatch: error: Batch job submission failed: Invalid partition name\n")
    ]
    backend = backend_for(flock, slurm, clock)
    with pytest.raises(SlurmError, match=r"Invalid partition name.*\[backend.slurm\]"):
        backend.dispatch(clock())
    assert flock.catalog.placed() == [] and flock.catalog.ready(now=clock()) == 2
    assert list((flock.dir.storage_root / "manifests").glob("*.jobs")) == []


def test_a_controller_that_does_not_answer_is_waited_for(
    flock: Flock, slurm: FakeSlurm, clock: Clock
) -> None:
    flock.submit([{"A": 1}])
    slurm.squeue_failures = [Result(1, "", "squeue: error: Socket timed out on send/recv\n")] * 3
    backend = backend_for(flock, slurm, clock)
    drain(backend, clock, 8)  # the reconciler and the room count both meet the failures
    assert len(slurm.arrays) == 1 and flock.catalog.ready(now=clock()) == 0


def test_an_unwritable_manifest_folder_stops_with_a_clear_error(
    flock: Flock, slurm: FakeSlurm, clock: Clock
) -> None:
    flock.submit([{"A": 1}])
    manifests = flock.dir.storage_root / "manifests"
    manifests.rmdir()
    manifests.write_text("not a folder")
    with pytest.raises(
        ShepardError, match=r"cannot write the task manifest .*shared with the nodes"
    ):
        backend_for(flock, slurm, clock).dispatch(clock())
    assert flock.catalog.placed() == [] and slurm.sbatches() == []


def test_shutdown_gives_back_what_never_reached_slurm(
    flock: Flock, slurm: FakeSlurm, clock: Clock
) -> None:
    flock.submit([{"A": 1}])
    slurm.sbatch_failures = [Result(1, "", "Unable to contact slurm controller\n")]
    backend = backend_for(flock, slurm, clock)
    backend.dispatch(clock())
    backend.shutdown(kill=False)
    assert flock.catalog.placed() == [] and flock.catalog.ready(now=clock()) == 1


# -- reconciling -------------------------------------------------------------------------------


def test_a_task_that_vanished_before_starting_gives_its_job_back(
    flock: Flock, slurm: FakeSlurm, clock: Clock
) -> None:
    (job_id,) = flock.submit([{"A": 1}]).ids
    backend = backend_for(flock, slurm, clock)
    backend.dispatch(clock())
    (first,) = slurm.arrays
    slurm.set(first, 0, "CANCELLED")
    clock.now += 10
    backend.dispatch(clock())  # reconciles, then hands the job over again
    assert list(slurm.alive()) != [first] and len(slurm.alive()) == 1
    events = flock.events(job_id)
    assert events[-1].detail == (
        f"slurm array {first}: its task ended before it started the job (CANCELLED)"
    )
    assert events[-1].status is JobStatus.QUEUED and events[-1].attempt == 0


def test_only_the_jobs_of_tasks_that_ended_unstarted_are_given_back(
    flock: Flock, slurm: FakeSlurm, clock: Clock
) -> None:
    ids = flock.submit({"ITEM": i} for i in range(6)).ids
    backend = backend_for(flock, slurm, clock)
    backend.dispatch(clock())
    (array_id,) = slurm.arrays
    start(flock, slurm, ids[0])
    flock.catalog.finish(ids[0], 1, Outcome(JobStatus.SUCCEEDED), now=clock())
    slurm.set(array_id, 0, "COMPLETED")  # ran its job
    slurm.set(array_id, 1, "FAILED")  # could not start
    del slurm.arrays[array_id].states[2]  # cancelled while pending: squeue forgets it
    for _ in range(3):  # each ended task is handled once, however often it is seen
        backend.arrays.reconcile(clock())
    back = {j.id for j in flock.catalog.page(limit=10) if j.placement is None}
    assert back == {ids[0], ids[1], ids[2]}
    assert flock.job(ids[0]).status is JobStatus.SUCCEEDED
    details = [e.detail for e in flock.events(ids[1])[1:]] + [
        e.detail for e in flock.events(ids[2])[1:]
    ]
    assert details == [
        f"slurm array {array_id}: its task ended before it started the job (FAILED)",
        f"slurm array {array_id}: its task ended before it started the job "
        "(no longer known to Slurm)",
    ]


def test_jobs_whose_manifest_is_gone_are_given_back(
    flock: Flock, slurm: FakeSlurm, clock: Clock
) -> None:
    ids = flock.submit({"ITEM": i} for i in range(2)).ids
    backend = backend_for(flock, slurm, clock)
    backend.dispatch(clock())
    for manifest in (flock.dir.storage_root / "manifests").glob("*.jobs"):
        manifest.unlink()
    backend.arrays.reconcile(clock())
    assert flock.catalog.placed() == [] and flock.catalog.ready(now=clock()) == 2
    assert [flock.job(i).max_attempts for i in ids] == [2, 2]


def test_pending_tasks_are_left_alone(flock: Flock, slurm: FakeSlurm, clock: Clock) -> None:
    flock.submit([{"A": 1}])
    backend = backend_for(flock, slurm, clock)
    for _ in range(4):
        backend.dispatch(clock())
        clock.now += 10
    assert len(slurm.sbatches()) == 1 and len(flock.catalog.placed()) == 1


def test_a_vanished_array_is_confirmed_before_its_jobs_are_given_back(
    flock: Flock, slurm: FakeSlurm, clock: Clock
) -> None:
    (job_id,) = flock.submit([{"A": 1}]).ids
    backend = backend_for(flock, slurm, clock)
    backend.dispatch(clock())
    (array_id,) = slurm.arrays
    slurm.purge(array_id)
    backend.arrays.reconcile(clock.now + 10)
    job = flock.catalog.get(job_id)
    assert job is not None and job.placement is None and job.status is JobStatus.QUEUED
    assert "no longer known to Slurm" in (flock.events(job_id)[-1].detail or "")


@pytest.mark.parametrize("state", ["CANCELLED", "NODE_FAIL", "FAILED", None])
def test_a_running_task_that_vanished_is_a_lost_worker(
    flock: Flock, slurm: FakeSlurm, clock: Clock, state: str | None
) -> None:
    (job_id,) = flock.submit([{"A": 1}]).ids
    backend = backend_for(flock, slurm, clock)
    backend.dispatch(clock())
    start(flock, slurm, job_id)
    array_id, index = task_of(flock, job_id)
    if state is None:
        slurm.purge(array_id)
    else:
        slurm.set(array_id, index, state)
    clock.now += 10
    backend.arrays.reconcile(clock())
    job = flock.catalog.get(job_id)
    assert job is not None and job.status is JobStatus.QUEUED
    assert job.max_attempts == 3, "a lost worker does not spend an attempt"
    assert job.not_before == clock.now + 5  # retry.backoff, no doubling
    assert job.reason == ended(f"{array_id}_{index}", state, flock, slurm, clock)


@pytest.mark.parametrize("state", ["TIMEOUT", "OUT_OF_MEMORY"])
def test_a_task_killed_for_its_own_limits_spends_an_attempt(
    flock: Flock, slurm: FakeSlurm, clock: Clock, state: str
) -> None:
    (job_id,) = flock.submit([{"A": 1}]).ids
    backend = backend_for(flock, slurm, clock)
    backend.dispatch(clock())
    job = start(flock, slurm, job_id)
    log = cast(LocalStore, flock.store("logs")).path(f"{job_id[:8]}/{job_id}.1.stdout")
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("working...\n")
    array_id, index = task_of(flock, job_id)
    slurm.set(array_id, index, state)
    backend.arrays.reconcile(clock())
    after = flock.catalog.get(job_id)
    assert after is not None and after.status is JobStatus.QUEUED and after.max_attempts == 2
    assert after.reason == ended(f"{array_id}_{index}", state, flock, slurm, clock)
    assert after.error_bundle == f"log@{job_id}_{job.started_at}.zip"
    errors = cast(LocalStore, flock.store("errors"))
    with zipfile.ZipFile(errors.path(after.error_bundle)) as bundle:
        assert bundle.read("stdout.txt").decode().endswith("working...\n")
        assert state in bundle.read("exit_status.txt").decode()
    # the second (last) attempt ends the same way: the job fails
    clock.now += 20
    drain(backend, clock, 12)
    start(flock, slurm, job_id)
    array_id, index = task_of(flock, job_id)
    slurm.set(array_id, index, state)
    backend.arrays.reconcile(clock())
    final = flock.catalog.get(job_id)
    assert final is not None and final.status is JobStatus.FAILED and final.attempt == 2


def test_a_sheep_cut_by_its_time_limit_loses_its_job_without_spending_an_attempt(
    tmp_path: Path, slurm: FakeSlurm, clock: Clock
) -> None:
    flock = make_flock(tmp_path, clock, mode="sheep")
    (job_id,) = flock.submit([{"A": 1}]).ids
    backend = backend_for(flock, slurm, clock)
    backend.dispatch(clock())
    (array_id,) = slurm.arrays
    env = {"SLURM_ARRAY_JOB_ID": array_id, "SLURM_ARRAY_TASK_ID": "0"}
    worker = arraytasks.task_worker_id(SHEEP_TASK, slurm_identity(env))
    flock.catalog.claim(worker, now=clock(), lease=60)
    slurm.set(array_id, 0, "TIMEOUT")
    backend.arrays.reconcile(clock())
    job = flock.catalog.get(job_id)
    assert job is not None and job.status is JobStatus.QUEUED and job.max_attempts == 3
    flock.close()


def test_a_job_that_keeps_losing_its_task_fails(
    flock: Flock, slurm: FakeSlurm, clock: Clock
) -> None:
    (job_id,) = flock.submit([{"A": 1}]).ids
    backend = backend_for(flock, slurm, clock)
    for _ in range(MAX_LOST):
        drain(backend, clock, 12)  # hands it over once its retry time has come
        alive = slurm.alive()
        ((array_id, indexes),) = alive.items()
        slurm.set(array_id, min(indexes), "FAILED")
        backend.arrays.reconcile(clock())
    job = flock.catalog.get(job_id)
    assert job is not None and job.status is JobStatus.FAILED
    assert job.reason is not None and job.reason.endswith(f"(FAILED) ({MAX_LOST} times)")
    assert job.reason.startswith("slurm array ")


def test_a_submission_whose_dispatcher_died_is_adopted_or_given_back(
    flock: Flock, slurm: FakeSlurm, clock: Clock
) -> None:
    ids = flock.submit([{"A": 1}, {"A": 2}]).ids
    token_a, token_b = arraytasks.new_token(clock()), arraytasks.new_token(clock() + 1)
    flock.catalog.place(token_a, now=clock(), limit=1)
    flock.catalog.place(token_b, now=clock(), limit=1)
    # the dispatcher submitted token_a's array, then died before recording its id
    slurm._create(["--array=0-0", "--job-name=" + backend_for(flock, slurm, clock).names.array,
                   f"--comment={comment(token_a)}"], "")  # fmt: skip
    backend = backend_for(flock, slurm, clock)
    backend.arrays.reconcile(clock.now + STALE / 2)
    assert {j.placement for j in flock.catalog.placed()} == {token_a, token_b}, "too early"
    backend.arrays.reconcile(clock.now + STALE + 5)
    (array_id,) = slurm.arrays
    assert [j.placement for j in flock.catalog.placed()] == [f"{token_a}@{array_id}"]
    job_b = flock.catalog.get(ids[1])
    assert job_b is not None and job_b.placement is None and job_b.status is JobStatus.QUEUED


# -- cancel ------------------------------------------------------------------------------------


def test_cancel_removes_exactly_the_tasks_of_the_cancelled_jobs(
    flock: Flock, slurm: FakeSlurm, clock: Clock
) -> None:
    ids = flock.submit({"ITEM": i} for i in range(6)).ids
    backend = backend_for(flock, slurm, clock)
    backend.dispatch(clock())
    start(flock, slurm, ids[0])
    (array_id,) = slurm.arrays
    flock.catalog.cancel([ids[0], ids[3], ids[4]], now=clock())
    backend.cancel([ids[0], ids[3], ids[4]])
    states = slurm.arrays[array_id].states
    assert [states[i] for i in range(6)] == [
        "CANCELLED", "PENDING", "PENDING", "CANCELLED", "CANCELLED", "PENDING"
    ]  # fmt: skip


def test_flock_cancel_reaches_slurm(
    flock: Flock, slurm: FakeSlurm, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shepard.backends.slurm import backend as slurm_module

    ids = flock.submit({"ITEM": i} for i in range(3)).ids
    backend_for(flock, slurm, clock).dispatch(clock())
    monkeypatch.setattr(slurm_module, "SlurmCtl", lambda: SlurmCtl(slurm))
    assert flock.cancel() == ids
    assert slurm.alive() == {}


# -- sheep mode --------------------------------------------------------------------------------


def test_sheep_follow_the_queue(tmp_path: Path, slurm: FakeSlurm, clock: Clock) -> None:
    flock = make_flock(tmp_path, clock, mode="sheep", jobs_per_sheep=20, max_sheep=4)
    backend = backend_for(flock, slurm, clock)
    drain(backend, clock, 3)
    assert slurm.sbatches() == [], "no sheep while nothing waits"
    flock.submit({"ITEM": i} for i in range(45))
    drain(backend, clock, 3)
    (array,) = slurm.arrays.values()
    assert len(array.states) == 3 and array.name.endswith("-sheep")  # ceil(45 / 20)
    assert "-m shepard.task serve --time-limit 3600 --idle 5 --flock" in array.script
    assert "--time=1:00:00" in array.options
    flock.submit({"ITEM": i} for i in range(100))
    drain(backend, clock, 3)
    assert sum(len(a.states) for a in slurm.arrays.values()) == 4  # max_sheep
    slurm.set(array.id, 0, "RUNNING")
    flock.cancel()
    drain(backend, clock, 3)
    assert slurm.alive() == {array.id: {0}}, "pending sheep go, the running one ends by itself"
    flock.close()


def test_pending_sheep_go_when_the_dispatcher_stops_with_nothing_left(
    tmp_path: Path, slurm: FakeSlurm, clock: Clock
) -> None:
    flock = make_flock(tmp_path, clock, mode="sheep", jobs_per_sheep=1, max_sheep=3)
    ids = flock.submit({"ITEM": i} for i in range(3)).ids
    backend = backend_for(flock, slurm, clock)
    backend.dispatch(clock())
    (array,) = slurm.arrays.values()
    slurm.set(array.id, 0, "RUNNING")
    for job_id in ids:  # the running sheep takes and finishes every job
        flock.catalog.claim("sheep", now=clock(), lease=60, job_ids=[job_id])
        flock.catalog.finish(job_id, 1, Outcome(JobStatus.SUCCEEDED), now=clock())
    backend.shutdown(kill=False)
    assert slurm.alive() == {array.id: {0}}
    flock.close()


# -- logs --------------------------------------------------------------------------------------


def test_logs_name_the_payloads_streams_and_slurms_own_output(
    flock: Flock, slurm: FakeSlurm, clock: Clock
) -> None:
    (job_id,) = flock.submit([{"A": 1}]).ids
    backend = backend_for(flock, slurm, clock)
    backend.dispatch(clock())
    job = start(flock, slurm, job_id)
    logs = flock.store("logs")
    logs.put_bytes(f"{job_id[:8]}/{job_id}.1.stdout", b"payload\n")
    array_id, index = task_of(flock, job_id)
    token = token_of(slurm.arrays[array_id].comment)
    assert token is not None
    output = flock.dir.folder / "slurm-output" / token
    output.mkdir(parents=True, exist_ok=True)  # where sbatch writes it, beside flock.toml
    (output / f"{index}.log").write_bytes(b"task 0 of the array\n")
    refs = backend.logs(job, 1)
    assert [(r.label, r.key) for r in refs] == [
        ("stdout", f"{job_id[:8]}/{job_id}.1.stdout"),
        ("slurm", f"{token}/{index}.log"),
    ]
    assert refs[1].store.get_bytes(refs[1].key) == b"task 0 of the array\n"
    slurm.purge(array_id)  # Slurm forgot the task: only the payload's streams remain
    assert [r.label for r in backend.logs(job, 1)] == ["stdout"]
