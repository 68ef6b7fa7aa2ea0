"""What the container of one attempt is made of: its options for the engine, its mounts,
its limits and user. Pure functions (they read this process's limits, nothing else), so what
an image payload gets can be checked without an engine.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from shepard.payloads.container_engine import LABEL_ATTEMPT, LABEL_FLOCK, LABEL_JOB, socket_path
from shepard.runtime.context import RuntimeContext
from shepard.runtime.contract import HostFacts, current_host
from shepard.runtime.workspace import Workspace

SHELL = "/bin/sh"
DOCKER_SOCKET = "/var/run/docker.sock"  # where the engine's socket appears when allowed


@dataclass(frozen=True)
class ContainerSpec:
    """How an image payload runs (the `[container]` section, docs/containers.md)."""

    image: str  # the image every job runs in
    flock: str  # the flock's name, for the containers' labels
    engine: str | None = None  # Docker Engine API URL; None: DOCKER_HOST, else a local socket
    cpus: float | None = None
    memory: int | None = None  # bytes
    ulimits: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # (soft, hard), -1 = inf
    gpus: int = 0  # NVIDIA GPUs per job; -1: all of them
    allow_docker_access: bool = False  # the engine's socket is mounted into the container
    network: str | None = None  # None: the engine's default network
    pull: str = "missing"  # "missing", "never" or "always"
    user: str = "host"  # "host": the worker's uid:gid; "image": the image's USER; or uid[:gid]


class Mount(NamedTuple):
    path: Path  # host folder, mounted at the same path inside the container
    read_only: bool


def job_labels(spec: ContainerSpec, job_id: str, attempt: int) -> dict[str, str]:
    """The labels of an attempt's container: cleanup and people find it by them."""
    return {LABEL_FLOCK: spec.flock, LABEL_JOB: job_id, LABEL_ATTEMPT: str(attempt)}


def workspace_mounts(ws: Workspace, ctx: RuntimeContext) -> list[Mount]:
    """The job's root folder, and for each shared filesystem its root (read-only: the
    *_READ_ONLY_PATH variables) with the job's own folder on it (read-write)."""
    mounts = [Mount(ws.root, False)]
    for root, own in ((ctx.efs, ws.efs), (ctx.lustre, ws.lustre)):
        if root is not None and own is not None:
            mounts += [Mount(root, True), Mount(own, False)]
    return mounts


def worker_limits(pid_max: int | None = None) -> dict[str, tuple[int, int]]:
    """This process's open-files and processes limits, as container ulimits (-1: unlimited).

    A container gets them unless the flock says otherwise, so an image payload runs with the
    limits a process payload of the same worker would inherit. The processes limit is capped
    at the kernel's pid_max (no more processes can exist anyway): Podman runs containers
    under that cap and refuses to start one asked for more."""
    cap = pid_max if pid_max is not None else _pid_max()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    nofile = (_limit(soft), _limit(hard))
    soft, hard = resource.getrlimit(resource.RLIMIT_NPROC)
    nproc = (_capped(soft, cap), _capped(hard, cap))
    return {"nofile": nofile, "nproc": nproc}


def _limit(value: int) -> int:
    return -1 if value == resource.RLIM_INFINITY else value


def _capped(value: int, cap: int | None) -> int:
    if cap is None:
        return _limit(value)
    return cap if value == resource.RLIM_INFINITY else min(value, cap)


def _pid_max() -> int | None:
    try:
        return int(Path("/proc/sys/kernel/pid_max").read_text())
    except (OSError, ValueError):
        return None


def effective_ulimits(spec: ContainerSpec) -> dict[str, tuple[int, int]]:
    """The worker's own nofile/nproc limits, overridden by the flock's `container.ulimits`.

    Both are always given: Podman refuses to start a container given only some of them."""
    return {**worker_limits(), **spec.ulimits}


def host_facts(spec: ContainerSpec) -> HostFacts:
    """HOSTNAME and ULIMIT_FILENO as an image payload of `spec` sees them."""
    soft = effective_ulimits(spec)["nofile"][0]
    return HostFacts(current_host().hostname, "unlimited" if soft < 0 else str(soft))


def create_options(
    spec: ContainerSpec,
    command: str | None,
    *,
    cwd: Path,
    env: Mapping[str, str],
    mounts: Sequence[Mount],
    labels: Mapping[str, str],
    name: str,
    url: str,
    rootless: bool = False,
) -> dict[str, Any]:
    """The keyword arguments of `containers.create` for one attempt (no I/O).

    `command` runs through /bin/sh -c (replacing the image's entrypoint); None keeps the
    image's own entrypoint and command.
    """
    env = dict(env)
    volumes = {
        str(m.path): {"bind": str(m.path), "mode": "ro" if m.read_only else "rw"} for m in mounts
    }
    if spec.allow_docker_access:
        sock = socket_path(url)
        if sock is not None:
            volumes[str(sock)] = {"bind": DOCKER_SOCKET, "mode": "rw"}
        env["DOCKER_HOST"] = f"unix://{DOCKER_SOCKET}" if sock is not None else url
    options: dict[str, Any] = {
        "image": spec.image,
        "name": name,
        "labels": dict(labels),
        "environment": env,
        "working_dir": str(cwd),
        "volumes": volumes,
        "ulimits": [
            {"name": k, "soft": soft, "hard": hard}
            for k, (soft, hard) in sorted(effective_ulimits(spec).items())
        ],
        "init": True,  # a real PID 1: signals reach the payload, its orphans are reaped
        "privileged": False,
        "detach": True,
    }
    if command is not None:
        options["entrypoint"] = [SHELL, "-c"]
        options["command"] = [command]
    user = container_user(spec.user, rootless)
    if user is not None:
        options["user"] = user
    if spec.cpus is not None:
        options["nano_cpus"] = round(spec.cpus * 1e9)
    if spec.memory is not None:
        options["mem_limit"] = spec.memory
    if spec.network is not None:
        options["network_mode"] = spec.network
    if spec.gpus:
        options["device_requests"] = [{"count": spec.gpus, "capabilities": [["gpu"]]}]
    return options


def container_user(setting: str, rootless: bool) -> str | None:
    """The container's user: "host" is the worker's uid:gid, so the files a payload writes
    into its folders belong to the worker (on a rootless engine that is the container's
    root, which the engine maps to the worker's user); "image" keeps the image's USER."""
    if setting == "image":
        return None
    if setting == "host":
        return "0:0" if rootless else f"{os.getuid()}:{os.getgid()}"
    return setting
