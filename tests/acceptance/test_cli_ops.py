"""logs, cancel, retry and query --watch through the real executable."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import pytest

from tests.acceptance.conftest import Cli

pytestmark = pytest.mark.acceptance


def configure(cli: Cli, section: str, text: str) -> None:
    """Add `text` (key = value lines) to `[section]` of flock.toml."""
    path = cli.flock / "flock.toml"
    config = path.read_text()
    header = f"[{section}]\n"
    if header in config:
        config = config.replace(header, header + text + "\n")
    else:
        config += f"\n{header}{text}\n"
    path.write_text(config)


def eventually(check: Callable[[], Any], timeout: float = 30, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what or check}"
        time.sleep(0.1)


def job(cli: Cli, job_id: str) -> dict[str, Any]:
    info: dict[str, Any] = cli("show", job_id, "--json").json()
    return info


def stop(proc: subprocess.Popen[str]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    return proc.wait(timeout=30)


class Lines:
    """The lines a process writes to a pipe, readable with a timeout."""

    def __init__(self, pipe: IO[str]) -> None:
        self._lines: queue.Queue[str] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(pipe,), daemon=True)
        self._thread.start()

    def _pump(self, pipe: IO[str]) -> None:
        for line in pipe:
            self._lines.put(line)

    def next(self, timeout: float = 30) -> str:
        return self._lines.get(timeout=timeout)

    def rest(self) -> str:
        self._thread.join(timeout=30)
        found = []
        while not self._lines.empty():
            found.append(self._lines.get())
        return "".join(found)


def group_alive(pgid: int) -> bool:
    """True while any non-zombie process is in process group `pgid`."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


# -- logs ------------------------------------------------------------------------------------


def test_logs_print_follow_and_keep_every_attempt(cli: Cli, tmp_path: Path) -> None:
    gate = tmp_path / "go"
    cli.init(
        f'echo "start $START_TIME"; echo "oops $START_TIME" >&2; '
        f"while [ ! -e {gate} ]; do sleep 0.05; done; echo end; exit 3"
    )
    configure(cli, "retry", "backoff = 0.2")
    job_id = cli("submit", "--json", '{"A": 1}', "--attempts", "2", "--ids").out.strip()
    early = cli("logs", job_id, ok=False)
    assert "no logs yet" in early.err and "queued" in early.err
    assert "Traceback" not in early.err

    follower = cli.popen("logs", job_id, "--follow")  # waits for the job to start
    assert follower.stdout is not None and follower.stderr is not None
    lines, notes = Lines(follower.stdout), Lines(follower.stderr)
    assert "waiting for it to start" in notes.next()
    sheep = cli.popen("up")
    try:
        first = lines.next()
        assert first.startswith("start "), first
        assert follower.poll() is None, "follow must stream while the attempt runs"
        assert job(cli, job_id)["status"] == "running"
        gate.touch()  # attempt 1 prints `end`, exits 3 and is requeued for attempt 2
        assert lines.next() == "end\n"
        assert follower.wait(timeout=30) == 1, "followed to its end: attempt 2 failed"
        second = lines.rest()
        assert second.startswith("start ") and second.endswith("\nend\n"), second
        said = notes.rest()
        assert f"--- job {job_id}: attempt 2 ---" in said
        assert "failed (attempt 2): exit code 3" in said
        assert job(cli, job_id)["status"] == "failed"
    finally:
        assert stop(sheep) == 0
    info = job(cli, job_id)
    assert info["attempt"] == 2
    first_start = first.split()[1]
    assert cli("logs", job_id, "--attempt", "1").out == f"start {first_start}\nend\n"
    assert cli("logs", job_id, "--attempt", "1", "--stderr").out == f"oops {first_start}\n"
    latest = cli("logs", job_id).out
    assert latest == f"start {info['start_time']}\nend\n" and info["start_time"] != first_start
    ended = cli("logs", job_id, "-f", ok=False)  # a finished job: print it, say how it ended
    assert ended.code == 1 and ended.out == latest
    assert "failed (attempt 2): exit code 3" in ended.err
    missing = cli("logs", job_id, "--attempt", "5", ok=False)
    assert "no attempt 5" in missing.err
    unknown = cli("logs", "no-such-job", ok=False)
    assert "no job 'no-such-job'" in unknown.err and "Traceback" not in unknown.err


# -- cancel ----------------------------------------------------------------------------------


