"""End to end through shepherd's routes: start-job -> result for N trivial jobs, in jobs/s.

    .venv/bin/python bench/shepherd_e2e.py [--jobs 1000] [--clients 16] [--workers 2]
                                           [--endpoint URL]

One side is shepherd's way: `shepard serve --shepherd` and `shepard up` (two processes, one
flock), and `--clients` threads that each, job after job, post `/start-job` with an inline
payload, wait with `/jobs/{id}/wait_ready`, and fetch `/jobs/{id}/result` (checking it). Each
job has its own bucket on the S3 server: created, its input, its status (three times), its
output, listed. The other side, the baseline, runs the same payload for the same number of
jobs with `shepard submit --range ITEM=1-N --wait`, on a flock whose stores are in a bucket
of the same S3 server (each job: its result zip, its two logs) and on one whose stores are
folders: what the jobs cost without HTTP and without a bucket per job. The figures that
matter are the ratios. The S3 server is moto's, started on a free port for this run unless
`--endpoint` names one (its speed bounds both S3 sides: see bench/e2e_s3.py for its ceiling).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

SHEPARD = str(Path(sys.executable).with_name("shepard"))
MOTO = "/opt/shepard-moto/bin/moto_server"
PAYLOAD = 'cp "$ROOT_INPUT_NAME/input" "$ROOT_OUTPUT_NAME/output"'
BASELINE = 'echo "$ITEM" > "$ROOT_OUTPUT_NAME/output"'
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(url: str, seconds: float = 30) -> None:
    import httpx

    deadline = time.monotonic() + seconds
    while True:
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def init(
    folder: Path, command: str, workers: int, env: dict[str, str], storage: str | None = None
) -> None:
    where = ["--storage", storage] if storage else []
    subprocess.run(
        [SHEPARD, "init", str(folder), "--payload-command", command, "--workers", str(workers),
         *where],
        check=True, env=env, capture_output=True,
    )  # fmt: skip


def new_bucket(endpoint: str) -> str:
    import boto3

    name = f"bench-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, **_keys()).create_bucket(Bucket=name)
    return f"s3://{name}/flock"


def _keys() -> dict[str, str]:
    return {
        "aws_access_key_id": FAKE_AWS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": FAKE_AWS["AWS_SECRET_ACCESS_KEY"],
        "region_name": FAKE_AWS["AWS_DEFAULT_REGION"],
    }


def shepherd_side(scratch: Path, args: argparse.Namespace, env: dict[str, str]) -> float:
    import httpx

    flock = scratch / "shepherd-flock"
    init(flock, PAYLOAD, args.workers, env)
    port = free_port()
    server = subprocess.Popen(
        [SHEPARD, "serve", "--flock", str(flock), "--port", str(port), "--shepherd"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    runner = subprocess.Popen(
        [SHEPARD, "up", "--flock", str(flock), "--no-inbox"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    errors: list[str] = []
    todo = list(range(args.jobs))
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(base_url=base, timeout=600) as http:
            while True:
                with lock:
                    if not todo:
                        return
                    n = todo.pop()
                job_id = f"bench-{uuid.uuid4()}"
                body = {"job_id": job_id, "model": {"name": "bench", "version": "1"},
                        "payload": json.dumps({"input": n})}  # fmt: skip
                started = http.post("/start-job", json=body)
                ready = http.get(f"/jobs/{job_id}/wait_ready")
                result = http.get(f"/jobs/{job_id}/result")
                if (started.status_code, ready.status_code, result.status_code) != (200,) * 3:
                    errors.append(f"{job_id}: {started.text} {ready.text} {result.text[:200]}")
                elif json.loads(result.content) != {"input": n}:
                    errors.append(f"{job_id}: wrong result {result.text[:200]}")

    try:
        wait_for(f"{base}/healthz")
        began = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - began
    finally:
        for proc in (server, runner):
            proc.terminate()
            proc.wait(timeout=60)
    if errors:
        print(f"{len(errors)} errors, first: {errors[0]}")
    return seconds


def baseline_side(
    scratch: Path, args: argparse.Namespace, env: dict[str, str], storage: str | None = None
) -> float:
    flock = scratch / ("baseline-s3" if storage else "baseline-folders")
    init(flock, BASELINE, args.workers, env, storage)
    began = time.perf_counter()
    subprocess.run(
        [SHEPARD, "submit", "--flock", str(flock), "--range", f"ITEM=1-{args.jobs}", "--wait"],
        check=True, env=env, capture_output=True,
    )  # fmt: skip
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--endpoint", default=None, help="an S3 server (default: start moto)")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="shepherd-bench-"))
    moto = None
    endpoint = args.endpoint
    if endpoint is None:
        port = free_port()
        moto = subprocess.Popen(
            [MOTO, "-H", "127.0.0.1", "-p", str(port)],
            env={**os.environ, "S3_IGNORE_SUBDOMAIN_BUCKETNAME": "true"},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        endpoint = f"http://127.0.0.1:{port}"
        wait_for(endpoint)
    env = {**os.environ, **FAKE_AWS, "AWS_ENDPOINT_URL": endpoint}
    env.pop("SHEPARD_FLOCK", None)
    try:
        shepherd = shepherd_side(scratch, args, env)
        folders = baseline_side(scratch, args, env)
        in_s3 = baseline_side(scratch, args, env, new_bucket(endpoint))
    finally:
        if moto is not None:
            moto.terminate()
            moto.wait(timeout=30)
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"jobs: {args.jobs}, clients: {args.clients}, workers: {args.workers}, S3: {endpoint}")
    print(f"shepherd routes (start-job -> result): {args.jobs / shepherd:8.1f} jobs/s "
          f"({shepherd:.1f} s)")  # fmt: skip
    print(f"submit --range --wait, S3 stores:      {args.jobs / in_s3:8.1f} jobs/s "
          f"({in_s3:.1f} s)")  # fmt: skip
    print(f"submit --range --wait, folder stores:  {args.jobs / folders:8.1f} jobs/s "
          f"({folders:.1f} s)")  # fmt: skip
    print(f"ratio shepherd / S3 stores: {in_s3 / shepherd:.3f}; "
          f"shepherd / folder stores: {folders / shepherd:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
