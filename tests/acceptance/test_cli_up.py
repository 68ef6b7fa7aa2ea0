"""`shepard up`: foreground sheep, cooperation between processes, recovery after kill -9."""

from __future__ import annotations

import collections
import signal
import time
from pathlib import Path

import pytest

from tests.acceptance.conftest import Cli, zip_text

pytestmark = pytest.mark.acceptance


def wait_for(cli: Cli, predicate: object, timeout: float = 90) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        counts: dict[str, int] = cli("query", "--json").json()["counts"]
        if predicate(counts):  # type: ignore[operator]
            return counts
        assert time.monotonic() < deadline, f"timed out; counts={counts}"
        time.sleep(0.3)


def set_lease(cli: Cli, seconds: float) -> None:
    path = cli.flock / "flock.toml"
    text = path.read_text().replace("[backend]\n", f"[backend]\nlease = {seconds}\n")
    path.write_text(text)


def test_two_up_processes_share_the_queue_without_running_a_job_twice(
    cli: Cli, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.txt"
    cli.init(f'echo "$UUID $$" >> {ledger}; sleep 0.05')
    sheep = [cli.popen("up"), cli.popen("up")]
    try:
        cli("submit", "--range", "ITEM=1-60")
        counts = wait_for(cli, lambda c: c["succeeded"] == 60)
        assert counts["failed"] == 0
    finally:
        for proc in sheep:
            proc.send_signal(signal.SIGINT)
        codes = [proc.wait(timeout=30) for proc in sheep]
    assert codes == [0, 0]
    runs = collections.Counter(line.split()[0] for line in ledger.read_text().splitlines())
    assert len(runs) == 60 and set(runs.values()) == {1}


def test_jobs_survive_a_killed_up(cli: Cli, tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.txt"
    cli.init(f'echo "$UUID $START_TIME" >> {ledger}; sleep 2; echo ok > "$ROOT_OUTPUT_NAME/o"')
    set_lease(cli, 3)
    cli("submit", "--range", "ITEM=1-4")
    first = cli.popen("up")
    try:
        wait_for(cli, lambda c: c["running"] >= 2)
    finally:
        first.kill()  # kill -9: no chance to clean up or release anything
        first.wait()
    second = cli.popen("up")
    try:
        wait_for(cli, lambda c: c["succeeded"] == 4, timeout=120)
    finally:
        second.send_signal(signal.SIGINT)
        second.wait(timeout=30)
    outputs = list((cli.flock / "outputs").glob("result@*_root.zip"))
    assert len(outputs) == 4, "exactly one output per job, from the attempt that finished"
    jobs = cli("query", "--json").json()["jobs"]
    assert max(j["attempt"] for j in jobs) == 2, "killed attempts run again as attempt 2"


def test_interrupted_up_requeues_running_jobs(cli: Cli) -> None:
    cli.init("sleep 30")
    cli("submit", "--range", "ITEM=1-3")
    proc = cli.popen("up")
    try:
        wait_for(cli, lambda c: c["running"] == 2)
    finally:
        proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 0
    counts = cli("query", "--json").json()["counts"]
    assert counts["queued"] == 3 and counts["running"] == 0 and counts["failed"] == 0


def test_up_and_wait_start_their_runners_as_forks(cli: Cli) -> None:
    """Both open their backend before starting any thread of their own, so their runner
    processes are forks of them (nothing to import): the parent of each payload is a process
    with the command line of `up` or `submit --wait`, not a new interpreter."""
    cli.init('tr "\\0" " " < /proc/$PPID/cmdline > "$ROOT_OUTPUT_NAME/parent.txt"')
    cli("submit", "--range", "ITEM=1-2", "--wait")
    sheep = cli.popen("up", "--no-inbox")
    try:
        cli("submit", "--range", "ITEM=3-4")
        wait_for(cli, lambda c: c["succeeded"] == 4)
    finally:
        sheep.send_signal(signal.SIGINT)
        sheep.wait(timeout=30)
    parents: dict[int, str] = {}
    for path in (cli.flock / "outputs").glob("result@*_root.zip"):
        job = cli("show", path.name.split("@")[1].split("_")[0], "--json").json()
        parents[job["params"]["ITEM"]] = zip_text(path, "parent.txt").rstrip()
    assert sorted(parents) == [1, 2, 3, 4]
    assert not any("shepard.backends.procs" in parent for parent in parents.values())
    assert " submit --range ITEM=1-2 --wait" in parents[1] and parents[1] == parents[2]
    assert parents[3].endswith(" up --no-inbox") and parents[3] == parents[4]


def test_the_runners_of_up_and_wait_are_forked_before_the_command_line_loads(cli: Cli) -> None:
    """Their runners are the spares forked at start-up (backends/spares.py), before pydantic
    and the rest of the command line are imported: pydantic's compiled core, mapped by every
    process that imported it, is not mapped in the parent of any payload."""
    cli.init('grep -c _pydantic_core /proc/$PPID/maps > "$ROOT_OUTPUT_NAME/mapped.txt"; true')
    cli("submit", "--range", "ITEM=1-2", "--wait")
    sheep = cli.popen("up", "--no-inbox")
    try:
        cli("submit", "--range", "ITEM=3-4")
        wait_for(cli, lambda c: c["succeeded"] == 4)
    finally:
        sheep.send_signal(signal.SIGINT)
        sheep.wait(timeout=30)
    zips = list((cli.flock / "outputs").glob("result@*_root.zip"))
    assert len(zips) == 4
    assert {zip_text(path, "mapped.txt").strip() for path in zips} == {"0"}
