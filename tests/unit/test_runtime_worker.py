"""run_attempt end to end: real payload processes over LocalStores in tmp_path."""

from __future__ import annotations

import io
import os
import resource
import socket
import threading
import time
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest
from cryptography.fernet import Fernet

from shepard.keys import ENV_VAR
from shepard.model import Job, JobStatus, Outcome, new_job_id
from shepard.payloads import Payload
from shepard.payloads.command import CommandPayload
from shepard.payloads.container_options import ContainerSpec
from shepard.payloads.image import ImagePayload
from shepard.runtime import AttemptControl, RuntimeContext, log_key, run_attempt
from shepard.secrets import SecretStore
from shepard.storage import LocalStore

GRACE = 0.2
SECRET = b"TOPSECRET-4f1c"


@pytest.fixture
def ctx(tmp_path: Path) -> RuntimeContext:
    return make_ctx(tmp_path)


def make_ctx(
    tmp_path: Path,
    *,
    command: str | None = "true",
    container: ContainerSpec | None = None,
    **changes: Any,
) -> RuntimeContext:
    """A context over LocalStores in `tmp_path` whose payload is `command` as a process, or
    in `container`'s image when one is given."""
    base = RuntimeContext(
        inputs=LocalStore(tmp_path / "inputs"),
        outputs=LocalStore(tmp_path / "outputs"),
        errors=LocalStore(tmp_path / "errors"),
        quick_deploy=LocalStore(tmp_path / "quick-deploy"),
        logs=LocalStore(tmp_path / "logs"),
        secrets=LocalStore(tmp_path / "secrets"),
        workspace_root=tmp_path / "work",
        payload=payload_of(command, container),
    )
    return replace(base, **changes)


def payload_of(command: str | None, container: ContainerSpec | None = None) -> Payload:
    """The payload that runs `command` (None: a container's own, or a quick-deploy folder)."""
    if container is not None:
        return ImagePayload(container, command)
    return CommandPayload(command)


def with_command(ctx: RuntimeContext, command: str | None, **changes: Any) -> RuntimeContext:
    """`ctx` running `command` in the same way (a process, or in the same image)."""
    payload = ctx.payload
    spec = payload.spec if isinstance(payload, ImagePayload) else None
    return replace(ctx, payload=payload_of(command, spec), **changes)


def make_job(**changes: Any) -> Job:
    job = Job(
        id=new_job_id(),
        seq=1,
        status=JobStatus.RUNNING,
        params={},
        bundle_key=None,
        attempt=1,
        max_attempts=3,
        timeout=None,
        batch=None,
        submitted_at=time.time(),
        started_at=int(time.time()),
    )
    return replace(job, **changes)


def run(job: Job, ctx: RuntimeContext, control: AttemptControl | None = None, **kw: Any) -> Outcome:
    return run_attempt(job, ctx, control or AttemptControl(), grace=GRACE, **kw)


def members(store: Any, key: str) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(store.get_bytes(key))) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def keys(store: Any) -> list[str]:
    return list(store.list())


def parse_env(data: bytes) -> dict[str, str]:
    pairs = (item.decode().split("=", 1) for item in data.split(b"\0") if item)
    return {name: value for name, value in pairs}


ENV_DUMP = 'env -0 > "$ROOT_OUTPUT_NAME/env.txt"'


# --- the environment ------------------------------------------------------------------------


