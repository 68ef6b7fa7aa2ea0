"""What making a short job's outcome survive a power loss would cost, per job, on a filesystem.

    .venv/bin/python bench/durability.py [--jobs 2000] [--rounds 3] [--dir /var/tmp]

Replays, in one process, the writes a local runner makes for each trivial job once its payload
has ended: its result zip (a small file written beside the slot, then renamed into the outputs
folder) and its outcome (a row updated in a SQLite catalog in WAL mode, recorded with the next
claims in one transaction per batch of up to 8 jobs, as `sheep.Recorder` does). Four levels,
alternated round by round, median wall and CPU time per job:

- `shipped`: what Shepard does (synchronous=NORMAL, no fsync of results). Safe when processes
  are killed (kill -9, OOM); a power loss or kernel crash can lose what the OS had not
  written yet (see docs/benchmarks.md, "Durability").
- `catalog-full`: synchronous=FULL: each batch's transaction is on disk when it commits.
- `results-fsync`: each result zip, then its folder, fsynced before its outcome is recorded.
- `both`: the two together: no recorded outcome can lose its result or be lost itself.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

BATCH = 8  # outcomes recorded per transaction while jobs are short (sheep.MAX_AHEAD)
ZIP = b"PK" + b"z" * 113  # the size of a trivial job's result zip
LEVELS = {
    "shipped": (False, False),
    "catalog-full": (True, False),
    "results-fsync": (False, True),
    "both": (True, True),
}


def replay(folder: Path, jobs: int, full: bool, fsync_results: bool) -> tuple[float, float]:
    """Seconds of wall and CPU time for `jobs` jobs' writes at one level."""
    slot, outputs = folder / "slot", folder / "outputs"
    slot.mkdir()
    outputs.mkdir()
    db = sqlite3.connect(folder / "catalog.db", isolation_level=None)
    with contextlib.closing(db):
        db.execute("PRAGMA journal_mode = WAL")
        db.execute(f"PRAGMA synchronous = {'FULL' if full else 'NORMAL'}")
        db.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY, status TEXT, result TEXT)")
        db.executemany("INSERT INTO jobs VALUES (?, 'running', NULL)", ((i,) for i in range(jobs)))
        folder_fd = os.open(outputs, os.O_RDONLY | os.O_DIRECTORY)
        began, cpu = time.perf_counter(), time.process_time()
        done: list[tuple[str, int]] = []
        for i in range(jobs):
            tmp, key = slot / ".result.zip", f"result@{i}.zip"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, ZIP)
            if fsync_results:
                os.fsync(fd)
            os.close(fd)
            os.rename(tmp, outputs / key)
            if fsync_results:
                os.fsync(folder_fd)
            done.append((key, i))
            if len(done) == BATCH or i == jobs - 1:
                db.execute("BEGIN IMMEDIATE")
                db.executemany(
                    "UPDATE jobs SET status = 'succeeded', result = ? WHERE id = ?", done
                )
                db.execute("COMMIT")
                done.clear()
        elapsed, used = time.perf_counter() - began, time.process_time() - cpu
        os.close(folder_fd)
    return elapsed, used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"))
    args = parser.parse_args()
    wall: dict[str, list[float]] = {level: [] for level in LEVELS}
    cpu: dict[str, list[float]] = {level: [] for level in LEVELS}
    for _ in range(args.rounds):
        for level, (full, fsync_results) in LEVELS.items():
            folder = Path(tempfile.mkdtemp(prefix="shepard-durability-", dir=args.dir))
            try:
                elapsed, used = replay(folder, args.jobs, full, fsync_results)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            wall[level].append(elapsed)
            cpu[level].append(used)
    print(
        f"{args.jobs} jobs' result zips and outcomes ({BATCH} outcomes a transaction), "
        f"files in {args.dir}, median of {args.rounds} rounds"
    )
    base = statistics.median(wall["shipped"])
    print("| level | wall per job | CPU per job | wall vs shipped |")
    print("|---|---|---|---|")
    for level in LEVELS:
        w, c = statistics.median(wall[level]), statistics.median(cpu[level])
        print(
            f"| {level} | {w / args.jobs * 1000:.3f} ms | {c / args.jobs * 1000:.3f} ms "
            f"| {w / base:.1f}x |"
        )


if __name__ == "__main__":
    main()
