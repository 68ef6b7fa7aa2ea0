"""The runtime contract: the environment every payload sees, identical on every backend.

`build_env` is a pure function of the job, the runtime context, the attempt's START_TIME, the
workspace paths and the base environment (plus two facts about the host, which callers may pass
in). It performs no I/O, so the contract can be unit-tested without running anything.
"""

from __future__ import annotations

import math
import resource
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import ClassVar, NamedTuple

from shepard.model import Job
from shepard.params import env_value
from shepard.runtime.context import RuntimeContext
from shepard.runtime.workspace import INPUT_DIR, OUTPUT_DIR, Workspace

UUID = "UUID"
START_TIME = "START_TIME"
END_TIME = "END_TIME"
JOB_STATUS = "JOB_STATUS"
ROOT_INPUT_NAME = "ROOT_INPUT_NAME"
ROOT_OUTPUT_NAME = "ROOT_OUTPUT_NAME"
INPUT_ZIP_NAME = "INPUT_ZIP_NAME"
IS_INVOKED = "IS_INVOKED"
INPUTS_BUCKET = "INPUTS_BUCKET"
OUTPUTS_BUCKET = "OUTPUTS_BUCKET"
ERROR_BUCKET = "ERROR_BUCKET"
ERRORS_BUCKET = "ERRORS_BUCKET"
QUICK_DEPLOY_BUCKET = "QUICK_DEPLOY_BUCKET"
USES_EFS = "USES_EFS"
USES_LUSTRE = "USES_LUSTRE"
EFS_INPUT_NAME = "EFS_INPUT_NAME"
EFS_OUTPUT_NAME = "EFS_OUTPUT_NAME"
EFS_READ_ONLY_PATH = "EFS_READ_ONLY_PATH"
LUSTRE_INPUT_NAME = "LUSTRE_INPUT_NAME"
LUSTRE_OUTPUT_NAME = "LUSTRE_OUTPUT_NAME"
LUSTRE_READ_ONLY_PATH = "LUSTRE_READ_ONLY_PATH"
ALLOW_DOCKER_ACCESS = "ALLOW_DOCKER_ACCESS"
ULIMIT_FILENO = "ULIMIT_FILENO"
HOSTNAME = "HOSTNAME"

RUNTIME_NAMES: frozenset[str] = frozenset(
    {
        UUID, START_TIME, END_TIME, JOB_STATUS, ROOT_INPUT_NAME, ROOT_OUTPUT_NAME,
        INPUT_ZIP_NAME, IS_INVOKED, INPUTS_BUCKET, OUTPUTS_BUCKET, ERROR_BUCKET, ERRORS_BUCKET,
        QUICK_DEPLOY_BUCKET, USES_EFS, USES_LUSTRE, EFS_INPUT_NAME, EFS_OUTPUT_NAME,
        EFS_READ_ONLY_PATH, LUSTRE_INPUT_NAME, LUSTRE_OUTPUT_NAME, LUSTRE_READ_ONLY_PATH,
        ALLOW_DOCKER_ACCESS, ULIMIT_FILENO, HOSTNAME,
    }
)  # fmt: skip
"""Every variable the runtime sets. Inherited variables with these names (any case) are dropped
even when the runtime does not set them for this attempt (END_TIME, EFS_*, LUSTRE_*)."""

QUICK_DEPLOY_DIRECTORY = "QUICK_DEPLOY_DIRECTORY"  # job parameter: run a quick-deploy folder
TAG = "TAG"  # job parameter: prefix of the result zips' names

_TIME_FORMAT = "%Y/%m/%d-%H:%M:%S"


class HostFacts(NamedTuple):
    """The facts about the host that reach the environment (HOSTNAME, ULIMIT_FILENO)."""

    hostname: str
    ulimit_fileno: str


