"""Runner processes: each slot's child runs, records and claims its jobs itself; the parent
hands it work, forwards stops and closes, and gives back the attempts of a runner that died."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import cast

import pytest

from shepard.backends.procs import (
    WORKER_DIED,
    RunnerProcess,
    RunnerSetup,
    runner_worker_id,
    start_runners,
)
from shepard.catalog import Catalog, open_catalog
from shepard.model import Job, JobSpec, JobStatus, RetryPolicy
from shepard.runtime import RuntimeContext, log_key
from shepard.runtime.process import is_runner_process
from shepard.storage import LocalStore
from tests.unit.test_runtime_worker import make_ctx, members, with_command

LEASE = 60.0


class Slot:
    """A RunnerProcess on a file catalog, with an event set whenever it goes idle."""

    def __init__(self, tmp_path: Path, command: str, *, attempts: int = 1, fork: bool) -> None:
        self.url = f"sqlite:///{tmp_path / 'catalog.db'}"
        self.catalog: Catalog = open_catalog(self.url)
        self.attempts = attempts
        self.ctx: RuntimeContext = make_ctx(tmp_path, command=command)
        self.idle = threading.Event()
        setup = RunnerSetup(self.ctx, self.url, RetryPolicy(), LEASE, tmp_path / "work" / "slot")
        self.runner = RunnerProcess(setup, self.catalog, on_idle=self.idle.set)
        if fork:  # as a LocalBackend starts its runners; else with the first job
            forked = start_runners([self.runner], before_fork=self.catalog.close)
            assert forked, f"this test process runs other threads: {threading.enumerate()}"
            assert self.runner.pid is not None

    def add(self, n: int) -> list[str]:
        specs = [JobSpec({"ITEM": i}) for i in range(n)]
        return self.catalog.add_jobs(specs, now=time.time(), default_attempts=self.attempts)

    def start_one(self) -> Job:
        """Claim a job as the dispatcher does and hand it to the runner."""
        (job,) = self.catalog.claim("parent", now=time.time(), lease=LEASE)
        self.idle.clear()
        self.runner.run(job)
        return job

    def job(self, job_id: str) -> Job:
        job = self.catalog.get(job_id)
        assert job is not None
        return job

    def started(self, job_id: str) -> bool:
        """True once the payload of the job's first attempt has been started."""
        return cast(LocalStore, self.ctx.logs).path(log_key(job_id, 1, "stdout")).exists()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.05)

    def close(self) -> None:
        self.runner.close(kill=True)
        self.runner.join(timeout=30)
        self.catalog.close()


@pytest.fixture(params=["forked", "new interpreter"])
def slot_factory(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Slot]]:
    """Slots whose runner is a fork of this process, or a new interpreter."""
    made: list[Slot] = []

    def make(command: str, **kw: int) -> Slot:
        made.append(Slot(tmp_path, command, **kw, fork=request.param == "forked"))
        return made[-1]

    yield make
    for slot in made:
        slot.close()


def test_a_runner_runs_its_job_then_claims_the_rest_itself(
    slot_factory: Callable[..., Slot],
) -> None:
    slot = slot_factory('echo "$$" > "$ROOT_OUTPUT_NAME/pid.txt"')
    ids = slot.add(5)
    slot.start_one()
    assert slot.runner.busy
    assert slot.idle.wait(60), "the runner never ran out of work"
    assert not slot.runner.busy
    jobs = [slot.job(job_id) for job_id in ids]
    assert [j.status for j in jobs] == [JobStatus.SUCCEEDED] * 5
    runner = runner_worker_id(slot.runner.pid or 0)
    assert [j.worker for j in jobs] == ["parent"] + [runner] * 4  # the rest it claimed itself
    shell_pid = int(members(slot.ctx.outputs, jobs[0].outputs[0])["pid.txt"])
    assert shell_pid not in (os.getpid(), slot.runner.pid)


def test_a_runner_starts_its_payloads_the_cheap_way_and_only_it(
    slot_factory: Callable[..., Slot],
) -> None:
    """The runner's body declares it a runner process, so its payloads start through
    posix_spawn from its slot (glibc's posix_spawn leaves its internal signals 32 and 33
    ignored: the sign of it); the process that started it changes nothing of its own."""
    here = os.getcwd()
    slot = slot_factory('grep SigIgn /proc/self/status > "$ROOT_OUTPUT_NAME/sig.txt"')
    [job_id] = slot.add(1)
    slot.start_one()
    assert slot.idle.wait(60)
    job = slot.job(job_id)
    ignored = int(members(slot.ctx.outputs, job.outputs[0])["sig.txt"].split()[1], 16)
    assert ignored & (1 << 31 | 1 << 32) == 1 << 31 | 1 << 32
    assert not is_runner_process() and os.getcwd() == here


