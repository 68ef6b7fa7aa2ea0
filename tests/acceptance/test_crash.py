"""Crash safety for real: `shepard up` processes killed with SIGKILL at random moments.

Nothing may be lost and nothing published twice: in the end every job has succeeded, and the
outputs store holds exactly one result zip per job, the one of the attempt the catalog
recorded. The random schedule comes from a seed printed on failure; set SHEPARD_CRASH_SEED to
replay one.
"""

from __future__ import annotations

import collections
import os
import random
import signal
import subprocess
import time
import zipfile
from pathlib import Path
from typing import IO

import pytest

from tests.acceptance.conftest import SHEPARD, Cli

pytestmark = pytest.mark.acceptance

JOBS = 300
LEASE = 2.0  # seconds: jobs of a killed sheep run again soon after


class Flock:
    """The `shepard up` processes serving the flock under test."""

    def __init__(self, cli: Cli, logs: Path) -> None:
        self.cli, self.logs = cli, logs
        self.alive: list[subprocess.Popen[bytes]] = []
        self._files: list[IO[bytes]] = []
        self.started = 0

    def start(self) -> None:
        self.started += 1
        log = open(self.logs / f"up-{self.started}.log", "wb")  # noqa: SIM115
        self._files.append(log)
        proc = subprocess.Popen(
            [SHEPARD, "up"], cwd=self.cli.cwd, env=self.cli.env, stdout=log, stderr=log
        )
        self.alive.append(proc)

    def check(self, context: str) -> None:
        """Fail at once when an `up` ended by itself (only the test may end one)."""
        ended = [proc.returncode for proc in self.alive if proc.poll() is not None]
        assert not ended, f"`shepard up` exited with {ended}; {context}\n{self.log_text()[-3000:]}"

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        proc.kill()  # SIGKILL: no cleanup, no release, no report
        proc.wait()
        self.alive.remove(proc)

    def stop_all(self) -> list[int]:
        for proc in self.alive:
            proc.send_signal(signal.SIGINT)
        codes = [proc.wait(timeout=60) for proc in self.alive]
        self.alive.clear()
        for log in self._files:
            log.close()
        return codes

    def log_text(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.logs.glob("*.log")))


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def counts(cli: Cli) -> dict[str, int]:
    found: dict[str, int] = cli("query", "--json", "--limit", "0").json()["counts"]
    return found


def started_one(cli: Cli, ledger: Path, sheep: Flock, context: str) -> bool:
    """Wait until a payload starts (to kill while payloads run, not during start-up); False
    when no job is left to start."""
    before = lines(ledger)
    began = time.monotonic()
    while lines(ledger) == before:
        waited = time.monotonic() - began
        assert waited < 30, f"no job started ({context})"
        sheep.check(context)
        if waited > 3 and counts(cli)["queued"] == 0:
            return False
        time.sleep(0.05)
    return True


def test_sheep_killed_at_random_lose_nothing_and_publish_each_result_once(
    cli: Cli, tmp_path: Path
) -> None:
    seed = int(os.environ.get("SHEPARD_CRASH_SEED") or random.randrange(1 << 32))
    rng = random.Random(seed)
    ledger = tmp_path / "ledger.txt"
    cli.init(
        f'echo "$UUID $START_TIME" >> {ledger}; sleep 0.1; '
        'echo "$UUID $START_TIME" > "$ROOT_OUTPUT_NAME/o.txt"'
    )
    config = cli.flock / "flock.toml"
    text = config.read_text().replace("[backend]\n", f"[backend]\nlease = {LEASE}\n")
    config.write_text(text + "\n[retry]\nbackoff = 0.1\n")
    cli("submit", "--range", f"ITEM=1-{JOBS}")
    (tmp_path / "logs").mkdir()
    sheep = Flock(cli, tmp_path / "logs")
    began = time.monotonic()
    kills = 0
    try:
        for _ in range(rng.randint(4, 6)):
            wanted = 2 if rng.random() < 0.4 else 1
            while len(sheep.alive) < wanted:
                sheep.start()
            if not started_one(cli, ledger, sheep, f"seed {seed}"):
                break  # the work ran out before the schedule did
            time.sleep(rng.uniform(0.2, 1.5))
            both = len(sheep.alive) == 2 and rng.random() < 0.5
            for proc in list(sheep.alive) if both else [rng.choice(sheep.alive)]:
                sheep.kill(proc)
                kills += 1
        if not sheep.alive:
            sheep.start()
        deadline = time.monotonic() + 90
        while True:
            now = counts(cli)
            if now["queued"] + now["running"] == 0:
                break
            assert time.monotonic() < deadline, f"not done: {now} (seed {seed})"
            sheep.check(f"seed {seed}")
            time.sleep(0.5)
    finally:
        codes = sheep.stop_all()
    elapsed = time.monotonic() - began
    context = f"seed {seed}, {kills} kills, {elapsed:.1f} s\n{sheep.log_text()[-3000:]}"
    assert codes and set(codes) == {0}, context

    # Every job ended, and succeeded.
    assert counts(cli) == {
        "queued": 0, "running": 0, "succeeded": JOBS, "failed": 0, "cancelled": 0,
    }, context  # fmt: skip

    # Exactly one result per job: the zip of the attempt the catalog recorded, nothing else.
    jobs = cli("query", "--json", "--limit", str(JOBS + 10)).json()["jobs"]
    assert len(jobs) == JOBS
    recorded = {}
    for job in jobs:
        [output] = job["outputs"]
        path = Path(output)
        assert path.name == f"result@{job['id']}_{job['start_time']}_root.zip", context
        with zipfile.ZipFile(path) as zf:
            assert zf.read("o.txt").decode() == f"{job['id']} {job['start_time']}\n"
        recorded[path.name] = job
    stored = {p.name for p in (cli.flock / "outputs").iterdir()}
    assert stored == set(recorded), (
        f"results of unrecorded attempts: {sorted(stored - set(recorded))[:5]}; {context}"
    )

    # The recorded attempt really ran; killed attempts ran again as new attempts.
    runs = collections.defaultdict(set)
    for line in ledger.read_text().splitlines():
        job_id, start = line.split()
        runs[job_id].add(int(start))
    assert all(job["start_time"] in runs[job["id"]] for job in jobs), context
    rerun = [job for job in jobs if job["attempt"] > 1]
    assert rerun, f"no job ran twice: the kills missed every running job; {context}"
    for job in jobs:
        assert len(runs[job["id"]]) <= job["attempt"], context
    spot = cli("show", rerun[0]["id"], "--json").json()
    assert [Path(p).name for p in spot["outputs"]] == [
        f"result@{spot['id']}_{spot['start_time']}_root.zip"
    ]
    withdrawn = sheep.log_text().count("published without recording")
    print(
        f"crash test: {context.splitlines()[0]}; {len(rerun)} job(s) ran more than once; "
        f"{withdrawn} time(s) results of an unrecorded attempt were withdrawn"
    )
