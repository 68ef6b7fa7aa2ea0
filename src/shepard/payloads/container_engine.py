"""The container engine: finding it, talking to it, and what the host can give containers.

Docker and Podman both serve the Docker Engine API; the `docker` SDK (the optional extra
`containers`) talks to either. It is imported here, lazily, the first time a flock with an
image needs it, so flocks without images never load it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shepard.errors import ResourceError
from shepard.runtime.workspace import SetupError

if TYPE_CHECKING:
    from docker import DockerClient

log = logging.getLogger(__name__)

API_TIMEOUT = 120.0  # seconds an engine call may take (a log stream: until it starts)
LABEL_JOB = "shepard.job"
LABEL_ATTEMPT = "shepard.attempt"
LABEL_FLOCK = "shepard.flock"


def default_sockets(environ: Mapping[str, str]) -> list[Path]:
    """Where Podman and Docker put their API socket, most usual first."""
    places = [Path("/run/podman/podman.sock"), Path("/var/run/docker.sock")]
    runtime_dir = environ.get("XDG_RUNTIME_DIR")
    if runtime_dir:
        places += [Path(runtime_dir, "podman", "podman.sock"), Path(runtime_dir, "docker.sock")]
    home = environ.get("HOME")
    if home:
        places.append(Path(home, ".docker", "run", "docker.sock"))
    return places


def engine_url(configured: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The engine's API URL: `container.engine`, else DOCKER_HOST, else the first of the usual
    sockets that exists. Raises SetupError (not retryable) when there is none."""
    if configured:
        return configured
    environ = os.environ if environ is None else environ
    if environ.get("DOCKER_HOST"):
        return environ["DOCKER_HOST"]
    candidates = default_sockets(environ)
    for path in candidates:
        if path.is_socket():
            return f"unix://{path}"
    raise SetupError(
        "no container engine found: set container.engine in flock.toml or DOCKER_HOST "
        f"(looked for {', '.join(map(str, candidates))}; docs/containers.md says how to "
        "start Podman's API service)",
        retryable=False,
    )


def socket_path(url: str) -> Path | None:
    """The socket file of a `unix://` engine URL, else None."""
    return Path(url.removeprefix("unix://")) if url.startswith("unix://") else None


@dataclass(frozen=True)
class Engine:
    """A connected engine. `rootless` engines map the container's root to the user who runs
    them."""

    url: str
    client: DockerClient
    rootless: bool


_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def connect(url: str) -> Engine:
    """The Engine at `url`, connected once per process. Raises SetupError (retryable) when
    the engine does not answer."""
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = _open(url)
        return engine


def forget(url: str) -> None:
    """Drop the cached connection to `url` (after the engine stopped answering)."""
    with _lock:
        engine = _engines.pop(url, None)
    if engine is not None:
        with contextlib.suppress(Exception):
            engine.client.close()


def _open(url: str) -> Engine:
    docker = import_docker()
    try:
        client = docker.DockerClient(base_url=url, timeout=int(API_TIMEOUT))
        info = client.info()
    except docker.errors.DockerException as exc:
        raise SetupError(f"cannot reach the container engine at {url}: {exc}") from exc
    options = " ".join(str(o) for o in info.get("SecurityOptions") or ())
    return Engine(url, client, rootless="rootless" in options)


def import_docker() -> Any:
    """The `docker` package; SetupError (not retryable) naming the extra when missing."""
    try:
        import docker
    except ImportError as exc:
        raise SetupError(
            "image payloads need the docker package: pip install 'shepard[containers]'",
            retryable=False,
        ) from exc
    return docker


def remove_labelled(engine: Engine, labels: Mapping[str, str]) -> int:
    """Force-remove every container carrying all `labels`; return how many went."""
    wanted = [f"{k}={v}" for k, v in labels.items()]
    removed = 0
    for container in engine.client.containers.list(all=True, filters={"label": wanted}):
        with contextlib.suppress(Exception):
            container.remove(force=True)
            removed += 1
    return removed


# -- GPUs ----------------------------------------------------------------------------------


def host_gpus(dev: Path = Path("/dev")) -> int:
    """How many NVIDIA GPUs this host has: its /dev/nvidia<N> device files."""
    return sum(1 for p in dev.glob("nvidia*") if p.name.removeprefix("nvidia").isdigit())


def gpu_problem(requested: int | str, engine: str | None, dev: Path = Path("/dev")) -> str | None:
    """Why this host cannot give a job `requested` GPUs (a number, or "all"), else None.

    Only a local engine (none configured, or a unix socket) is judged: the GPUs of a remote
    engine's host cannot be seen from here, and that engine reports its own refusal.
    """
    if requested == 0 or (engine and not engine.startswith("unix://")):
        return None
    found = host_gpus(dev)
    if found == 0:
        return (
            f"the flock asks for GPUs (container.gpus = {requested!r}) but this host has no "
            f"NVIDIA GPU (no {dev}/nvidia0 device): run it where GPUs are, or set "
            "container.gpus = 0"
        )
    if requested != "all" and int(requested) > found:
        return (
            f"the flock asks for {requested} GPUs (container.gpus) but this host has "
            f"only {found}: lower container.gpus, or run it on a larger host"
        )
    return None


def check_gpus(requested: int | str, engine: str | None) -> None:
    """Raise ResourceError when this host cannot give the GPUs asked for."""
    problem = gpu_problem(requested, engine)
    if problem is not None:
        raise ResourceError(problem)
