"""Acceptance tests drive the installed `shepard` executable as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tomli_w

SHEPARD = str(Path(sys.executable).with_name("shepard"))


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


class Cli:
    """Runs `shepard` with SHEPARD_FLOCK pointing at one flock folder."""

    def __init__(self, flock: Path, cwd: Path) -> None:
        self.flock, self.cwd = flock, cwd
        self.started: list[subprocess.Popen[str]] = []
        self.env = {**os.environ, "SHEPARD_FLOCK": str(flock), "COLUMNS": "200"}
        # never read or write the developer's own profiles
        self.env.pop("SHEPARD_PROFILE", None)
        self.env["SHEPARD_CONFIG_DIR"] = str(cwd / "config")

    def __call__(
        self, *args: str, ok: bool | None = True, timeout: float = 120, stdin: str | None = None
    ) -> Result:
        proc = subprocess.run(
            [SHEPARD, *args],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=stdin,
        )
        result = Result(proc.returncode, proc.stdout, proc.stderr)
        if ok is True:
            assert proc.returncode == 0, f"shepard {' '.join(args)} failed: {result}"
        elif ok is False:
            assert proc.returncode != 0, f"shepard {' '.join(args)} should fail: {result}"
        return result

    def popen(self, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [SHEPARD, *args],
            cwd=self.cwd,
            env=self.env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.started.append(proc)
        return proc

    def kill_leftovers(self) -> None:
        """Kill every process a test started and left running (e.g. after a failure)."""
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def init(self, command: str, *extra: str) -> None:
        self("init", str(self.flock), "--payload-command", command, "--workers", "2", *extra)

    def configure(self, change: Callable[[dict[str, Any]], None]) -> None:
        """Apply `change` to the flock's parsed flock.toml and write it back."""
        path = self.flock / "flock.toml"
        data = tomllib.loads(path.read_text())
        change(data)
        path.write_text(tomli_w.dumps(data))


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    runner = Cli(tmp_path / "flock", tmp_path)
    yield runner
    runner.kill_leftovers()


def zip_names(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as zf:
        return zf.namelist()


def zip_text(path: Path, name: str) -> str:
    with zipfile.ZipFile(path) as zf:
        return zf.read(name).decode()


def parse_env(text: str) -> dict[str, str]:
    """Parse `env -0` output (NUL-separated, so values may hold newlines)."""
    pairs = (item.partition("=") for item in text.split("\0") if item)
    return {k: v for k, _, v in pairs}
