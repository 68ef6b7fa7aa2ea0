"""The runtime's shortcuts for short jobs give exactly what the general paths give: payloads
started from the working directory, the cached inherited environment, and a slot emptied once
per job (the small zip writer: test_zipwriter.py)."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest

from shepard.errors import PayloadError
from shepard.model import JobStatus
from shepard.runtime import RuntimeContext, contract, log_key, process
from shepard.runtime.environ import inherited_env
from shepard.runtime.process import Ending, run_payload, work_in
from shepard.runtime.workspace import (
    Workspace,
    create_workspace,
    remove_workspace,
)
from shepard.storage import LocalStore
from tests.unit.test_runtime_worker import make_ctx, make_job, run, with_command

# -- starting payloads -----------------------------------------------------------------------


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder made this process's working directory with `work_in` (as in a runner
    process), undone afterwards."""
    here = os.getcwd()
    folder = tmp_path / "slot"
    folder.mkdir()
    monkeypatch.setattr(process._Workdir, "runner", True)
    work_in(folder)
    try:
        yield folder
    finally:
        os.chdir(here)
        process._Workdir.current = None


def test_only_a_runner_process_may_change_its_working_directory(tmp_path: Path) -> None:
    here = os.getcwd()
    assert not process.is_runner_process()  # nothing in a test run declared it
    with pytest.raises(RuntimeError, match="only a runner process"):
        work_in(tmp_path)
    assert os.getcwd() == here and process._Workdir.current is None


PROBE = (
    "ls /proc/self/fd > fds.txt; pwd > pwd.txt; grep SigIgn /proc/self/status > sig.txt; "
    "ps -o sid= -p $$ > sid.txt; read -r line || echo eof > stdin.txt; exit 3"
)


GLIBC_INTERNAL = 1 << 31 | 1 << 32


def ignored(line: list[str]) -> int:
    """The SigIgn mask of a `SigIgn: <hex>` line of /proc/PID/status."""
    return int(line[1], 16)


def probe(folder: Path, tmp_path: Path) -> dict[str, list[str]]:
    result = run_payload(
        PROBE, cwd=folder, env=dict(os.environ), stdout=tmp_path / "o", stderr=tmp_path / "e",
        deadline=None, stop=threading.Event(),
    )  # fmt: skip
    assert (result.ending, result.returncode) == (Ending.EXITED, 3)
    names = ("fds", "pwd", "sig", "sid", "stdin")
    return {name: (folder / f"{name}.txt").read_text().split() for name in names}


