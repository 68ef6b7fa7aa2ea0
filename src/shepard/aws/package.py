"""The serverless flock's function code: one zip of this package and what it needs at run time.

`build_code_zip(python)` makes the zip the stack's three functions run (`shepard aws deploy`
uploads it to the quick-deploy bucket under its name, the stack's `LambdaCodeKey`):

- the `shepard` package as installed here (sources and data files, no bytecode),
- its run-time requirements, read from its installed metadata (the `aws` extra included,
  since the functions use boto3), installed by pip for Lambda's platform: manylinux2014
  x86_64 wheels for CPython at `python` (the stack's `LambdaRuntime` must name the same
  version), binary wheels only, so nothing is compiled on this machine.
- LEFT_OUT is not installed: the command line's libraries (typer, rich and what they pull in:
  click, pygments, markdown-it) and alembic (SQL catalog migrations, with Mako), about 9 MB
  unpacked; and cryptography (with cffi, 15 MB), which only decrypts secrets, something
  the Batch jobs do, never the functions. No function imports them.
- botocore's API models are kept only for the services the functions call (BOTOCORE_KEPT):
  the other 400-odd weigh 19 MB unpacked and are never read. (Lambda unpacks every byte of
  the zip at each cold start, and the emulator at each invocation.)

The zip is deterministic (entries sorted, one fixed time stamp, fixed permissions), so the
same inputs always make the same bytes and its name, `shepard-functions-py<X.Y>-<sha256
prefix>.zip`, is a stable S3 key. Everything is cached under the user's cache folder
(platformdirs): the pip installation per Python version and requirement list, the zip per
content of the package; a second call with nothing changed reads no more than the package.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as metadata
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from shepard.errors import DeployError, ShepardError

PYTHONS = ("3.11", "3.12", "3.13")
"""The Lambda Python runtimes the stack offers (its LambdaRuntime parameter)."""

PLATFORM = "manylinux2014_x86_64"
EXTRAS = frozenset({"aws"})
LEFT_OUT = frozenset({"typer", "rich", "alembic", "cryptography"})
"""Requirements never imported by the functions (module docstring)."""

BOTOCORE_KEPT = frozenset({"s3", "sqs", "dynamodb", "batch", "logs", "sts", "secretsmanager"})
"""The services whose botocore models the zip keeps (module docstring)."""

_FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest a zip entry can say
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_EXTRA = re.compile(r"""^extra\s*==\s*["']([^"']+)["']$""")
_SKIPPED_DIRS = frozenset({"__pycache__"})
_SKIPPED_SUFFIXES = (".pyc", ".pyo")


def build_code_zip(python: str = "3.12", *, cache: Path | None = None) -> Path:
    """The functions' code zip for Lambda's Python `python` (X.Y, one of PYTHONS), built
    once per content and kept in `cache` (default: the user's cache folder).

    DeployError when pip cannot install the requirements (no network, no wheel for that
    Python); ShepardError for an unknown Python version.
    """
    if python not in PYTHONS:
        raise ShepardError(f"no Lambda runtime for Python {python!r}: one of {', '.join(PYTHONS)}")
    cache = cache or default_cache()
    cache.mkdir(parents=True, exist_ok=True)
    requirements = runtime_requirements()
    deps = _dependencies(python, requirements, cache)
    package = package_folder()
    inputs = _digest([f"python {python}", deps.name, *_tree_digests(package)])
    pointer = cache / f"inputs-{inputs[:32]}.txt"
    if pointer.is_file():
        found = cache / pointer.read_text().strip()
        if found.is_file():
            return found
    built = _write_zip(cache, python, [(package, "shepard"), (deps, "")])
    _write_atomically(pointer, built.name.encode())
    _prune_zips(cache, keep=built)
    return built


KEEP_ZIPS = 5
"""Zips kept in the cache (the newest); older ones are removed when a new one is built."""


def _prune_zips(cache: Path, keep: Path) -> None:
    zips = sorted(cache.glob("shepard-functions-py*.zip"), key=lambda p: p.stat().st_mtime)
    old = {p.name for p in zips[:-KEEP_ZIPS] if p != keep}
    for pointer in cache.glob("inputs-*.txt"):
        if pointer.read_text().strip() in old:
            pointer.unlink(missing_ok=True)
    for name in old:
        (cache / name).unlink(missing_ok=True)


def default_cache() -> Path:
    """Where built zips and pip installations are kept (per user)."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("shepard")) / "lambda"


def package_folder() -> Path:
    """The installed `shepard` package's folder."""
    import shepard

    return Path(shepard.__file__).resolve().parent


def runtime_requirements() -> list[str]:
    """Shepard's requirements as installed here, with the EXTRAS' ones, minus LEFT_OUT; each
    as pip takes it (markers other than an extra left to pip)."""
    try:
        declared = metadata.requires("shepard") or []
    except metadata.PackageNotFoundError:
        raise DeployError(
            "shepard's package metadata is missing: install it (pip install shepard[aws]) "
            "to build the functions' code"
        ) from None
    wanted = []
    for req in declared:
        spec, _, marker = req.partition(";")
        marker = marker.strip()
        extra = _EXTRA.match(marker)
        if extra is not None and extra.group(1) not in EXTRAS:
            continue
        name = _NAME.match(spec)
        if name is None or _canonical(name.group(1)) in LEFT_OUT:
            continue
        wanted.append(spec.strip() if extra is not None or not marker else req.strip())
    return sorted(set(wanted))


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _dependencies(python: str, requirements: list[str], cache: Path) -> Path:
    """The folder pip installed `requirements` into for Lambda (made once per inputs)."""
    key = _digest([python, PLATFORM, *requirements, *sorted(BOTOCORE_KEPT)])[:16]
    folder = cache / f"deps-py{python}-{key}"
    if (folder / ".complete").is_file():
        return folder
    with tempfile.TemporaryDirectory(dir=cache, prefix=".deps-") as tmp:
        target = Path(tmp) / "site"
        _pip_install(python, requirements, target)
        _prune_botocore(target)
        (target / ".complete").write_text("\n".join(requirements) + "\n")
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(target, folder)
    return folder


def _pip_install(python: str, requirements: list[str], target: Path) -> None:
    command = [
        sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        "--no-compile", "--target", str(target), "--platform", PLATFORM,
        "--implementation", "cp", "--python-version", python, "--only-binary=:all:",
        *requirements,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-8:])
        raise DeployError(
            f"pip could not install the functions' requirements for Python {python} "
            f"({PLATFORM}):\n{tail}"
        )


