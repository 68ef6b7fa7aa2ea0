"""The pure parts of shepherd compatibility: request checks, job ids, status records, the
bundle key that marks a shepherd job, and `[shepherd.models]` in flock.toml."""

from __future__ import annotations

import pickle
from dataclasses import replace
from pathlib import Path

import pytest

from shepard import config
from shepard.errors import ConfigError
from shepard.model import Job, JobStatus
from shepard.runtime import buckets
from shepard.runtime.buckets import ModelPayloads

jobs = pytest.importorskip("shepard.server.shepherd_jobs")

JOB = Job(
    id="j1", seq=1, status=JobStatus.QUEUED, params={"MODEL_NAME": "m", "MODEL_VERSION": ""},
    bundle_key=buckets.bundle_key("my-job"), attempt=0, max_attempts=1, timeout=None,
    batch="shepherd:my-job", submitted_at=1_700_000_000.25,
)  # fmt: skip


def test_bundle_key_marks_only_shepherd_jobs() -> None:
    assert buckets.bucket_of(JOB) == "my-job"
    assert buckets.bucket_of(replace(JOB, bundle_key=None)) is None
    assert buckets.bucket_of(replace(JOB, bundle_key="inputs/my-job.zip")) is None
    assert buckets.bucket_of(replace(JOB, bundle_key="s3-thing.zip")) is None


def test_timestamps_are_naive_utc_with_microseconds() -> None:
    assert buckets.timestamp(0) == "1970-01-01T00:00:00.000000"
    assert buckets.timestamp(1_700_000_000.25) == "2023-11-14T22:13:20.250000"
    assert buckets.timestamp(1.9999999) == "1970-01-01T00:00:02.000000"
    assert buckets.timestamp(None) is None


@pytest.mark.parametrize(
    ("status", "reason", "expected", "message"),
    [
        (JobStatus.QUEUED, None, "queued", None),
        (JobStatus.RUNNING, None, "processing", None),
        (JobStatus.SUCCEEDED, None, "done", None),
        (JobStatus.FAILED, "exit code 2", "failed", "exit code 2"),
        (JobStatus.CANCELLED, "cancelled", "failed", "cancelled: cancelled"),
    ],
)
def test_job_records(
    status: JobStatus, reason: str | None, expected: str, message: str | None
) -> None:
    job = replace(JOB, status=status, reason=reason, started_at=1_700_000_001,
                  finished_at=1_700_000_002.5)  # fmt: skip
    record = buckets.job_record(job)
    assert record["status"] == expected
    assert record["model"] == {"name": "m", "version": None}
    assert record["enqueued_at"] == "2023-11-14T22:13:20.250000"
    assert (record["processing_started_at"] is None) == (status is JobStatus.QUEUED)
    assert (record["finished_at"] is None) == (not status.terminal)
    if message is None:
        assert record["error_details"] is None
    else:
        assert record["error_details"] == {
            "message": message, "exception_type": None, "exception_traceback": None,
        }  # fmt: skip


@pytest.mark.parametrize(
    "job_id", ["abc", "a-b.c", "0" * 63, "sh-3f2b6a1e-2b1c-4d7e-9a7b-1c2d3e4f5a6b"]
)
def test_good_job_ids(job_id: str) -> None:
    assert jobs.bucket_name_problem(job_id) is None


@pytest.mark.parametrize(
    "job_id", ["q1", "Upper_Case", "a" * 64, "-abc", "abc-", "a..b", "a.-b", "192.168.1.1", "a/b"]
)
def test_bad_job_ids(job_id: str) -> None:
    assert jobs.bucket_name_problem(job_id) is not None


def test_start_job_bodies() -> None:
    ok = jobs.parse_start_job({"job_id": "abc", "model": {"name": "n"}, "payload": "p"})
    assert ok == jobs.StartJob("abc", "n", None, None, "p")
    cases = [
        ([], "The request body must be a JSON object"),
        ({"job_id": "abc", "model": {}, "x": 1}, "Invalid input: ``{'x': 'Rogue field'}``"),
        ({"model": {}}, "Invalid input: ``{'job_id': 'This field is required.'}``"),
        ({"job_id": "abc", "model": "m"}, "Invalid input: ``{'model': "),
        ({"job_id": "abc", "model": {"name": 1}}, "Invalid input: ``{'model.name': "),
        ({"job_id": "abc", "model": {}, "payload": {}}, "Invalid input: ``{'payload': "),
        ({"job_id": "ab", "model": {}}, "Invalid job id `ab`: "),
    ]
    for body, message in cases:
        with pytest.raises(jobs.Refusal) as caught:
            jobs.parse_start_job(body)
        assert caught.value.status == 400
        assert caught.value.message.startswith(message), body


