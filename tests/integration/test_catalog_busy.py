"""Long-running processes outlast another process holding the SQLite write lock (issue 11.2)."""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path
from typing import cast

import pytest

from shepard.catalog import engine, open_catalog
from shepard.catalog.sql import SqlCatalog
from shepard.config import FlockConfig, PayloadConfig
from shepard.dispatcher import Dispatcher
from shepard.flock import Flock
from shepard.model import Job, JobSpec, RetryPolicy
from shepard.sheep import Heartbeat

T0 = 1_700_000_000.0


class _Backend:
    """Takes every job it is given, with room for one."""

    def __init__(self) -> None:
        self.jobs: list[Job] = []

    def capacity(self) -> int:
        return 1 - len(self.jobs)

    def submit(self, jobs: list[Job]) -> None:
        self.jobs.extend(jobs)


def _hold_lock(db: Path, seconds: float, held: threading.Event) -> None:
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    held.set()
    threading.Event().wait(seconds)
    holder.execute("ROLLBACK")
    holder.close()


def test_a_patient_dispatcher_waits_out_a_long_lock_then_claims(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(engine, "SQLITE_BUSY_TIMEOUT_S", 0.1)  # the lock outlasts it 8 times
    db = tmp_path / "c.db"
    catalog = open_catalog(f"sqlite:///{db}")  # the dispatcher makes it patient
    catalog.add_jobs([JobSpec({"A": 1})], now=T0, default_attempts=1)
    backend = _Backend()
    dispatcher = Dispatcher(
        catalog, backend, RetryPolicy(attempts=1), worker_id="w", lease=60.0,  # type: ignore[arg-type]
        clock=lambda: T0,
    )  # fmt: skip
    held = threading.Event()
    holder = threading.Thread(target=_hold_lock, args=(db, 0.8, held))
    holder.start()
    held.wait(5)
    try:
        with caplog.at_level(logging.WARNING, logger="shepard.catalog.engine"):
            assert dispatcher.step() == 1  # waited for the holder, did not raise
    finally:
        holder.join()
        catalog.close()
    assert [j.params for j in backend.jobs] == [{"A": 1}]
    messages = [r.getMessage() for r in caplog.records]
    assert sum("waiting" in m for m in messages) == 1, messages  # said once, not per retry
    assert sum("going on" in m for m in messages) == 1, messages


def test_a_patient_catalog_waits_on_the_hot_path_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine, "SQLITE_BUSY_TIMEOUT_S", 0.1)
    db = tmp_path / "c.db"
    catalog = open_catalog(f"sqlite:///{db}", patient=True)
    catalog.add_jobs([JobSpec({"A": 1})], now=T0, default_attempts=1)
    held = threading.Event()
    holder = threading.Thread(target=_hold_lock, args=(db, 0.5, held))
    holder.start()
    held.wait(5)
    try:
        (job,) = catalog.claim("w", now=T0, lease=60.0)
        ids = catalog.add_jobs([JobSpec({"A": 2})], now=T0, default_attempts=1)
    finally:
        holder.join()
    assert job.params == {"A": 1} and len(ids) == 1
    catalog.close()


def test_a_heartbeat_makes_its_catalog_patient(tmp_path: Path) -> None:
    catalog = cast(SqlCatalog, open_catalog(f"sqlite:///{tmp_path / 'c.db'}"))
    assert not catalog.patient  # short commands keep the clear error
    Heartbeat(catalog, 60.0)
    assert catalog.patient
    catalog.close()


def test_a_flock_that_runs_jobs_has_a_patient_catalog(tmp_path: Path) -> None:
    flock = Flock.create(
        tmp_path / "f", FlockConfig(name="f", payload=PayloadConfig(command="true"))
    )
    catalog = flock.catalog
    assert isinstance(catalog, SqlCatalog) and not catalog.patient
    flock.open_backend(workers=1).shutdown(kill=True)
    assert catalog.patient
    flock.close()
