"""What tests of image payloads share: the test engine, the test images, and looking at them.

`scripts/services-podman` starts Podman's API service and builds the two images, and prints
the variables read here (their defaults are where that script puts things).
"""

from __future__ import annotations

import functools
import os
from typing import Any

from tests.services import require_service

ENGINE = os.environ.get("SHEPARD_TEST_DOCKER_HOST", "unix:///run/shepard-podman/podman.sock")
BUSYBOX = os.environ.get("SHEPARD_TEST_BUSYBOX", "localhost/shepard-test-busybox:1")
PYTHON_IMAGE = os.environ.get("SHEPARD_TEST_IMAGE", "localhost/shepard-test-python:bookworm")


@functools.cache
def client() -> Any:
    import docker

    return docker.DockerClient(base_url=ENGINE, timeout=30)


@functools.cache
def engine_problem(*images: str) -> str | None:
    """None when the test engine answers and holds `images`, else why not."""
    try:
        import docker
    except ImportError:
        return "the docker package is missing (install the dev extra: scripts/setup dev)"
    try:
        client().ping()
    except Exception as exc:
        return (
            f"no container engine answers at {ENGINE} (run scripts/services-podman, or set "
            f"SHEPARD_TEST_DOCKER_HOST): {exc}"
        )
    for image in images:
        try:
            client().images.get(image)
        except docker.errors.ImageNotFound:
            return f"the test image {image} is missing (scripts/services-podman builds it)"
    return None


def require_engine(*images: str) -> None:
    """Skip (locally) or fail (CI) unless the test engine runs and holds `images`."""
    require_service("Podman", engine_problem(*images))


def containers_of(job_id: str) -> list[Any]:
    """Every container, running or not, labelled as one of `job_id`'s attempts."""
    return list(client().containers.list(all=True, filters={"label": f"shepard.job={job_id}"}))


def use_test_engine(data: dict[str, Any]) -> None:
    """Point a parsed flock.toml at the test engine."""
    data.setdefault("container", {})["engine"] = ENGINE
