"""7-Zip archives, made and read the way Cloudburst's `ziplib.py` does, interchangeably with
its archives: a folder is archived with the folder itself as the archive's top entry
(`Period03.7z` holds `Period03/...`), and an archive is extracted next to itself.

The `7zr` tool (Debian's p7zip) is used when it is on PATH, as the original does (it is the
faster one); otherwise py7zr (the `tasks` extra). Either reads the other's archives. A failure
raises SevenZipError, which the runner turns into a non-zero exit code (the original returned
the raw wait status, a multiple of 256 that the process exit turned into 0).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any


class SevenZipError(Exception):
    """An archive could not be made or extracted."""


def tool() -> str | None:
    """The 7-Zip command to use, or None for py7zr. SHEPARD_7Z=py7zr forces the library."""
    if os.environ.get("SHEPARD_7Z", "") == "py7zr":
        return None
    return shutil.which("7zr") or shutil.which("7z")


def compress(archive: Path, source: Path) -> None:
    """Make `archive` from `source` (a file or a folder, stored under its own name), replacing
    any archive already there (`7zr a` would add to it), at the fastest level like the
    original's `-mx1`."""
    archive.unlink(missing_ok=True)
    archive.parent.mkdir(parents=True, exist_ok=True)
    exe = tool()
    if exe is not None:
        _run([exe, "a", "-mx1", "-bd", "-y", str(archive.resolve()), source.name], source.parent)
        return
    py7zr = _py7zr()
    try:
        with py7zr.SevenZipFile(
            archive, "w", filters=[{"id": py7zr.FILTER_LZMA2, "preset": 1}]
        ) as z:
            z.writeall(source, arcname=source.name)
    except Exception as exc:
        archive.unlink(missing_ok=True)
        raise SevenZipError(f"cannot make {archive}: {exc}") from exc


def extract(archive: Path, dest: Path) -> None:
    """Extract `archive` into the folder `dest` (created), overwriting what is there."""
    dest.mkdir(parents=True, exist_ok=True)
    exe = tool()
    if exe is not None:
        _run([exe, "x", "-bd", "-y", f"-o{dest}", str(archive)], None)
        return
    py7zr = _py7zr()
    try:
        with py7zr.SevenZipFile(archive, "r") as z:
            z.extractall(path=dest)
    except Exception as exc:
        raise SevenZipError(f"cannot extract {archive}: {exc}") from exc


def _run(argv: list[str], cwd: Path | None) -> None:
    try:
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise SevenZipError(f"cannot run {argv[0]}: {exc}") from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise SevenZipError(
            f"{argv[0]} {argv[1]} {argv[-1]} failed with exit status {done.returncode}: "
            + " / ".join(tail)
        )


def _py7zr() -> Any:
    try:
        import py7zr
    except ImportError:
        raise SevenZipError(
            "no 7-Zip: install the 7zr tool (Debian: apt-get install p7zip) or "
            "pip install 'shepard[tasks]'"
        ) from None
    return py7zr
