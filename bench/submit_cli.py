"""Benchmark: `shepard submit --range ITEM=1-N` from the command line, into a fresh flock.

    .venv/bin/python bench/submit_cli.py [--jobs N ...] [--dir DIR] [--check]
    .venv/bin/python bench/submit_cli.py --transactions N   # each transaction, from inside

For each N (default 1,000,000 and 10,000,000), in a new flock (`shepard init`):
- an idle `shepard up --workers 1 --no-inbox` runs on the flock the whole time (it runs the
  jobs as they become visible); it must still be running at the end;
- a prober connection times how long `BEGIN IMMEDIATE` waits, every 20 ms: the longest wait
  is (to the prober's resolution) the longest any write transaction held the catalog;
- `shepard submit --range ITEM=1-N` is timed (wall clock) and its peak RSS is taken from
  the kernel (wait4; the command runs as one process, so this is the peak of its tree);
- the baseline, plain sqlite3 `executemany` of the same rows in one transaction (see
  catalog_insert.py), runs on a database of its own in the same run.
Targets: 1,000,000 jobs in < 10 s and < 300 MB; 10,000,000 with the same flat peak memory;
no write transaction longer than ~1 s; `up` survives. `--check` exits 1 when one is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from catalog_insert import _create_schema, in_child, run_baseline

SHEPARD = [sys.executable, "-m", "shepard"]
TARGET_S_PER_MILLION = 10.0
TARGET_RSS_MB = 300
TARGET_LOCK_S = 1.0


@dataclass
class Result:
    jobs: int
    seconds: float
    rss_mb: float
    longest_lock_s: float
    up_survived: bool
    baseline_s: float
    baseline_rss_mb: float


class Prober(threading.Thread):
    """Takes the catalog's write lock every `period` s and keeps the longest wait for it."""

    def __init__(self, db: Path, period: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.db, self.period = db, period
        self.longest = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        conn = sqlite3.connect(self.db, timeout=600, isolation_level=None)
        while not self.stop.is_set():
            began = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            self.longest = max(self.longest, time.perf_counter() - began)
            conn.execute("ROLLBACK")
            self.stop.wait(self.period)
        conn.close()


def measure(jobs: int, root: Path) -> Result:
    flock = root / f"flock-{jobs}"
    subprocess.run([*SHEPARD, "init", str(flock), "--payload-command", "true"], check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    up = subprocess.Popen([*SHEPARD, "up", "--workers", "1", "--no-inbox", "--flock", str(flock)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    time.sleep(2.0)  # let it start and go idle
    prober = Prober(flock / "catalog.db")
    prober.start()
    command = [*SHEPARD, "submit", "--range", f"ITEM=1-{jobs}", "--flock", str(flock)]
    began = time.perf_counter()
    submit = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(submit.pid, 0)
    seconds = time.perf_counter() - began
    prober.stop.set()
    prober.join()
    survived = up.poll() is None
    up.send_signal(signal.SIGINT)
    try:
        up.wait(60)
    except subprocess.TimeoutExpired:
        up.kill()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"shepard submit failed ({os.waitstatus_to_exitcode(status)})")
    if not survived:
        print(f"`shepard up` died: {up.stderr.read().decode()[-2000:] if up.stderr else ''}")
    base_db = root / f"baseline-{jobs}.db"
    _create_schema(base_db)
    base_s, base_rss, _ = in_child(run_baseline, base_db, jobs)
    base_db.unlink()
    return Result(jobs, seconds, usage.ru_maxrss / 1024, prober.longest, survived, base_s,
                  base_rss)  # fmt: skip


def longest_transaction(db: str, jobs: int) -> tuple[float, float, int]:
    """Child process: `submit_jobs` of `jobs` specs with each of its write transactions timed
    from inside; returns (seconds, longest transaction in s, transactions)."""
    from shepard.catalog import open_catalog, staging
    from shepard.model import JobSpec

    spans: list[float] = []
    original = staging.Turns.turn

    @contextlib.contextmanager
    def timed(self: staging.Turns) -> Iterator[None]:
        with original(self):
            began = time.perf_counter()
            try:
                yield
            finally:
                spans.append(time.perf_counter() - began)

    staging.Turns.turn = timed  # type: ignore[method-assign]
    catalog = open_catalog(f"sqlite:///{db}")
    began = time.perf_counter()
    specs = (JobSpec({"ITEM": i}) for i in range(jobs))
    catalog.submit_jobs(specs, batch="b", now=time.time(), default_attempts=1)
    seconds = time.perf_counter() - began
    catalog.close()
    return seconds, max(spans), len(spans)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--dir", type=Path, default=None, help="where the flocks go")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--transactions", type=int, metavar="N", default=None,
                        help="only time each write transaction of N jobs, from inside")  # fmt: skip
    args = parser.parse_args()
    if args.transactions:
        with tempfile.TemporaryDirectory(dir=args.dir, prefix="shepard-bench-") as tmp:
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
                run = pool.submit(longest_transaction, str(Path(tmp) / "c.db"), args.transactions)
                seconds, longest, count = run.result()
        print(f"submit_jobs of {args.transactions:,} jobs: {seconds:.1f} s, {count} write "
              f"transactions, the longest {longest:.3f} s")  # fmt: skip
        return 0
    results = []
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="shepard-bench-") as tmp:
        for jobs in args.jobs:
            results.append(measure(jobs, Path(tmp)))
    print("`shepard submit --range ITEM=1-N` into a new flock, an idle `shepard up` running")
    print(f"{'N':>12}{'seconds':>9}{'jobs/s':>11}{'peak RSS':>10}{'longest lock':>14}"
          f"{'up alive':>10}{'baseline s':>12}{'jobs/s':>11}{'RSS':>8}")  # fmt: skip
    ok = True
    for r in results:
        base_rate = r.jobs / r.baseline_s
        print(f"{r.jobs:>12,}{r.seconds:9.1f}{r.jobs / r.seconds:11,.0f}{r.rss_mb:7.0f} MB"
              f"{r.longest_lock_s:12.2f} s{'yes' if r.up_survived else 'NO':>10}"
              f"{r.baseline_s:12.1f}{base_rate:11,.0f}{r.baseline_rss_mb:5.0f} MB")  # fmt: skip
        ok = ok and r.up_survived and r.rss_mb < TARGET_RSS_MB
        ok = ok and r.longest_lock_s < TARGET_LOCK_S * 1.5
        if r.jobs <= 1_000_000:
            ok = ok and r.seconds < TARGET_S_PER_MILLION * r.jobs / 1_000_000
    print(f"targets (< {TARGET_S_PER_MILLION:g} s per million, < {TARGET_RSS_MB} MB, "
          f"lock < ~{TARGET_LOCK_S:g} s, up alive): {'met' if ok else 'MISSED'}")  # fmt: skip
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
