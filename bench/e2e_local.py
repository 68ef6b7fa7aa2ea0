"""End-to-end throughput of the local backend against `xargs -P` running the same command.

    .venv/bin/python bench/e2e_local.py [--jobs 5000] [--workers N] [--rounds 3]

Both sides run the trivial payload `echo "$ITEM" > <output>/o.txt` through /bin/sh, N at a
time. xargs does no bookkeeping at all; Shepard registers the jobs in its SQLite catalog,
claims them with leases, prepares a workspace per job, runs the payload, zips and stores the
output, records the outcome and removes the workspace. The figure that matters is the ratio of
throughputs, measured side by side in one run (median of the rounds). Target: >= 0.7.
The CPU time of each side (every process it started, payloads included) is printed too: on a
shared machine it moves less than the wall time.

A third side calibrates the machine: a minimal thread pool in this Python process that runs
the same command with subprocess, zips its output with zipfile and removes its folder, with
no catalog and no contract. How close it comes to xargs says how much of the ratio any
Python runner can reach here; Shepard's ratio to it says what Shepard's bookkeeping costs.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

SHEPARD = str(Path(sys.executable).with_name("shepard"))
PAYLOAD = 'echo "$ITEM" > "$ROOT_OUTPUT_NAME/o.txt"'


def children_cpu() -> float:
    """CPU seconds used so far by the ended children of this process (and theirs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_xargs(jobs: int, workers: int, scratch: Path) -> tuple[float, float, float]:
    out = scratch / "xargs"
    out.mkdir()
    items = "".join(f"{i}\n" for i in range(1, jobs + 1)).encode()
    cmd = ["xargs", "-P", str(workers), "-I{}", "sh", "-c", f'echo "{{}}" > "{out}/{{}}.txt"']
    began, cpu = time.perf_counter(), children_cpu()
    subprocess.run(cmd, input=items, check=True)
    elapsed, cpu = time.perf_counter() - began, children_cpu() - cpu
    assert len(os.listdir(out)) == jobs
    return elapsed, cpu, elapsed


def run_pool(jobs: int, workers: int, scratch: Path) -> tuple[float, float, float]:
    out = scratch / "outputs"
    out.mkdir()
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}

    def one(item: int) -> None:
        folder = scratch / f"w{item}"
        (folder / "output").mkdir(parents=True)
        env = {**base, "ITEM": str(item), "ROOT_OUTPUT_NAME": str(folder / "output")}
        subprocess.run(["/bin/sh", "-c", PAYLOAD], env=env, cwd=folder, check=True)
        with zipfile.ZipFile(out / f"result@{item}.zip", "w", zipfile.ZIP_DEFLATED) as zf:
            zf.write(folder / "output" / "o.txt", "o.txt")
        shutil.rmtree(folder)

    began, cpu = time.perf_counter(), time.process_time() + children_cpu()
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, range(1, jobs + 1)))
    elapsed = time.perf_counter() - began
    cpu = time.process_time() + children_cpu() - cpu
    assert len(os.listdir(out)) == jobs
    return elapsed, cpu, elapsed


def run_shepard(jobs: int, workers: int, scratch: Path) -> tuple[float, float, float]:
    flock = scratch / "flock"
    env = {**os.environ, "SHEPARD_FLOCK": str(flock)}
    subprocess.run(
        [SHEPARD, "init", str(flock), "--payload-command", PAYLOAD, "--workers", str(workers)],
        check=True,
        env=env,
        capture_output=True,
    )
    began, cpu = time.perf_counter(), children_cpu()
    subprocess.run(
        [SHEPARD, "submit", "--range", f"ITEM=1-{jobs}", "--wait"],
        check=True,
        env=env,
        capture_output=True,
    )
    elapsed, cpu = time.perf_counter() - began, children_cpu() - cpu
    produced = len(list((flock / "outputs").glob("result@*_root.zip")))
    assert produced == jobs, f"{produced} outputs for {jobs} jobs"
    return elapsed, cpu, running_time(flock / "catalog.db")


def running_time(catalog: Path) -> float:
    """Seconds from the first claim to the last recorded end: the run without the CLI's
    start-up, the registration of the jobs and the start of the runner processes."""
    with contextlib.closing(sqlite3.connect(catalog)) as db:
        (first,) = db.execute("SELECT min(at) FROM job_events WHERE status = 'running'").fetchone()
        (last,) = db.execute("SELECT max(finished_at) FROM jobs").fetchone()
    return float(last - first)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--dir",
        default="/dev/shm" if Path("/dev/shm").is_dir() else None,
        help="where both sides write (default /dev/shm: measures bookkeeping, not the disk)",
    )
    args = parser.parse_args()
    xargs_times: list[float] = []
    pool_times: list[float] = []
    shepard_times: list[float] = []
    xargs_cpu: list[float] = []
    pool_cpu: list[float] = []
    shepard_cpu: list[float] = []
    steady: list[float] = []
    for _ in range(args.rounds):
        for runner, times, cpu, running in (
            (run_xargs, xargs_times, xargs_cpu, []),
            (run_pool, pool_times, pool_cpu, []),
            (run_shepard, shepard_times, shepard_cpu, steady),
        ):
            scratch = Path(tempfile.mkdtemp(prefix="shepard-bench-", dir=args.dir))
            try:
                elapsed, used, ran = runner(args.jobs, args.workers, scratch)
                times.append(elapsed)
                cpu.append(used)
                running.append(ran)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
    x, s = statistics.median(xargs_times), statistics.median(shepard_times)
    p = statistics.median(pool_times)
    xc, pc, sc = (
        statistics.median(c) / args.jobs * 1000 for c in (xargs_cpu, pool_cpu, shepard_cpu)
    )
    r = statistics.median(steady)
    print(
        f"{args.jobs} trivial jobs, {args.workers} workers, median of {args.rounds} rounds, "
        f"files in {args.dir or tempfile.gettempdir()}"
    )
    rate = f"{x:7.2f} s   {args.jobs / x:8.0f} jobs/s"
    print(f"  xargs -P {args.workers}      {rate}   {xc:.2f} ms CPU/job")
    rate = f"{p:7.2f} s   {args.jobs / p:8.0f} jobs/s"
    print(f"  minimal pool    {rate}   {pc:.2f} ms CPU/job   (threads, subprocess, zipfile)")
    print(
        f"  shepard (local) {s:7.2f} s   {args.jobs / s:8.0f} jobs/s   {sc:.2f} ms CPU/job"
        "   (CLI submit --wait)"
    )
    print(f"  ratio shepard/xargs: {x / s:.2f}  (target >= 0.70)")
    print(f"  calibration: minimal pool/xargs {x / p:.2f}, shepard/minimal pool {p / s:.2f}")
    print(
        f"  once running: {args.jobs / r:.0f} jobs/s over {r:.2f} s (first claim to last end), "
        f"{x / r:.2f} of xargs; start-up and exit {s - r:.2f} s"
    )


if __name__ == "__main__":
    main()