def test_bundle_job_sees_the_full_contract(tmp_path: Path) -> None:
    efs, lustre = tmp_path / "efs", tmp_path / "lustre"
    check_dirs = " && ".join(
        f'test -d "${v}"'
        for v in ("EFS_INPUT_NAME", "EFS_OUTPUT_NAME", "LUSTRE_INPUT_NAME", "LUSTRE_OUTPUT_NAME")
    )
    ctx = make_ctx(
        tmp_path,
        command=f'{ENV_DUMP} && {check_dirs} && echo ok > "$ROOT_OUTPUT_NAME/dirs.txt"',
        efs=efs,
        lustre=lustre,
        env={"FLOCK_VAR": "flock", "UUID": "from-flock", "Shared": "flock"},
        timeout=30,
    )
    ctx.inputs.put_bytes("batch1/bundle.zip", b"PK-not-really")
    job = make_job(
        bundle_key="batch1/bundle.zip",
        params={"Foo": "bar baz", "flag": True, "off": False, "n": 7, "Shared": "job"},
        timeout=600,
    )
    base = {
        "PATH": os.environ["PATH"],
        "KEEP_ME": "1",
        "UUID": "stale",
        "hostname": "stale",
        "END_TIME": "stale",
        "IS_INVOKED": "stale",
    }
    outcome = run(job, ctx, base_env=base)
    assert outcome.status is JobStatus.SUCCEEDED, outcome
    files = members(ctx.outputs, outcome.outputs[0])
    env = parse_env(files["env.txt"])
    assert files["dirs.txt"] == b"ok\n"
    work = ctx.workspace_root / job.id
    start = job.started_at
    assert start is not None
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    stamp = time.strftime("%Y/%m/%d-%H:%M:%S", time.gmtime(start))
    expected = {
        "UUID": job.id,
        "START_TIME": str(start),
        "END_TIME": str(start + 600),
        "JOB_STATUS": f"calling_payload_code {stamp} U.T.C.",
        "ROOT_INPUT_NAME": str(work / "input"),
        "ROOT_OUTPUT_NAME": str(work / "output"),
        "INPUT_ZIP_NAME": "bundle.zip",
        "IS_INVOKED": "False",
        "INPUTS_BUCKET": ctx.inputs.location,
        "OUTPUTS_BUCKET": ctx.outputs.location,
        "ERROR_BUCKET": ctx.errors.location,
        "ERRORS_BUCKET": ctx.errors.location,
        "QUICK_DEPLOY_BUCKET": ctx.quick_deploy.location,
        "USES_EFS": "True",
        "USES_LUSTRE": "True",
        "EFS_INPUT_NAME": str(efs / job.id / "input"),
        "EFS_OUTPUT_NAME": str(efs / job.id / "output"),
        "EFS_READ_ONLY_PATH": str(efs),
        "LUSTRE_INPUT_NAME": str(lustre / job.id / "input"),
        "LUSTRE_OUTPUT_NAME": str(lustre / job.id / "output"),
        "LUSTRE_READ_ONLY_PATH": str(lustre),
        "ALLOW_DOCKER_ACCESS": "False",
        "ULIMIT_FILENO": str(soft) if soft != resource.RLIM_INFINITY else "unlimited",
        "HOSTNAME": socket.gethostname(),
        "PATH": os.environ["PATH"],
        "KEEP_ME": "1",
        "FLOCK_VAR": "flock",
        "Foo": "bar baz",
        "flag": "True",
        "off": "False",
        "n": "7",
        "Shared": "job",
    }
    assert {k: env.get(k) for k in expected} == expected
    assert "hostname" not in env  # an inherited reserved name in another case is dropped
    assert outcome.outputs == (f"result@{job.id}_{start}_root.zip",)  # empty efs/lustre: no zip


def test_param_only_job_without_timeout_or_filesystems(ctx: RuntimeContext) -> None:
    job = make_job(params={"x": "1"})
    outcome = run(replace(job), with_command(ctx, ENV_DUMP), base_env={"END_TIME": "9"})
    env = parse_env(members(ctx.outputs, outcome.outputs[0])["env.txt"])
    assert env["INPUT_ZIP_NAME"] == "None"
    assert env["IS_INVOKED"] == "True"
    assert env["USES_EFS"] == env["USES_LUSTRE"] == "False"
    assert "END_TIME" not in env
    assert not [k for k in env if k.startswith(("EFS_", "LUSTRE_"))]


def test_flock_timeout_gives_end_time(ctx: RuntimeContext) -> None:
    job = make_job()
    outcome = run(job, with_command(ctx, ENV_DUMP, timeout=45))
    env = parse_env(members(ctx.outputs, outcome.outputs[0])["env.txt"])
    assert env["END_TIME"] == str(job.started_at + 45)  # type: ignore[operator]


def test_payload_runs_in_the_job_folder_with_no_stdin(ctx: RuntimeContext) -> None:
    command = 'pwd -P > "$ROOT_OUTPUT_NAME/pwd.txt"; cat > "$ROOT_OUTPUT_NAME/stdin.txt"'
    job = make_job()
    outcome = run(job, with_command(ctx, command))
    files = members(ctx.outputs, outcome.outputs[0])
    assert files["pwd.txt"].decode().strip() == os.path.realpath(ctx.workspace_root / job.id)
    assert files["stdin.txt"] == b""


# --- inputs and secrets ---------------------------------------------------------------------


