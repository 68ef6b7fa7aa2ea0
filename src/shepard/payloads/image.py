"""The image kind: every job runs in a container of the flock's `payload.image`, through the
Docker Engine API (Docker or Podman; payloads/container.py, docs/containers.md).

`payload.command`, when set, runs through `/bin/sh -c` inside the image (replacing its
entrypoint); unset, the image's own entrypoint and command run. Either way the working
directory is the job's root folder, bind-mounted at the same path, and the container gets the
runtime contract's environment without the worker's own variables.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from shepard.model import Job
from shepard.payloads.base import Launch
from shepard.payloads.container import run_container
from shepard.payloads.container_options import (
    ContainerSpec,
    host_facts,
    job_labels,
    workspace_mounts,
)
from shepard.payloads.quickdeploy import job_launch
from shepard.runtime.context import RuntimeContext
from shepard.runtime.contract import build_env
from shepard.runtime.process import ProcessResult
from shepard.runtime.workspace import Workspace

if TYPE_CHECKING:
    from shepard.config import FlockConfig, PayloadConfig


@dataclass(frozen=True)
class ImagePayload:
    """`kind = "image"`. A job naming a QUICK_DEPLOY_DIRECTORY runs `sh run.sh` from it, in
    the image."""

    spec: ContainerSpec
    command: str | None = None  # None: the image's own entrypoint and command
    kind: ClassVar[str] = "image"

    @classmethod
    def check(cls, payload: PayloadConfig) -> None:
        if payload.image is None:
            raise ValueError('kind "image" needs payload.image, e.g. "localhost/tool:1"')

    @classmethod
    def from_config(cls, config: FlockConfig) -> ImagePayload:
        c = config.container
        assert config.payload.image is not None  # check() refused it
        spec = ContainerSpec(
            image=config.payload.image, flock=config.name, engine=c.engine, cpus=c.cpus,
            memory=c.memory_bytes(), ulimits=c.ulimit_pairs(),
            gpus=-1 if c.gpus == "all" else c.gpus, allow_docker_access=c.allow_docker_access,
            network=c.network, pull=c.pull, user=c.user,
        )  # fmt: skip
        command = config.payload.command
        return cls(spec, command if command and command.strip() else None)

    def prepare(self, job: Job, ctx: RuntimeContext, ws: Workspace) -> Launch:
        return job_launch(job, ctx, ws) or Launch(self.command, ws.root)

    def environment(
        self,
        job: Job,
        ctx: RuntimeContext,
        *,
        start_time: int,
        ws: Workspace,
        base: Mapping[str, str],
    ) -> dict[str, str]:
        """build_env without the worker's variables (the image brings its own PATH, HOME,
        ...), with the host facts the container sees."""
        return build_env(
            job, ctx, start_time=start_time, paths=ws, base={}, host=host_facts(self.spec),
            docker_access=self.spec.allow_docker_access,
        )  # fmt: skip

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
        """`run_container` with the job's folders mounted and labelled with the attempt; its
        `detail` names the image that ran."""
        return run_container(
            self.spec, launch.command, cwd=launch.cwd, env=env, mounts=workspace_mounts(ws, ctx),
            labels=job_labels(self.spec, job.id, job.attempt),
            name=f"shepard-{job.id}-{job.attempt}", stdout=logs[0], stderr=logs[1],
            deadline=deadline, stop=stop, grace=grace,
        )  # fmt: skip
