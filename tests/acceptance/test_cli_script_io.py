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