def test_bundle_is_copied_not_unpacked(ctx: RuntimeContext) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("inside.txt", "hello")
    ctx.inputs.put_bytes("b/2024/data.zip", buf.getvalue())
    command = 'ls -A "$ROOT_INPUT_NAME" > "$ROOT_OUTPUT_NAME/ls.txt"; cp "$ROOT_INPUT_NAME/$INPUT_ZIP_NAME" "$ROOT_OUTPUT_NAME/"'  # noqa: E501
    outcome = run(make_job(bundle_key="b/2024/data.zip"), with_command(ctx, command))
    files = members(ctx.outputs, outcome.outputs[0])
    assert files["ls.txt"].decode().split() == ["data.zip", "secrets"]
    assert files["data.zip"] == buf.getvalue()


def test_missing_bundle_fails_clearly(ctx: RuntimeContext) -> None:
    job = make_job(bundle_key="gone/missing.zip")
    outcome = run(job, ctx)
    assert outcome.status is JobStatus.FAILED
    assert outcome.reason == (
        f"setup: input bundle 'gone/missing.zip' not found in {ctx.inputs.location}"
    )
    assert outcome.exit_code is None
    status = members(ctx.errors, outcome.error_bundle or "")["exit_status.txt"].decode()
    assert "the payload did not run" in status
    assert not (ctx.workspace_root / job.id).exists()


def write_secrets(ctx: RuntimeContext, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, Fernet.generate_key().decode())
    SecretStore(ctx.secrets).put_all({"api.key": SECRET, "db.txt": SECRET + b"-db"})
    folder = ctx.secrets.local_path("folder")
    assert folder is not None
    folder.mkdir()  # not a secret: ignored


def test_secrets_are_private_copies(ctx: RuntimeContext, monkeypatch: pytest.MonkeyPatch) -> None:
    write_secrets(ctx, monkeypatch)
    command = (
        'cd "$ROOT_INPUT_NAME/secrets" && stat -c "%a %n" . * > "$ROOT_OUTPUT_NAME/modes.txt" '
        '&& cat api.key > "$ROOT_OUTPUT_NAME/key.txt"'
    )
    outcome = run(make_job(), with_command(ctx, command))
    files = members(ctx.outputs, outcome.outputs[0])
    assert files["modes.txt"].decode().splitlines() == ["700 .", "600 api.key", "600 db.txt"]
    assert files["key.txt"] == SECRET


def test_secrets_folder_exists_without_secrets(ctx: RuntimeContext) -> None:
    command = 'test -d "$ROOT_INPUT_NAME/secrets" && touch "$ROOT_OUTPUT_NAME/ok"'
    outcome = run(make_job(), with_command(ctx, command))
    assert outcome.status is JobStatus.SUCCEEDED
    assert len(outcome.outputs) == 1


def test_secrets_never_reach_the_error_bundle(
    ctx: RuntimeContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_secrets(ctx, monkeypatch)
    outcome = run(make_job(), with_command(ctx, "echo failing; exit 1"))
    files = members(ctx.errors, outcome.error_bundle or "")
    assert not any(SECRET in data for data in files.values())
    listing = files["workspace.txt"].decode()
    assert "api.key" in listing and "db.txt" in listing
    secret_lines = [line for line in listing.splitlines() if "api.key" in line]
    assert secret_lines == ["      api.key"]  # name only: no size


# --- outputs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "prefix"),
    [
        ({}, ""),
        ({"tag": "run1"}, "run1_"),
        ({"Tag": "v2.0-final"}, "v2.0-final_"),
        ({"TAG": "first", "tag": "last"}, "last_"),
        ({"TAG": "../../x y"}, "_.._x_y_"),
        ({"TAG": "...---"}, ""),
        ({"TAG": 42}, "42_"),
    ],
)
def test_output_names(ctx: RuntimeContext, params: dict[str, Any], prefix: str) -> None:
    job = make_job(params=params)
    outcome = run(job, with_command(ctx, 'echo x > "$ROOT_OUTPUT_NAME/o.txt"'))
    expected = f"{prefix}result@{job.id}_{job.started_at}_root.zip"
    assert outcome.outputs == (expected,)
    assert keys(ctx.outputs) == [expected]


def test_empty_output_folder_gives_no_zip(ctx: RuntimeContext) -> None:
    outcome = run(make_job(), with_command(ctx, 'mkdir -p "$ROOT_OUTPUT_NAME/a/b"'))
    assert outcome == Outcome(JobStatus.SUCCEEDED, exit_code=0, outputs=())
    assert keys(ctx.outputs) == []


