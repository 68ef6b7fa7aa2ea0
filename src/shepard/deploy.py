"""Deployments: a flock's image built from a folder, and quick-deploy folders.

`build_image` builds a folder holding a Dockerfile (or Dockerfile.txt) on the flock's container
engine under a new tag; `set_payload_image` makes that tag the flock's payload in flock.toml,
keeping the rest of the file (comments included) as it was. `upload_quick_deploy` copies a
folder with a `run.sh` into the flock's quick-deploy store, where jobs naming it in
QUICK_DEPLOY_DIRECTORY find it.
"""

from __future__ import annotations

import json
import os
import re
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shepard import config
from shepard.config import Flockdir
from shepard.errors import ConfigError, DeployError, StorageError
from shepard.payloads.container_engine import Engine, connect, engine_url, import_docker
from shepard.runtime.inputs import QUICK_DEPLOY_SCRIPT
from shepard.runtime.workspace import SECRETS_DIR, SetupError
from shepard.storage import ObjectStore, check_key

DOCKERFILES = ("Dockerfile", "Dockerfile.txt")
_FROM = re.compile(r"^\s*FROM\s+(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", re.IGNORECASE)


@dataclass(frozen=True)
class Deployment:
    """A built image: the tag it got and its id (`sha256:...`)."""

    tag: str
    image_id: str


def find_dockerfile(folder: Path) -> str:
    """The name of the folder's Dockerfile (`Dockerfile`, else `Dockerfile.txt`)."""
    if not folder.is_dir():
        raise DeployError(f"{folder} is not a folder")
    for name in DOCKERFILES:
        if (folder / name).is_file():
            return name
    raise DeployError(f"{folder} holds no Dockerfile (nor Dockerfile.txt) to build the image from")


def base_images(dockerfile: str) -> list[tuple[int, str]]:
    """(line number, image) of every FROM that names an image, not an earlier build stage,
    `scratch`, or a name made of build arguments."""
    found: list[tuple[int, str]] = []
    stages: set[str] = set()
    for number, line in enumerate(dockerfile.splitlines(), 1):
        match = _FROM.match(line)
        if match is None:
            continue
        image, alias = match.group(1), match.group(2)
        if image.lower() not in stages and image != "scratch" and "$" not in image:
            found.append((number, image))
        if alias:
            stages.add(alias.lower())
    return found


def repository_name(flock_name: str) -> str:
    """`localhost/<flock name>`, in the characters image repositories allow."""
    name = re.sub(r"[^a-z0-9]+", "-", flock_name.lower()).strip("-") or "flock"
    return f"localhost/{name}"


def new_tag(engine: Engine, flock_name: str, now: float) -> str:
    """`localhost/<flock>:<UTC date-time>`, with `-2`, `-3`, ... if that tag exists."""
    base = f"{repository_name(flock_name)}:{time.strftime('%Y%m%d-%H%M%S', time.gmtime(now))}"
    tag, n = base, 1
    while _image_id(engine, tag) is not None:
        n += 1
        tag = f"{base}-{n}"
    return tag


def open_engine(flockdir: Flockdir) -> Engine:
    """The flock's container engine, or DeployError saying why it cannot be used."""
    try:
        import_docker()
        return connect(engine_url(flockdir.config.container.engine))
    except SetupError as exc:
        raise DeployError(str(exc)) from exc


def build_image(
    flockdir: Flockdir,
    folder: Path,
    *,
    tag: str | None = None,
    on_output: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.time,
) -> Deployment:
    """Build `folder` on the flock's engine and tag the image (`tag`, else a new
    `localhost/<flock>:<time>` tag); `on_output` receives the build's output as it comes.

    A base image missing on the engine is pulled if a registry answers; when none does, the
    DeployError names the missing base images and says how to make them locally.
    """
    dockerfile = find_dockerfile(folder)
    engine = open_engine(flockdir)
    tag = tag or new_tag(engine, flockdir.config.name, clock())
    bases = base_images((folder / dockerfile).read_text(errors="replace"))
    missing = [(line, image) for line, image in bases if _image_id(engine, image) is None]
    error, tail = _run_build(engine, folder, dockerfile, tag, on_output)
    if error is not None:
        raise DeployError(_build_failure(error, tail, missing, dockerfile, engine.url))
    image_id = _image_id(engine, tag)
    if image_id is None:
        raise DeployError(f"the build said it succeeded but the engine has no image {tag}")
    return Deployment(tag, image_id)


def _run_build(
    engine: Engine,
    folder: Path,
    dockerfile: str,
    tag: str,
    on_output: Callable[[str], None] | None,
) -> tuple[str | None, list[str]]:
    """Run the build; (the engine's error or None, the last lines of its output)."""
    docker = import_docker()
    tail: list[str] = []
    error: str | None = None
    try:
        for item in _build_stream(engine, folder, dockerfile, tag):
            text = item.get("stream") or ""
            if text:
                tail = (tail + text.splitlines())[-20:]
                if on_output is not None:
                    on_output(text)
            if item.get("error"):
                error = str(item["error"]).strip()
    except docker.errors.APIError as exc:
        error = str(getattr(exc, "explanation", None) or exc).strip()
    except docker.errors.DockerException as exc:
        raise DeployError(f"cannot build on the container engine at {engine.url}: {exc}") from exc
    return error, tail


def _build_stream(
    engine: Engine, folder: Path, dockerfile: str, tag: str
) -> Iterator[dict[str, Any]]:
    stream: Iterator[dict[str, Any]] = engine.client.api.build(
        path=str(folder), dockerfile=dockerfile, tag=tag, rm=True, forcerm=True, pull=False,
        decode=True,
    )  # fmt: skip
    return stream


