"""Where a local runner's CPU goes per job: one runner's loop, measured step by step.

    .venv/bin/python bench/runner_phases.py [--jobs 3000] [--dir /dev/shm]

Runs the trivial payload of bench/e2e_local.py through the same functions a runner process
uses (`sheep.attempt` and `sheep.Recorder`, claiming ahead as the runner does), in this
process, and prints the wall and CPU time per job of each step. Wrapping the steps costs a
little CPU of its own, so the parts add up to slightly more than an unwrapped loop; compare
them with each other, and the loop with `xargs -P 1` (printed too).
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import shepard.catalog.sql as catalog_sql
import shepard.payloads.process as process_payloads
import shepard.runtime.worker as worker
import shepard.sheep as sheep
from shepard.flock import Flock
from shepard.runtime.process import become_runner_process, work_in

SHEPARD = str(Path(sys.executable).with_name("shepard"))
PAYLOAD = 'echo "$ITEM" > "$ROOT_OUTPUT_NAME/o.txt"'
cpu: collections.defaultdict[str, float] = collections.defaultdict(float)
wall: collections.defaultdict[str, float] = collections.defaultdict(float)


def measured(owner: Any, name: str, label: str) -> None:
    """Wrap `owner.name` so that its calls add to the counters under `label`."""
    inner: Callable[..., Any] = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        began_cpu, began = time.process_time(), time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            cpu[label] += time.process_time() - began_cpu
            wall[label] += time.perf_counter() - began

    setattr(owner, name, wrapper)


def run_loop(flock: Flock) -> tuple[int, float, float]:
    ctx, catalog = flock.runtime_context(), flock.catalog
    slot = ctx.workspace_root / "slot-bench"
    slot.mkdir(parents=True)
    become_runner_process()  # this process runs the loop a runner process runs
    work_in(slot)
    heartbeat = sheep.Heartbeat(catalog, 60.0)
    recorder = sheep.Recorder(
        catalog, heartbeat, flock.config.retry.policy(), ctx.outputs, worker="bench", lease=60.0
    )
    ready = collections.deque(recorder.flush(1))
    done, ahead = 0, 1
    began_cpu, began = time.process_time(), time.perf_counter()
    while ready:
        job, control = ready.popleft()
        outcome = sheep.attempt(job, ctx, catalog, control, slot=slot)
        assert outcome is not None and outcome.status.value == "succeeded", outcome
        recorder.add(job, outcome)
        done += 1
        ahead = min(2 * ahead, sheep.MAX_AHEAD)
        if not ready:
            ready.extend(recorder.flush(ahead))
    elapsed, used = time.perf_counter() - began, time.process_time() - began_cpu
    recorder.close()
    return done, elapsed, used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--dir", default="/dev/shm" if Path("/dev/shm").is_dir() else None)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="shepard-bench-", dir=args.dir))
    try:
        out = scratch / "xargs"
        out.mkdir()
        items = "".join(f"{i}\n" for i in range(1, args.jobs + 1)).encode()
        began = time.perf_counter()
        command = ["xargs", "-P", "1", "-I{}", "sh", "-c", f'echo "{{}}" > "{out}/{{}}.txt"']
        subprocess.run(command, input=items, check=True)
        xargs = (time.perf_counter() - began) / args.jobs * 1000
        folder = scratch / "flock"
        subprocess.run(
            [SHEPARD, "init", str(folder), "--payload-command", PAYLOAD, "--workers", "1"],
            check=True,
            capture_output=True,
        )
        flock = Flock.open(folder)
        flock.submit([{"ITEM": i} for i in range(1, args.jobs + 1)])
        measured(worker._Attempt, "_prepare", "workspace and environment")
        measured(process_payloads, "run_payload", "start, wait for and reap the payload")
        measured(worker._Attempt, "_succeed", "zip and store the outputs")
        measured(worker, "remove_workspace", "empty the workspace")
        measured(catalog_sql.SqlCatalog, "finish_and_claim", "catalog (batched)")
        done, elapsed, used = run_loop(flock)
        flock.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"{done} trivial jobs, one runner's loop in this process, files in {args.dir}")
    print(f"  loop: {elapsed / done * 1000:.3f} ms/job wall, {used / done * 1000:.3f} ms/job CPU")
    for label in cpu:
        print(
            f"    {label:38s} {cpu[label] / done * 1000:.3f} ms CPU"
            f"  ({wall[label] / done * 1000:.3f} ms wall)"
        )
    print(f"  xargs -P 1: {xargs:.3f} ms/job wall")


if __name__ == "__main__":
    main()
