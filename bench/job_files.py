"""The kernel's share of a trivial job: the file operations each tool makes per job, replayed.

    .venv/bin/python bench/job_files.py [--jobs 2000] [--rounds 2] [--dir /var/tmp]

On a disk, creating a file (allocating an inode, adding it to a folder) costs far more than
the Python around it, and varies with what was removed just before. This replays, in one
process, the files of 2,000 trivial jobs as each way of running them touches them, and prints
the system and wall time per job (median of the rounds, patterns alternated):

- `xargs`: the payload's file, created and kept (what xargs and the other peers pay);
- `logs-created`: Shepard before spares: two new (empty) log files in the logs folder, the
  payload's file in the slot, a result zip written in the slot and renamed into `outputs/`,
  the payload's file removed with the slot's content;
- `logs-spares`: Shepard now: the same, but the slot's two spare log files are renamed into
  place and back instead of being created (runtime/logsink.py);
- `zip-in-place`: measured, not adopted (docs/benchmarks.md says why): spare log files, and
  the result zip written over the payload's file, then renamed into `outputs/`: no file
  removed, one created per job.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

CREATE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC


def write(path: str, data: bytes = b"") -> None:
    fd = os.open(path, CREATE, 0o644)
    if data:
        os.write(fd, data)
    os.close(fd)


def replay(base: str, pattern: str, jobs: int) -> tuple[float, float]:
    for sub in ("slot/output", "logs", "outputs", "out"):
        os.makedirs(f"{base}/{sub}")
    began, times = time.perf_counter(), os.times()
    for i in range(jobs):
        if pattern == "xargs":
            write(f"{base}/out/{i}.txt", b"%d\n" % i)
            continue
        logs = [f"{base}/logs/{i}.{stream}" for stream in ("stdout", "stderr")]
        spares = [f"{base}/logs/.tmp-spare.{stream}" for stream in ("stdout", "stderr")]
        for log, spare in zip(logs, spares, strict=True):
            if pattern != "logs-created" and os.path.exists(spare):
                os.rename(spare, log)
            write(log)
        write(f"{base}/slot/output/{i}.txt", b"%d\n" % i)
        if pattern == "zip-in-place":  # the zip overwrites the payload's one small file
            write(f"{base}/slot/output/{i}.txt", b"PK" + b"z" * 113)
            os.rename(f"{base}/slot/output/{i}.txt", f"{base}/outputs/result@{i}.zip")
        else:
            write(f"{base}/slot/.result.zip", b"PK" + b"z" * 113)
            os.rename(f"{base}/slot/.result.zip", f"{base}/outputs/result@{i}.zip")
            os.unlink(f"{base}/slot/output/{i}.txt")
        if pattern != "logs-created":
            for log, spare in zip(logs, spares, strict=True):
                os.rename(log, spare)
    ended = os.times()
    return ended.system - times.system, time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"))
    args = parser.parse_args()
    patterns = ("xargs", "logs-created", "logs-spares", "zip-in-place")
    system: dict[str, list[float]] = {p: [] for p in patterns}
    wall: dict[str, list[float]] = {p: [] for p in patterns}
    for _ in range(args.rounds):
        for pattern in patterns:
            base = tempfile.mkdtemp(prefix="shepard-files-", dir=args.dir)
            try:
                used, elapsed = replay(base, pattern, args.jobs)
            finally:
                shutil.rmtree(base, ignore_errors=True)
            system[pattern].append(used)
            wall[pattern].append(elapsed)
            time.sleep(1)  # let the removal settle before the next pattern
    print(f"{args.jobs} jobs' files in {args.dir}, median of {args.rounds} rounds")
    for pattern in patterns:
        s, w = statistics.median(system[pattern]), statistics.median(wall[pattern])
        per = 1e6 / args.jobs
        print(f"  {pattern:13s} {s * per:7.0f} us system/job  {w * per:7.0f} us wall/job")


if __name__ == "__main__":
    main()
