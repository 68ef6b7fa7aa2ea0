"""The command kind: the flock's `payload.command` through `/bin/sh -c`, as a process whose
working directory is the job's root folder (`<workspace>/<UUID>`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from shepard.model import Job
from shepard.payloads.base import Launch
from shepard.payloads.process import NO_COMMAND, ProcessPayload
from shepard.payloads.quickdeploy import job_launch
from shepard.runtime.context import RuntimeContext
from shepard.runtime.workspace import SetupError, Workspace

if TYPE_CHECKING:
    from shepard.config import FlockConfig, PayloadConfig


@dataclass(frozen=True)
class CommandPayload(ProcessPayload):
    """`kind = "command"`. A job naming a QUICK_DEPLOY_DIRECTORY runs that folder instead."""

    command: str | None
    kind: ClassVar[str] = "command"

    @classmethod
    def check(cls, payload: PayloadConfig) -> None:
        if not payload.command or not payload.command.strip():
            raise ValueError('kind "command" needs payload.command, e.g. "python3 job.py"')
        if payload.image is not None:
            raise ValueError(
                'payload.image is set: set kind = "image" to run the command in that image, '
                "or remove payload.image"
            )

    @classmethod
    def from_config(cls, config: FlockConfig) -> CommandPayload:
        return cls(config.payload.command)

    def prepare(self, job: Job, ctx: RuntimeContext, ws: Workspace) -> Launch:
        launch = job_launch(job, ctx, ws)
        if launch is not None:
            return launch
        if not self.command or not self.command.strip():
            raise SetupError(NO_COMMAND, retryable=False)
        return Launch(self.command, ws.root)