def test_efs_and_lustre_outputs(tmp_path: Path) -> None:
    command = (
        'echo e > "$EFS_OUTPUT_NAME/e.txt"; mkdir "$LUSTRE_OUTPUT_NAME/sub"; '
        'echo l > "$LUSTRE_OUTPUT_NAME/sub/l.txt"'
    )
    ctx = make_ctx(tmp_path, command=command, efs=tmp_path / "efs", lustre=tmp_path / "lu")
    job = make_job(params={"TAG": "t"})
    outcome = run(job, ctx)
    stem = f"t_result@{job.id}_{job.started_at}"
    assert outcome.outputs == (f"{stem}_efs.zip", f"{stem}_lustre.zip")
    assert members(ctx.outputs, f"{stem}_efs.zip") == {"e.txt": b"e\n"}
    assert members(ctx.outputs, f"{stem}_lustre.zip") == {"sub/": b"", "sub/l.txt": b"l\n"}
    assert not (tmp_path / "efs" / job.id).exists()
    assert not (tmp_path / "lu" / job.id).exists()


def test_zip_holds_relative_paths_and_folders(ctx: RuntimeContext) -> None:
    command = (
        'cd "$ROOT_OUTPUT_NAME" && mkdir -p a/b empty && echo deep > a/b/c.txt && '
        "seq 1 2000 > top.txt"
    )
    outcome = run(make_job(), with_command(ctx, command))
    data = ctx.outputs.get_bytes(outcome.outputs[0])
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert sorted(zf.namelist()) == ["a/", "a/b/", "a/b/c.txt", "empty/", "top.txt"]
        assert zf.getinfo("top.txt").compress_type == zipfile.ZIP_DEFLATED
        assert zf.getinfo("a/b/c.txt").compress_type == zipfile.ZIP_DEFLATED
        assert zf.read("a/b/c.txt") == b"deep\n"
        assert zf.testzip() is None


# --- failures -------------------------------------------------------------------------------


def test_failing_payload_leaves_an_error_bundle(ctx: RuntimeContext) -> None:
    command = 'echo to-out; echo to-err >&2; echo partial > "$ROOT_OUTPUT_NAME/p.txt"; exit 3'
    job = make_job(attempt=2)
    outcome = run(job, with_command(ctx, command))
    key = f"log@{job.id}_{job.started_at}.zip"
    assert outcome == Outcome(
        JobStatus.FAILED, reason="exit code 3", exit_code=3, error_bundle=key, retryable=True
    )
    assert keys(ctx.outputs) == []
    files = members(ctx.errors, key)
    assert set(files) == {"stdout.txt", "stderr.txt", "exit_status.txt", "workspace.txt"}
    assert files["stdout.txt"] == b"to-out\n"
    assert files["stderr.txt"] == b"to-err\n"
    status = files["exit_status.txt"].decode()
    stamp = time.strftime("%Y/%m/%d-%H:%M:%S", time.gmtime(job.started_at or 0))
    for line in (f"job: {job.id}", "attempt: 2", "exit: exit code 3", "reason: exit code 3"):
        assert line in status.splitlines()
    assert f"start: {stamp} U.T.C." in status
    listing = files["workspace.txt"].decode().splitlines()
    assert listing[0] == f"{ctx.workspace_root / job.id}/"
    assert "    p.txt  8 bytes" in listing
    assert "  output/" in listing and "    secrets/" in listing


