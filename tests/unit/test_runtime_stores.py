"""run_attempt over stores that are not folders (MemoryStore: no `local_path`, like S3).

Every store goes through the store API: bundles are downloaded, result zips and error
bundles uploaded, logs spooled locally and uploaded (runtime/logsink.py), secrets read from
the secrets store and decrypted.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from shepard.keys import ENV_VAR
from shepard.model import JobStatus
from shepard.payloads import Payload
from shepard.runtime import RuntimeContext, log_key
from shepard.runtime.logsink import SPOOL, AttemptLogs
from shepard.runtime.secrets import forget_secrets
from shepard.secrets import SecretStore
from shepard.storage import LocalStore
from shepard.storage.memory import MemoryStore
from tests.unit.test_runtime_worker import make_ctx, make_job, members, run, with_command


def memory() -> MemoryStore:
    return MemoryStore(f"test-{uuid.uuid4().hex}")


@pytest.fixture
def ctx(tmp_path: Path) -> RuntimeContext:
    forget_secrets()
    return replace(
        make_ctx(tmp_path),
        inputs=memory(), outputs=memory(), errors=memory(), quick_deploy=memory(),
        logs=memory(), secrets=memory(),
    )  # fmt: skip


def test_logs_reach_a_store_that_is_not_a_folder(ctx: RuntimeContext) -> None:
    job = make_job()
    outcome = run(job, replace(ctx, payload=make_ctx_payload(ctx, "echo out; echo err >&2")))
    assert outcome.status is JobStatus.SUCCEEDED
    assert ctx.logs.get_bytes(log_key(job.id, 1, "stdout")) == b"out\n"
    assert ctx.logs.get_bytes(log_key(job.id, 1, "stderr")) == b"err\n"
    assert not any((ctx.workspace_root / SPOOL).iterdir()), "spool files are removed"


def test_a_failed_attempt_uploads_its_logs_and_error_bundle(ctx: RuntimeContext) -> None:
    job = make_job()
    outcome = run(job, replace(ctx, payload=make_ctx_payload(ctx, "echo partial; exit 4")))
    assert not ctx.logs.exists(log_key(job.id, 1, "stderr"))  # empty: not stored
    assert outcome.status is JobStatus.FAILED and outcome.error_bundle is not None
    assert members(ctx.errors, outcome.error_bundle)["stdout.txt"] == b"partial\n"
    assert ctx.logs.get_bytes(log_key(job.id, 1, "stdout")) == b"partial\n"


def test_outputs_and_bundles_go_through_the_store(ctx: RuntimeContext, tmp_path: Path) -> None:
    ctx.inputs.put_bytes("b.zip", b"PK\x05\x06" + b"\0" * 18)  # an empty zip
    job = make_job(bundle_key="b.zip")
    command = 'ls "$ROOT_INPUT_NAME" > "$ROOT_OUTPUT_NAME/seen.txt"'
    outcome = run(job, replace(ctx, payload=make_ctx_payload(ctx, command)))
    assert outcome.status is JobStatus.SUCCEEDED
    [key] = outcome.outputs
    assert members(ctx.outputs, key)["seen.txt"].split() == [b"b.zip", b"secrets"]


def test_secrets_come_from_a_store_that_is_not_a_folder(
    ctx: RuntimeContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_VAR, Fernet.generate_key().decode())
    SecretStore(ctx.secrets).put_all({"api.key": b"s3cr3t"})
    command = 'cat "$ROOT_INPUT_NAME/secrets/api.key" > "$ROOT_OUTPUT_NAME/seen"'
    outcome = run(make_job(), replace(ctx, payload=make_ctx_payload(ctx, command)))
    [key] = outcome.outputs
    assert members(ctx.outputs, key)["seen"] == b"s3cr3t"
    assert b"s3cr3t" not in ctx.secrets.get_bytes("api.key.fernet")


def test_a_folder_store_is_written_in_place(tmp_path: Path) -> None:
    """The fast path: no spool, nothing to upload, the payload writes the store's file."""
    logs = LocalStore(tmp_path / "logs")
    sink = AttemptLogs(logs, "j", 1, tmp_path / "spool")
    assert sink.paths == (
        logs.path(log_key("j", 1, "stdout")),
        logs.path(log_key("j", 1, "stderr")),
    )
    assert not sink.uploads