def _build_failure(
    error: str, tail: list[str], missing: list[tuple[int, str]], dockerfile: str, url: str
) -> str:
    if missing:
        names = ", ".join(f"{image} ({dockerfile} line {line})" for line, image in missing)
        return (
            f"cannot build: the base image {names} is not on the container engine at {url}, "
            "and it could not be pulled: no registry is reachable from here. Make the base "
            "image locally first (e.g. `podman import`, `docker load`, or a build of another "
            "folder), or change the FROM line to an image the engine has "
            f"(`podman images` lists them); then deploy again. The engine said: {error}"
        )
    lines = "\n".join(f"  {line}" for line in tail[-10:])
    return f"the image build failed: {error}" + (
        f"\nlast lines of the build:\n{lines}" if lines else ""
    )


def _image_id(engine: Engine, name: str) -> str | None:
    docker = import_docker()
    try:
        return str(engine.client.images.get(name).id)
    except docker.errors.ImageNotFound:
        return None
    except docker.errors.APIError:
        return None  # e.g. a reference the engine cannot parse: treated as absent


def set_payload_image(flockdir: Flockdir, image: str) -> Path:
    """Make `image` the flock's `payload.image` in its flock.toml.

    Only the `image` line of the `[payload]` table is changed or added, so comments and
    layout stay; a file laid out otherwise (e.g. an inline `payload = {...}`) is rewritten
    from its parsed values instead. The result is validated before it replaces the file.
    """
    path = flockdir.folder / config.CONFIG_NAME
    text = path.read_text()
    edited = with_payload_image(text, image)
    try:
        parsed = config.parse(tomllib.loads(edited), source=str(path))
    except (tomllib.TOMLDecodeError, ConfigError):
        parsed = None
    if parsed is None or parsed.payload.image != image:
        payload = flockdir.config.payload.model_copy(update={"image": image, "kind": "image"})
        current = flockdir.config.model_copy(update={"payload": payload})
        return config.write(flockdir.folder, current)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(edited)
    os.replace(tmp, path)
    return path


def with_payload_image(text: str, image: str) -> str:
    """`text` (a flock.toml) with `image = "<image>"` in its `[payload]` table, and its
    `kind`, if the table has one, made `"image"`."""
    line = f"image = {json.dumps(image)}"
    lines = text.splitlines()
    header = next((i for i, x in enumerate(lines) if _is_table(x, "payload")), None)
    if header is None:
        return text.rstrip("\n") + f"\n\n[payload]\n{line}\n"
    end = next((i for i in range(header + 1, len(lines)) if _is_table(lines[i])), len(lines))
    for i in range(header + 1, end):
        if re.match(r"^\s*kind\s*=", lines[i]):
            lines[i] = 'kind = "image"'
    for i in range(header + 1, end):
        if re.match(r"^\s*image\s*=", lines[i]):
            lines[i] = line
            break
    else:
        lines.insert(header + 1, line)
    return "\n".join(lines) + "\n"


def _is_table(line: str, name: str | None = None) -> bool:
    match = re.match(r"^\s*\[\s*([A-Za-z0-9_.\-\" ]+?)\s*\]\s*(#.*)?$", line)
    return match is not None and (name is None or match.group(1) == name)


# -- quick deploy ------------------------------------------------------------------------


def upload_quick_deploy(
    store: ObjectStore, folder: Path, name: str | None = None
) -> tuple[str, int]:
    """Copy `folder` (which must hold `run.sh`) into `store` as the quick-deploy folder `name`
    (default: the folder's own name); return (name, number of files).

    Files are written first and files the previous version had but this one does not are
    removed after, so a job starting meanwhile never finds the folder empty.
    """
    if not folder.is_dir():
        raise DeployError(f"{folder} is not a folder")
    if not (folder / QUICK_DEPLOY_SCRIPT).is_file():
        raise DeployError(
            f"{folder} has no {QUICK_DEPLOY_SCRIPT}: a quick-deploy folder runs "
            f"`sh {QUICK_DEPLOY_SCRIPT}` from its copy in the job's input folder"
        )
    name = quick_deploy_name(name or folder.resolve().name)
    old = set(store.list(name + "/"))
    new: set[str] = set()
    try:
        for path, rel in _files(folder):
            key = f"{name}/{rel}"
            store.put_file(key, path)
            new.add(key)
        for key in sorted(old - new):
            store.delete(key)
    except (OSError, StorageError) as exc:
        raise DeployError(f"cannot upload {folder} to {store.location}: {exc}") from exc
    return name, len(new)


def quick_deploy_name(name: str) -> str:
    """`name` if jobs can name it in QUICK_DEPLOY_DIRECTORY, else DeployError."""
    original, name = name, name.rstrip("/")
    try:
        check_key(name)
    except StorageError:
        name = ""
    if not name or name.split("/", 1)[0] == SECRETS_DIR:
        raise DeployError(
            f"{original!r} cannot be a quick-deploy name: use a relative folder name without '..' "
            "(e.g. my-tool or tools/v2)"
        )
    return name


def _files(folder: Path) -> Iterator[tuple[Path, str]]:
    """Every file under `folder` (links to files are followed, links to folders are not),
    with its path relative to `folder`."""
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for file in sorted(files):
            path = Path(root, file)
            if path.is_file():
                yield path, path.relative_to(folder).as_posix()