def test_models_in_flock_toml() -> None:
    cfg = config.parse(
        {
            "name": "f",
            "payload": {"command": "echo flock"},
            "shepherd": {"models": {"m:1": {"command": "echo m1"}, "m": {"command": "echo any m"}}},
        }
    )
    assert cfg.shepherd.payload_for("m", "1").command == "echo m1"  # type: ignore[union-attr]
    assert cfg.shepherd.payload_for("m", "2").command == "echo any m"  # type: ignore[union-attr]
    assert cfg.shepherd.payload_for("other", "1") is None
    with pytest.raises(ConfigError, match=r"shepherd\.models"):
        config.parse({"name": "f", "shepherd": {"models": {"a:b:c": {"command": "x"}}}})
    with pytest.raises(ConfigError, match=r"unknown key 'shepherd\.models\.m\.nope'"):
        config.parse({"name": "f", "shepherd": {"models": {"m": {"nope": 1}}}})


def test_model_payloads_pick_and_survive_pickling() -> None:
    cfg = config.parse(
        {
            "name": "f",
            "payload": {"command": "echo flock"},
            "shepherd": {"models": {"m:": {"command": "echo own"}}},
        }
    )
    models = pickle.loads(pickle.dumps(ModelPayloads(cfg)))
    default = object()
    own = models.payload_for(JOB, default)
    assert own is not default and own is models.payload_for(JOB, default)  # built once
    other = replace(JOB, params={"MODEL_NAME": "x", "MODEL_VERSION": "1"})
    assert models.payload_for(other, default) is default


def test_a_shepherd_job_names_no_zip() -> None:
    from shepard.runtime.contract import input_zip_name

    assert input_zip_name(JOB) == "None"
    assert input_zip_name(replace(JOB, bundle_key="inbox/b.zip")) == "b.zip"


def test_register_once(tmp_path: Path) -> None:
    from shepard.flock import Flock
    from shepard.model import JobSpec

    cfg = config.parse({"name": "f", "payload": {"command": "true"}})
    flock = Flock.create(tmp_path / "f", cfg)
    spec = JobSpec({"MODEL_NAME": "m"}, buckets.bundle_key("my-job"))
    first = flock.register_once("shepherd:my-job", spec, request_hash="a", now=5.0)
    assert first is not None
    assert list(flock.batch_ids("shepherd:my-job")) == [first]
    job = flock.job(first)
    assert (job.batch, job.submitted_at) == ("shepherd:my-job", 5.0)
    assert buckets.bucket_of(job) == "my-job"
    assert flock.register_once("shepherd:my-job", spec, request_hash="a") is None  # replayed
    assert flock.register_once("shepherd:my-job", spec, request_hash="b") is None  # other body
    assert list(flock.batch_ids("shepherd:my-job")) == [first]
    flock.close()


def test_a_models_table_sets_its_timeout_and_env(tmp_path: Path) -> None:
    from shepard.flock import Flock

    cfg = config.parse(
        {
            "name": "f",
            "payload": {"command": "true", "timeout": 60, "env": {"A": "flock", "B": "flock"}},
            "shepherd": {"models": {"m": {"command": "echo m", "timeout": 5, "env": {"B": "m"}}}},
        }
    )
    ctx = Flock.create(tmp_path / "f", cfg).runtime_context()
    assert ctx.models is not None
    own = ctx.models.context_for(JOB, ctx)
    assert (own.timeout, dict(own.env)) == (5, {"A": "flock", "B": "m"})
    assert own.payload is not ctx.payload
    other = replace(JOB, params={"MODEL_NAME": "x", "MODEL_VERSION": ""})
    assert ctx.models.context_for(other, ctx) is ctx
