"""Leftovers of killed `batch` commands are removed at the next start (issue 11.12)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import cast

from shepard import leftovers
from shepard.bundle import make_bundle
from shepard.config import FlockConfig, PayloadConfig
from shepard.flock import Flock
from shepard.storage import LocalStore

HOUR = 3600.0


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def _flock(tmp_path: Path) -> Flock:
    return Flock.create(
        tmp_path / "f", FlockConfig(name="f", payload=PayloadConfig(command="true"))
    )


def test_batch_removes_what_killed_batches_left_and_only_that(tmp_path: Path) -> None:
    flock = _flock(tmp_path)
    work, inputs = flock.dir.store_path("work"), cast(LocalStore, flock.store("inputs"))
    dead = work / ".batch-dead"  # its process died: its lock can be taken
    dead.mkdir()
    (dead / leftovers.LOCK_NAME).touch()
    (dead / "bundle.zip").write_bytes(b"x" * 1000)
    live = work / ".batch-live"  # a batch running now holds its lock
    live.mkdir()
    old_tmp, new_tmp = inputs.root / ".tmp-old", inputs.root / ".tmp-new"
    old_tmp.write_bytes(b"partial")
    new_tmp.write_bytes(b"being written")
    _age(old_tmp, HOUR)
    registered = flock.submit_bundle(_bundle(tmp_path), key="kept.zip")
    inputs.put_bytes("orphan.zip", b"stored, never registered")
    inputs.put_bytes("young.zip", b"stored a moment ago, being registered")
    for key in ("kept.zip", "orphan.zip"):
        _age(inputs.path(key), 2 * HOUR)
    folder = tmp_path / "job"
    folder.mkdir()
    (folder / "inputs.json").write_text(json.dumps({"A": 1}))
    with leftovers.held(live):
        flock.batch(folder, zip_name="new.zip")
    assert not dead.exists() and live.exists()
    assert not old_tmp.exists() and new_tmp.exists()
    assert sorted(inputs.list()) == ["kept.zip", "new.zip", "young.zip"]
    assert flock.job(registered.ids[0]).bundle_key == "kept.zip"
    assert not list(work.glob(".batch-*"))[1:]  # only the live one, the new one is gone
    flock.close()


def test_a_folder_without_a_lock_goes_only_when_old(tmp_path: Path) -> None:
    flock = _flock(tmp_path)
    work = flock.dir.store_path("work")
    young, old = work / ".batch-young", work / ".batch-old"
    young.mkdir()
    old.mkdir()
    _age(old, 2 * HOUR)
    swept = flock.sweep_leftovers()
    assert swept.folders == 1 and young.exists() and not old.exists()
    assert not flock.sweep_leftovers()  # nothing left to do
    flock.close()


def _bundle(tmp_path: Path) -> Path:
    folder = tmp_path / "b"
    folder.mkdir()
    (folder / "inputs.json").write_text(json.dumps({"B": 2}))
    return make_bundle(folder, tmp_path / "b.zip", FlockConfig(name="x").limits)
