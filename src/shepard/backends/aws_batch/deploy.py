"""`shepard deploy` on an aws-batch flock: the image Batch runs, pushed and registered.

1. the folder's Dockerfile is built as on every backend (the flock's image; an image payload
   when the flock has no payload command);
2. the worker image is derived from it (image.py) and tagged `REPO:TAG`, REPO being the
   repository of `backend.aws-batch.image` when set, else the flock image's own;
3. it is pushed (an ECR repository gets the engine logged in with ECR's token), unless
   `--no-push` (the engine shares the builder's images, as the emulator does);
4. the job definition is registered for it and the image recorded in flock.toml.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shepard import config
from shepard.backends.aws_batch.config import BatchConfig
from shepard.config import Flockdir
from shepard.errors import ConfigError, DeployError

_ECR = re.compile(r"^(\d+)\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?/")


def worker_tag(cfg: BatchConfig, built: str) -> str:
    """Where the worker image goes: the repository of `image` (else the flock image's) with
    the built image's tag."""
    repo_of_built, _, tag = built.rpartition(":")
    repo = cfg.image.rsplit(":", 1)[0] if cfg.image and "/" in cfg.image else None
    if cfg.image and ":" in cfg.image and "/" not in cfg.image.rsplit(":", 1)[1]:
        repo = cfg.image.rsplit(":", 1)[0]
    return f"{repo or repo_of_built + '-batch'}:{tag}"


def push(engine: Any, tag: str, region: str | None, on_output: Callable[[str], None]) -> None:
    """Push `tag`; for an ECR repository, with the registry's token (boto3's credentials)."""
    repo, _, version = tag.rpartition(":")
    auth = None
    match = _ECR.match(tag)
    if match:
        import boto3

        ecr = boto3.client("ecr", region_name=match.group(2) or region)
        token = ecr.get_authorization_token()["authorizationData"][0]
        user, _, password = base64.b64decode(token["authorizationToken"]).decode().partition(":")
        auth = {"username": user, "password": password}
    failure = None
    for line in engine.api.push(repo, tag=version, stream=True, decode=True, auth_config=auth):
        if "error" in line:
            failure = line["error"]
        elif "status" in line:
            on_output(f"{line['status']}\n")
    if failure:
        raise DeployError(
            f"could not push {tag}: {failure}; log the engine in to the registry (or give "
            "--no-push when Batch shares this engine's images)"
        )


def set_batch_image(flockdir: Flockdir, image: str) -> Path:
    """`image` in `[backend.aws-batch]` of flock.toml, the rest of the file kept as it is."""
    path = flockdir.folder / config.CONFIG_NAME
    lines = path.read_text().splitlines()
    line = f"image = {json.dumps(image)}"
    header = next((i for i, x in enumerate(lines) if re.match(
        r'^\s*\[\s*backend\s*\.\s*"?aws-batch"?\s*\]\s*(#.*)?$', x)), None)  # fmt: skip
    if header is None:
        lines += ["", "[backend.aws-batch]", line]
    else:
        end = next((i for i in range(header + 1, len(lines)) if lines[i].lstrip().startswith("[")),
                   len(lines))  # fmt: skip
        for i in range(header + 1, end):
            if re.match(r"^\s*image\s*=", lines[i]):
                lines[i] = line
                break
        else:
            lines.insert(header + 1, line)
    text = "\n".join(lines) + "\n"
    import tomllib

    parsed = config.parse(tomllib.loads(text), source=str(path))
    section = parsed.backend.section("aws-batch")
    if not isinstance(section, BatchConfig) or section.image != image:
        raise ConfigError(f"could not record the image in {path}: edit [backend.aws-batch]")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path
