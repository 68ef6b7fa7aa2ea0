"""The tasks kind: every job runs the flock's tasks.json document (Cloudburst's format,
docs/tasks.md) with `python -m shepard.tasks`, as a process in the job's root folder.

The runner is a process of its own, so the runtime's guarantees hold unchanged (logs, the
job's timeout, cancel: SIGTERM reaches the runner, which passes it on to the commands it
runs). It gets the flock's S3 endpoint and region, so fetch and store steps use the same S3
settings as the flock's stores. The document is checked when the flock is created and at
every submission (`check_flock_document`), not only when a job runs.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from shepard.errors import ConfigError
from shepard.model import Job
from shepard.payloads.base import Launch
from shepard.payloads.process import ProcessPayload
from shepard.payloads.quickdeploy import job_launch
from shepard.runtime.context import RuntimeContext
from shepard.runtime.workspace import Workspace

if TYPE_CHECKING:
    from shepard.config import FlockConfig, Flockdir, PayloadConfig


@dataclass(frozen=True)
class TasksPayload(ProcessPayload):
    """`kind = "tasks"`. A job naming a QUICK_DEPLOY_DIRECTORY runs that folder instead."""

    command: str
    kind: ClassVar[str] = "tasks"

    @classmethod
    def check(cls, payload: PayloadConfig) -> None:
        if not payload.tasks:
            raise ValueError(
                'kind "tasks" needs payload.tasks, the path of a tasks.json document '
                "(shepard init --payload-tasks FILE)"
            )
        if not Path(payload.tasks).is_absolute():
            raise ValueError(f"payload.tasks {payload.tasks!r}: give an absolute path")
        if payload.image is not None or (payload.command and payload.command.strip()):
            raise ValueError(
                'kind "tasks" runs payload.tasks: remove payload.command and payload.image'
            )

    @classmethod
    def from_config(cls, config: FlockConfig) -> TasksPayload:
        """Checks the document once for the worker process, so that each job's runner does
        not load the schema checker again while the file stays as it was."""
        from shepard.tasks.document import checked_digest

        assert config.payload.tasks is not None  # check() passed
        digest = checked_digest(Path(config.payload.tasks))
        return cls(runner_command(config.payload.tasks, config, checked=digest))

    def prepare(self, job: Job, ctx: RuntimeContext, ws: Workspace) -> Launch:
        launch = job_launch(job, ctx, ws)
        return launch if launch is not None else Launch(self.command, ws.root)


def runner_command(document: str, config: FlockConfig, *, checked: str | None = None) -> str:
    """The command line of the runner for `document`, with the flock's S3 settings (and the
    digest of the document when it was found valid)."""
    words = [sys.executable, "-m", "shepard.tasks", document]
    if checked is not None:
        words += ["--checked", checked]
    if config.storage.endpoint_url:
        words += ["--endpoint-url", config.storage.endpoint_url]
    if config.storage.region:
        words += ["--region", config.storage.region]
    return shlex.join(words)


def check_flock_document(flockdir: Flockdir) -> None:
    """ConfigError listing every problem of the flock's tasks document (before substitution:
    a variable's value cannot be judged before a job has its parameters)."""
    path = flockdir.config.payload.tasks
    if path is None:
        raise ConfigError('kind "tasks" needs payload.tasks')
    check_document(Path(path))


def check_document(path: Path) -> None:
    """ConfigError listing every problem of the tasks document at `path`."""
    from shepard.tasks import document

    try:
        document.check(document.read(path), str(path))
    except document.DocumentError as exc:
        raise ConfigError(str(exc)) from None
