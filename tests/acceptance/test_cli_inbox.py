"""The inbox trigger through the real executable: bundles dropped into inbox/ while `up` runs."""

from __future__ import annotations

import collections
import io
import json
import os
import signal
import subprocess
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.conftest import Cli

pytestmark = pytest.mark.acceptance


def bundle(inputs: str | None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        if inputs is not None:
            zf.writestr("inputs.json", inputs)
        zf.writestr("data.txt", "some data")
    return buf.getvalue()


def drop_all(cli: Cli, stage: Path, files: dict[str, bytes]) -> None:
    """Write every file outside the inbox first, then rename them in (the safe way)."""
    stage.mkdir(exist_ok=True)
    for name, data in files.items():
        (stage / name).write_bytes(data)
    for name in files:
        os.rename(stage / name, cli.flock / "inbox" / name)


def wait_for(cli: Cli, predicate: Callable[[dict[str, Any]], bool], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        state = cli("query", "--json").json()
        if predicate(state):
            return state
        assert time.monotonic() < deadline, f"timed out; counts={state['counts']}"
        time.sleep(0.3)


def stop(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGINT)
    for proc in procs:
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, f"up failed: {out}\n{err}"


def test_bundles_dropped_into_the_inbox_run_exactly_once(cli: Cli, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.txt"
    cli.init(f'test -f "$ROOT_INPUT_NAME/$INPUT_ZIP_NAME" && echo "$ITEM" >> {ledger}')
    assert cli("query", "--json").json()["rejected"] == 0

    sheep = [cli.popen("up"), cli.popen("up")]  # two watchers on one inbox
    try:
        files = {f"job{i:02}.zip": bundle(json.dumps({"ITEM": i})) for i in range(50)}
        files["no-inputs.zip"] = bundle(None)
        files["broken-json.zip"] = bundle('{"ITEM": ')
        drop_all(cli, tmp_path / "stage", files)
        state = wait_for(cli, lambda s: s["counts"]["succeeded"] == 50 and s["rejected"] == 2)
    finally:
        stop(sheep)
    assert sum(state["counts"].values()) == 50 and state["counts"]["failed"] == 0

    rejected = cli.flock / "inbox" / "rejected"
    assert sorted(p.name for p in rejected.iterdir()) == [
        "broken-json.zip",
        "broken-json.zip.reason.txt",
        "no-inputs.zip",
        "no-inputs.zip.reason.txt",
    ]
    assert "has no inputs.json" in (rejected / "no-inputs.zip.reason.txt").read_text()
    assert "not valid JSON" in (rejected / "broken-json.zip.reason.txt").read_text()
    table = cli("query").out
    assert "rejected bundles" in table
    runs = collections.Counter(ledger.read_text().split())
    assert sorted(map(int, runs)) == list(range(50)) and set(runs.values()) == {1}

    # A restarted `up` registers nothing twice and still takes new bundles.
    again = cli.popen("up")
    try:
        time.sleep(1.5)  # a few scans of an inbox holding only rejected/
        assert sum(cli("query", "--json").json()["counts"].values()) == 50
        late = {f"late{i}.zip": bundle(json.dumps({"ITEM": 100 + i})) for i in range(3)}
        drop_all(cli, tmp_path / "stage", late)
        state = wait_for(cli, lambda s: s["counts"]["succeeded"] == 53)
    finally:
        stop([again])
    assert sum(state["counts"].values()) == 53 and state["rejected"] == 2
    runs = collections.Counter(ledger.read_text().split())
    assert len(runs) == 53 and set(runs.values()) == {1}
    left = [p.name for p in (cli.flock / "inbox").iterdir() if not p.name.startswith(".")]
    assert left == ["rejected"]


def test_up_no_inbox_leaves_the_inbox_alone(cli: Cli, tmp_path: Path) -> None:
    cli.init("true")
    drop_all(cli, tmp_path / "stage", {"job.zip": bundle('{"ITEM": 1}')})
    proc = cli.popen("up", "--no-inbox")
    assert proc.stdout is not None and "running jobs" in proc.stdout.readline()
    time.sleep(1.2)  # a watcher would have taken the file by now
    stop([proc])
    assert (cli.flock / "inbox" / "job.zip").exists()
    assert sum(cli("query", "--json").json()["counts"].values()) == 0
