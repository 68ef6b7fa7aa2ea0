"""The aws-batch backend's pure parts: a child's identity, job names, what children read and
write in the store, states, the job definition, the config section."""

from __future__ import annotations

import dataclasses

import pytest
from pydantic import ValidationError

from shepard.backends.arraytasks import new_token, pack_lines, tasks_for, token_age, token_pack
from shepard.backends.aws_batch import assign
from shepard.backends.aws_batch.backend import (
    _state,
    batch_identity,
    definition_request,
    job_name,
    token_in_name,
)
from shepard.backends.aws_batch.config import BatchConfig
from shepard.errors import ConfigError, ShepardError
from shepard.model import Job, JobStatus, Outcome
from shepard.storage.memory import MemoryStore


def test_identity_from_array_index_or_job_id_suffix() -> None:
    real = {"AWS_BATCH_JOB_ID": "abc-1:7", "AWS_BATCH_JOB_ARRAY_INDEX": "7"}
    emulated = {"AWS_BATCH_JOB_ID": "abc-1:12"}  # moto sets only the id
    single = {"AWS_BATCH_JOB_ID": "abc-2"}
    assert batch_identity(real) == ("abc-1", 7)
    assert batch_identity(emulated) == ("abc-1", 12)
    assert batch_identity(single) == ("abc-2", 0)
    assert batch_identity({}) is None


def test_job_names_follow_batch_pattern() -> None:
    name = job_name("my flock.v2", "20261202-101010-abcdef")
    assert name == "shepard-my-flock-v2-20261202-101010-abcdef"
    long = job_name("x" * 300, "20261202-101010-abcdef-p25")
    assert len(long) <= 128
    assert token_in_name(long) == "20261202-101010-abcdef-p25"  # a long flock name is cut
    assert token_in_name(name) == "20261202-101010-abcdef"
    assert token_in_name("shepard-other-job") is None


def test_tokens_say_the_pack_and_packs_split_the_manifest() -> None:
    plain, packed = new_token(1.8e9), new_token(1.8e9, 4)
    assert token_pack(plain) == 1 and token_pack(packed) == 4
    assert packed.startswith(plain[:15]) and packed.endswith("-p4")
    assert token_age(packed, 1.8e9 + 30) == pytest.approx(30, abs=1)  # still dated
    assert tasks_for(10, 4) == 3 and tasks_for(8, 4) == 2 and tasks_for(3, 1) == 3
    assert [list(pack_lines(4, c, 10)) for c in range(3)] == [
        [0, 1, 2, 3], [4, 5, 6, 7], [8, 9],
    ]  # fmt: skip


def _job(n: int) -> Job:
    return Job(id=f"01a2367a-0000-7000-8000-{n:012d}", seq=n, status=JobStatus.QUEUED,
               params={"ITEM": n, "NAME": "é\n\"x\""}, bundle_key=None, attempt=n % 2,
               max_attempts=3, timeout=None if n % 3 else 30.0, batch="b",
               submitted_at=1.5)  # fmt: skip


def test_each_child_reads_its_own_job() -> None:
    store = MemoryStore("test-aws-assign")
    jobs = [_job(n) for n in range(40)]
    assign.write_assignment(store, "tok", jobs, 'name = "f"\n', 100.5)
    for index in (0, 1, 17, 39):
        job = assign.read_assignment(store, "tok", index)
        assert job.id == jobs[index].id
        assert dict(job.params) == dict(jobs[index].params)
        assert job.attempt == jobs[index].attempt + 1  # the attempt the head will record
        assert job.timeout == jobs[index].timeout
        assert job.started_at == 100
    with pytest.raises(ShepardError, match="no job on line 40"):
        assign.read_assignment(store, "tok", 40)
    assert store.get_bytes(assign.toml_key("tok")) == b'name = "f"\n'


def test_a_child_reads_its_pack_and_the_last_pack_may_be_short() -> None:
    store = MemoryStore("test-aws-assign-pack")
    jobs = [_job(n) for n in range(10)]
    assign.write_assignment(store, "tok", jobs, "", 100.0)
    for lines in (range(0, 4), range(4, 8), range(8, 12)):
        found = assign.read_assignments(store, "tok", lines)
        assert [j.id for j in found] == [j.id for j in jobs[lines.start : lines.stop]]
    assert [j.params for j in assign.read_assignments(store, "tok", range(9, 13))] == [
        jobs[9].params
    ]
    with pytest.raises(ShepardError, match="no job on lines 12-15"):
        assign.read_assignments(store, "tok", range(12, 16))


def test_outcome_lines_are_listed_once() -> None:
    store = MemoryStore("test-aws-outcome-lines")
    job = assign.read_assignment(_one(store), "t", 0)
    for line in (0, 3, 11):
        assign.write_outcome(store, "arr", line, job, Outcome(JobStatus.SUCCEEDED))
    assign.write_outcome(store, "arr-2", 5, job, Outcome(JobStatus.SUCCEEDED))
    assert assign.outcome_lines(store, "arr") == {0, 3, 11}
    assert assign.outcome_lines(store, "none") == set()


