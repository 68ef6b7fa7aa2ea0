"""The Python peers of bench/peers.py, each run as a process of its own under the peers'
Python (bench/peers-setup), never imported by Shepard:

    python bench/peer_drivers.py pool|celery|ray OUT JOBS WORKERS

Each one starts what it needs (Ray's processes; the Celery client, whose worker bench/peers.py
starts beside it), runs two warm-up items into OUT-warm, prints `ready` and waits for a line
on stdin; then runs items 1..JOBS of the workload (`sh -c 'echo "$ITEM" > "$OUT/$ITEM.txt"'`,
ITEM in the environment) WORKERS at a time, prints `done`, and exits on the next line. The
timed part is what lies between `ready` and `done`.
"""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
from collections.abc import Callable, Sequence

COMMAND = 'echo "$ITEM" > "$OUT/$ITEM.txt"'


def run_item(item: int, out: str) -> int:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "ITEM": str(item), "OUT": out}
    return subprocess.run(["/bin/sh", "-c", COMMAND], env=env, check=True).returncode


def pool(workers: int) -> Callable[[Sequence[int], str], None]:
    executor = concurrent.futures.ThreadPoolExecutor(workers)

    def run(items: Sequence[int], out: str) -> None:
        list(executor.map(run_item, items, [out] * len(items)))

    return run


def celery(workers: int) -> Callable[[Sequence[int], str], None]:
    from peer_celery import run as task

    def run(items: Sequence[int], out: str) -> None:
        results = [task.delay(item, out) for item in items]
        for result in results:
            result.get(timeout=600)

    return run


def ray(workers: int) -> Callable[[Sequence[int], str], None]:
    import ray as ray_module

    ray_module.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    remote = ray_module.remote(run_item)

    def run(items: Sequence[int], out: str) -> None:
        ray_module.get([remote.remote(item, out) for item in items])

    return run


def main() -> None:
    kind, out, jobs, workers = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    run = {"pool": pool, "celery": celery, "ray": ray}[kind](workers)
    warm = out.rstrip("/") + "-warm"
    os.makedirs(warm, exist_ok=True)
    run([1, 2], warm)
    print("ready", flush=True)
    sys.stdin.readline()
    run(range(1, jobs + 1), out)
    print("done", flush=True)
    sys.stdin.readline()
    if kind == "ray":
        import ray as ray_module

        ray_module.shutdown()


if __name__ == "__main__":
    main()
