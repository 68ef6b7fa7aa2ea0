"""Hardening through the real executable: environment limits at submission, retrieval of odd
outputs, following logs across attempts, and output meant for scripts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.acceptance.conftest import Cli

pytestmark = pytest.mark.acceptance


def test_a_job_whose_environment_cannot_exist_is_refused_at_submission(
    cli: Cli, tmp_path: Path
) -> None:
    cli.init("true")
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"DATA": "x" * (130 << 10)}))
    result = cli("submit", "--json-file", str(big), ok=False)
    assert result.code == 2 and "128 KiB" in result.err and "Traceback" not in result.err
    folder = tmp_path / "batch"
    folder.mkdir()
    (folder / "inputs.json").write_text(json.dumps({"DATA": "x" * (130 << 10)}))
    result = cli("batch", str(folder), ok=False)
    assert result.code == 2 and "128 KiB" in result.err
    assert cli("query", "--json").json()["counts"]["queued"] == 0


def test_logs_follow_a_job_waiting_for_its_retry_to_its_end(cli: Cli, tmp_path: Path) -> None:
    from tests.acceptance.test_cli_ops import Lines, configure, eventually, job, stop

    gate = tmp_path / "go"
    cli.init(f"if [ -e {gate} ]; then echo second; exit 0; fi; echo first; exit 3")
    configure(cli, "retry", "backoff = 3")
    job_id = cli("submit", "--json", "{}", "--attempts", "2", "--ids").out.strip()
    sheep = cli.popen("up")
    try:
        eventually(
            lambda: (info := job(cli, job_id))["status"] == "queued" and info["attempt"] == 1,
            what="attempt 1 failed, retry pending",
        )
        follower = cli.popen("logs", job_id, "-f")
        assert follower.stdout is not None and follower.stderr is not None
        lines, notes = Lines(follower.stdout), Lines(follower.stderr)
        assert "queued for attempt 2 after attempt 1" in notes.next()
        gate.touch()
        assert follower.wait(timeout=30) == 0, "the job succeeded at attempt 2"
        assert lines.rest() == "second\n", "attempt 1 is not repeated"
        said = notes.rest()
        assert f"--- job {job_id}: attempt 2 ---" in said and "succeeded (attempt 2)" in said
    finally:
        assert stop(sheep) == 0
    cancelled = cli("submit", "--json", "{}", "--ids").out.strip()
    cli("cancel", cancelled)
    assert cli("logs", cancelled, "-f", ok=False).code == 1