def test_uploads_only_what_changed(tmp_path: Path) -> None:
    store = CountingStore()
    sink = AttemptLogs(store, "j", 1, tmp_path)
    out, err = sink.paths
    out.write_bytes(b"a")
    err.write_bytes(b"")
    sink._upload()
    sink._upload()  # nothing changed: nothing sent again
    assert store.puts == [log_key("j", 1, "stdout")]  # an empty stderr is not stored
    out.write_bytes(b"ab")
    sink.close()  # the last upload, then the spool files go
    assert store.puts == [log_key("j", 1, "stdout")] * 2
    assert store.get_bytes(log_key("j", 1, "stdout")) == b"ab"
    assert not out.exists() and not err.exists()


def test_an_attempt_that_printed_nothing_stores_no_log(tmp_path: Path) -> None:
    """A missing log reads as empty: a trivial job pays no request for its logs."""
    store = CountingStore()
    sink = AttemptLogs(store, "j", 1, tmp_path)
    for path in sink.paths:
        path.write_bytes(b"")
    sink._upload()
    sink.close()
    assert store.puts == []
    assert not any(path.exists() for path in sink.paths)


def test_only_stderr_is_stored_when_stdout_is_empty(tmp_path: Path) -> None:
    store = CountingStore()
    sink = AttemptLogs(store, "j", 1, tmp_path)
    sink.paths[0].write_bytes(b"")
    sink.paths[1].write_bytes(b"oops")
    sink.close()
    assert store.puts == [log_key("j", 1, "stderr")]


def test_a_failing_upload_never_fails_the_attempt(tmp_path: Path) -> None:
    class Broken(MemoryStore):
        def put_file(self, key: str, path: Path) -> None:
            raise AttributeError("a library bug")

    sink = AttemptLogs(Broken(f"b-{uuid.uuid4().hex}"), "j", 1, tmp_path)
    sink.paths[0].write_bytes(b"x")
    sink.close()  # logged, not raised
    assert not sink.paths[0].exists()


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__(f"count-{uuid.uuid4().hex}")
        self.puts: list[str] = []

    def put_file(self, key: str, path: Path) -> None:
        self.puts.append(key)
        super().put_file(key, path)


def make_ctx_payload(ctx: RuntimeContext, command: str) -> Payload:
    return with_command(ctx, command).payload


def test_a_growing_log_is_uploaded_while_the_attempt_runs(tmp_path: Path) -> None:
    store = CountingStore()
    sink = AttemptLogs(store, "j", 1, tmp_path, every=0.01)
    key = log_key("j", 1, "stdout")
    sink.paths[0].write_bytes(b"early")
    sink.start()
    deadline = time.monotonic() + 30  # a bound for a loaded machine, not a measurement
    while not store.exists(key) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert store.get_bytes(key) == b"early"  # there before the attempt ends
    sink.paths[0].write_bytes(b"early, then late")
    sink.close()
    assert store.get_bytes(key) == b"early, then late"


def test_one_thread_uploads_the_logs_of_every_running_attempt(tmp_path: Path) -> None:
    """No thread started and joined per attempt (a trivial S3 job paid for it in time)."""
    deadline = time.monotonic() + 30  # a bound for a loaded machine, not a measurement
    while uploaders() and time.monotonic() < deadline:
        time.sleep(0.05)  # the thread of attempts run before this test ends when idle
    assert uploaders() == 0
    store = CountingStore()
    sinks = [AttemptLogs(store, f"j{i}", 1, tmp_path, every=0.01) for i in range(5)]
    for sink in sinks:
        sink.paths[0].write_bytes(b"early")
        sink.start()
    assert uploaders() == 1
    keys = [log_key(f"j{i}", 1, "stdout") for i in range(5)]
    while not all(store.exists(key) for key in keys) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert all(store.get_bytes(key) == b"early" for key in keys)  # each one while it runs
    for sink in sinks:
        sink.close()
    while uploaders() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert uploaders() == 0  # idle, it ends: the process can fork runners again


def uploaders() -> int:
    return [t.name for t in threading.enumerate()].count("log-upload")