def _prune_botocore(site: Path) -> None:
    """Remove the API models of the services not in BOTOCORE_KEPT."""
    data = site / "botocore" / "data"
    if not data.is_dir():
        return
    for entry in data.iterdir():
        if entry.is_dir() and entry.name not in BOTOCORE_KEPT:
            shutil.rmtree(entry)


def _tree(folder: Path) -> Iterator[tuple[str, Path]]:
    """(relative POSIX path, path) of every file under `folder` that goes into the zip."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in _SKIPPED_DIRS)
        for name in sorted(files):
            if name.endswith(_SKIPPED_SUFFIXES) or name == ".complete":
                continue
            path = Path(root) / name
            yield path.relative_to(folder).as_posix(), path


def _tree_digests(folder: Path) -> Iterator[str]:
    for rel, path in _tree(folder):
        yield rel + " " + hashlib.sha256(path.read_bytes()).hexdigest()


def _digest(parts: Iterable[str]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8", "surrogateescape") + b"\n")
    return h.hexdigest()


def _entries(sources: list[tuple[Path, str]]) -> list[tuple[str, Path]]:
    """Every (name in the zip, file), sorted by name; a name given twice is an error."""
    found: dict[str, Path] = {}
    for folder, prefix in sources:
        for rel, path in _tree(folder):
            name = f"{prefix}/{rel}" if prefix else rel
            if name in found:
                raise DeployError(f"{name} comes both from {found[name]} and {path}")
            found[name] = path
    return sorted(found.items())


def _write_zip(cache: Path, python: str, sources: list[tuple[Path, str]]) -> Path:
    """Write the zip of `sources` into `cache` under its content's name; return it."""
    fd, tmp = tempfile.mkstemp(dir=cache, prefix=".zip-", suffix=".tmp")
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
            for name, path in _entries(sources):
                info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
                info.external_attr = (0o755 if os.access(path, os.X_OK) else 0o644) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, path.read_bytes(), compresslevel=6)
        digest = hashlib.sha256(Path(tmp).read_bytes()).hexdigest()
        final = cache / f"shepard-functions-py{python}-{digest[:20]}.zip"
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return final


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
