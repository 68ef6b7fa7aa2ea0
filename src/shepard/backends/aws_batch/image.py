"""The worker image: the flock's image plus a self-contained Shepard worker.

Batch runs one image; the flock's image needs nothing from Shepard. `derive` builds, FROM the
flock's image, an image that adds `/opt/shepard-worker/`: this host's Python interpreter, its
standard library, Shepard and the packages it needs (pydantic, boto3, ...), and every shared
library they load, the dynamic loader included, started through that loader. So the worker
runs on any x86-64 or arm64 Linux image with `/bin/sh` (the launcher is a shell script),
whatever its C library and whether or not it has Python; the payload itself runs with the
image's own programs and libraries (nothing of the worker's is put on its paths). The image's
own ENTRYPOINT and CMD are kept in `SHEPARD_IMAGE_COMMAND` (the command of an image payload)
and the ENTRYPOINT is cleared (Batch would prefix the worker's command with it).

The bundle is built once per machine and Python (a cache folder), the derived image once per
base image id (`podman image exists`).
"""

from __future__ import annotations

import hashlib
import importlib.metadata as metadata
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

from shepard.errors import DeployError

ROOT = "/opt/shepard-worker"
LAUNCHER = "shepard-batch-task"
WANTED = ("pydantic", "boto3", "cryptography")  # besides shepard's own requirements
_SKIP_STDLIB = {
    "site-packages", "test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3",
    "pydoc_data", "unittest", "distutils",
}  # fmt: skip
_REQ_NAME = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)")


def cache_folder() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "shepard" / "batch-worker"


def _distributions() -> list[metadata.Distribution]:
    """The installed distributions the worker needs: shepard's requirements (without extras'
    development tools) and WANTED, with everything they require."""
    seen: dict[str, metadata.Distribution] = {}
    todo = [*WANTED]
    try:
        for req in metadata.requires("shepard") or []:
            if "extra ==" not in req:
                todo.append(req)
    except metadata.PackageNotFoundError:
        pass
    while todo:
        match = _REQ_NAME.match(todo.pop().strip())
        if match is None:
            continue
        name = match.group(1).lower().replace("_", "-")
        if name in seen or name == "shepard":
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen[name] = dist
        for req in dist.requires or []:
            if "extra ==" not in req:
                todo.append(req)
    return list(seen.values())


def _copy_stdlib(src: Path, dest: Path) -> None:
    def ignore(folder: str, names: list[str]) -> set[str]:
        return _SKIP_STDLIB & set(names) if Path(folder) == src else set()

    shutil.copytree(src, dest, ignore=ignore, symlinks=True)


def _elf_files(folder: Path) -> list[Path]:
    found = []
    for path in folder.rglob("*"):
        if (
            path.is_file()
            and not path.is_symlink()
            and (".so" in path.name or path.parent.name == "bin")
        ):
            with path.open("rb") as fh:
                if fh.read(4) == b"\x7fELF":
                    found.append(path)
    return found


def _needed(paths: list[Path]) -> set[Path]:
    """The shared libraries (and the loader) `paths` load, per ldd."""
    libs: set[Path] = set()
    for path in paths:
        out = subprocess.run(["ldd", str(path)], capture_output=True, text=True).stdout
        for line in out.splitlines():
            parts = line.split()
            for word in parts:
                if word.startswith("/") and Path(word).exists():
                    libs.add(Path(word))
    return libs


