"""Image payloads on a real engine (Podman): `run_attempt` with a container, end to end.

The same jobs also run as process payloads, and what the payload saw and what the flock kept
is compared: an image payload must get the same contract.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest

from shepard.model import Job, JobStatus, Outcome
from shepard.payloads.container_options import ContainerSpec
from shepard.payloads.image import ImagePayload
from shepard.runtime import AttemptControl, RuntimeContext, log_key, run_attempt
from shepard.runtime.contract import RUNTIME_NAMES
from shepard.storage import LocalStore
from tests.containers import (
    BUSYBOX,
    ENGINE,
    PYTHON_IMAGE,
    client,
    containers_of,
    require_engine,
)
from tests.unit.test_runtime_worker import make_ctx, make_job, parse_env

GRACE = 2.0
DUMP = (
    'env -0 > "$ROOT_OUTPUT_NAME/env"; pwd > "$ROOT_OUTPUT_NAME/pwd"; '
    'ls -A "$ROOT_INPUT_NAME" > "$ROOT_OUTPUT_NAME/input"; ulimit -n > "$ROOT_OUTPUT_NAME/nofile"'
)


@pytest.fixture(autouse=True)
def engine_running() -> None:
    require_engine(BUSYBOX, PYTHON_IMAGE)


def spec(image: str = BUSYBOX, **changes: Any) -> ContainerSpec:
    return replace(ContainerSpec(image=image, flock="test", engine=ENGINE), **changes)


def in_image(ctx: RuntimeContext, image: str = BUSYBOX, **changes: Any) -> RuntimeContext:
    """`ctx`'s command run in `image` instead of as a process."""
    command = getattr(ctx.payload, "command", None)
    return replace(ctx, payload=ImagePayload(spec(image, **changes), command))


def run(job: Job, ctx: RuntimeContext, control: AttemptControl | None = None) -> Outcome:
    return run_attempt(job, ctx, control or AttemptControl(), grace=GRACE)


def members(ctx: RuntimeContext, key: str, store: str = "outputs") -> dict[str, str]:
    data = getattr(ctx, store).get_bytes(key)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {name: zf.read(name).decode() for name in zf.namelist()}


def contract_view(env: dict[str, str]) -> dict[str, str]:
    """The variables the runtime contract sets, plus the job's parameters."""
    return {k: v for k, v in env.items() if k in RUNTIME_NAMES or k.startswith("P_")}


def test_an_image_payload_sees_what_a_process_payload_sees(tmp_path: Path) -> None:
    efs, lustre = tmp_path / "efs", tmp_path / "lustre"
    efs.mkdir()
    lustre.mkdir()
    ctx = make_ctx(tmp_path, command=DUMP, efs=efs, lustre=lustre, env={"P_FLOCK": "f"}, timeout=60)
    ctx.inputs.put_bytes("b.zip", _zip({"inputs.json": "{}"}))
    job = make_job(params={"P_A": "x y", "P_N": 3, "P_T": True}, bundle_key="b.zip")
    seen = {}
    for name, context in (("process", ctx), ("image", in_image(ctx, PYTHON_IMAGE))):
        outcome = run(job, context)
        assert outcome.status is JobStatus.SUCCEEDED, outcome
        [key] = outcome.outputs
        seen[name] = members(context, key)
        context.outputs.delete(key)
    process, image = seen["process"], seen["image"]
    assert contract_view(parse_env(image["env"].encode())) == contract_view(
        parse_env(process["env"].encode())
    )
    env = parse_env(image["env"].encode())
    assert env["P_N"] == "3" and env["P_T"] == "True" and env["P_FLOCK"] == "f"
    assert env["EFS_INPUT_NAME"] == str(efs / job.id / "input") and "END_TIME" in env
    assert env["ALLOW_DOCKER_ACCESS"] == "False" and "DOCKER_HOST" not in env
    assert image["pwd"] == process["pwd"] == f"{tmp_path / 'work' / job.id}\n"
    assert image["input"] == process["input"] == "b.zip\nsecrets\n"
    assert image["nofile"] == process["nofile"] == f"{env['ULIMIT_FILENO']}\n"


