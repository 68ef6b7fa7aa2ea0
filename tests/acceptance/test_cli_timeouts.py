"""Timeouts through the real executable: the whole process tree dies, the job says why."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from tests.acceptance.conftest import Cli, zip_text

pytestmark = pytest.mark.acceptance


def tree_payload(pids: Path) -> str:
    return f"echo $$ >> {pids}; sleep 30 & echo $! >> {pids}; wait"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def check_timed_out(cli: Cli, result_out: str, pids: Path, seconds: str) -> None:
    job_id = re.search(r"submitted job (\S+)", result_out).group(1)  # type: ignore[union-attr]
    info = cli("show", job_id, "--json").json()
    assert info["status"] == "failed" and info["reason"] == f"timeout after {seconds}"
    assert "timeout" in zip_text(Path(info["error_bundle"]), "exit_status.txt")
    deadline = time.monotonic() + 10
    while any(alive(int(p)) for p in pids.read_text().split()):
        assert time.monotonic() < deadline, "the payload's process tree outlived its timeout"
        time.sleep(0.1)


def test_flock_timeout_kills_the_process_tree(cli: Cli, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    cli.init(tree_payload(pids), "--timeout", "1")
    result = cli("submit", "--json", "{}", "--wait", ok=False)
    check_timed_out(cli, result.out, pids, "1s")


def test_a_job_timeout_overrides_the_flock(cli: Cli, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    cli.init(tree_payload(pids))
    began = time.monotonic()
    result = cli("submit", "--json", "{}", "--timeout", "1.5", "--wait", ok=False)
    assert time.monotonic() - began < 20
    check_timed_out(cli, result.out, pids, "1.5s")