def build_bundle(dest: Path) -> Path:
    """Make the worker folder (as it will be at ROOT) in `dest`; returns `dest`."""
    import shepard

    if dest.exists():
        shutil.rmtree(dest)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    base = Path(sys.base_prefix)
    (dest / "bin").mkdir(parents=True)
    shutil.copy2(Path(sys.executable).resolve(), dest / "bin" / "python3")
    _copy_stdlib(base / "lib" / version, dest / "lib" / version)
    site = dest / "lib" / version / "site-packages"
    site.mkdir()
    for dist in _distributions():
        for file in dist.files or []:
            src = Path(str(dist.locate_file(file)))
            if src.is_file() and ".." not in file.parts:
                target = site / file
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, target)
    shutil.copytree(Path(shepard.__file__).parent, site / "shepard",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    # compiled once here: a child that compiled boto3 and pydantic at each start would spend
    # about a second of CPU on it. Unchecked hash-based files: an image build may round the
    # sources' times (which time-stamped files are checked against), and the folder never
    # changes once built, so its compiled files are used as they are
    import compileall
    import py_compile

    unchecked = py_compile.PycInvalidationMode.UNCHECKED_HASH
    compileall.compile_dir(
        dest / "lib" / version, quiet=2, workers=0, force=True, invalidation_mode=unchecked
    )
    libdir = dest / "lib"
    loader = None
    for lib in _needed(_elf_files(dest)):
        if "ld-linux" in lib.name:
            loader = lib.name
        if not (libdir / lib.name).exists():
            shutil.copy2(lib.resolve(), libdir / lib.name)
    if loader is None:
        raise DeployError("could not find the dynamic loader of this host's Python (ldd)")
    launcher = dest / "bin" / LAUNCHER
    launcher.write_text(
        "#!/bin/sh\n"
        f"# the Shepard worker of AWS Batch children (self-contained: {ROOT})\n"
        f"PYTHONHOME={ROOT} PYTHONNOUSERSITE=1 PYTHONDONTWRITEBYTECODE=1 \\\n"
        f'  exec "{ROOT}/lib/{loader}" --library-path "{ROOT}/lib" \\\n'
        f'  "{ROOT}/bin/python3" -s -m shepard.batch_task "$@"\n'
    )
    launcher.chmod(0o755)
    return dest


def bundle_key() -> str:
    """What the bundle depends on: this Python and the installed Shepard's source."""
    import shepard

    digest = hashlib.sha256(sys.version.encode() + sys.executable.encode())
    for path in sorted(Path(shepard.__file__).parent.rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def bundle() -> Path:
    """The worker folder of this installation, built on first use."""
    folder = cache_folder() / bundle_key()
    if not (folder / "bin" / LAUNCHER).exists():
        build_bundle(folder.with_suffix(".tmp"))
        if folder.exists():
            shutil.rmtree(folder)
        folder.with_suffix(".tmp").rename(folder)
    return folder


def worker_layer(engine: Any) -> str:
    """`localhost/shepard-batch-worker:KEY`: an image holding only the worker folder, built
    once per machine and bundle (`podman image exists`), which derived images copy from (so
    deriving sends no files to the engine)."""
    import docker

    tag = f"localhost/shepard-batch-worker:{bundle_key()}"
    try:
        engine.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    folder = bundle()
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        _add(tar, "Containerfile", f"FROM scratch\nCOPY shepard-worker {ROOT}\n")
        tar.add(folder, arcname="shepard-worker")
    context.seek(0)
    _build(engine, context, tag)
    return tag


def derive(engine: Any, base: str, tag: str | None = None) -> str:
    """The worker image for `base` (an image on `engine`, a docker SDK client): built once per
    base image id and worker bundle; returns its tag (`tag`, else a derived name)."""
    import docker

    try:
        image = engine.images.get(base)
    except docker.errors.ImageNotFound:
        raise DeployError(f"no image {base} on the container engine: build or pull it") from None
    config = image.attrs.get("Config") or {}
    command = [*(config.get("Entrypoint") or []), *(config.get("Cmd") or [])]
    layer = worker_layer(engine)
    label = f"{image.id}-{layer}"
    short = hashlib.sha256(label.encode()).hexdigest()[:12]
    tag = tag or f"{base.rsplit(':', 1)[0]}-batch:{short}"
    try:
        if engine.images.get(tag).labels.get("shepard.worker") == label:
            return tag
    except docker.errors.ImageNotFound:
        pass
    containerfile = (
        f"FROM {image.id}\n"
        f"COPY --from={layer} {ROOT} {ROOT}\n"
        f"ENV SHEPARD_IMAGE_COMMAND={json.dumps(json.dumps(command))}\n"
        f'LABEL shepard.worker="{label}"\n'
        "ENTRYPOINT []\n"
        f'CMD ["{ROOT}/bin/{LAUNCHER}"]\n'
    )
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        _add(tar, "Containerfile", containerfile)
    context.seek(0)
    _build(engine, context, tag)
    return tag


def _add(tar: tarfile.TarFile, name: str, text: str) -> None:
    data = text.encode()
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _build(engine: Any, context: io.BytesIO, tag: str) -> None:
    import docker

    try:
        engine.images.build(fileobj=context, custom_context=True, dockerfile="Containerfile",
                            tag=tag, rm=True, pull=False)  # fmt: skip
    except (docker.errors.BuildError, docker.errors.APIError) as exc:
        raise DeployError(f"could not build the worker image {tag}: {exc}") from None