def test_outputs_and_error_bundles_have_the_same_form(tmp_path: Path) -> None:
    payload = (
        'echo out; echo err >&2; echo r > "$ROOT_OUTPUT_NAME/r.txt"; '
        'echo e > "$EFS_OUTPUT_NAME/e.txt"; exit "$CODE"'
    )
    (tmp_path / "efs").mkdir()
    ctx = make_ctx(tmp_path, command=payload, efs=tmp_path / "efs")
    job = make_job(params={"CODE": 0, "TAG": "t1"})
    failing = replace(job, params={"CODE": 5})
    kept: dict[str, Any] = {}
    for name, context in (("process", ctx), ("image", in_image(ctx))):
        ok, bad = run(job, context), run(failing, context)
        assert ok.status is JobStatus.SUCCEEDED and bad.status is JobStatus.FAILED
        assert (bad.reason, bad.exit_code, bad.retryable) == ("exit code 5", 5, True)
        assert bad.error_bundle is not None
        kept[name] = (
            ok.outputs,
            [members(context, k) for k in ok.outputs],
            members(context, bad.error_bundle, "errors"),
        )
        for key in ok.outputs:
            context.outputs.delete(key)
        context.errors.delete(bad.error_bundle)
    assert kept["image"][0] == kept["process"][0]  # same names: TAG, id, START_TIME, kind
    assert kept["image"][1] == kept["process"][1] == [{"r.txt": "r\n"}, {"e.txt": "e\n"}]
    image_bundle, process_bundle = kept["image"][2], kept["process"][2]
    assert sorted(image_bundle) == sorted(process_bundle)
    for member in ("stdout.txt", "stderr.txt", "workspace.txt"):
        assert image_bundle[member] == process_bundle[member], member

    def without_end(text: str) -> list[str]:
        return [line for line in text.splitlines() if not line.startswith("end:")]

    assert without_end(image_bundle["exit_status.txt"]) == without_end(
        process_bundle["exit_status.txt"]
    )


def test_the_job_history_is_told_which_image_ran(tmp_path: Path) -> None:
    outcome = run(make_job(), in_image(make_ctx(tmp_path, command="true")))
    image_id = client().images.get(BUSYBOX).id.removeprefix("sha256:")[:12]
    assert outcome.detail == f"image {BUSYBOX} (id {image_id})"


def test_logs_are_written_while_the_container_runs(tmp_path: Path) -> None:
    ctx = in_image(make_ctx(tmp_path, command="echo first; sleep 2; echo second; echo e >&2"))
    job = make_job()
    logs = cast(LocalStore, ctx.logs)
    stdout = logs.path(log_key(job.id, job.attempt, "stdout"))
    with _running(job, ctx) as result:
        _until(lambda: stdout.is_file() and stdout.read_text() == "first\n", 10)
    assert result[0].status is JobStatus.SUCCEEDED
    assert stdout.read_text() == "first\nsecond\n"
    assert logs.path(log_key(job.id, job.attempt, "stderr")).read_text() == "e\n"


def test_logs_are_complete_however_short_the_container(tmp_path: Path) -> None:
    """Engines end follow streams late, early or never: the log must still be whole."""
    lines = 'i=0; while [ $i -lt 3000 ]; do echo "line $i"; i=$((i+1)); done; echo bye >&2'
    ctx = in_image(make_ctx(tmp_path, command=lines))
    expected = "".join(f"line {i}\n" for i in range(3000))
    logs = cast(LocalStore, ctx.logs)
    for _ in range(8):
        job = make_job()
        assert run(job, ctx).status is JobStatus.SUCCEEDED
        assert _log(ctx, job) == expected
        assert logs.path(log_key(job.id, job.attempt, "stderr")).read_text() == "bye\n"


def test_a_stop_kills_the_container_and_removes_it(tmp_path: Path) -> None:
    ctx = in_image(make_ctx(tmp_path, command="echo up; sleep 60"))
    job, control = make_job(), AttemptControl()
    with _running(job, ctx, control) as result:
        _until(lambda: containers_of(job.id) and _log(ctx, job) == "up\n", 20)
        began = time.monotonic()
        control.stop.set()
    assert time.monotonic() - began < GRACE + 5
    assert result[0].status is JobStatus.CANCELLED
    assert containers_of(job.id) == []
    assert list(ctx.outputs.list()) == [] and list(ctx.errors.list()) == []


def test_a_timeout_kills_the_container_and_removes_it(tmp_path: Path) -> None:
    ctx = in_image(make_ctx(tmp_path, command="echo started; sleep 60", timeout=1))
    job = make_job()
    began = time.monotonic()
    outcome = run(job, ctx)
    assert time.monotonic() - began < 1 + GRACE + 5
    assert outcome.status is JobStatus.FAILED and outcome.reason == "timeout after 1s"
    assert containers_of(job.id) == []
    assert outcome.error_bundle is not None
    bundle = members(ctx, outcome.error_bundle, "errors")
    assert "timeout" in bundle["exit_status.txt"] and bundle["stdout.txt"] == "started\n"


