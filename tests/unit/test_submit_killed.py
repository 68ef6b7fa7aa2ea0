"""A `shepard submit` killed midway leaves nothing visible; the next submit sweeps it (11.3)."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from shepard.config import FlockConfig, PayloadConfig
from shepard.flock import Flock


def _rows(db: Path) -> int:
    with sqlite3.connect(db, timeout=60) as conn:
        return int(conn.execute("SELECT count(*) FROM jobs").fetchone()[0])


def test_a_killed_submission_leaves_nothing_visible_and_is_swept(tmp_path: Path) -> None:
    folder = tmp_path / "f"
    Flock.create(folder, FlockConfig(name="f", payload=PayloadConfig(command="true"))).close()
    command = [sys.executable, "-m", "shepard", "submit", "--range", "I=1-5000000"]
    submit = subprocess.Popen([*command, "--flock", str(folder)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while _rows(folder / "catalog.db") == 0 and submit.poll() is None:
            assert time.monotonic() < deadline, "no row was ever written"
            time.sleep(0.05)
    finally:
        submit.send_signal(signal.SIGKILL)
        submit.wait()
    assert _rows(folder / "catalog.db") > 0  # rows were written, but...
    flock = Flock.open(folder)
    assert sum(flock.counts().values()) == 0  # ...nothing is visible
    assert flock.recent() == []
    assert flock.catalog.claim("w", now=time.time(), lease=60.0) == []
    sub = flock.submit([{"A": 1}])  # its process is dead: the next submit removes its rows
    assert _rows(folder / "catalog.db") == 1
    assert sum(flock.counts().values()) == 1 and len(sub.ids) == 1
    flock.close()
