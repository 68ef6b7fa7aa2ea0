"""Benchmark: `shepard submit --items-file` with 100,000 work items, preview and --apply.

    .venv/bin/python bench/workitems.py [--items N] [--runs R] [--check]

In a fresh flock of the `tasks` kind (its document is checked at each submission), times the
real `shepard` command, wall clock, median of R runs each:
- preview: `submit --items-file items.txt --prefix Dam/` into a pipe (every job printed as
  a JSON line, nothing registered);
- apply: the same with `--apply` (N jobs registered, a new flock each run);
- baseline: `submit --range ITEM=1-N` (the streamed submission path the items ride on), in
  the same run.
Target: preview and apply each under 2 s for 100,000 items (the original made one SubmitJob
call per item, one after another). `--check` exits 1 when one is missed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHEPARD = [sys.executable, "-m", "shepard"]
TARGET_S = 2.0
DOC = {
    "programName": "bench",
    "itemName": "${WORK_ITEM}",
    "tasks": [{"name": "t", "command": "true"}],
}


def new_flock(root: Path, name: str) -> Path:
    folder = root / name
    doc = root / "tasks.json"
    doc.write_text(json.dumps(DOC))
    subprocess.run([*SHEPARD, "init", str(folder), "--payload-tasks", str(doc)], check=True,
                   capture_output=True)  # fmt: skip
    return folder


def timed(args: list[str], flock: Path) -> float:
    began = time.perf_counter()
    done = subprocess.run([*SHEPARD, *args, "--flock", str(flock)], capture_output=True, text=True)
    took = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"shepard {' '.join(args)} failed: {done.stderr}")
    return took


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-workitems-") as tmp:
        root = Path(tmp)
        items = root / "items.txt"
        items.write_text("".join(f"Site{i:06d}/Period{i % 16:02d}\n" for i in range(args.items)))
        times: dict[str, list[float]] = {"preview": [], "apply": [], "range (baseline)": []}
        preview_flock = new_flock(root, "preview")
        for run in range(args.runs):
            by_items = ["submit", "--items-file", str(items), "--prefix", "Dam/"]
            times["preview"].append(timed(by_items, preview_flock))
            times["apply"].append(timed([*by_items, "--apply"], new_flock(root, f"a{run}")))
            times["range (baseline)"].append(
                timed(["submit", "--range", f"ITEM=1-{args.items}"], new_flock(root, f"r{run}"))
            )
    medians = {k: statistics.median(v) for k, v in times.items()}
    base = medians["range (baseline)"]
    print(f"{args.items:,} work items, median of {args.runs} (wall clock, real `shepard`):")
    for name, value in medians.items():
        print(f"  {name:<17} {value:6.2f} s   {value / base:4.2f}x the --range baseline")
    missed = [k for k in ("preview", "apply") if medians[k] >= TARGET_S]
    verdict = "missed " + ", ".join(missed) if missed else "met"
    print(f"target: preview and apply < {TARGET_S:g} s: {verdict}")
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
