"""Benchmark: the dashboard over a large flock.

    .venv/bin/python bench/dashboard.py [--jobs 1000000] [--keep DIR] [--runs 7]

Makes a flock (SQLite catalog) with N jobs in 20 batches, 70% succeeded, 10% failed, a few
running, the rest queued, with finish times spread over the last week; then, in process
(FastAPI's test client, so the figures are the server's own time, without a network):

- the jobs page: first page, a status filter, a batch filter, a work-item filter (NAME=...),
  a text filter, and the next page (medians of --runs), against GET /healthz measured in the
  same run as the baseline;
- the overview page and what it is made of (counts, throughput, batches, running);
- page weight: the static assets and the jobs page's HTML;
- the time from a job's end to the overview's live stream showing it (median and worst of 5).

`--keep DIR` keeps (or reuses) the flock in DIR: building a million jobs takes a while.
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

import shepard
from shepard.config import FlockConfig, PayloadConfig
from shepard.flock import Flock
from shepard.model import JobStatus, Outcome
from shepard.server.app import create_app


def build(folder: Path, jobs: int) -> None:
    if (folder / "flock.toml").exists():
        return
    Flock.create(folder, FlockConfig(name="bench", payload=PayloadConfig(command="true"))).close()
    flock = shepard.open(folder)
    per = jobs // 20
    began = time.perf_counter()
    for b in range(20):
        flock.submit(
            ({"NAME": f"item-{b}-{i}", "I": i, "COLOR": f"c{i % 13}"} for i in range(per)),
            batch=f"batch-{b:02d}",
        )
    flock.close()
    now = time.time()
    db = sqlite3.connect(folder / "catalog.db")
    # 70% succeeded, 10% failed, 20 running, the rest queued; the ends spread over the last
    # week, the newest jobs' ends the most recent (a thousand or so in the last hour)
    db.execute(
        "UPDATE jobs SET status = CASE WHEN seq % 10 < 7 THEN 'succeeded' ELSE 'failed' END,"
        " attempt = 1, finished_at = ? - 604800.0 * (? - seq) / ? WHERE seq % 10 < 8",
        (now, jobs, jobs),
    )
    # their history: the end of each attempt, written in time order as the workers would
    db.execute(
        "INSERT INTO job_events (job_id, attempt, status, at) SELECT id, 1, status, finished_at"
        " FROM jobs WHERE finished_at IS NOT NULL ORDER BY finished_at"
    )
    db.execute(
        "UPDATE jobs SET status = 'running', attempt = 1, worker = 'bench:' || (seq % 4),"
        " lease_until = ? WHERE seq IN (SELECT seq FROM jobs WHERE status = 'queued' LIMIT 20)",
        (now + 86400,),
    )
    db.commit()
    db.close()
    print(f"built {jobs:,} jobs in {time.perf_counter() - began:.0f} s")


def median_ms(fn: Callable[[], Any], runs: int) -> float:
    fn()  # warm
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times) * 1000


def sign_in(client: TestClient, secret: str) -> None:
    nonce = re.search(r'name="nonce" value="([^"]+)"', client.get("/signin").text)
    assert nonce
    client.post("/signin", data={"token": secret, "nonce": nonce[1]})


def end_to_overview(flock: Flock, client: TestClient, rounds: int = 5) -> list[float]:
    """Seconds from a job's end (recorded in the catalog) to the overview stream showing it."""
    seen: list[tuple[float, int]] = []
    stop = threading.Event()

    def listen() -> None:
        while not stop.is_set():
            with client.stream("GET", "/live/overview") as stream:
                for line in stream.iter_lines():
                    found = re.search(r'id="count-succeeded">([\d,]+)<', line)
                    if found:
                        seen.append((time.perf_counter(), int(found[1].replace(",", ""))))
                    if stop.is_set():
                        return

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    while not seen:
        time.sleep(0.05)
    delays = []
    queued = [j.id for j in flock.jobs(status="queued", limit=rounds).items]
    for job_id in queued:
        time.sleep(1.5)
        base = seen[-1][1]
        (job,) = flock.catalog.claim("bench:e2e", now=time.time(), lease=60, job_ids=[job_id])
        ended = time.perf_counter()
        flock.catalog.finish(job.id, job.attempt, Outcome(JobStatus.SUCCEEDED), now=time.time())
        while not any(n > base and t >= ended for t, n in seen):
            time.sleep(0.01)
            if time.perf_counter() - ended > 30:
                raise SystemExit("the overview did not show the job's end within 30 s")
        shown = min(t for t, n in seen if n > base and t >= ended)
        delays.append(shown - ended)
    stop.set()
    return delays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, default=None)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp()) / "flock"
    build(folder, args.jobs)
    flock = shepard.open(folder)
    name = f"bench-{time.time_ns()}"
    _view, secret = flock.create_token(name)
    client = TestClient(create_app(flock))
    sign_in(client, secret)
    total = flock.count().total
    print(f"flock: {total:,} jobs ({folder})")

    base = median_ms(lambda: client.get("/healthz"), args.runs)
    first = client.get("/jobs")
    cursor = re.search(r'cursor=([A-Za-z0-9_-]+)" id="next-page"', first.text)
    pages = {
        "first page": "/jobs",
        "status=failed": "/jobs?status=failed",
        "batch": "/jobs?batch=batch-07",
        "work item": "/jobs?item=item-3-1234",
        "text (common)": "/jobs?q=c7",
        "next page": f"/jobs?cursor={cursor[1] if cursor else ''}",
    }
    print(f"\nGET /healthz (baseline): {base:.1f} ms")
    for label, path in pages.items():
        ms = median_ms(lambda p=path: client.get(p), args.runs)  # type: ignore[misc]
        print(f"GET {label:<14} {ms:7.1f} ms  ({ms / base:5.1f}x baseline)  {path}")
    parts = {
        "overview page": lambda: client.get("/"),
        "counts (full)": flock.count,
        "counts (live)": flock.live_counts().get,
        "throughput": lambda: flock.throughput(remaining=0),
        "batches": flock.batches,
        "running": flock.running,
    }
    print()
    for label, fn in parts.items():
        print(f"{label:<14} {median_ms(fn, 3):7.1f} ms")

    assets = {n: len(client.get(f"/static/{n}").content) for n in ("app.css", "app.js")}
    html = len(first.content)
    print(f"\npage weight: assets {sum(assets.values()):,} B {json.dumps(assets)}, ", end="")
    print(f"jobs page HTML {html:,} B (target: assets < 200 KB)")

    delays = end_to_overview(flock, client)
    print(
        f"\njob end -> overview shows it: median {statistics.median(delays) * 1000:.0f} ms, "
        f"worst {max(delays) * 1000:.0f} ms over {len(delays)} (target < 1 s)"
    )
    flock.revoke_token(name)
    flock.close()


if __name__ == "__main__":
    main()
