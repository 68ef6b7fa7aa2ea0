"""Spare runners (backends/spares.py): which commands start them, how many, and that a local
backend adopts them while those it leaves exit quietly."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from shepard.backends import spares
from shepard.backends.procs import prefork_spares
from shepard.model import JobStatus
from tests.unit.test_runner_process import Slot

CORES = min(os.cpu_count() or 1, 16)


@pytest.mark.parametrize(
    ("args", "count"),
    [
        (["up"], CORES),
        (["up", "--workers", "3"], 3),
        (["--verbose", "up", "--workers=5", "--no-inbox"], 5),
        (["submit", "--range", "ITEM=1-9", "--wait"], CORES),
        (["submit", "-w", "--json", "{}"], CORES),
        (["batch", "folder", "--wait"], CORES),
        (["submit", "--range", "ITEM=1-9"], 0),
        (["submit", "--range", "ITEM=1-9", "--no-wait"], 0),
        (["query", "--wait"], 0),
        (["serve", "--workers", "2"], 0),
        (["--help"], 0),
        ([], 0),
        (["up", "--workers", "99"], 16),
    ],
)
def test_only_commands_that_run_jobs_here_want_spares(args: list[str], count: int) -> None:
    assert spares.wanted(args) == count


def _single_threaded() -> None:
    if threading.active_count() != 1:
        pytest.skip(f"this test process runs other threads: {threading.enumerate()}")


def test_a_local_runner_adopts_a_spare_and_the_rest_exit_quietly(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    _single_threaded()
    prefork_spares(2)
    pids = [spare.pid for spare in spares._spares]
    assert len(pids) == 2
    slot = Slot(tmp_path, 'echo "$ITEM" > "$ROOT_OUTPUT_NAME/o.txt"', fork=True)
    try:
        assert slot.runner.pid == pids[0]  # adopted, not forked anew
        assert spares._spares == []  # the other one closed and reaped
        with pytest.raises(ProcessLookupError):
            os.kill(pids[1], 0)
        slot.add(1)
        job = slot.start_one()
        slot.wait_for(lambda: slot.job(job.id).status is JobStatus.SUCCEEDED)
    finally:
        slot.close()
    assert capfd.readouterr().err == ""


def test_a_spare_left_waiting_exits_with_status_0_when_its_pipe_closes(
    capfd: pytest.CaptureFixture[str],
) -> None:
    _single_threaded()
    prefork_spares(1)
    spare = spares.take()
    assert spare is not None and spares.take() is None
    spare.stdin.close()
    deadline = time.monotonic() + 30
    while True:
        try:
            assert spare.wait(timeout=0.5) == 0
            break
        except TimeoutError:
            assert time.monotonic() < deadline, "the spare did not exit"
    spare.stdout.close()
    assert capfd.readouterr().err == ""
