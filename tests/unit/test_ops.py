"""Operations and failure handling below the CLI: --since parsing, results of lost attempts,
a full disk under the runtime, a locked catalog under the CLI."""

from __future__ import annotations

import errno
import logging
import sqlite3
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shepard.catalog import engine
from shepard.catalog.sql import SqlCatalog
from shepard.cli import main as cli_main
from shepard.cli.ops import parse_since
from shepard.config import FlockConfig, PayloadConfig
from shepard.errors import CatalogError, ShepardError
from shepard.flock import Flock
from shepard.model import Job, JobSpec, JobStatus, Outcome, RetryPolicy
from shepard.recovery import earlier_start_times, withdraw_unrecorded_results
from shepard.runtime import AttemptControl, RuntimeContext, run_attempt
from shepard.runtime.outputs import output_key
from shepard.sheep import report, run_claimed
from shepard.storage import LocalStore
from shepard.storage.local import _storage_error
from tests.unit.test_runtime_worker import make_ctx, make_job

T0 = 1_700_000_000.0
LEASE = 60.0


# -- --since ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30m", 1800), ("2h", 7200), ("1h30m", 5400), ("45s", 45), ("1d", 86400), ("1w", 604800),
     ("1.5h", 5400), (" 2H ", 7200)],
)  # fmt: skip
def test_since_durations_count_back_from_now(text: str, seconds: float) -> None:
    assert parse_since(text, T0) == T0 - seconds


@pytest.mark.parametrize(
    "text",
    ["2023-11-14T22:13:20", "2023-11-14 22:13:20", "2023-11-14 22:13:20 UTC",
     "2023-11-14T22:13:20Z", "2023-11-14T23:13:20+01:00"],
)  # fmt: skip
def test_since_iso_times_are_utc_unless_they_say_otherwise(text: str) -> None:
    assert parse_since(text, 0) == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC).timestamp()


@pytest.mark.parametrize("text", ["", "yesterday", "2h ago", "h", "12", "2023-13-01"])
def test_since_refuses_anything_else_clearly(text: str) -> None:
    with pytest.raises(ShepardError, match="--since"):
        parse_since(text, T0)


# -- results of attempts whose sheep died before recording them ------------------------------


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[SqlCatalog]:
    cat = SqlCatalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    yield cat
    cat.close()


def claim(catalog: SqlCatalog, now: float) -> Job:
    (job,) = catalog.claim("w", now=now, lease=LEASE)
    return job


def test_start_times_of_earlier_attempts_are_rebuilt_from_the_history(
    catalog: SqlCatalog,
) -> None:
    catalog.add_jobs([JobSpec({"A": 1})], now=T0, default_attempts=5)
    starts = []
    for i in range(4):  # four claims within one second: START_TIMEs T0, T0+1, T0+2, T0+3
        job = claim(catalog, T0 + 0.1 * (i + 1))
        starts.append(job.started_at)
        failed = Outcome(JobStatus.FAILED, reason="exit code 1", exit_code=1)
        catalog.finish(job.id, job.attempt, failed, now=T0 + 0.1 * (i + 1), retry_at=T0)
    assert starts == [T0, T0 + 1, T0 + 2, T0 + 3]
    later = claim(catalog, T0 + 100)  # a claim well after: its own second again
    assert later.started_at == T0 + 100
    found = earlier_start_times(catalog.events(later.id), later.attempt)
    assert set(starts) <= found and later.started_at not in found


def test_a_later_attempt_withdraws_results_published_but_never_recorded(
    catalog: SqlCatalog, tmp_path: Path
) -> None:
    ctx = make_ctx(tmp_path, command='echo hi > "$ROOT_OUTPUT_NAME/o.txt"')
    [job_id] = catalog.add_jobs([JobSpec({"TAG": "t"})], now=T0, default_attempts=1)
    lost = claim(catalog, T0)
    # The sheep published its result and was killed before `finish`:
    orphan = output_key(lost.params, job_id, lost.started_at or 0, "root")
    ctx.outputs.put_bytes(orphan, b"zip of the lost attempt")
    assert catalog.expire_leases(now=T0 + LEASE + 1, retry_at=T0) == [job_id]
    again = claim(catalog, T0 + LEASE + 2)
    assert again.attempt == 2
    status = run_claimed(again, ctx, catalog, RetryPolicy(), AttemptControl())
    assert status is JobStatus.SUCCEEDED
    final = catalog.get(job_id)
    assert final is not None
    assert list(ctx.outputs.list()) == list(final.outputs)
    assert final.outputs == (output_key(final.params, job_id, again.started_at or 0, "root"),)


