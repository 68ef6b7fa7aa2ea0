"""The Celery app of bench/peers.py: one task that runs the workload's command for an item.

Imported by the Celery worker (`celery -A peer_celery worker`) and by the client in
bench/peer_drivers.py, both under the peers' own Python (bench/peers-setup); Shepard never
imports it. The broker and result backend are the Redis URL in PEERS_REDIS, the queue is
PEERS_QUEUE (one per run, so that runs never share a queue with anything else).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from typing import Any

from celery import Celery

COMMAND = 'echo "$ITEM" > "$OUT/$ITEM.txt"'

app = Celery("peers", broker=os.environ["PEERS_REDIS"], backend=os.environ["PEERS_REDIS"])
app.conf.task_default_queue = os.environ["PEERS_QUEUE"]
app.conf.result_expires = 600
app.conf.worker_hijack_root_logger = False


# Celery has no type hints: its task decorator, typed here, returns the Celery task.
task: Callable[[Callable[[int, str], int]], Any] = app.task(name="peers.run")


@task
def run(item: int, out: str) -> int:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "ITEM": str(item), "OUT": out}
    return subprocess.run(["/bin/sh", "-c", COMMAND], env=env, check=True).returncode
