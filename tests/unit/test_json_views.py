"""`shepard show --json` and `query --json` speak the shared job view, and keep their keys."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from shepard.cli.main import app
from shepard.config import FlockConfig, PayloadConfig
from shepard.flock import Flock
from shepard.model import JobStatus, Outcome
from shepard.views import JobView

SHOW_KEYS = {
    "id", "status", "params", "bundle", "batch", "attempt", "max_attempts", "timeout",
    "submitted_at", "start_time", "finished_at", "worker", "placement", "reason", "exit_code",
    "outputs", "error_bundle", "logs", "history",
}  # fmt: skip
QUERY_KEYS = {"id", "status", "attempt", "params", "reason", "start_time", "outputs"}


def made_flock(tmp_path: Path) -> tuple[Path, str]:
    folder = tmp_path / "flock"
    flock = Flock.create(folder, FlockConfig(name="f", payload=PayloadConfig(command="true")))
    (job_id,) = flock.submit([{"TAG": "x"}]).ids
    flock.store("outputs").put_bytes("r.zip", b"zip")
    (job,) = flock.catalog.claim("w", now=1e9, lease=60)
    flock.catalog.finish(
        job_id, job.attempt, Outcome(JobStatus.SUCCEEDED, outputs=("r.zip",)), now=1e9 + 1
    )
    flock.close()
    return folder, job_id


def run_json(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_show_json_is_the_job_view_plus_the_cli_keys(tmp_path: Path) -> None:
    folder, job_id = made_flock(tmp_path)
    info = run_json("show", job_id, "--flock", str(folder), "--json")
    assert SHOW_KEYS | set(JobView.model_fields) <= set(info)
    assert info["outputs"] == [str(folder.resolve() / "outputs" / "r.zip")]
    assert (info["start_time"], info["tag"], info["finished"]) == (
        10**9,
        "x",
        "2001-09-09T01:46:41Z",
    )
    assert [h["status"] for h in info["history"]] == ["queued", "running", "succeeded"]


def test_query_json_lists_job_views(tmp_path: Path) -> None:
    folder, job_id = made_flock(tmp_path)
    (job,) = run_json("query", "--flock", str(folder), "--json")["jobs"]
    assert job["id"] == job_id
    assert QUERY_KEYS | set(JobView.model_fields) <= set(job)
    assert job["outputs"] == [str(folder.resolve() / "outputs" / "r.zip")]
