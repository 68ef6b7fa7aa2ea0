"""The array template (backends/arrays.py) against a scheduler kept in memory: submitting
arrays, adopting a submission that went through despite an error, giving back jobs whose task
ended unclaimed, and ending the attempts of running tasks that vanished. No Slurm involved:
this is what AWS Batch or Kubernetes hooks will be driven by."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from shepard.backends import arrays, arraytasks
from shepard.backends.arrays import Arrays, Pacer, SchedulerBusy, SchedulerRefused
from shepard.catalog import open_catalog
from shepard.catalog.base import Catalog
from shepard.errors import ShepardError
from shepard.model import Job, JobSpec, JobStatus, RetryPolicy
from shepard.runtime import log_key
from shepard.storage import LocalStore

T0 = 1_795_000_000.0
ALIVE = frozenset({"PENDING", "RUNNING"})
IDS = [f"01a201cf-c6aa-7000-ab42-67717b8852{i:02d}" for i in range(12)]


@dataclass
class FakeTasks:
    """A TaskList: what the fake scheduler lists at one moment."""

    states: dict[tuple[str, int], str]
    tokens: dict[str, str]  # array id -> token

    def alive(self, array_id: str, index: int) -> bool:
        return self.states.get((array_id, index)) in ALIVE

    def state(self, array_id: str, index: int) -> str | None:
        return self.states.get((array_id, index))

    def arrays(self) -> set[str]:
        return {a for a, _ in self.states}

    def arrays_of(self, token: str) -> set[str]:
        return {a for a, t in self.tokens.items() if t == token}


@dataclass
class FakeScheduler:
    """An ArrayScheduler in memory; tests change task states by hand."""

    name: str = "fake"
    title: str = "Fake"
    job_caused: frozenset[str] = frozenset({"OUT_OF_MEMORY"})
    endings: Mapping[str, str] = field(default_factory=lambda: {"OUT_OF_MEMORY": "ran out"})
    space: int = 1000
    failures: list[Exception] = field(default_factory=list)  # raised by the next submits
    submit_despite_failure: bool = False
    states: dict[str, dict[int, str]] = field(default_factory=dict)  # array -> index -> state
    tokens: dict[str, str] = field(default_factory=dict)
    submits: int = 0

    def room(self, now: float) -> int:
        return self.space

    def submit_array(self, token: str, size: int) -> str:
        self.submits += 1
        if self.failures:
            if self.submit_despite_failure:
                self._create(token, size)
            raise self.failures.pop(0)
        return self._create(token, size)

    def _create(self, token: str, size: int) -> str:
        array_id = str(100 + len(self.states))
        self.states[array_id] = dict.fromkeys(range(size), "PENDING")
        self.tokens[array_id] = token
        return array_id

    def list_tasks(self, array_ids: Sequence[str], *, all_arrays: bool) -> FakeTasks:
        wanted = set(self.states) if all_arrays else set(array_ids) & set(self.states)
        states = {(a, i): s for a in wanted for i, s in self.states[a].items()}
        return FakeTasks(states, {a: self.tokens[a] for a in wanted})

    def cancel_tasks(self, tasks: Mapping[str, AbstractSet[int]]) -> None:
        for array_id, indexes in tasks.items():
            for index in indexes:
                self.states[array_id][index] = "CANCELLED"

    def task_state(self, array_id: str, index: int | None) -> str | None:
        if array_id not in self.states:
            return None
        return "KNOWN" if index is None else self.states[array_id].get(index)

    def alive(self, state: str) -> bool:
        return state in ALIVE

    def task_identity(self, env: Mapping[str, str]) -> tuple[str, int] | None:
        array_id, _, index = env.get("FAKE_TASK", "").partition("_")
        return (array_id, int(index)) if index else None


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    opened = open_catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    yield opened
    opened.close()


@pytest.fixture
def scheduler() -> FakeScheduler:
    return FakeScheduler()


def template(scheduler: FakeScheduler, catalog: Catalog, tmp_path: Path) -> Arrays:
    return Arrays(
        scheduler, catalog, LocalStore(tmp_path / "manifests"), LocalStore(tmp_path / "logs"),
        LocalStore(tmp_path / "errors"), RetryPolicy(attempts=2, backoff=5), Pacer(1000.0),
    )  # fmt: skip


def add(catalog: Catalog, n: int) -> list[str]:
    specs = [JobSpec({"ITEM": str(i)}) for i in range(n)]
    return catalog.add_jobs(specs, now=T0, default_attempts=2)


def claim(arr: Arrays, catalog: Catalog, job_id: str) -> Job:
    """Play the part of the job's task (`worker run --manifest`): claim it."""
    job = catalog.get(job_id)
    assert job is not None and job.placement is not None
    token, array_id = arraytasks.split_placement(job.placement)
    assert array_id is not None
    index = arraytasks.manifest_ids(arr.manifests, token).index(job_id)
    worker = arraytasks.task_worker_id("fake", (array_id, index))
    claimed = catalog.claim_placed(worker, job_id, [job.placement], now=T0, lease=60)
    assert claimed is not None
    return claimed