def test_a_runner_claims_short_jobs_several_at_a_time(slot_factory: Callable[..., Slot]) -> None:
    slot = slot_factory("true")
    ids = slot.add(30)
    slot.start_one()
    assert slot.idle.wait(60), "the runner never ran out of work"
    assert [slot.job(i).status for i in ids] == [JobStatus.SUCCEEDED] * 30
    claimed_at = Counter(
        next(e.at for e in slot.catalog.events(i) if e.status is JobStatus.RUNNING) for i in ids[1:]
    )
    assert max(claimed_at.values()) >= 2  # one transaction claimed several jobs


def test_a_runner_stops_a_job_cancelled_in_the_catalog(slot_factory: Callable[..., Slot]) -> None:
    slot = slot_factory("sleep 60")
    [job_id] = slot.add(1)
    slot.start_one()
    slot.wait_for(lambda: slot.started(job_id))
    began = time.monotonic()
    slot.catalog.cancel([job_id], now=time.time())
    slot.runner.stop([job_id])  # what LocalBackend.cancel forwards
    assert slot.idle.wait(30)
    assert time.monotonic() - began < 15
    assert slot.job(job_id).status is JobStatus.CANCELLED
    assert list(slot.ctx.outputs.list()) == []


def test_a_dead_runner_loses_its_attempt_and_is_replaced(
    slot_factory: Callable[..., Slot],
) -> None:
    slot = slot_factory("sleep 5")  # orphaned by the kill
    first, second = slot.add(2)
    slot.start_one()
    slot.wait_for(lambda: slot.started(first))
    dead = slot.runner.pid
    os.kill(dead or 0, signal.SIGKILL)
    assert slot.idle.wait(30)
    lost = slot.job(first)  # a lost worker's attempt: queued again, no attempt spent
    assert (lost.status, lost.reason) == (JobStatus.QUEUED, WORKER_DIED)
    assert lost.max_attempts == 2 and lost.not_before is not None
    slot.runner.setup = replace(slot.runner.setup, ctx=with_command(slot.ctx, "true"))
    slot.start_one()
    assert slot.idle.wait(30)
    assert slot.job(second).status is JobStatus.SUCCEEDED
    assert slot.runner.pid != dead


def test_a_dead_runner_also_ends_the_jobs_it_claimed_itself(
    slot_factory: Callable[..., Slot],
) -> None:
    slot = slot_factory('[ "$ITEM" = 0 ] || sleep 30', attempts=2)
    first, second = slot.add(2)
    slot.start_one()
    slot.wait_for(lambda: slot.job(second).status is JobStatus.RUNNING)
    os.kill(slot.runner.pid or 0, signal.SIGKILL)
    assert slot.idle.wait(30)
    assert slot.job(first).status is JobStatus.SUCCEEDED
    lost = slot.job(second)
    assert (lost.status, lost.reason, lost.not_before is not None) == (
        JobStatus.QUEUED, WORKER_DIED, True
    )  # fmt: skip


def test_closing_with_kill_gives_the_running_job_back(slot_factory: Callable[..., Slot]) -> None:
    slot = slot_factory("sleep 60")
    [job_id] = slot.add(1)
    slot.start_one()
    slot.wait_for(lambda: slot.started(job_id))
    slot.runner.close(kill=True)
    slot.runner.join(timeout=30)
    job = slot.job(job_id)
    assert (job.status, job.attempt, job.max_attempts) == (JobStatus.QUEUED, 1, 2)
    assert slot.catalog.events(job_id)[-1].detail == "released: sheep shut down"


def test_closing_without_kill_lets_the_attempt_end_and_claims_nothing_more(
    slot_factory: Callable[..., Slot],
) -> None:
    slot = slot_factory("sleep 1")
    first, *rest = slot.add(3)
    slot.start_one()
    slot.wait_for(lambda: slot.started(first))
    slot.runner.close(kill=False)
    slot.runner.join(timeout=30)
    assert slot.job(first).status is JobStatus.SUCCEEDED
    assert [slot.job(job_id).status for job_id in rest] == [JobStatus.QUEUED] * 2


def test_a_runner_whose_parent_is_gone_gives_its_job_back(
    slot_factory: Callable[..., Slot],
) -> None:
    slot = slot_factory("sleep 60")
    [job_id] = slot.add(1)
    slot.start_one()
    slot.wait_for(lambda: slot.started(job_id))
    proc = slot.runner._proc
    assert proc is not None and proc.stdin is not None
    proc.stdin.close()  # what the runner sees when its parent is killed
    assert proc.wait(timeout=30) == 0
    assert slot.job(job_id).status is JobStatus.QUEUED
