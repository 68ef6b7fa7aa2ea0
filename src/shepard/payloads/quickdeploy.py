"""Quick deploy: a job names a folder of the flock's quick-deploy store in its
QUICK_DEPLOY_DIRECTORY parameter, and runs `sh run.sh` from the folder's copy in its input
folder.

Every kind honours that parameter (`job_launch`): a command flock runs the folder as a process
instead of its command, an image flock runs it in its image. The `quick-deploy` kind is the
flock with no payload of its own, whose jobs must each name a folder (`shepard quick-deploy`
uploads them); it is what a flock.toml without payload.command nor payload.image means.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from shepard.model import Job
from shepard.payloads.base import Launch
from shepard.payloads.process import NO_COMMAND, ProcessPayload
from shepard.runtime.context import RuntimeContext
from shepard.runtime.inputs import QUICK_DEPLOY_SCRIPT, fetch_quick_deploy, quick_deploy_folder
from shepard.runtime.workspace import SetupError, Workspace

if TYPE_CHECKING:
    from shepard.config import FlockConfig, PayloadConfig

RUN = f"sh {QUICK_DEPLOY_SCRIPT}"


def job_launch(job: Job, ctx: RuntimeContext, ws: Workspace) -> Launch | None:
    """`sh run.sh` in the job's copy of its QUICK_DEPLOY_DIRECTORY (copied into `ws.input`
    here), or None when the job names no folder. Raises SetupError (not retryable for a bad
    folder name) as `quick_deploy_folder` and `fetch_quick_deploy` say."""
    folder = quick_deploy_folder(job.params)
    if folder is None:
        return None
    return Launch(RUN, fetch_quick_deploy(ctx.quick_deploy, folder, ws.input))


class QuickDeployPayload(ProcessPayload):
    """`kind = "quick-deploy"`: every job runs its own quick-deploy folder as a process."""

    kind: ClassVar[str] = "quick-deploy"

    @classmethod
    def check(cls, payload: PayloadConfig) -> None:
        if (payload.command and payload.command.strip()) or payload.image is not None:
            raise ValueError(
                'kind "quick-deploy" runs each job\'s QUICK_DEPLOY_DIRECTORY: remove '
                'payload.command and payload.image, or set kind = "command" or "image"'
            )

    @classmethod
    def from_config(cls, config: FlockConfig) -> QuickDeployPayload:
        return cls()

    def prepare(self, job: Job, ctx: RuntimeContext, ws: Workspace) -> Launch:
        launch = job_launch(job, ctx, ws)
        if launch is None:
            raise SetupError(NO_COMMAND, retryable=False)
        return launch
