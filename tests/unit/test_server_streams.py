"""A client that stops following a log gives its server thread back: the app served by a real
uvicorn in this process, followed with httpx over loopback, the stream dropped midway."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("uvicorn")
import httpx
import uvicorn

import shepard
from shepard.config import FlockConfig, PayloadConfig
from shepard.flock import Flock
from shepard.runtime import log_key
from shepard.server.app import create_app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Flock, str, str]]:
    Flock.create(tmp_path / "f", FlockConfig(name="s", payload=PayloadConfig(command="true")))
    flock = shepard.open(tmp_path / "f")
    _, token = flock.create_token("t")
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(flock), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)  # no signal handlers off main
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.05)
    try:
        yield flock, f"http://127.0.0.1:{port}", token
    finally:
        server.should_exit = True
        thread.join(30)
        flock.close()


def test_a_follower_that_leaves_frees_its_thread(served: tuple[Flock, str, str]) -> None:
    flock, url, token = served
    job_id = flock.submit([{"A": 1}]).ids[0]
    flock.catalog.claim("elsewhere:1", now=time.time(), lease=600, job_ids=[job_id])
    flock.store("logs").put_bytes(log_key(job_id, 1, "stdout"), b"first line\n")
    ended = threading.Event()
    real = flock.follow_log

    def spied(*args: Any, **kwargs: Any) -> Iterator[bytes]:
        try:
            yield from real(*args, **kwargs)
        finally:
            ended.set()

    flock.follow_log = spied  # type: ignore[method-assign]
    with (
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as http,
        http.stream("GET", f"/api/v1/jobs/{job_id}/logs", params={"follow": "true"}) as got,
    ):
        chunks = got.iter_bytes()  # kept: a dropped iterator would close the response
        assert next(chunks) == b"first line\n"
        assert not ended.wait(1.0)  # the attempt runs on: still following
    # the client went away while the job still runs: the follower ends within a poll or two
    assert ended.wait(10), "the follower kept its thread after the client left"
