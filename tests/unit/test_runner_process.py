"""RunnerProcess: attempts run in a child process, with stop requests and child deaths."""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path

from shepard.backends.procs import RunnerProcess
from shepard.model import JobStatus
from shepard.runtime import AttemptControl, RuntimeContext
from tests.unit.test_runtime_worker import make_ctx, make_job, members


def test_an_attempt_runs_in_the_child_and_publishes(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, command='echo "$$" > "$ROOT_OUTPUT_NAME/pid.txt"')
    runner = RunnerProcess(ctx)
    try:
        outcome = runner(make_job(), ctx, AttemptControl(), slot=tmp_path / "slot")
        again = runner(make_job(), ctx, AttemptControl(), slot=tmp_path / "slot")
    finally:
        runner.close()
    assert outcome.status is JobStatus.SUCCEEDED and again.status is JobStatus.SUCCEEDED
    shell_pid = int(members(ctx.outputs, outcome.outputs[0])["pid.txt"])
    assert shell_pid != os.getpid()


def test_a_stop_request_cancels_the_running_attempt(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, command="sleep 60")
    runner = RunnerProcess(ctx)
    control = AttemptControl(stop_reason="cancelled by user")
    threading.Timer(0.5, control.stop.set).start()
    began = time.monotonic()
    try:
        outcome = runner(make_job(), ctx, control)
    finally:
        runner.close()
    assert outcome.status is JobStatus.CANCELLED and outcome.reason == "cancelled by user"
    assert time.monotonic() - began < 15


def test_a_dead_child_fails_the_attempt_and_is_replaced(tmp_path: Path) -> None:
    ctx: RuntimeContext = make_ctx(tmp_path, command="sleep 5")  # orphaned by the kill
    runner = RunnerProcess(ctx)
    try:
        control = AttemptControl()
        killer = threading.Timer(0.5, lambda: os.kill(runner._proc.pid, signal.SIGKILL))  # type: ignore[union-attr]
        killer.start()
        outcome = runner(make_job(), ctx, control)
        assert outcome.status is JobStatus.FAILED and outcome.retryable
        assert "worker process died" in (outcome.reason or "")
        quick = replace(ctx, command="true")
        runner.ctx = quick
        assert runner(make_job(), quick, AttemptControl()).status is JobStatus.SUCCEEDED
    finally:
        runner.close()
