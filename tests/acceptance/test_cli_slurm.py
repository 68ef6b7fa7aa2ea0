"""A slurm flock through the CLI, on the real single-node cluster (scripts/services-slurm) with
a PostgreSQL catalog: both modes end to end, a task killed from outside with scancel, and
`shepard cancel` removing the tasks."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shepard.backends.slurm.backend import names_for
from shepard.flock import Flock
from tests.acceptance.conftest import SHEPARD, Cli
from tests.slurm import cancel_tasks, require_slurm, squeue, use_slurm

pytestmark = pytest.mark.acceptance

TASK = re.compile(r" (slurm|slurm-sheep) (\d+_\d+)$")


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    require_slurm()
    runner = Cli(tmp_path / "flock", tmp_path)
    yield runner
    runner.kill_leftovers()
    cancel_tasks(runner.flock)


def init(cli: Cli, command: str, mode: str = "array", **settings: Any) -> str:
    """A slurm flock made by `init --backend slurm`; returns its arrays' Slurm job name."""
    cli.init(command, "--backend", "slurm")
    assert 'kind = "slurm"' in (cli.flock / "flock.toml").read_text()
    cli.configure(lambda data: use_slurm(data, mode, **settings))
    opened = Flock.open(cli.flock)
    return names_for(opened.config.name, opened.dir.catalog_url).array


def wait_for(what: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := what()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.3)
    return found


def jobs(cli: Cli) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = cli("query", "--json", "--limit", "100").json()["jobs"]
    return found


def test_array_mode_runs_each_job_as_an_array_task(cli: Cli) -> None:
    init(cli, 'echo "item $ITEM"; echo "$ITEM" > "$ROOT_OUTPUT_NAME/o.txt"')
    cli("submit", "--range", "ITEM=1-4", "--wait")
    listed = jobs(cli)
    assert {j["status"] for j in listed} == {"succeeded"} and len(listed) == 4
    tasks = set()
    for job in listed:
        info = cli("show", job["id"], "--json").json()
        match = TASK.search(info["worker"])
        assert match is not None and match.group(1) == "slurm", info["worker"]
        tasks.add(match.group(2))
    first = listed[0]
    assert cli("logs", first["id"]).out == f"item {first['params']['ITEM']}\n"
    assert len(tasks) == 4, "one task per job"
    slurm_logs = sorted((cli.flock / "slurm-output").glob("*/*.log"))
    assert [p.name for p in slurm_logs] == ["0.log", "1.log", "2.log", "3.log"]
    assert all(re.search(r"task \d of \S+\.jobs: succeeded", p.read_text()) for p in slurm_logs)


def test_sheep_mode_runs_many_jobs_in_a_few_tasks_then_leaves(cli: Cli) -> None:
    # through the CLI on the nodes (`shepard worker serve`), as `backend.slurm.shepard` asks
    name = init(cli, 'echo "$ITEM" > "$ROOT_OUTPUT_NAME/o.txt"', "sheep", shepard=SHEPARD)
    cli("submit", "--range", "ITEM=1-40", "--wait")
    listed = jobs(cli)
    assert {j["status"] for j in listed} == {"succeeded"} and len(listed) == 40
    outputs = list((cli.flock / "outputs").glob("result@*_root.zip"))
    assert len(outputs) == 40
    workers = [cli("show", j["id"], "--json").json()["worker"] for j in (listed[0], listed[-1])]
    assert all(" slurm-sheep " in w for w in workers), workers
    sheep = {TASK.search(w).group(2) for w in workers}  # type: ignore[union-attr]
    assert 1 <= len(sheep) <= 2, f"max_sheep = 2 sheep ran them all: {workers}"
    wait_for(lambda: squeue(f"{name}-sheep") == [], timeout=30)  # none while idle
    slurm_logs = list((cli.flock / "slurm-output").glob("*/*.log"))
    assert any(re.fullmatch(r"ran \d+ job\(s\)\n", p.read_text()) for p in slurm_logs)