def test_start_time_is_the_catalogs() -> None:
    job = _job(2)
    assert assign.start_time(job, 100.7) == 100
    later = dataclasses.replace(job, started_at=100)
    assert assign.start_time(later, 100.2) == 101  # never the same as an earlier attempt's


def test_outcomes_round_trip() -> None:
    store = MemoryStore("test-aws-outcome")
    job = assign.read_assignment(_one(store), "t", 0)
    outcome = Outcome(JobStatus.FAILED, reason="exit code 3", exit_code=3,
                      error_bundle="log@x_1.zip", retryable=False)  # fmt: skip
    assert assign.read_outcome(store, "arr", 0) is None
    assign.write_outcome(store, "arr", 0, job, outcome)
    assert assign.read_outcome(store, "arr", 0) == (job.id, job.attempt, outcome)


def test_what_an_array_left_is_removed_but_its_manifest() -> None:
    store = MemoryStore("test-aws-remove")
    jobs = [_job(n) for n in range(3)]
    assign.write_assignment(store, "tok", jobs, "", 5.0)
    assign.write_array(store, "tok", "arr-1", 5.0)
    store.put_bytes("tok.jobs", b"manifest")
    for line, job in enumerate(jobs):
        assign.write_outcome(store, "arr-1", line, job, Outcome(JobStatus.SUCCEEDED))
    store.put_bytes(assign.cancelled_key(jobs[1].id), b"")
    store.put_bytes(assign.outcome_key("arr-2", 0), b"{}")  # another array's
    assign.remove(store, "tok", [j.id for j in jobs])
    assert sorted(store.list()) == ["outcomes/arr-2/0.json", "tok.jobs"]


def _one(store: MemoryStore) -> MemoryStore:
    assign.write_assignment(store, "t", [_job(1)], "", 5.0)
    return store


def test_failed_children_are_told_apart_by_reason() -> None:
    assert _state({"status": "RUNNING"}) == "RUNNING"
    assert _state({"status": "FAILED", "statusReason": "Job attempt duration exceeded timeout"}) \
        == "TIMEOUT"  # fmt: skip
    assert _state({"status": "FAILED", "container": {"reason": "OutOfMemoryError: killed"}}) \
        == "OUT_OF_MEMORY"  # fmt: skip
    assert _state({"status": "FAILED", "statusReason": "Host EC2 terminated"}) == "FAILED"


def test_a_child_stopped_at_its_time_limit_without_a_reason_timed_out() -> None:
    # the emulator gives no reason: a child that ran its whole attemptDurationSeconds timed out
    ran = {"status": "FAILED", "startedAt": 1_000_000, "stoppedAt": 1_064_500}
    assert _state(ran, 64) == "TIMEOUT"
    assert _state(ran, 65) == "FAILED"  # stopped before its limit: lost
    assert _state(ran) == "FAILED"  # no limit known
    assert _state({**ran, "statusReason": "Host EC2 terminated"}, 64) == "FAILED"
    assert _state({**ran, "container": {"exitCode": 1}}, 64) == "FAILED"  # the worker ended it
    assert _state({"status": "FAILED", "stoppedAt": 1_064_500}, 64) == "FAILED"  # never started


def test_job_definition_carries_the_resources() -> None:
    cfg = BatchConfig(queue="q", image="repo:1", vcpus=2, memory=4096, gpus=1, fargate=True,
                      job_role="arn:aws:iam::1:role/r", efs={"/mnt/efs": "fs-123"},
                      worker_env={"A": "1"})  # fmt: skip
    request = definition_request("shepard-f", cfg, "/f")
    container = request["containerProperties"]
    assert request["platformCapabilities"] == ["FARGATE"]
    assert {"type": "GPU", "value": "1"} in container["resourceRequirements"]
    assert {"type": "VCPU", "value": "2"} in container["resourceRequirements"]
    assert container["jobRoleArn"] == "arn:aws:iam::1:role/r"
    assert container["volumes"][0]["efsVolumeConfiguration"] == {"fileSystemId": "fs-123"}
    assert container["mountPoints"][0]["containerPath"] == "/mnt/efs"
    assert container["environment"] == [{"name": "A", "value": "1"}]
    with pytest.raises(ConfigError, match="shepard deploy"):
        definition_request("shepard-f", BatchConfig(queue="q"), "/f")


def test_config_refuses_bad_values() -> None:
    with pytest.raises(ValidationError, match="less than or equal to 10000"):
        BatchConfig(array_size=10_001)
    with pytest.raises(ValidationError, match="less than or equal to 50"):
        BatchConfig(submit_rate=60)
    with pytest.raises(ValidationError, match="not an environment variable name"):
        BatchConfig(worker_env={"A-B": "1"})
    with pytest.raises(ValidationError, match="EFS file system id"):
        BatchConfig(efs={"/mnt": "vol-1"})
