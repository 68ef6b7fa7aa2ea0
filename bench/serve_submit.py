"""Benchmark: sustained single-job submissions to `shepard serve`, beside the framework's own
ceiling, and one bulk submission.

    .venv/bin/python bench/serve_submit.py [--seconds 60] [--clients 32] [--bulk 100000]
                                           [--workers 2] [--check]

Two servers are measured in the same run, one after the other, with the same load:
- bare:  a FastAPI app whose `POST /api/v1/jobs` parses the JSON body and answers 201 at
         once (what FastAPI + uvicorn can do at best on this machine);
- serve: `shepard serve` on a fresh flock (SQLite catalog, folder stores) whose dispatcher
         runs the submitted jobs (payload `true`) while they arrive.
The load: `--clients` connections kept alive, each posting one job (`{"params": {...}}`) and
waiting for the answer before the next, for `--seconds`. The client is plain asyncio (one
process, no HTTP library), so that it takes little of the CPU the server needs.
Then one `POST /api/v1/jobs` of `--bulk` jobs (`{"jobs": [...]}`) to `shepard serve`, beside
`shepard submit --json-file` of the same jobs (JSON lines) into another fresh flock: the
command line's own way, as its baseline.

Printed: jobs/s, p50/p99 latency and errors of both, their ratio, and the bulk time.
Targets: >= 1,000 submissions/s with 0 errors and p99 < 100 ms; the bulk in < 2 s.
`--check` exits 1 when one is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

TARGET_RATE = 1000.0
TARGET_P99 = 0.100
TARGET_BULK = 2.0

BARE_APP = """
import sys, uvicorn
from fastapi import FastAPI
app = FastAPI()
@app.post("/api/v1/jobs", status_code=201)
def submit(body: dict) -> dict:
    return {"ids": ["0"], "batch": "b", "count": 1, "replayed": False}
@app.get("/healthz")
def healthz() -> dict:
    return {"status": "ok"}
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