def test_a_missing_image_fails_the_job_for_good_with_the_reason(tmp_path: Path) -> None:
    ctx = in_image(make_ctx(tmp_path, command="true"), "localhost/no-such-image:1", pull="never")
    outcome = run(make_job(), ctx)
    assert outcome.status is JobStatus.FAILED and outcome.retryable is False
    assert outcome.reason is not None
    assert outcome.reason.startswith("setup: image localhost/no-such-image:1 not found")
    assert outcome.error_bundle is not None
    status = members(ctx, outcome.error_bundle, "errors")["exit_status.txt"]
    assert "image localhost/no-such-image:1 not found" in status
    assert "exit: none (the payload did not run)" in status


@pytest.fixture(scope="module")
def built_images() -> Iterator[dict[str, str]]:
    """Two images made for these tests from the busybox image: one whose command writes an
    output, one whose command does not exist."""
    made = {}
    dockerfiles = {
        "cmd": f'FROM {BUSYBOX}\nCMD ["/bin/sh", "-c", "echo from-cmd > $ROOT_OUTPUT_NAME/o"]\n',
        "broken": f'FROM {BUSYBOX}\nCMD ["/no/such/program"]\n',
    }
    for name, text in dockerfiles.items():
        with tempfile.TemporaryDirectory() as folder:
            Path(folder, "Dockerfile").write_text(text)
            tag = f"localhost/shepard-test-{name}:{os.getpid()}"
            client().images.build(path=folder, tag=tag, rm=True)
            made[name] = tag
    yield made
    for tag in made.values():
        client().images.remove(tag, force=True)


def test_without_a_command_the_images_own_command_runs(
    tmp_path: Path, built_images: dict[str, str]
) -> None:
    ctx = in_image(make_ctx(tmp_path, command=None), built_images["cmd"])
    outcome = run(make_job(), ctx)
    assert outcome.status is JobStatus.SUCCEEDED
    assert [members(ctx, k) for k in outcome.outputs] == [{"o": "from-cmd\n"}]


def test_an_image_whose_command_cannot_start_fails_for_good(
    tmp_path: Path, built_images: dict[str, str]
) -> None:
    ctx = in_image(make_ctx(tmp_path, command=None), built_images["broken"])
    job = make_job()
    outcome = run(job, ctx)
    assert outcome.status is JobStatus.FAILED and outcome.retryable is False
    assert outcome.reason is not None
    assert outcome.reason.startswith(
        f"setup: cannot start the container of {built_images['broken']}: its command "
        "['/no/such/program'] could not be executed"
    )
    assert outcome.error_bundle is not None
    assert "failed to exec" in members(ctx, outcome.error_bundle, "errors")["stderr.txt"]
    assert containers_of(job.id) == []


PING = (
    'python3 -c "import socket; s = socket.socket(socket.AF_UNIX); '
    "s.connect('/var/run/docker.sock'); "
    "s.sendall(b'GET /_ping HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n'); print(s.recv(4096).decode())\" "
    '> "$ROOT_OUTPUT_NAME/ping" && env -0 > "$ROOT_OUTPUT_NAME/env"'
)


def test_the_engine_is_out_of_reach_unless_the_flock_allows_it(tmp_path: Path) -> None:
    ctx = in_image(make_ctx(tmp_path, command=PING), PYTHON_IMAGE)
    closed = run(make_job(), ctx)
    assert closed.status is JobStatus.FAILED and closed.error_bundle is not None
    assert "FileNotFoundError" in members(ctx, closed.error_bundle, "errors")["stderr.txt"]
    opened_ctx = in_image(
        make_ctx(tmp_path / "b", command=PING), PYTHON_IMAGE, allow_docker_access=True
    )
    opened = run(make_job(), opened_ctx)
    assert opened.status is JobStatus.SUCCEEDED, opened
    [seen] = [members(opened_ctx, k) for k in opened.outputs]
    assert seen["ping"].startswith("HTTP/1.") and seen["ping"].rstrip().endswith("OK")
    env = parse_env(seen["env"].encode())
    assert env["ALLOW_DOCKER_ACCESS"] == "True"
    assert env["DOCKER_HOST"] == "unix:///var/run/docker.sock"