def test_cancel_kills_running_payloads_and_queued_jobs_never_start(
    cli: Cli, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    pids.mkdir()
    cli.init(f"echo $$ > {pids}/$UUID.pid; sleep 300")  # 2 workers
    ids = cli("submit", "--range", "ITEM=1-3", "--ids").out.split()
    sheep = cli.popen("up")
    try:
        eventually(lambda: len(list(pids.glob("*.pid"))) == 2, what="two jobs running")
        time.sleep(0.2)  # let both write their pid
        running = {p.stem: int(p.read_text()) for p in pids.glob("*.pid")}
        [waiting] = [i for i in ids if i not in running]

        queued = cli("cancel", "--status", "queued", "--json").json()
        assert queued == {"cancelled": [waiting], "not_cancelled": {}}

        first, second = sorted(running)
        began = time.monotonic()
        out = cli("cancel", first).out
        assert f"cancelled 1 job(s)\n  {first}\n" in out
        eventually(lambda: not group_alive(running[first]), timeout=10, what="payload killed")
        assert time.monotonic() - began < 6
        assert job(cli, first)["status"] == "cancelled"
        assert group_alive(running[second]), "only the cancelled job is killed"

        rest = cli("cancel", "--all", "--json").json()
        assert rest["cancelled"] == [second]
        eventually(lambda: not group_alive(running[second]), timeout=10, what="payload killed")
        assert sheep.poll() is None, "the sheep keeps running"
        time.sleep(0.5)  # give a refused late report the chance to show up
    finally:
        assert stop(sheep) == 0
    for job_id in (first, second):
        info = job(cli, job_id)
        assert info["status"] == "cancelled" and info["reason"] == "cancelled by user"
        # the runtime's late report of the killed attempt was refused: no event after cancel
        assert [h["status"] for h in info["history"]] == ["queued", "running", "cancelled"]
    never = job(cli, waiting)
    assert never["status"] == "cancelled" and never["attempt"] == 0
    assert not (pids / f"{waiting}.pid").exists()
    assert list((cli.flock / "outputs").iterdir()) == []
    unknown = cli("cancel", "no-such-job", ok=False)
    assert "no job 'no-such-job'" in unknown.err
    assert "say which jobs" in cli("cancel", ok=False).err


# -- retry and query --watch -----------------------------------------------------------------


def test_retry_failed_by_tag_and_since_then_watch_until_done(cli: Cli, tmp_path: Path) -> None:
    fixed = tmp_path / "fixed"
    cli.init(f'[ -e {fixed} ] || exit 4; echo "$N" > "$ROOT_OUTPUT_NAME/n.txt"')
    jobs = [{"TAG": "Blue", "N": 1}, {"tag": "blue", "N": 2}, {"TAG": "red", "N": 3}, {"N": 4}]
    lines = "".join(json.dumps(j) + "\n" for j in jobs)
    cli("submit", "--json-file", "-", "--wait", stdin=lines, ok=False)
    by_n = {j["params"].get("N"): j["id"] for j in cli("query", "--json").json()["jobs"]}
    cancelled = cli("submit", "--json", '{"N": 5}', "--ids").out.strip()
    cli("cancel", cancelled)
    counts = cli("query", "--json").json()["counts"]
    assert (counts["failed"], counts["cancelled"]) == (4, 1)
    fixed.touch()

    blue = cli("retry", "--failed", "--tag", "BLUE", "--json").json()
    assert blue == {"requeued": [by_n[1], by_n[2]], "not_requeued": {}}
    assert cli("retry", "--failed", "--since", "2999-01-01T00:00:00").out.strip() == (
        "nothing to retry"
    )
    named = cli("retry", cancelled)
    assert "add --cancelled" in named.err
    rest = cli("retry", "--failed", "--cancelled", "--since", "1h", "--json").json()
    assert rest["requeued"] == [by_n[3], by_n[4], cancelled]
    assert "say which jobs" in cli("retry", ok=False).err
    assert "--since 'soon'" in cli("retry", "--failed", "--since", "soon", ok=False).err

    sheep = cli.popen("up")
    try:
        watched = cli("query", "--watch", "--until-done", timeout=60)
    finally:
        assert stop(sheep) == 0
    assert "succeeded 5  failed 0  cancelled 0  total 5" in watched.out  # plain lines, piped
    infos = {n: job(cli, i) for n, i in {**by_n, 5: cancelled}.items()}
    assert {n: i["status"] for n, i in infos.items()} == dict.fromkeys(range(1, 6), "succeeded")
    assert {n: i["attempt"] for n, i in infos.items()} == {1: 2, 2: 2, 3: 2, 4: 2, 5: 1}
    for info in infos.values():
        [output] = info["outputs"]
        assert Path(output).name.endswith(f"@{info['id']}_{info['start_time']}_root.zip")
    assert len(list((cli.flock / "outputs").glob("*.zip"))) == 5


def test_query_watch_ends_on_ctrl_c(cli: Cli) -> None:
    cli.init("true")
    cli("submit", "--range", "ITEM=1-3")
    watcher = cli.popen("query", "--watch")
    time.sleep(1.5)
    assert watcher.poll() is None, "without --until-done, watch runs until Ctrl-C"
    watcher.send_signal(signal.SIGINT)
    out, err = watcher.communicate(timeout=30)
    assert watcher.returncode == 0, err
    assert "queued" in out and "3" in out and "Traceback" not in err