def test_queued_jobs_become_arrays_of_the_room_the_scheduler_has(
    tmp_path: Path, catalog: Catalog, scheduler: FakeScheduler
) -> None:
    ids = add(catalog, 5)
    scheduler.space = 3
    arr = template(scheduler, catalog, tmp_path)
    assert arr.hand_over(T0) == 3 and arr.hand_over(T0 + 1) == 2 and arr.hand_over(T0 + 2) == 0
    assert [len(states) for states in scheduler.states.values()] == [3, 2]
    listed = []
    for array_id, token in scheduler.tokens.items():
        placed = [j.placement for j in catalog.placed_in([f"{token}@{array_id}"])]
        manifest = arraytasks.manifest_ids(arr.manifests, token)
        assert placed == [f"{token}@{array_id}"] * len(manifest)
        listed += manifest
    assert listed == ids, "every job handed over once, in order"


class ScriptedClock:
    """A clock that moves only when slept on."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_a_round_hands_over_array_after_array_at_the_pacers_rate(
    tmp_path: Path, catalog: Catalog, scheduler: FakeScheduler
) -> None:
    add(catalog, 10)
    scheduler.space = 3
    arr = template(scheduler, catalog, tmp_path)
    arr.pacer = Pacer(2.0)  # one submission every 0.5 s
    clock = ScriptedClock(T0)
    assert arr.hand_over_until(T0 + 60, clock, clock.sleep) == 10
    assert [len(states) for states in scheduler.states.values()] == [3, 3, 3, 1]
    assert clock.slept == [0.5] * 4, "paced (the last wait finds nothing left)"


def test_a_round_stops_at_its_deadline_and_retries_a_busy_scheduler_within_it(
    tmp_path: Path, catalog: Catalog, scheduler: FakeScheduler
) -> None:
    add(catalog, 10)
    scheduler.space = 3
    arr = template(scheduler, catalog, tmp_path)
    arr.pacer = Pacer(2.0)
    clock = ScriptedClock(T0)
    assert arr.hand_over_until(T0 + 0.9, clock, clock.sleep) == 6
    assert catalog.ready(now=clock.now) == 4, "the rest waits for the next round"
    scheduler.failures = [SchedulerBusy("busy")]
    assert arr.hand_over_until(clock.now + 60, clock, clock.sleep) == 4
    assert scheduler.submits == 5 and arr.retry == []  # 2, then a busy one and its retry, 1


def test_a_submission_that_went_through_despite_its_error_is_adopted(
    tmp_path: Path, catalog: Catalog, scheduler: FakeScheduler
) -> None:
    add(catalog, 2)
    scheduler.failures = [SchedulerBusy("timed out")]
    scheduler.submit_despite_failure = True
    arr = template(scheduler, catalog, tmp_path)
    assert arr.hand_over(T0) == 0 and len(arr.retry) == 1
    assert arr.hand_over(T0 + 5) == 2, "found by its token, not submitted again"
    assert scheduler.submits == 1 and arr.retry == []
    ((array_id, token),) = scheduler.tokens.items()
    assert {j.placement for j in catalog.placed()} == {f"{token}@{array_id}"}


def test_a_busy_scheduler_is_retried_with_the_same_submission(
    tmp_path: Path, catalog: Catalog, scheduler: FakeScheduler
) -> None:
    add(catalog, 2)
    scheduler.failures = [SchedulerBusy("busy")]
    arr = template(scheduler, catalog, tmp_path)
    assert arr.hand_over(T0) == 0
    assert arr.hand_over(T0 + 0.5) == 0, "backing off for 1 s"
    assert arr.hand_over(T0 + 1) == 2 and scheduler.submits == 2
    ((array_id, token),) = scheduler.tokens.items()
    assert {j.placement for j in catalog.placed()} == {f"{token}@{array_id}"}


def test_a_refused_submission_gives_its_jobs_back_and_raises(
    tmp_path: Path, catalog: Catalog, scheduler: FakeScheduler
) -> None:
    add(catalog, 2)
    scheduler.failures = [SchedulerRefused("no such queue")]
    arr = template(scheduler, catalog, tmp_path)
    with pytest.raises(SchedulerRefused, match="no such queue"):
        arr.hand_over(T0)
    assert catalog.placed() == [] and catalog.ready(now=T0) == 2
    assert list(arr.manifests.list()) == [], "its manifest is dropped"


def test_abandoned_submissions_go_back_to_the_queue(
    tmp_path: Path, catalog: Catalog, scheduler: FakeScheduler
) -> None:
    add(catalog, 1)
    scheduler.failures = [SchedulerBusy("busy")]
    arr = template(scheduler, catalog, tmp_path)
    arr.hand_over(T0)
    arr.abandon(T0, "stopped")
    assert catalog.placed() == [] and catalog.ready(now=T0) == 1


def test_jobs_whose_task_ended_unclaimed_are_given_back_once(
    tmp_path: Path, catalog: Catalog, scheduler: FakeScheduler
) -> None:
    ids = add(catalog, 3)
    arr = template(scheduler, catalog, tmp_path)
    arr.hand_over(T0)
    ((array_id, states),) = scheduler.states.items()
    claim(arr, catalog, ids[0])
    states[0] = "RUNNING"
    states[1] = "FAILED"  # ended before claiming its job
    for _ in range(3):  # handled once however often it is seen
        arr.reconcile(T0 + 10)
    job = catalog.get(ids[1])
    assert job is not None and job.placement is None and job.status is JobStatus.QUEUED
    events = catalog.events(ids[1])
    assert [e.detail for e in events[1:]] == [
        f"fake array {array_id}: its task ended before it started the job (FAILED)"
    ]
    assert [j.id for j in catalog.placed()] == [ids[2]], "the pending task keeps its job"
    assert arr.hand_over(T0 + 20) == 1 and len(scheduler.states) == 2, "handed over again"


def test_a_stale_submission_without_an_array_is_given_back(
    tmp_path: Path, catalog: Catalog, scheduler: FakeScheduler
) -> None:
    add(catalog, 1)
    token = arraytasks.new_token(T0)
    catalog.place(token, now=T0, limit=1)  # a dispatcher placed them, then died
    arr = template(scheduler, catalog, tmp_path)
    arr.reconcile(T0 + arrays.STALE / 2)
    assert [j.placement for j in catalog.placed()] == [token], "too early to tell"
    arr.reconcile(T0 + arrays.STALE + 1)
    assert catalog.placed() == [] and catalog.ready(now=T0 + arrays.STALE + 1) == 1


def test_a_running_task_that_vanished_loses_its_attempt_unspent(
    tmp_path: Path, catalog: Catalog, scheduler: FakeScheduler
) -> None:
    (job_id,) = add(catalog, 1)
    arr = template(scheduler, catalog, tmp_path)
    arr.hand_over(T0)
    claim(arr, catalog, job_id)
    ((array_id, _),) = scheduler.states.items()
    del scheduler.states[array_id]  # purged: the scheduler no longer knows it
    arr.reconcile(T0 + 10)
    job = catalog.get(job_id)
    assert job is not None and job.status is JobStatus.QUEUED and job.max_attempts == 3
    assert job.reason == f"fake task {array_id}_0 ended (no longer known to Fake)"
    assert job.not_before == T0 + 10 + 5


def test_a_running_task_ended_by_its_own_limits_spends_an_attempt(
    tmp_path: Path, catalog: Catalog, scheduler: FakeScheduler
) -> None:
    (job_id,) = add(catalog, 1)
    arr = template(scheduler, catalog, tmp_path)
    arr.hand_over(T0)
    job = claim(arr, catalog, job_id)
    arr.logs.put_bytes(log_key(job_id, 1, "stdout"), b"working...\n")
    ((array_id, states),) = scheduler.states.items()
    states[0] = "OUT_OF_MEMORY"
    arr.reconcile(T0 + 10)
    after = catalog.get(job_id)
    assert after is not None and after.status is JobStatus.QUEUED and after.max_attempts == 2
    assert after.reason == f"fake task {array_id}_0 ran out (OUT_OF_MEMORY)"
    assert after.error_bundle == f"log@{job_id}_{job.started_at}.zip"
    bundle = tmp_path / "bundle.zip"
    arr.errors.get_file(after.error_bundle, bundle)
    with zipfile.ZipFile(bundle) as zf:
        assert zf.read("stdout.txt").decode().endswith("working...\n")


def test_tasks_of_cancelled_jobs_are_found_through_the_manifest(
    tmp_path: Path, catalog: Catalog, scheduler: FakeScheduler
) -> None:
    ids = add(catalog, 4)
    arr = template(scheduler, catalog, tmp_path)
    arr.hand_over(T0)
    ((array_id, token),) = scheduler.tokens.items()
    listing = scheduler.list_tasks([array_id], all_arrays=False)
    assert arr.tasks_of(listing, array_id, token, range(4), {ids[1], ids[3]}) == {1, 3}


def test_packs_make_one_task_per_pack_and_give_back_what_an_ended_task_left(
    tmp_path: Path, catalog: Catalog, scheduler: FakeScheduler
) -> None:
    ids = add(catalog, 10)
    scheduler.space = 2  # tasks: two packs of four
    arr = template(scheduler, catalog, tmp_path)
    arr.pack = 4
    assert arr.hand_over(T0) == 8 and arr.hand_over(T0 + 1) == 2
    (first, states), _ = scheduler.states.items()
    assert [len(s) for s in scheduler.states.values()] == [2, 1]  # 8 jobs in 2 tasks, 2 in 1
    token = scheduler.tokens[first]
    assert arraytasks.token_pack(token) == 4
    assert arraytasks.manifest_ids(arr.manifests, token) == ids[:8]
    listing = scheduler.list_tasks([first], all_arrays=False)
    assert arr.tasks_of(listing, first, token, range(2), {ids[5]}) == {1}
    # task 1 (lines 4-7) ended after it claimed line 4: lines 5-7 go back, task 0's stay
    worker = arraytasks.task_worker_id("fake", (first, 1))
    assert catalog.claim_placed(worker, ids[4], [f"{token}@{first}"], now=T0, lease=60)
    states[1] = "FAILED"
    arr.reconcile(T0 + 10)
    assert [j.id for j in catalog.placed_in([f"{token}@{first}"])] == ids[:4]
    assert [j.id for j in catalog.placed()] == ids[:4] + ids[8:], "5-7 back in the queue"


def test_a_swept_manifest_lets_the_scheduler_forget_its_array(
    tmp_path: Path, catalog: Catalog, scheduler: FakeScheduler
) -> None:
    ids = add(catalog, 2)
    arr = template(scheduler, catalog, tmp_path)
    forgotten: list[str] = []
    arr.forget = forgotten.append
    arr.hand_over(T0)
    ((_, token),) = scheduler.tokens.items()
    for job_id in ids:
        claim(arr, catalog, job_id)
    arr.reconcile(T0 + 1)  # still within a day: kept
    assert forgotten == [] and arr.manifests.exists(arraytasks.manifest_key(token))
    arr._next_sweep = float("-inf")
    arr.reconcile(T0 + arrays.KEEP_MANIFESTS + 60)
    assert forgotten == [token] and not arr.manifests.exists(arraytasks.manifest_key(token))


# -- manifests, tokens, worker ids ----------------------------------------------------------


def test_a_task_reads_its_own_manifest_line(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "manifests")
    arraytasks.write_manifest(store, "x", IDS)
    assert [arraytasks.manifest_line(store, "x", i) for i in range(12)] == IDS
    assert (
        arraytasks.manifest_ids(store, "x") == IDS and arraytasks.manifest_ids(store, "gone") == []
    )
    with pytest.raises(ShepardError, match="has no task 12"):
        arraytasks.manifest_line(store, "x", 12)
    with pytest.raises(ShepardError, match="cannot read the task manifest"):
        arraytasks.manifest_line(store, "missing", 0)
    assert list(store.list()) == ["x.jobs"], "no temporary object left behind"


def test_manifests_hold_only_job_ids(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a job id"):
        arraytasks.write_manifest(LocalStore(tmp_path), "x", ["short"])


def test_tokens_carry_their_age() -> None:
    token = arraytasks.new_token(T0)
    assert arraytasks.token_age(token, T0 + 90.5) == pytest.approx(90.5)
    assert arraytasks.split_placement(f"{token}@123") == (token, "123")
    assert arraytasks.split_placement(token) == (token, None)


def test_worker_ids_name_their_task_for_their_scheduler_only() -> None:
    worker = arraytasks.task_worker_id("fake", ("job-7f", 3))
    assert worker.endswith(" fake job-7f_3")
    assert arraytasks.task_of(worker, {"fake"}) == arraytasks.TaskRef("fake", "job-7f", 3)
    assert arraytasks.task_of(worker, {"slurm"}) is None
    assert arraytasks.task_of(arraytasks.task_worker_id("fake", None), {"fake"}) is None
