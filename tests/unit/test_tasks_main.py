"""`python -m shepard.tasks DOCUMENT`, the runner a tasks job starts, as a process: its exit
codes for documents it cannot run, and a stop (SIGTERM) reaching the commands it runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

RUNNER = [sys.executable, "-m", "shepard.tasks"]


def start(tmp_path: Path, doc: object, **env: str) -> subprocess.Popen[str]:
    (tmp_path / "tasks.json").write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return subprocess.Popen([*RUNNER, "tasks.json"], cwd=tmp_path, text=True,
                            env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip


@pytest.mark.parametrize(
    ("doc", "code", "said"),
    [
        ("{not json", 255, "not JSON"),
        ({"programName": "p", "itemName": "i", "tasks": [{"name": "t", "comand": "x"}]}, 255,
         "did you mean command?"),
        ({"programName": "p", "itemName": "${WORK_ITEM}",
          "tasks": [{"name": "t", "command": "printenv WORK_ITEM > item.txt"}]}, 0,
         "work item [w\"1]"),
    ],
    ids=["not JSON", "invalid", "valid"],
)  # fmt: skip
def test_exit_codes_of_the_runner(tmp_path: Path, doc: object, code: int, said: str) -> None:
    proc = start(tmp_path, doc, WORK_ITEM='w"1')
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, (out, err)
    assert said in out + err
    if code == 0:
        assert (tmp_path / "item.txt").read_text() == 'w"1\n'  # a quote breaks no JSON


def test_a_missing_document_exits_255(tmp_path: Path) -> None:
    done = subprocess.run([*RUNNER, "nope.json"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 255 and "cannot read it" in done.stderr


def test_sigterm_reaches_the_commands_and_fails_the_run(tmp_path: Path) -> None:
    doc = {"programName": "p", "itemName": "i", "tasks": [
        {"name": "t", "command": "sleep 60 & echo $! > pid; wait"},
        {"name": "after", "command": "touch after"}]}  # fmt: skip
    proc = start(tmp_path, doc)
    pid_file = tmp_path / "pid"
    deadline = time.monotonic() + 30
    while not (pid_file.exists() and pid_file.read_text().strip()):
        assert time.monotonic() < deadline, "the command did not start"
        time.sleep(0.05)
    child = int(pid_file.read_text())
    proc.send_signal(signal.SIGTERM)  # the runner alone: each command is a group of its own
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode not in (0, None), out
    assert not (tmp_path / "after").exists()
    deadline = time.monotonic() + 10
    while _alive(child):
        assert time.monotonic() < deadline, "the command's child survived the stop"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"
