"""Every `python` block of docs/python.md runs, in order, against a fresh flock."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from shepard.config import BackendConfig, FlockConfig, PayloadConfig
from shepard.flock import Flock

DOC = Path(__file__).resolve().parents[2] / "docs" / "python.md"
_BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def blocks(kind: str) -> list[str]:
    return [body for lang, body in _BLOCK.findall(DOC.read_text()) if lang == kind]


def test_the_examples_of_the_python_guide_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (init,) = blocks("bash")
    command = shlex.split(init.strip())[-1]  # the doc's --payload-command
    cfg = FlockConfig(
        name="myflock", payload=PayloadConfig(command=command), backend=BackendConfig(workers=2)
    )
    Flock.create(tmp_path / "myflock", cfg).close()
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "docs_python"}
    code = blocks("python")
    assert len(code) >= 8
    for n, body in enumerate(code, 1):
        exec(compile(body, f"{DOC.name} block {n}", "exec"), namespace)
