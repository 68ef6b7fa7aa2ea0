"""What the process kinds (command, quick-deploy) share: running `/bin/sh -c` as a child
process group of the worker, with the worker's environment under the runtime contract's."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

from shepard.model import Job
from shepard.payloads.base import Launch
from shepard.runtime.context import RuntimeContext
from shepard.runtime.contract import build_env
from shepard.runtime.process import ProcessResult, run_payload
from shepard.runtime.workspace import SetupError, Workspace

NO_COMMAND = (
    "no payload command: set payload.command for the flock or give the job a QUICK_DEPLOY_DIRECTORY"
)


class ProcessPayload:
    """The `environment` and `run` of payloads that are processes (runtime/process.py)."""

    def environment(
        self,
        job: Job,
        ctx: RuntimeContext,
        *,
        start_time: int,
        ws: Workspace,
        base: Mapping[str, str],
    ) -> dict[str, str]:
        """build_env over the worker's environment (keeps PATH, HOME, ...)."""
        return build_env(job, ctx, start_time=start_time, paths=ws, base=base)

    def run(
        self,
        launch: Launch,
        *,
        job: Job,
        ctx: RuntimeContext,
        ws: Workspace,
        env: Mapping[str, str],
        logs: tuple[Path, Path],
        deadline: float | None,
        stop: threading.Event,
        grace: float,
    ) -> ProcessResult:
        """`run_payload` in its own process group (see Payload.run for the guarantees)."""
        if launch.command is None:  # a process has no command of its own
            raise SetupError(NO_COMMAND, retryable=False)
        return run_payload(
            launch.command, cwd=launch.cwd, env=env, stdout=logs[0], stderr=logs[1],
            deadline=deadline, stop=stop, grace=grace,
        )  # fmt: skip