def current_host() -> HostFacts:
    """HostFacts of this process: its host name and soft RLIMIT_NOFILE ("unlimited" if none)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = "unlimited" if soft == resource.RLIM_INFINITY else str(soft)
    return HostFacts(socket.gethostname(), limit)


def attempt_timeout(job: Job, ctx: RuntimeContext) -> float | None:
    """Seconds the payload may run: the job's own timeout, else the flock's."""
    return job.timeout if job.timeout is not None else ctx.timeout


def end_time(start_time: int, timeout: float | None) -> int | None:
    """END_TIME, the attempt's deadline in epoch seconds (rounded down), or None without one.

    The runtime kills the payload at `start_time + timeout`, never before END_TIME.
    """
    return None if timeout is None else math.floor(start_time + timeout)


def format_utc(epoch: float) -> str:
    """`YYYY/MM/DD-HH:MM:SS U.T.C.` for an epoch time (the form JOB_STATUS uses)."""
    return time.strftime(_TIME_FORMAT, time.gmtime(epoch)) + " U.T.C."


def input_zip_name(job: Job) -> str:
    """INPUT_ZIP_NAME: the bundle key's last `/` segment, or "None" for a param-only job and
    for a shepherd job (its inputs are a bucket's files: runtime/buckets.py)."""
    key = job.bundle_key
    return "None" if key is None or key.endswith("/") else key.rsplit("/", 1)[-1]


PRIVATE_NAMES = frozenset({"SHEPARD_SECRET_KEY"})
"""Variables of the worker's own environment that a payload must never inherit."""


def build_env(
    job: Job,
    ctx: RuntimeContext,
    *,
    start_time: int,
    paths: Workspace,
    base: Mapping[str, str],
    host: HostFacts | None = None,
    docker_access: bool = False,
) -> dict[str, str]:
    """The complete environment of the payload of `job`'s current attempt.

    Layers, later ones winning: `base` (os.environ for process payloads: keeps PATH, HOME, ...)
    and then `ctx.env`, both without any name in RUNTIME_NAMES (compared ignoring case); then
    every job parameter under its exact name with its `env_value`; then the runtime variables
    (see `runtime_variables`). `host` defaults to `current_host()`; `docker_access` is what
    ALLOW_DOCKER_ACCESS says (the payload kind knows: an image with the engine's socket).
    """
    env = dict(_inherited_layer(base))
    env.update((k, v) for k, v in ctx.env.items() if k.upper() not in RUNTIME_NAMES)
    env.update((k, env_value(v)) for k, v in job.params.items())
    env.update(
        runtime_variables(
            job, ctx, start_time=start_time, paths=paths, host=host, docker_access=docker_access
        )
    )
    return env


_NOT_INHERITED = RUNTIME_NAMES | PRIVATE_NAMES


class _Layer:
    """The last read-only base environment seen, and what `_inherited_layer` made of it."""

    last: ClassVar[tuple[Mapping[str, str], dict[str, str]] | None] = None


def _inherited_layer(base: Mapping[str, str]) -> Mapping[str, str]:
    """`base` without the runtime's and the worker's private names (any case). Worked out
    once per read-only base (the runtime's `inherited_env()` returns the same one job after
    job): filtering some fifty names is a good part of a short job's own work."""
    last = _Layer.last
    if last is not None and last[0] is base:
        return last[1]
    layer = {k: v for k, v in base.items() if k.upper() not in _NOT_INHERITED}
    if isinstance(base, MappingProxyType):
        _Layer.last = (base, layer)
    return layer


def runtime_variables(
    job: Job,
    ctx: RuntimeContext,
    *,
    start_time: int,
    paths: Workspace,
    host: HostFacts | None = None,
    docker_access: bool = False,
) -> dict[str, str]:
    """The variables the runtime itself sets (a subset of RUNTIME_NAMES)."""
    facts = host or current_host()
    env = {
        UUID: job.id,
        START_TIME: str(start_time),
        JOB_STATUS: "calling_payload_code " + format_utc(start_time),
        ROOT_INPUT_NAME: str(paths.input),
        ROOT_OUTPUT_NAME: str(paths.output),
        INPUT_ZIP_NAME: input_zip_name(job),
        IS_INVOKED: env_value(job.is_invoked),
        INPUTS_BUCKET: ctx.inputs.location,
        OUTPUTS_BUCKET: ctx.outputs.location,
        ERROR_BUCKET: ctx.errors.location,
        ERRORS_BUCKET: ctx.errors.location,
        QUICK_DEPLOY_BUCKET: ctx.quick_deploy.location,
        USES_EFS: env_value(paths.efs is not None),
        USES_LUSTRE: env_value(paths.lustre is not None),
        ALLOW_DOCKER_ACCESS: env_value(docker_access),
        ULIMIT_FILENO: facts.ulimit_fileno,
        HOSTNAME: facts.hostname,
    }
    if paths.efs is not None and ctx.efs is not None:
        env.update(_filesystem("EFS", paths.efs, ctx.efs))
    if paths.lustre is not None and ctx.lustre is not None:
        env.update(_filesystem("LUSTRE", paths.lustre, ctx.lustre))
    deadline = end_time(start_time, attempt_timeout(job, ctx))
    if deadline is not None:
        env[END_TIME] = str(deadline)
    return env


def _filesystem(kind: str, job_folder: Path, mount: Path) -> dict[str, str]:
    """<KIND>_INPUT_NAME / _OUTPUT_NAME (the job's folders) and _READ_ONLY_PATH (the mount)."""
    return {
        f"{kind}_INPUT_NAME": str(job_folder / INPUT_DIR),
        f"{kind}_OUTPUT_NAME": str(job_folder / OUTPUT_DIR),
        f"{kind}_READ_ONLY_PATH": str(mount),
    }