def test_recorded_results_are_never_withdrawn(catalog: SqlCatalog, tmp_path: Path) -> None:
    outputs = LocalStore(tmp_path / "outputs")
    [job_id] = catalog.add_jobs([JobSpec({})], now=T0, default_attempts=1)
    first = claim(catalog, T0)
    key = output_key({}, job_id, first.started_at or 0, "root")
    outputs.put_bytes(key, b"recorded")
    done = Outcome(JobStatus.SUCCEEDED, exit_code=0, outputs=(key,))
    assert catalog.finish(job_id, 1, done, now=T0 + 1) is JobStatus.SUCCEEDED
    catalog.requeue([job_id], now=T0 + 2, statuses=[JobStatus.SUCCEEDED])
    second = claim(catalog, T0 + 3)
    assert withdraw_unrecorded_results(catalog, second, outputs) == []
    assert outputs.exists(key)


# -- a full disk under the runtime -----------------------------------------------------------


class FullStore(LocalStore):
    """A store on a full disk: every write fails the way LocalStore reports ENOSPC."""

    def move_in(self, key: str, path: Path) -> None:
        raise _storage_error("write", key, OSError(errno.ENOSPC, "No space left on device"))

    def put_file(self, key: str, path: Path) -> None:
        self.move_in(key, path)

    def put_bytes(self, key: str, data: bytes) -> None:
        self.move_in(key, Path(key))


def test_full_outputs_disk_fails_the_attempt_retryably_and_stores_nothing(
    tmp_path: Path, catalog: SqlCatalog
) -> None:
    ctx: RuntimeContext = make_ctx(
        tmp_path,
        command='echo data > "$ROOT_OUTPUT_NAME/o.txt"',
        outputs=FullStore(tmp_path / "outputs"),
    )
    [job_id] = catalog.add_jobs([JobSpec({})], now=T0, default_attempts=2)
    job = claim(catalog, T0)
    outcome = run_attempt(job, ctx, AttemptControl())
    assert outcome.status is JobStatus.FAILED and outcome.retryable
    assert outcome.reason is not None and "the disk is full" in outcome.reason
    assert outcome.reason.startswith("outputs: cannot write 'result@")
    assert outcome.error_bundle is not None and ctx.errors.exists(outcome.error_bundle)
    assert list(ctx.outputs.list()) == []
    # The job stays retryable: with attempts left it goes back to the queue.
    status = report(catalog, job, outcome, RetryPolicy(backoff=0), T0 + 1, ctx.outputs)
    assert status is JobStatus.QUEUED
    stored = catalog.get(job_id)
    assert stored is not None and "disk is full" in (stored.reason or "")


def test_full_disk_everywhere_still_gives_a_clear_reason(tmp_path: Path) -> None:
    full = FullStore(tmp_path / "full")
    ctx = make_ctx(tmp_path, command='echo x > "$ROOT_OUTPUT_NAME/o"', outputs=full, errors=full)
    outcome = run_attempt(make_job(), ctx, AttemptControl())
    assert outcome.status is JobStatus.FAILED and outcome.retryable
    assert outcome.error_bundle is None
    assert outcome.reason is not None and outcome.reason.count("the disk is full") == 2


# -- a catalog that cannot record ------------------------------------------------------------


class LockedCatalog:
    def finish(self, *args: object, **kwargs: object) -> JobStatus | None:
        raise CatalogError("the catalog sqlite:///x.db is locked by another process")


def test_an_outcome_the_catalog_cannot_record_is_logged_and_not_withdrawn(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outputs = LocalStore(tmp_path / "outputs")
    outputs.put_bytes("result@x_1_root.zip", b"zip")
    outcome = Outcome(JobStatus.SUCCEEDED, exit_code=0, outputs=("result@x_1_root.zip",))
    job = replace(make_job(), id="x")
    with caplog.at_level(logging.ERROR), pytest.raises(CatalogError):
        report(LockedCatalog(), job, outcome, RetryPolicy(), T0, outputs)  # type: ignore[arg-type]
    assert "could not record its outcome" in caplog.text and "locked" in caplog.text
    # Kept: the finish may have committed; if not, the next attempt withdraws it.
    assert outputs.exists("result@x_1_root.zip")


def test_cli_on_a_catalog_locked_beyond_the_busy_timeout_prints_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "flock"
    flock = Flock.create(folder, FlockConfig(name="f", payload=PayloadConfig(command="true")))
    ids = flock.submit([{"A": 1}, {"A": 2}]).ids
    flock.close()
    monkeypatch.setattr(engine, "SQLITE_BUSY_TIMEOUT_S", 0.3)
    monkeypatch.delenv("SHEPARD_PROFILE", raising=False)
    monkeypatch.setattr(sys, "argv", ["shepard", "cancel", "--all", "--flock", str(folder)])
    holder = sqlite3.connect(folder / "catalog.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        began = time.monotonic()
        code = cli_main.app_main()
        assert time.monotonic() - began < 10
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    err = capsys.readouterr().err
    assert code == 2
    assert "locked by another process" in err and "Traceback" not in err
    # Nothing was half done: both jobs are still queued, and a new try works.
    again = Flock.open(folder)
    assert [again.job(i).status for i in ids] == [JobStatus.QUEUED, JobStatus.QUEUED]
    assert again.cancel() == ids
    again.close()