@dataclass
class Load:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def quantile(self, q: float) -> float:
        if len(self.latencies) < 2:
            return float("nan")
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[int(q * 100) - 1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def one_client(port: int, token: str, n: int, until: float, load: Load) -> None:
    """Post one job at a time over one kept-alive connection until `until`."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f"POST /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
    count = 0
    try:
        while time.perf_counter() < until:
            body = json.dumps({"params": {"CLIENT": n, "ITEM": count}}).encode()
            count += 1
            request = (
                f"{head}Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body
            began = time.perf_counter()
            try:
                writer.write(request)
                status = int((await reader.readline()).split()[1])
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                await reader.readexactly(length)
            except (OSError, IndexError, ValueError, asyncio.IncompleteReadError):
                load.errors += 1
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                continue
            load.latencies.append(time.perf_counter() - began)
            if status != 201:
                load.errors += 1
    finally:
        writer.close()


async def drive(port: int, token: str, clients: int, seconds: float) -> Load:
    load = Load()
    began = time.perf_counter()
    until = began + seconds
    await asyncio.gather(*(one_client(port, token, n, until, load) for n in range(clients)))
    load.seconds = time.perf_counter() - began
    return load


def wait_ready(port: int, proc: subprocess.Popen[bytes], within: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit("server did not start")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_bare(args: argparse.Namespace) -> Load:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", BARE_APP, str(port)])
    try:
        wait_ready(port, proc)
        return asyncio.run(drive(port, "none", args.clients, args.seconds))
    finally:
        stop(proc)


def make_flock(folder: Path) -> str:
    import shepard
    from shepard.config import FlockConfig, PayloadConfig
    from shepard.flock import Flock

    Flock.create(folder, FlockConfig(name="bench", payload=PayloadConfig(command="true")))
    flock = shepard.open(folder)
    try:
        return flock.create_token("bench")[1]
    finally:
        flock.close()


def run_serve(args: argparse.Namespace, folder: Path) -> tuple[Load, float, int, int]:
    """The sustained load, then the bulk post; with the jobs registered and run meanwhile."""
    import httpx

    token = make_flock(folder)
    port = free_port()
    shepard = str(Path(sys.executable).with_name("shepard"))
    command = [shepard, "serve", "--flock", str(folder), "--port", str(port)]
    command += ["--workers", str(args.workers), "--no-inbox"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    try:
        wait_ready(port, proc)
        load = asyncio.run(drive(port, token, args.clients, args.seconds))
        auth = {"Authorization": f"Bearer {token}"}
        body = json.dumps({"jobs": [{"ITEM": i} for i in range(args.bulk)]}).encode()
        began = time.perf_counter()
        answer = httpx.post(
            f"http://127.0.0.1:{port}/api/v1/jobs", content=body, timeout=600,
            headers={**auth, "Content-Type": "application/json"},
        )  # fmt: skip
        bulk = time.perf_counter() - began
        if answer.status_code != 201 or answer.json()["count"] != args.bulk:
            raise SystemExit(f"bulk submission failed: {answer.status_code} {answer.text[:300]}")
        counts = httpx.get(f"http://127.0.0.1:{port}/api/v1/counts", headers=auth).json()
        ran = sum(n for s, n in counts["counts"].items() if s not in ("queued", "running"))
        return load, bulk, counts["total"], ran
    finally:
        stop(proc)


def run_cli_bulk(args: argparse.Namespace, folder: Path) -> float:
    """Seconds `shepard submit --json-file` takes to register the bulk's jobs."""
    make_flock(folder)
    jobs = folder.parent / "jobs.jsonl"
    jobs.write_text("".join(json.dumps({"ITEM": i}) + "\n" for i in range(args.bulk)))
    shepard = str(Path(sys.executable).with_name("shepard"))
    began = time.perf_counter()
    subprocess.run(
        [shepard, "submit", "--flock", str(folder), "--json-file", str(jobs)],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return time.perf_counter() - began


def line(name: str, load: Load) -> str:
    return (
        f"{name:<6} {load.rate:>9,.0f} jobs/s   p50 {load.quantile(0.5) * 1000:6.1f} ms   "
        f"p99 {load.quantile(0.99) * 1000:6.1f} ms   errors {load.errors}   "
        f"({len(load.latencies):,} requests in {load.seconds:.1f} s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--bulk", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    print(f"{args.clients} clients, {args.seconds:g} s each, {os.cpu_count()} cores (shared)")
    bare = run_bare(args)
    print(line("bare", bare), flush=True)
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        served, bulk, total, ran = run_serve(args, Path(tmp) / "flock")
    with tempfile.TemporaryDirectory(prefix="serve-bench-cli-") as tmp:
        cli_bulk = run_cli_bulk(args, Path(tmp) / "flock")
    print(line("serve", served))
    print(f"serve / bare: {served.rate / bare.rate:.2f} of the framework's ceiling")
    print(f"bulk: {args.bulk:,} jobs in one POST in {bulk:.2f} s ({args.bulk / bulk:,.0f} jobs/s)")
    print(f"      (shepard submit --json-file of the same jobs: {cli_bulk:.2f} s; "
          f"API / CLI: {bulk / cli_bulk:.2f})")  # fmt: skip
    print(f"registered {total:,} jobs; the dispatcher ran {ran:,} of them meanwhile")
    missed = []
    if served.rate < TARGET_RATE or served.errors:
        missed.append(f"rate {served.rate:,.0f}/s with {served.errors} errors (target 1,000, 0)")
    if served.quantile(0.99) > TARGET_P99:
        missed.append(f"p99 {served.quantile(0.99) * 1000:.0f} ms (target 100 ms)")
    if bulk > TARGET_BULK:
        missed.append(f"bulk {bulk:.2f} s (target 2 s)")
    print("targets: " + ("met" if not missed else "missed: " + "; ".join(missed)))
    if args.check and missed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
