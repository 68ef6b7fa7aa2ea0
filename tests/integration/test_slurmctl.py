"""SlurmCtl against the real cluster: what the backend reads from Slurm's commands is what
Slurm 22.05 prints. Arrays are submitted held, so nothing runs."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from shepard.backends.slurm.ctl import SlurmCtl, SlurmRefused
from tests.services import require_service
from tests.slurm import slurm_problem

SCRIPT = "#!/bin/sh\ntrue\n"


@pytest.fixture
def ctl() -> Iterator[SlurmCtl]:
    require_service("Slurm", slurm_problem())
    ctl = SlurmCtl()
    yield ctl


@pytest.fixture
def name(ctl: SlurmCtl) -> Iterator[str]:
    made = f"shepard-test-{uuid.uuid4().hex[:8]}"
    yield made
    import subprocess

    subprocess.run(["scancel", f"--name={made}"], check=False, timeout=30)


def test_limits_come_from_the_clusters_configuration(ctl: SlurmCtl) -> None:
    limits = ctl.limits()
    assert limits.max_array_size >= 1001 and limits.max_job_count >= 10000
    assert 1 <= limits.tasks_per_array <= limits.max_array_size


def test_an_array_is_seen_cancelled_in_part_and_counted(ctl: SlurmCtl, name: str) -> None:
    before = ctl.job_count()
    options = ["--hold", "--array=0-9", f"--job-name={name}", "--comment=shepard:tok-1",
               "--output=/dev/null"]  # fmt: skip
    array_id = ctl.sbatch(options, SCRIPT)
    assert array_id.isdigit()
    snapshot = ctl.queue(names=[name])
    assert snapshot.with_comment("shepard:tok-1") == {array_id}
    assert snapshot.tasks(states=["PENDING"]) == {array_id: set(range(10))}
    assert ctl.job_count() >= before + 10, "each array task counts towards MaxJobCount"
    ctl.scancel([f"{array_id}_[2-4,7]"])
    after = ctl.queue(job_ids=[array_id])
    assert after.tasks(states=["PENDING"]) == {array_id: {0, 1, 5, 6, 8, 9}}
    assert not after.alive(array_id, 3)
    info = ctl.show_job(f"{array_id}_0")
    assert info is not None and info["JobState"] == "PENDING"
    ctl.scancel([array_id, "999999999"])  # an unknown id is no error
    assert ctl.queue(job_ids=[array_id]).count(alive=True) == 0


def test_unknown_jobs_are_simply_not_there(ctl: SlurmCtl) -> None:
    assert ctl.queue(job_ids=["999999998"]).records == []
    assert ctl.show_job("999999998") is None


def test_a_submission_slurm_cannot_take_is_refused_with_its_reason(
    ctl: SlurmCtl, name: str
) -> None:
    with pytest.raises(SlurmRefused, match=r"(?i)invalid partition"):
        ctl.sbatch(["--partition=no-such-partition", f"--job-name={name}"], SCRIPT)