def test_a_task_killed_from_outside_is_retried_and_succeeds(cli: Cli) -> None:
    # through the CLI on the nodes (`shepard worker run --manifest`)
    # the first attempt waits to be killed (however slow the machine), the second succeeds
    flag = cli.cwd / "first-attempt-started"
    payload = (
        f'if [ -e {flag} ]; then echo ok > "$ROOT_OUTPUT_NAME/o.txt"; '
        f"else touch {flag}; sleep 300; fi"
    )
    name = init(cli, payload, shepard=SHEPARD)
    cli.configure(lambda data: data.setdefault("retry", {}).update(backoff=1.0))
    waiting = cli.popen("submit", "--json", '{"A": 1}', "--wait")
    running = wait_for(lambda: [j for j in jobs(cli) if j["status"] == "running"])
    job_id = running[0]["id"]
    worker = cli("show", job_id, "--json").json()["worker"]
    task = TASK.search(worker).group(2)  # type: ignore[union-attr]
    subprocess.run(["scancel", task], check=True, timeout=30)
    assert waiting.wait(timeout=90) == 0, waiting.stderr.read() if waiting.stderr else ""
    info = cli("show", job_id, "--json").json()
    assert info["status"] == "succeeded" and info["attempt"] == 2
    assert info["max_attempts"] == 2, "a task killed from outside does not spend an attempt"
    details = [h["detail"] for h in info["history"] if h["status"] == "queued"]
    assert f"slurm task {task} was cancelled outside shepard (CANCELLED)" in details
    assert len(list((cli.flock / "outputs").glob("result@*_root.zip"))) == 1
    assert squeue(name) == []


def test_cancel_removes_pending_and_running_tasks(cli: Cli) -> None:
    name = init(cli, "sleep 60")
    up = cli.popen("up")
    cli("submit", "--range", "ITEM=1-5")
    states = wait_for(lambda: {s for _, s in squeue(name)} >= {"RUNNING", "PENDING"} or None)
    assert states
    waiting = next(j for j in jobs(cli) if j["status"] == "queued")
    placement = cli("show", waiting["id"], "--json").json()["placement"]
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{6}@\d+", placement), placement
    assert "handed to" in cli("show", waiting["id"]).out
    cli("cancel", "--all")
    wait_for(lambda: squeue(name) == [], timeout=30)
    assert {j["status"] for j in jobs(cli)} == {"cancelled"}
    up.send_signal(signal.SIGINT)
    assert up.wait(timeout=30) == 0


def test_a_sqlite_catalog_works_but_is_warned_about(cli: Cli) -> None:
    cli.init("echo hi", "--backend", "slurm")
    result = cli("submit", "--json", "{}", "--wait")
    assert "PostgreSQL is recommended" in result.err
    assert jobs(cli)[0]["status"] == "succeeded"


def test_an_image_payload_runs_in_its_container_on_the_node(cli: Cli) -> None:
    from tests.containers import BUSYBOX, containers_of, require_engine, use_test_engine

    require_engine(BUSYBOX)
    cli.init('echo "in $ITEM"; echo "$ITEM" > "$ROOT_OUTPUT_NAME/o.txt"', "--backend", "slurm")

    def on_slurm_with_test_engine(data: dict[str, Any]) -> None:
        use_slurm(data)
        use_test_engine(data)

    cli.configure(on_slurm_with_test_engine)
    cli.configure(lambda data: data["payload"].update(kind="image", image=BUSYBOX))
    cli("submit", "--json", '{"ITEM": 7}', "--wait")
    (job,) = jobs(cli)
    info = cli("show", job["id"], "--json").json()
    assert info["status"] == "succeeded" and " slurm " in info["worker"]
    assert any(BUSYBOX in (h["detail"] or "") for h in info["history"]), "ran in the image"
    assert cli("logs", job["id"]).out == "in 7\n"
    assert containers_of(job["id"]) == [], "the container is removed"
