"""Inbox trigger throughput: N small bundles dropped into inbox/ at once, all registered as jobs.

    .venv/bin/python bench/inbox.py [--bundles 10000] [--rounds 3] [--dir DIR ...] [--check]

For each place (default: the default temp dir, on this machine's disk, and /dev/shm), every
round makes a fresh flock, writes N small valid bundles into a staging folder on the same
filesystem (not timed), then measures, in the same run:
- baseline: `os.rename` of the N files from the staging folder into inbox/. That IS the drop,
  and it is the floor of any watcher that claims a file with one rename, as this one does;
- watcher: an FolderInbox scanning as `shepard up` does (scan, wait 0.5 s, scan, ...) from
  its first scan until all N are registered. "end to end" includes the 0.5 s stability wait
  that every new file goes through; "processing" is the time of the scans that took files.
It checks that every bundle became exactly one job and that the inbox is empty.
Target: >= 2,000 bundles/s end to end. `--check` exits 1 when a place misses it.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from shepard.config import BackendConfig, FlockConfig, PayloadConfig
from shepard.flock import Flock
from shepard.triggers import FolderInbox
from shepard.triggers.folder_inbox import SETTLE

TARGET = 2_000  # bundles/s, end to end


@dataclass
class Round:
    rename: float  # seconds to rename the N files into inbox/
    end_to_end: float  # seconds from the watcher's first scan to the last registration
    processing: float  # seconds spent in the scans that took files


def small_bundle(i: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("inputs.json", json.dumps({"ITEM": i, "NAME": f"sample-{i}"}))
        zf.writestr("data/sample.txt", f"sample {i}\n" * 10)
    return buf.getvalue()


def one_round(n: int, where: str | None) -> Round:
    scratch = Path(tempfile.mkdtemp(prefix="shepard-inbox-bench-", dir=where))
    try:
        cfg = FlockConfig(
            name="bench", backend=BackendConfig(workers=1), payload=PayloadConfig(command="true")
        )
        flock = Flock.create(scratch / "flock", cfg)
        inbox = flock.dir.store_path("inbox")
        stage = scratch / "stage"
        stage.mkdir()
        names = [f"bundle-{i:05}.zip" for i in range(n)]
        for i, name in enumerate(names):
            (stage / name).write_bytes(small_bundle(i))

        began = time.perf_counter()
        for name in names:
            os.rename(stage / name, inbox / name)
        rename = time.perf_counter() - began

        watcher = FolderInbox(flock)
        registered, processing = 0, 0.0
        began = time.perf_counter()
        while registered < n:
            scan_began = time.perf_counter()
            result = watcher.scan_once()
            if result.registered or result.rejected:
                processing += time.perf_counter() - scan_began
            registered += result.registered
            assert not result.rejected, result.rejected[:3]
            if registered < n:
                time.sleep(SETTLE)
        end_to_end = time.perf_counter() - began
        watcher.close()

        jobs = flock.catalog.page(limit=n + 1, newest_first=False)
        assert len(jobs) == n, f"{len(jobs)} jobs for {n} bundles"
        assert sorted(int(j.params["ITEM"]) for j in jobs) == list(range(n))  # type: ignore[arg-type]
        assert len({j.bundle_key for j in jobs}) == n
        assert not [p for p in inbox.iterdir() if not p.name.startswith(".")]
        flock.close()
        return Round(rename, end_to_end, processing)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def filesystem(path: str) -> str:
    """The filesystem type under `path` (from /proc/mounts), for the report."""
    best, kind = "", "?"
    try:
        with open("/proc/mounts") as fh:
            for line in fh:
                _, mount, fstype, *_ = line.split()
                if path.startswith(mount) and len(mount) > len(best):
                    best, kind = mount, fstype
    except OSError:
        pass
    return kind


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundles", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--dir",
        action="append",
        help="where to run (repeatable; default: the default temp dir and /dev/shm)",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if a place misses target")
    args = parser.parse_args()
    places = args.dir or [tempfile.gettempdir()] + (
        ["/dev/shm"] if Path("/dev/shm").is_dir() else []
    )
    n, missed = args.bundles, False
    print(f"{n} small bundles dropped at once; median of {args.rounds} round(s); target {TARGET}/s")
    for place in places:
        rounds = [one_round(n, place) for _ in range(args.rounds)]
        rename = statistics.median(r.rename for r in rounds)
        e2e = statistics.median(r.end_to_end for r in rounds)
        proc = statistics.median(r.processing for r in rounds)
        print(f"\n{place} ({filesystem(os.path.realpath(place))})")
        print(f"  os.rename floor   {rename:6.2f} s  {n / rename:9.0f} files/s")
        print(
            f"  watcher e2e       {e2e:6.2f} s  {n / e2e:9.0f} bundles/s  "
            f"(incl. the {SETTLE:g} s stability wait)"
        )
        print(f"  watcher processing{proc:6.2f} s  {n / proc:9.0f} bundles/s")
        print(
            f"  ratio watcher/rename throughput: e2e {rename / e2e:.3f}, "
            f"processing {rename / proc:.3f}"
        )
        verdict = "meets" if n / e2e >= TARGET else "MISSES"
        print(f"  {verdict} the target of {TARGET} bundles/s end to end")
        missed |= n / e2e < TARGET
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
