"""Trivial jobs through the slurm backend against one plain `sbatch --array` of the same command,
and the time to hand 100,000 queued jobs to Slurm.

    .venv/bin/python bench/slurm.py [--jobs 200] [--sheep-jobs 2000] [--submit 100000]

Needs the test cluster (scripts/services-slurm) and a PostgreSQL server (SHEPARD_TEST_POSTGRES,
default postgresql+psycopg://postgres@127.0.0.1:5432/test); each flock gets its own schema,
dropped at the end.

- baseline: `sbatch --array=0-(N-1)` of a script that runs the payload below with ITEM set to
  the task index, timed from sbatch until squeue no longer lists the array;
- array mode: `shepard submit --range ITEM=1-N --wait` on a slurm flock in array mode (one task
  per job: registration, placement, sbatch, then per task `shepard worker run`, which claims,
  prepares the workspace, runs the payload, zips and stores the output, records the outcome);
- sheep mode: the same with `mode = "sheep"` (one sheep per core, each running job after job),
  over `--sheep-jobs` jobs, since a few hundred jobs are over before the sheep are warm;
- for scale, the local backend (one worker per core) on the sheep's jobs and catalog server;
- hand-over: N queued jobs handed to Slurm in array mode, timed from the first dispatch until
  every job is in a submitted array; the arrays are submitted held (`--hold`, so nothing runs),
  then cancelled.

The payload: `echo "$ITEM" > "$ROOT_OUTPUT_NAME/o.txt"`. Throughput ratios are ours divided by
the baseline's (jobs per second), measured side by side in one run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import tomli_w

SHEPARD = str(Path(sys.executable).with_name("shepard"))
PAYLOAD = 'echo "$ITEM" > "$ROOT_OUTPUT_NAME/o.txt"'
POSTGRES = os.environ.get(
    "SHEPARD_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


class Schemas:
    """PostgreSQL schemas made for the run, dropped at the end."""

    def __init__(self) -> None:
        self.admin = sa.create_engine(POSTGRES, isolation_level="AUTOCOMMIT")
        self.made: list[str] = []

    def new(self) -> str:
        schema = f"shepard_bench_{uuid.uuid4().hex[:10]}"
        with self.admin.connect() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        self.made.append(schema)
        url = sa.make_url(POSTGRES).update_query_dict({"options": f"-csearch_path={schema}"})
        return url.render_as_string(hide_password=False)

    def drop(self) -> None:
        with self.admin.connect() as conn:
            for schema in self.made:
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        self.admin.dispose()


def alive(array_id: str) -> bool:
    out = subprocess.run(
        ["squeue", "-h", "-j", array_id, "-o", "%i"], capture_output=True, text=True
    ).stdout
    return bool(out.strip())


def run_baseline(jobs: int, scratch: Path) -> float:
    out = scratch / "plain"
    out.mkdir()
    script = (
        "#!/bin/sh\n"
        "ITEM=$SLURM_ARRAY_TASK_ID\n"
        f'ROOT_OUTPUT_NAME="{out}/$ITEM"\n'
        'mkdir -p "$ROOT_OUTPUT_NAME"\n'
        "export ITEM ROOT_OUTPUT_NAME\n"
        f"exec sh -c '{PAYLOAD}'\n"
    )
    began = time.perf_counter()
    array_id = subprocess.run(
        ["sbatch", "--parsable", f"--array=0-{jobs - 1}", "--output=/dev/null",
         "--job-name=bench-plain"],
        input=script, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    while alive(array_id):
        time.sleep(0.2)
    elapsed = time.perf_counter() - began
    done = sum(1 for p in out.iterdir() if (p / "o.txt").exists())
    assert done == jobs, f"{done} outputs for {jobs} tasks"
    return elapsed


def make_flock(scratch: Path, name: str, url: str, slurm: dict[str, Any]) -> Path:
    flock = scratch / name
    subprocess.run(
        [SHEPARD, "init", str(flock), "--payload-command", PAYLOAD, "--backend", "slurm"],
        check=True, capture_output=True,
    )  # fmt: skip
    import tomllib

    path = flock / "flock.toml"
    data = tomllib.loads(path.read_text())
    data["catalog"] = {"url": url}
    data["backend"]["slurm"] = slurm
    path.write_text(tomli_w.dumps(data))
    return flock


def switch_to_local(flock: Path, workers: int) -> None:
    import tomllib

    path = flock / "flock.toml"
    data = tomllib.loads(path.read_text())
    data["backend"] = {"kind": "local", "workers": workers}
    path.write_text(tomli_w.dumps(data))


def run_shepard(jobs: int, flock: Path) -> float:
    began = time.perf_counter()
    subprocess.run(
        [SHEPARD, "submit", "--flock", str(flock), "--range", f"ITEM=1-{jobs}", "--wait"],
        check=True, capture_output=True,
    )  # fmt: skip
    elapsed = time.perf_counter() - began
    produced = len(list((flock / "outputs").glob("result@*_root.zip")))
    assert produced == jobs, f"{produced} outputs for {jobs} jobs"
    return elapsed


def run_hand_over(jobs: int, flock_dir: Path) -> tuple[float, int]:
    """Seconds to hand `jobs` queued jobs to Slurm, and the number of sbatch calls."""
    from shepard.backends.slurm.backend import SlurmBackend
    from shepard.backends.slurm.ctl import SlurmCtl, run_command
    from shepard.flock import Flock

    calls = 0

    def counting(args: Any, stdin: str | None = None) -> Any:
        nonlocal calls
        calls += args[0] == "sbatch"
        return run_command(args, stdin)

    flock = Flock.open(flock_dir)
    flock.submit({"ITEM": i} for i in range(jobs))
    backend = SlurmBackend(flock.backend_context(worker="bench"), ctl=SlurmCtl(counting))
    names = backend.names
    try:
        began = time.perf_counter()
        while flock.catalog.ready(now=time.time()) or any(
            "@" not in (j.placement or "") for j in flock.catalog.placed(limit=100)
        ):
            if backend.dispatch(time.time()) == 0:
                time.sleep(0.05)
        elapsed = time.perf_counter() - began
        placed = sum(1 for _ in _all_placed(flock))
        assert placed == jobs, f"{placed} of {jobs} jobs handed over"
    finally:
        subprocess.run(["scancel", f"--name={names.array}"], check=False)
        flock.close()
    return elapsed, calls


def _all_placed(flock: Any) -> Any:
    after = None
    while page := flock.catalog.placed(limit=10_000, after_seq=after):
        yield from page
        after = page[-1].seq


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200, help="jobs for baseline and array mode")
    parser.add_argument("--sheep-jobs", type=int, default=2000, help="jobs for sheep mode")
    parser.add_argument("--submit", type=int, default=100_000, help="jobs to hand over")
    parser.add_argument(
        "--dir",
        default="/dev/shm" if Path("/dev/shm").is_dir() else None,
        help="where flocks and outputs live (default /dev/shm)",
    )
    args = parser.parse_args()
    cores = os.cpu_count() or 2
    schemas = Schemas()
    scratch = Path(tempfile.mkdtemp(prefix="shepard-bench-slurm-", dir=args.dir))
    try:
        plain = run_baseline(args.jobs, scratch)
        array = run_shepard(args.jobs, make_flock(scratch, "array", schemas.new(), {}))
        sheep_cfg = {"mode": "sheep", "max_sheep": cores}
        sheep = run_shepard(args.sheep_jobs, make_flock(scratch, "sheep", schemas.new(), sheep_cfg))
        local = make_flock(scratch, "local", schemas.new(), {})
        switch_to_local(local, cores)
        local_time = run_shepard(args.sheep_jobs, local)
        held = make_flock(scratch, "handover", schemas.new(), {"sbatch_options": ["--hold"]})
        handover, calls = run_hand_over(args.submit, held)
    finally:
        schemas.drop()
        shutil.rmtree(scratch, ignore_errors=True)
    base_rate = args.jobs / plain
    print(f"trivial jobs on the single-node test cluster ({cores} cores), PostgreSQL catalog")
    print(f"  plain sbatch --array ({args.jobs:>5} tasks) {plain:7.1f} s {base_rate:8.1f} jobs/s")
    for label, n, seconds in (
        ("shepard, array mode", args.jobs, array),
        ("shepard, sheep mode", args.sheep_jobs, sheep),
    ):
        rate = n / seconds
        print(
            f"  {label:<21}({n:>5} jobs)  {seconds:7.1f} s {rate:8.1f} jobs/s"
            f"   ratio {rate / base_rate:6.2f}"
        )
    print("  targets: array mode >= 0.7, sheep mode >= 20")
    print(
        f"  for scale: local backend ({cores} workers, {args.sheep_jobs} jobs) {local_time:.1f} s,"
        f" {args.sheep_jobs / local_time:.1f} jobs/s"
    )
    print(
        f"hand-over of {args.submit:,} queued jobs to Slurm (array mode, held arrays): "
        f"{handover:.1f} s, {calls} sbatch calls, {args.submit / handover:,.0f} jobs/s"
    )


if __name__ == "__main__":
    main()
