"""Benchmark: a `tasks` step fanned out over 2,000 input files (`workers: 0`, one command per
file on every core) against `xargs -P <cores>` running the same command over the same files.

    .venv/bin/python bench/tasks_fanout.py [--files N] [--runs R] [--check]

Both run `/bin/sh -c 'cksum FILE > FILE.sum'` once per file, in the same folder; the runner
is the real one (`python -m shepard.tasks tasks.json`, what a tasks job runs), so its start-up
(document check, Python) is counted. Alternated, R runs each, medians. Prints the ratio of
xargs's time to ours (target: at least 0.8, i.e. within 25% of xargs). `--check` exits 1
when it is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET = 0.8
COMMAND = "cksum [INPUT_FILE_PATH] > [INPUT_FILE_PATH].sum"


def cores() -> int:
    return len(os.sched_getaffinity(0))


def make_inputs(root: Path, count: int) -> None:
    for i in range(count):
        folder = root / "Sites" / f"S{i % 50:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"haz{i:05d}.in").write_bytes(os.urandom(512))


def clean(root: Path) -> None:
    for path in root.rglob("*.sum"):
        path.unlink()


def run_tasks(root: Path) -> float:
    doc = {"programName": "bench", "itemName": "x", "tasks": [
        {"name": "fan", "command": COMMAND, "inputFolder": "Sites",
         "inputFilePattern": "*.in", "workers": 0}]}  # fmt: skip
    (root / "tasks.json").write_text(json.dumps(doc))
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "shepard.tasks", "tasks.json"], cwd=root, check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    return time.perf_counter() - began


def run_xargs(root: Path) -> float:
    began = time.perf_counter()
    find = subprocess.Popen(["find", "Sites", "-name", "*.in"], cwd=root, stdout=subprocess.PIPE)
    subprocess.run(
        ["xargs", "-P", str(cores()), "-I{}", "sh", "-c", "cksum {} > {}.sum"],
        cwd=root, stdin=find.stdout, check=True,
    )  # fmt: skip
    find.wait()
    return time.perf_counter() - began


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    ours: list[float] = []
    theirs: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-fanout-") as tmp:
        root = Path(tmp)
        make_inputs(root, args.files)
        for _ in range(args.runs):
            clean(root)
            theirs.append(run_xargs(root))
            assert len(list(root.rglob("*.sum"))) == args.files
            clean(root)
            ours.append(run_tasks(root))
            assert len(list(root.rglob("*.sum"))) == args.files
    mine, base = statistics.median(ours), statistics.median(theirs)
    ratio = base / mine
    print(f"{args.files} files, {cores()} cores, median of {args.runs} (alternated):")
    print(f"  tasks step (workers 0)  {mine:6.2f} s")
    print(f"  xargs -P {cores():<2}            {base:6.2f} s")
    print(f"  ratio xargs/tasks       {ratio:6.2f}  (target >= {TARGET}: "
          f"{'met' if ratio >= TARGET else 'missed'})")  # fmt: skip
    return 1 if args.check and ratio < TARGET else 0


if __name__ == "__main__":
    sys.exit(main())