def test_payloads_start_alike_from_the_working_directory_or_not(
    workdir: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    spawned, forked = probe(workdir, tmp_path), probe(other, tmp_path)
    assert spawned["pwd"] == [str(workdir)] and forked["pwd"] == [str(other)]
    assert spawned["fds"] == forked["fds"]  # 0, 1, 2 and ls's own: nothing leaks
    # SIGPIPE and SIGXFSZ back to their defaults; glibc's posix_spawn leaves its two internal
    # signals (32, 33) ignored, which programs that use them override
    assert ignored(spawned["sig"]) & ~GLIBC_INTERNAL == ignored(forked["sig"])
    assert not ignored(spawned["sig"]) & (1 << signal.SIGPIPE - 1 | 1 << signal.SIGXFSZ - 1)
    assert spawned["stdin"] == forked["stdin"] == ["eof"]
    assert spawned["sid"] != [str(os.getsid(0))] and forked["sid"] != [str(os.getsid(0))]


def test_a_payload_killed_by_a_signal_reports_it_from_the_working_directory(
    workdir: Path, tmp_path: Path
) -> None:
    result = run_payload(
        "kill -TERM $$", cwd=workdir, env={}, stdout=tmp_path / "o", stderr=tmp_path / "e",
        deadline=None, stop=threading.Event(),
    )  # fmt: skip
    assert result.returncode == -signal.SIGTERM


def test_a_payload_that_cannot_start_is_a_payload_error_either_way(
    workdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(process, "SHELL", str(tmp_path / "no-shell"))
    for cwd in (workdir, tmp_path):
        with pytest.raises(PayloadError, match="cannot start the payload"):
            run_payload(
                "true", cwd=cwd, env={}, stdout=tmp_path / "o", stderr=tmp_path / "e",
                deadline=None, stop=threading.Event(),
            )  # fmt: skip


def test_a_folder_made_anew_at_the_working_directorys_path_is_not_it(
    workdir: Path, tmp_path: Path
) -> None:
    os.rename(workdir, tmp_path / "old")
    workdir.mkdir()
    run_payload(
        "pwd > pwd.txt", cwd=workdir, env={}, stdout=tmp_path / "o", stderr=tmp_path / "e",
        deadline=None, stop=threading.Event(),
    )  # fmt: skip
    assert (workdir / "pwd.txt").read_text().strip() == str(workdir)


# -- the inherited environment ---------------------------------------------------------------


def test_the_inherited_layer_follows_os_environ(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = make_ctx(tmp_path)
    ws = Workspace(tmp_path / "job")
    monkeypatch.setenv("SHEPARD_SECRET_KEY", "private")
    monkeypatch.setenv("uuid", "inherited, but a runtime name")
    monkeypatch.setenv("KEPT", "1")

    def env() -> dict[str, str]:
        return contract.build_env(make_job(), ctx, start_time=1, paths=ws, base=inherited_env())

    first = env()
    assert first["KEPT"] == "1" and "SHEPARD_SECRET_KEY" not in first and "uuid" not in first
    assert inherited_env() is inherited_env()  # the same snapshot while nothing changes
    monkeypatch.setenv("KEPT", "2")
    assert env()["KEPT"] == "2"
    first["KEPT"] = "changed by a caller"
    assert env()["KEPT"] == "2"  # each call gets its own dict


# -- slots -----------------------------------------------------------------------------------


def test_a_slot_is_emptied_after_each_job_and_before_one_only_when_needed(
    tmp_path: Path,
) -> None:
    slot = Workspace(tmp_path / "slot", reused=True)
    create_workspace(slot)
    slot.secrets.mkdir()
    (slot.output / "o.txt").write_text("x")
    (slot.root / "stray").mkdir()
    remove_workspace(slot)
    assert sorted(os.listdir(slot.root)) == ["input", "output"]
    assert os.listdir(slot.output) == [] and os.listdir(slot.input) == ["secrets"]
    create_workspace(slot)  # emptied by this process after its last job: nothing to do
    (slot.output / "left.txt").write_text("x")  # e.g. a crash before remove_workspace
    create_workspace(slot)
    assert os.listdir(slot.output) == []


# -- log files of a folder store ----------------------------------------------------------------


def test_empty_logs_become_the_slots_spares_and_are_reused(tmp_path: Path) -> None:
    """A slot's attempt that prints nothing keeps no log file: its empty files become spares
    (hidden from listings) that the next attempt renames into place, so no file is created;
    a stream that was written is kept, complete, and a new spare is made next time."""
    slot = tmp_path / "slot"
    quiet = with_command(make_ctx(tmp_path), 'echo "$ITEM" > "$ROOT_OUTPUT_NAME/o.txt"')
    first, second = make_job(params={"ITEM": "1"}), make_job(params={"ITEM": "2"})
    assert run(first, quiet, slot=slot).status is JobStatus.SUCCEEDED
    assert list(quiet.logs.list()) == []  # nothing printed, nothing kept
    logs = cast(LocalStore, quiet.logs)
    spares = sorted(p.name for p in logs.path(log_key(first.id, 1, "stdout")).parent.iterdir())
    assert spares == [".tmp-spare-slot.stderr", ".tmp-spare-slot.stdout"]
    spare = logs.path(log_key(first.id, 1, "stdout")).with_name(spares[1])
    inode = spare.stat().st_ino
    loud = with_command(quiet, "echo out; echo err >&2")
    assert run(second, loud, slot=slot).status is JobStatus.SUCCEEDED
    out = logs.path(log_key(second.id, 1, "stdout"))
    assert out.read_text() == "out\n" and out.stat().st_ino == inode  # the spare, in place
    assert logs.path(log_key(second.id, 1, "stderr")).read_text() == "err\n"
    assert sorted(quiet.logs.list()) == sorted(
        [log_key(second.id, 1, "stdout"), log_key(second.id, 1, "stderr")]
    )


def test_without_a_slot_a_folder_store_keeps_empty_logs(tmp_path: Path) -> None:
    ctx = with_command(make_ctx(tmp_path), "true")
    job = make_job()
    assert run(job, ctx).status is JobStatus.SUCCEEDED
    assert quiet_keys(ctx) == sorted([log_key(job.id, 1, "stdout"), log_key(job.id, 1, "stderr")])


def quiet_keys(ctx: RuntimeContext) -> list[str]:
    return sorted(ctx.logs.list())
