"""build_env and friends: the runtime contract as a pure function."""

from __future__ import annotations

import calendar
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from shepard.model import Job, JobStatus
from shepard.params import EXTRA_RESERVED, RESERVED
from shepard.runtime import RuntimeContext
from shepard.runtime.contract import (
    RUNTIME_NAMES,
    HostFacts,
    build_env,
    end_time,
    format_utc,
    input_zip_name,
)
from shepard.runtime.workspace import SetupError, Workspace, plan_workspace
from tests.unit.test_runtime_worker import make_ctx

HOST = HostFacts("node-7", "4096")
START = calendar.timegm((2026, 11, 22, 9, 5, 3))


def make_job(**changes: Any) -> Job:
    job = Job("job-1", 1, JobStatus.RUNNING, {}, None, 1, 1, None, None, 0.0, started_at=START)
    return replace(job, **changes)


def env_of(job: Job, ctx: RuntimeContext, base: dict[str, str] | None = None) -> dict[str, str]:
    ws = plan_workspace(ctx, job.id)
    return build_env(job, ctx, start_time=START, paths=ws, base=base or {}, host=HOST)


def test_runtime_names_match_the_reserved_parameter_names() -> None:
    assert (RESERVED | EXTRA_RESERVED) - {"PATH"} == RUNTIME_NAMES


def test_job_status_format() -> None:
    env = env_of(make_job(), make_ctx(Path("/x")))
    assert env["JOB_STATUS"] == "calling_payload_code 2026/11/22-09:05:03 U.T.C."
    assert format_utc(0) == "1970/01/01-00:00:00 U.T.C."


def test_layers_and_precedence(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, env={"A": "ctx", "B": "ctx", "start_time": "ctx"})
    job = make_job(params={"B": "param", "C": 3, "flag": False})
    base = {"PATH": "/bin", "A": "base", "Z": "base", "Uuid": "base", "LUSTRE_INPUT_NAME": "x"}
    env = env_of(job, ctx, base)
    assert env["PATH"] == "/bin"
    assert (env["A"], env["B"], env["C"], env["flag"], env["Z"]) == (
        "ctx",
        "param",
        "3",
        "False",
        "base",
    )
    assert "Uuid" not in env and "start_time" not in env and "LUSTRE_INPUT_NAME" not in env
    assert env["UUID"] == "job-1"
    assert env["START_TIME"] == str(START)
    assert env["HOSTNAME"] == "node-7" and env["ULIMIT_FILENO"] == "4096"


def test_runtime_variables_always_win(tmp_path: Path) -> None:
    env = env_of(make_job(params={"uuid": "x"}), make_ctx(tmp_path))
    assert env["UUID"] == "job-1"  # a (normally refused) lower-case param does not clash
    assert env["uuid"] == "x"


def test_filesystem_variables_only_when_configured(tmp_path: Path) -> None:
    plain = env_of(make_job(), make_ctx(tmp_path))
    assert not [k for k in plain if k.startswith(("EFS_", "LUSTRE_"))]
    assert plain["USES_EFS"] == plain["USES_LUSTRE"] == "False"
    env = env_of(make_job(), make_ctx(tmp_path, efs=tmp_path / "efs"))
    assert env["USES_EFS"] == "True" and env["USES_LUSTRE"] == "False"
    assert env["EFS_INPUT_NAME"] == str(tmp_path / "efs" / "job-1" / "input")
    assert env["EFS_OUTPUT_NAME"] == str(tmp_path / "efs" / "job-1" / "output")
    assert env["EFS_READ_ONLY_PATH"] == str(tmp_path / "efs")
    assert not [k for k in env if k.startswith("LUSTRE_")]


def test_end_time(tmp_path: Path) -> None:
    assert "END_TIME" not in env_of(make_job(), make_ctx(tmp_path))
    assert env_of(make_job(), make_ctx(tmp_path, timeout=60))["END_TIME"] == str(START + 60)
    job = make_job(timeout=7.9)  # the job's own timeout wins over the flock's
    assert env_of(job, make_ctx(tmp_path, timeout=60))["END_TIME"] == str(START + 7)
    assert end_time(100, None) is None
    assert end_time(100, 0.5) == 100


def test_input_zip_name_and_is_invoked(tmp_path: Path) -> None:
    bundle = make_job(bundle_key="a/b/run-1.zip")
    assert input_zip_name(bundle) == "run-1.zip"
    assert input_zip_name(make_job()) == "None"
    env = env_of(bundle, make_ctx(tmp_path))
    assert (env["INPUT_ZIP_NAME"], env["IS_INVOKED"]) == ("run-1.zip", "False")
    assert env_of(make_job(), make_ctx(tmp_path))["IS_INVOKED"] == "True"


def test_buckets_are_store_locations(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    env = env_of(make_job(), ctx)
    assert env["INPUTS_BUCKET"] == str((tmp_path / "inputs").resolve())
    assert env["OUTPUTS_BUCKET"] == ctx.outputs.location
    assert env["ERROR_BUCKET"] == env["ERRORS_BUCKET"] == ctx.errors.location
    assert env["QUICK_DEPLOY_BUCKET"] == ctx.quick_deploy.location
    assert env["ALLOW_DOCKER_ACCESS"] == "False"


def test_folders(tmp_path: Path) -> None:
    ws = plan_workspace(make_ctx(tmp_path, lustre=tmp_path / "lu"), "job-1")
    assert ws == Workspace(tmp_path / "work" / "job-1", None, tmp_path / "lu" / "job-1")
    assert ws.input == tmp_path / "work" / "job-1" / "input"
    assert ws.secrets == ws.input / "secrets"
    assert [k for k, _ in ws.output_folders()] == ["root", "lustre"]


@pytest.mark.parametrize("job_id", ["", "..", ".", "a/b", "-x", "a b"])
def test_unsafe_job_ids_are_refused(tmp_path: Path, job_id: str) -> None:
    with pytest.raises(SetupError):
        plan_workspace(make_ctx(tmp_path), job_id)


def test_build_env_is_pure(tmp_path: Path) -> None:
    ctx, job = make_ctx(tmp_path), make_job()
    base = {"HOME": "/h"}
    first = env_of(job, ctx, base)
    assert env_of(job, ctx, base) == first
    assert base == {"HOME": "/h"}
    assert not tmp_path.joinpath("work").exists()