def test_without_access_there_is_no_socket_and_no_docker_host(tmp_path: Path) -> None:
    command = (
        'ls /var/run/docker.sock /run/podman/podman.sock > "$ROOT_OUTPUT_NAME/ls" 2>&1; '
        f'ls {ENGINE.removeprefix("unix://")} >> "$ROOT_OUTPUT_NAME/ls" 2>&1; '
        'env -0 > "$ROOT_OUTPUT_NAME/env"'
    )
    ctx = in_image(make_ctx(tmp_path, command=command))
    outcome = run(make_job(), ctx, None)
    [seen] = [members(ctx, k) for k in outcome.outputs]
    assert "docker.sock" in seen["ls"] and seen["ls"].count("No such file") == 3
    env = parse_env(seen["env"].encode())
    assert "DOCKER_HOST" not in env and env["ALLOW_DOCKER_ACCESS"] == "False"


def test_the_flocks_limits_apply_inside(tmp_path: Path) -> None:
    command = (
        "cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/memory/memory.limit_in_bytes "
        '> "$ROOT_OUTPUT_NAME/mem" 2>/dev/null; '
        "cat /sys/fs/cgroup/cpu.max /sys/fs/cgroup/cpu/cpu.cfs_quota_us "
        '> "$ROOT_OUTPUT_NAME/cpu" 2>/dev/null; '
        'ulimit -n > "$ROOT_OUTPUT_NAME/nofile"; ulimit -c > "$ROOT_OUTPUT_NAME/core"; '
        'echo "$ULIMIT_FILENO" > "$ROOT_OUTPUT_NAME/fileno"'
    )
    limits = {"nofile": (512, 1024), "core": (0, 0)}
    ctx = in_image(make_ctx(tmp_path, command=command), cpus=0.5, memory=64 << 20, ulimits=limits)
    outcome = run(make_job(), ctx)
    [seen] = [members(ctx, k) for k in outcome.outputs]
    assert seen["mem"].split()[0] == str(64 << 20)
    assert seen["cpu"].split()[0] == "50000"  # 0.5 of the 100000 µs period
    assert seen["nofile"] == seen["fileno"] == "512\n" and seen["core"] == "0\n"


def test_a_payload_over_its_memory_limit_is_killed(tmp_path: Path) -> None:
    command = "python3 -c 'b = bytearray(512 * 1024 * 1024); print(len(b))'"
    ctx = in_image(make_ctx(tmp_path, command=command), PYTHON_IMAGE, memory=32 << 20)
    outcome = run(make_job(), ctx)
    assert outcome.status is JobStatus.FAILED
    # engines that report the out-of-memory kill (Docker) give the first; Podman 4.3 on
    # cgroups v1 only says that the container's PID 1 ended with 128 + SIGKILL
    assert (outcome.reason, outcome.exit_code) in (
        ("killed by signal SIGKILL", -9),
        ("exit code 137", 137),
    )


def test_containers_an_earlier_attempt_left_are_removed(tmp_path: Path) -> None:
    job = make_job(attempt=2)
    left = client().containers.create(
        BUSYBOX, ["sleep", "300"], labels={"shepard.job": job.id, "shepard.attempt": "1"}
    )
    left.start()
    outcome = run(job, in_image(make_ctx(tmp_path, command="true")))
    assert outcome.status is JobStatus.SUCCEEDED
    assert containers_of(job.id) == []


def test_an_engine_that_does_not_answer_is_a_retryable_setup_failure(tmp_path: Path) -> None:
    ctx = make_ctx(
        tmp_path, command="true", container=spec(engine=f"unix://{tmp_path}/nothing.sock")
    )
    outcome = run(make_job(), ctx)
    assert outcome.status is JobStatus.FAILED and outcome.retryable is True
    assert outcome.reason is not None
    assert outcome.reason.startswith(
        f"setup: cannot reach the container engine at unix://{tmp_path}"
    )


# -- helpers ---------------------------------------------------------------------------------


def _zip(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return buf.getvalue()


def _log(ctx: RuntimeContext, job: Job) -> str:
    path = cast(LocalStore, ctx.logs).path(log_key(job.id, job.attempt, "stdout"))
    return path.read_text() if path.is_file() else ""


def _until(condition: Any, seconds: float) -> None:
    end = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < end, "timed out waiting"
        time.sleep(0.05)


@contextlib.contextmanager
def _running(
    job: Job, ctx: RuntimeContext, control: AttemptControl | None = None
) -> Iterator[list[Outcome]]:
    """Run an attempt in a thread while the block runs; on exit, wait for its outcome."""
    result: list[Outcome] = []
    control = control or AttemptControl()
    thread = threading.Thread(target=lambda: result.append(run(job, ctx, control)))
    thread.start()
    try:
        yield result
    finally:
        thread.join(60)
    assert result, "the attempt did not end"
