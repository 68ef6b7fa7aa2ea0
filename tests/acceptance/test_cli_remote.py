"""The CLI's remote mode: the job commands against a running `shepard serve`
(SHEPARD_SERVER + SHEPARD_TOKEN), as a user on another machine runs them."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.conftest import Cli

pytestmark = pytest.mark.acceptance


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class Served:
    """A flock served by `shepard serve`, and a CLI that reaches it only through HTTP."""

    def __init__(self, local: Cli, url: str, token: str, reader: str) -> None:
        self.local, self.url, self.token, self.reader = local, url, token, reader
        self.remote = Cli(local.cwd / "elsewhere" / "no-flock", local.cwd)
        self.remote.env.update({"SHEPARD_SERVER": url, "SHEPARD_TOKEN": token})


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One server for the module's tests (starting one is the slow part): each test works
    on jobs of its own."""
    root = tmp_path_factory.mktemp("remote")
    cli = Cli(root / "flock", root)
    cli.init(
        'echo "out $ITEM"; echo "err $ITEM" >&2; echo "$ITEM" > "$ROOT_OUTPUT_NAME/o.txt"; '
        'test "$ITEM" != fail'
    )
    token = cli("token", "create", "ci").out.strip()
    reader = cli("token", "create", "viewer", "--read-only").out.strip()
    port = free_port()
    server = cli.popen("serve", "--port", str(port))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url)
    except OSError:
        server.kill()
        raise AssertionError(f"shepard serve did not start: {server.communicate()}") from None
    yield Served(cli, url, token, reader)
    server.terminate()
    server.wait(timeout=30)
    cli.kill_leftovers()


def test_submit_wait_query_show_logs_retrieve(served: Served) -> None:
    r = served.remote
    r("submit", "--range", "ITEM=1-6", "--wait")
    counts = r("query", "--json").json()["counts"]
    assert counts["succeeded"] >= 6 and counts["queued"] == 0
    assert "succeeded" in r("query").out
    ids = r("submit", "--json", '{"ITEM": 7}', "--ids", "--wait").out.splitlines()[:1]
    assert len(ids[0]) == 36
    shown = r("show", ids[0], "--json").json()
    assert shown["status"] == "succeeded" and shown["params"] == {"ITEM": 7}
    assert shown["logs"] and shown["history"][0]["status"] == "queued"
    assert r("logs", ids[0]).out == "out 7\n"
    assert r("logs", ids[0], "--stderr").out == "err 7\n"
    dest = served.local.cwd / "results"
    got = r("retrieve", str(dest), "--unzip", "--json").json()
    assert len(got["files"]) >= 7 and not got["failed"]
    values = {p.read_text().strip() for p in dest.glob("*/o.txt")}
    assert {str(i) for i in range(1, 8)} <= values
    one = r("retrieve", str(served.local.cwd / "one"), "--job", ids[0], "--json").json()
    assert len(one["files"]) == 1 and ids[0] in one["files"][0]


def test_json_file_batch_and_follow(served: Served, tmp_path: Path) -> None:
    r = served.remote
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("".join(json.dumps({"ITEM": i}) + "\n" for i in range(3)))
    out = r("submit", "--json-file", str(jobs), "--wait").out
    assert "submitted 3 jobs" in out
    folder = tmp_path / "bundle"
    folder.mkdir()
    (folder / "inputs.json").write_text('{"ITEM": "b1"}')
    made = r("batch", str(folder), "--json").json()
    assert made["bundle"]
    followed = r("logs", made["id"], "-f")
    assert followed.out == "out b1\n" and "succeeded" in followed.err


def test_cancel_and_retry(served: Served) -> None:
    r = served.remote
    jobs = '[{"ITEM": "ok"}, {"ITEM": "fail"}]'
    assert r("submit", "--json-file", "-", "--wait", stdin=jobs, ok=False).code == 1
    assert r("query", "--json").json()["counts"]["failed"] >= 1
    retried = r("retry", "--failed", "--json").json()
    assert len(retried["requeued"]) >= 1
    missing = r("cancel", "no-such-job", ok=False)
    assert missing.code == 1 and "no job" in missing.err


def test_errors_are_one_clear_line(served: Served) -> None:
    r = served.remote
    viewer = Cli(r.flock, r.cwd)
    viewer.env.update({"SHEPARD_SERVER": served.url, "SHEPARD_TOKEN": served.reader})
    refused = viewer("submit", "--json", "{}", ok=False)
    assert refused.code == 2 and "read-only" in refused.err and "Traceback" not in refused.err
    assert viewer("query", "--json").json()["counts"] is not None  # reading is allowed
    bad = Cli(r.flock, r.cwd)
    bad.env.update({"SHEPARD_SERVER": served.url, "SHEPARD_TOKEN": "shp_nope"})
    assert "refused the token" in bad("query", ok=False).err
    gone = Cli(r.flock, r.cwd)
    gone.env.update({"SHEPARD_SERVER": f"http://127.0.0.1:{free_port()}", "SHEPARD_TOKEN": "x"})
    unreachable = gone("query", ok=False)
    assert unreachable.code == 2 and "cannot reach the server" in unreachable.err
    assert "no job" in r("show", "nope", ok=False).err
