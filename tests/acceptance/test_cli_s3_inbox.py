"""The S3 inbox through the real executable: objects put under the inbox prefix of a flock kept
in S3 (moto's server) while `shepard up` runs, as `aws s3 cp job.zip s3://.../inbox/` puts them."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import time
import uuid
import zipfile
from collections.abc import Callable
from typing import Any

import pytest

from shepard.storage import StoreOptions
from tests.acceptance.conftest import Cli
from tests.services import s3_endpoint

pytestmark = pytest.mark.acceptance


def bundle(inputs: str | None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        if inputs is not None:
            zf.writestr("inputs.json", inputs)
        zf.writestr("data.txt", "some data")
    return buf.getvalue()


def wait_for(cli: Cli, predicate: Callable[[dict[str, Any]], bool], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        state = cli("query", "--json").json()
        if predicate(state):
            return state
        assert time.monotonic() < deadline, f"timed out; {state['counts']}, {state['rejected']}"
        time.sleep(0.3)


def stop(procs: list[subprocess.Popen[str]]) -> list[str]:
    outs = []
    for proc in procs:
        proc.send_signal(signal.SIGINT)
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, f"up failed: {out}\n{err}"
        outs.append(out + err)
    return outs


def keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"][len(prefix) :] for page in pages for o in page.get("Contents", ()))


def test_objects_put_into_an_s3_inbox_become_jobs_once(cli: Cli) -> None:
    from shepard.storage.s3 import client_for

    endpoint = s3_endpoint()
    cli.env.update(
        AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test",
        AWS_DEFAULT_REGION="us-east-1",
    )  # fmt: skip
    s3 = client_for(StoreOptions(endpoint_url=endpoint, region="us-east-1"))
    bucket = f"acc-{uuid.uuid4().hex[:20]}"
    s3.create_bucket(Bucket=bucket)
    root = f"s3://{bucket}/flocks/f"
    cli.init('echo "$ITEM" > "$ROOT_OUTPUT_NAME/item.txt"', "--storage", root)
    sheep = [cli.popen("up", "--inbox-interval", "0.3") for _ in range(2)]  # two watchers
    try:
        for proc in sheep:
            assert proc.stdout is not None
            proc.stdout.readline()  # "flock f: running jobs ..."
            line = proc.stdout.readline()
            assert f"turning bundles dropped into {root}/inbox into jobs" in line
        for i in range(30):
            body = bundle(json.dumps({"ITEM": i}))
            s3.put_object(Bucket=bucket, Key=f"flocks/f/inbox/job {i:02} é.zip", Body=body)
        s3.put_object(Bucket=bucket, Key="flocks/f/inbox/bad.zip", Body=bundle(None))
        state = wait_for(cli, lambda s: s["counts"]["succeeded"] == 30 and s["rejected"] == 1)
        time.sleep(1)  # a few more scans by both: nothing is registered twice
    finally:
        stop(sheep)
    state = cli("query", "--json", "--limit", "100").json()
    assert state["counts"]["succeeded"] == 30 == sum(state["counts"].values())
    assert state["rejected"] == 1
    results = keys(s3, bucket, "flocks/f/outputs/")
    assert len(results) == 30 and all(k.startswith("result@") for k in results)
    jobs = state["jobs"]
    assert sorted(j["params"]["ITEM"] for j in jobs) == list(range(30))
    assert keys(s3, bucket, "flocks/f/inbox/") == [
        "rejected/bad.zip",
        "rejected/bad.zip.reason.txt",
    ]
    reason = s3.get_object(Bucket=bucket, Key="flocks/f/inbox/rejected/bad.zip.reason.txt")
    assert "has no inputs.json" in reason["Body"].read().decode()
    stored = keys(s3, bucket, "flocks/f/inputs/")
    assert sorted(j["bundle"] for j in jobs) == stored
    assert all(key.startswith("inbox-") and key.endswith(" é.zip") for key in stored)