def test_payload_killed_by_a_signal(ctx: RuntimeContext) -> None:
    outcome = run(make_job(), with_command(ctx, "kill -KILL $$"))
    assert outcome.status is JobStatus.FAILED
    assert outcome.reason == "killed by signal SIGKILL"
    assert outcome.exit_code == -9


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie waiting for its (new) parent to reap it is dead too
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def test_timeout_kills_the_whole_process_tree(ctx: RuntimeContext, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    command = (
        f"sleep 60 & echo $! >> {pids}; "
        f"sh -c 'sleep 60 & echo $! >> {pids}; sleep 60' & echo $! >> {pids}; wait"
    )
    job = make_job(timeout=1)
    began = time.monotonic()
    outcome = run(job, with_command(ctx, command), clock=lambda: float(job.started_at or 0))
    assert time.monotonic() - began < 1 + GRACE + 1.5
    assert outcome.status is JobStatus.FAILED
    assert outcome.reason == "timeout after 1s"
    assert outcome.error_bundle is not None
    found = [int(p) for p in pids.read_text().split()]
    assert len(found) == 3
    deadline = time.monotonic() + 3
    while any(alive(p) for p in found) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not [p for p in found if alive(p)]


def test_the_payload_gets_its_whole_timeout_from_its_start(ctx: RuntimeContext) -> None:
    job = make_job(timeout=1, started_at=int(time.time()) - 10)  # claimed long ago
    began = time.monotonic()
    outcome = run(job, with_command(ctx, "sleep 30"))
    assert outcome.reason == "timeout after 1s"
    assert 1 <= time.monotonic() - began < 1 + GRACE + 1


def test_stop_cancels_and_publishes_nothing(ctx: RuntimeContext) -> None:
    control = AttemptControl(stop_reason="lease lost")
    threading.Timer(0.3, control.stop.set).start()
    began = time.monotonic()
    command = 'echo x > "$ROOT_OUTPUT_NAME/o.txt"; sleep 30'
    job = make_job()
    outcome = run(job, with_command(ctx, command), control)
    assert time.monotonic() - began < 0.3 + GRACE + 1
    assert outcome.status is JobStatus.CANCELLED
    assert outcome.reason == "lease lost"
    assert keys(ctx.outputs) == [] and keys(ctx.errors) == []
    assert not (ctx.workspace_root / job.id).exists()


def test_stop_before_start_runs_nothing(ctx: RuntimeContext) -> None:
    control = AttemptControl()
    control.stop.set()
    job = make_job()
    outcome = run(job, with_command(ctx, "touch /nonexistent-never"), control)
    assert outcome == Outcome(JobStatus.CANCELLED, reason="cancelled")
    assert keys(ctx.logs) == []


def test_superseded_attempt_publishes_nothing(ctx: RuntimeContext) -> None:
    asked: list[bool] = []

    def still_current() -> bool:
        asked.append(True)
        return False

    control = AttemptControl(still_current=still_current)
    outcome = run(make_job(), with_command(ctx, 'echo x > "$ROOT_OUTPUT_NAME/o"'), control)
    assert asked == [True]
    assert outcome.status is JobStatus.FAILED
    assert outcome.reason == "superseded: a newer attempt owns this job"
    assert outcome.retryable is False
    assert keys(ctx.outputs) == [] and keys(ctx.errors) == []


def test_no_command_is_not_retryable(ctx: RuntimeContext) -> None:
    outcome = run(make_job(), with_command(ctx, None))
    assert outcome.status is JobStatus.FAILED
    assert (outcome.reason or "").startswith("setup: no payload command")
    assert outcome.retryable is False
    assert outcome.error_bundle is not None


def test_internal_error_becomes_a_failed_outcome(
    ctx: RuntimeContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr("shepard.payloads.process.build_env", broken)
    job = make_job()
    outcome = run(job, ctx)
    assert outcome.status is JobStatus.FAILED
    assert outcome.reason == "internal error: RuntimeError: boom"
    status = members(ctx.errors, outcome.error_bundle or "")["exit_status.txt"].decode()
    assert "Traceback" in status and "RuntimeError: boom" in status
    assert not (ctx.workspace_root / job.id).exists()


# --- workspace and logs ---------------------------------------------------------------------


@pytest.mark.parametrize("command", ['echo x > "$ROOT_OUTPUT_NAME/o"', "exit 1"])
def test_workspace_is_removed(tmp_path: Path, command: str) -> None:
    ctx = make_ctx(tmp_path, command=command + '; chmod 500 "$ROOT_INPUT_NAME"', efs=tmp_path / "e")
    job = make_job()
    run(job, ctx)
    assert list(ctx.workspace_root.iterdir()) == []
    assert list((tmp_path / "e").iterdir()) == []


def test_leftovers_of_an_earlier_attempt_are_removed(ctx: RuntimeContext) -> None:
    job = make_job(attempt=2)
    stale = ctx.workspace_root / job.id / "output"
    (stale / "locked").mkdir(parents=True)
    (stale / "locked" / "old.txt").write_text("old")
    (stale / "locked").chmod(0o500)
    outcome = run(job, with_command(ctx, 'echo new > "$ROOT_OUTPUT_NAME/new.txt"'))
    assert members(ctx.outputs, outcome.outputs[0]) == {"new.txt": b"new\n"}


def test_logs_are_kept_per_attempt(ctx: RuntimeContext) -> None:
    job = make_job(attempt=1)
    run(job, with_command(ctx, "echo one; echo e1 >&2"))
    run(
        replace(job, attempt=2, started_at=(job.started_at or 0) + 1),
        with_command(ctx, "echo two"),
    )

    def log(attempt: int, stream: str) -> str:
        return cast(LocalStore, ctx.logs).path(log_key(job.id, attempt, stream)).read_text()

    assert log(1, "stdout") == "one\n"
    assert log(1, "stderr") == "e1\n"
    assert log(2, "stdout") == "two\n"
    assert log(2, "stderr") == ""


def test_a_reused_slot_is_emptied_before_and_after_each_job(
    ctx: RuntimeContext, tmp_path: Path
) -> None:
    slot = tmp_path / "slot-0"
    (slot / "input" / "secrets").mkdir(parents=True)
    (slot / "input" / "secrets" / "old").write_text("stale secret")
    (slot / "output").mkdir()
    (slot / "output" / "stale.txt").write_text("from an earlier job")
    (slot / "junk").write_text("left in the working folder")
    # the file exists before `find` starts: in a pipeline, sort's redirection races find
    listing = (
        ': > "$ROOT_OUTPUT_NAME/seen.txt"; find . | sort > "$ROOT_OUTPUT_NAME/seen.txt"; '
        "echo x > scratch.txt"
    )
    outcome = run_attempt(make_job(), with_command(ctx, listing), AttemptControl(), slot=slot)
    assert outcome.status is JobStatus.SUCCEEDED
    seen = members(ctx.outputs, outcome.outputs[0])["seen.txt"].decode().split()
    assert seen == [".", "./input", "./input/secrets", "./output", "./output/seen.txt"]
    assert sorted(p.name for p in slot.rglob("*")) == ["input", "output", "secrets"]


# --- quick deploy ---------------------------------------------------------------------------


def test_quick_deploy_runs_run_sh_from_its_folder(ctx: RuntimeContext) -> None:
    qd = ctx.quick_deploy
    qd.put_bytes(
        "tool/run.sh",
        b'pwd -P > "$ROOT_OUTPUT_NAME/pwd.txt"; cat lib/data.txt >> "$ROOT_OUTPUT_NAME/pwd.txt"\n',
    )
    qd.put_bytes("tool/lib/data.txt", b"data\n")
    qd.put_bytes("toolbox/run.sh", b"exit 9\n")
    job = make_job(params={"quick_deploy_directory": "tool/"})
    outcome = run(job, with_command(ctx, None))
    assert outcome.status is JobStatus.SUCCEEDED, outcome
    lines = members(ctx.outputs, outcome.outputs[0])["pwd.txt"].decode().splitlines()
    assert lines == [os.path.realpath(ctx.workspace_root / job.id / "input" / "tool"), "data"]


@pytest.mark.parametrize("name", ["../x", "/abs", "a/../b", "a//b", "secrets", "x\\y"])
def test_bad_quick_deploy_name(ctx: RuntimeContext, name: str) -> None:
    outcome = run(make_job(params={"QUICK_DEPLOY_DIRECTORY": name}), ctx)
    assert outcome.status is JobStatus.FAILED
    assert (outcome.reason or "").startswith(f"setup: bad QUICK_DEPLOY_DIRECTORY {name!r}")
    assert outcome.retryable is False


def test_missing_quick_deploy_folder(ctx: RuntimeContext) -> None:
    ctx.quick_deploy.put_bytes("other/run.sh", b"true\n")
    outcome = run(make_job(params={"QUICK_DEPLOY_DIRECTORY": "nope"}), ctx)
    assert outcome.status is JobStatus.FAILED
    assert outcome.reason == (
        f"setup: quick-deploy folder nope not found in {ctx.quick_deploy.location}"
    )
    assert outcome.error_bundle is not None


def test_processes_left_behind_are_killed(ctx: RuntimeContext, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    outcome = run(make_job(), with_command(ctx, f"sleep 60 & echo $! > {pids}; exit 0"))
    assert outcome.status is JobStatus.SUCCEEDED
    pid = int(pids.read_text())
    deadline = time.monotonic() + 3
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not alive(pid)


def test_default_environment_follows_os_environ(
    ctx: RuntimeContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = []
    for value in ("one", "two"):
        monkeypatch.setenv("SHEPARD_RUNTIME_TEST", value)
        outcome = run_attempt(make_job(), with_command(ctx, ENV_DUMP), AttemptControl())
        seen.append(parse_env(members(ctx.outputs, outcome.outputs[0])["env.txt"]))
    assert [env["SHEPARD_RUNTIME_TEST"] for env in seen] == ["one", "two"]
    assert seen[0]["PATH"] == os.environ["PATH"]
