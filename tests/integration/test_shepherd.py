"""shepherd's routes driven as shepherd's own clients drive them: an S3 client makes the job's
bucket and inputs, then /start-job, /status, /wait_ready, /result over HTTP; the jobs run on
a real local backend (`shepard up` in a process of its own) against the S3 server (moto)."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shepard import config
from shepard.flock import Flock
from shepard.model import JobStatus
from tests.services import s3_endpoint

pytest.importorskip("fastapi")
boto3 = pytest.importorskip("boto3")
from fastapi.testclient import TestClient  # noqa: E402

from shepard.server.app import create_app  # noqa: E402
from shepard.server.settings import ServeSettings  # noqa: E402

SHEPARD = str(Path(sys.executable).with_name("shepard"))
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}$")
BIG = 10 * 1024 * 1024

# The payload: shepherd's stress runner, in a few lines. It echoes `input` as `result`,
# copies any other input files to `copies/`, and fails or waits when asked to.
ECHO = """
import json, os, pathlib, shutil, sys, time
src, dst = pathlib.Path(os.environ["ROOT_INPUT_NAME"]), pathlib.Path(os.environ["ROOT_OUTPUT_NAME"])
data = json.loads((src / "input").read_text())
for path in src.rglob("*"):
    rel = path.relative_to(src)
    if path.is_file() and rel.parts[0] not in ("input", "secrets"):
        (dst / "copies" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, dst / "copies" / rel)
model = os.environ.get("MODEL_NAME", "") + ":" + os.environ.get("MODEL_VERSION", "")
(dst / "output").write_text(json.dumps({"result": data["input"], "model": model}))
if data["input"] == "fail":
    (dst / "partial.txt").write_text("half done")
    sys.exit(3)
if data["input"] == "wait":
    time.sleep(float(data.get("seconds", 3)))
"""


@pytest.fixture(scope="module")
def s3() -> Iterator[Any]:
    endpoint = s3_endpoint()
    old = os.environ.get("AWS_ENDPOINT_URL")
    os.environ["AWS_ENDPOINT_URL"] = endpoint  # boto3's standard chain, as shepherd's users
    try:
        yield boto3.client("s3", endpoint_url=endpoint)
    finally:
        if old is None:
            os.environ.pop("AWS_ENDPOINT_URL", None)
        else:
            os.environ["AWS_ENDPOINT_URL"] = old


@pytest.fixture(scope="module")
def flock(tmp_path_factory: pytest.TempPathFactory, s3: Any) -> Iterator[Flock]:
    folder = tmp_path_factory.mktemp("shepherd") / "flock"
    folder.mkdir()
    (folder / "echo.py").write_text(ECHO)
    cfg = config.parse(
        {
            "name": "shepherd-test",
            "backend": {"workers": 2},
            "payload": {"command": f"{sys.executable} {folder / 'echo.py'}"},
            "shepherd": {
                "models": {
                    "other:2": {"command": f'{sys.executable} -c "{OTHER}"'},
                }
            },
        }
    )
    f = Flock.create(folder, cfg)
    proc = subprocess.Popen(
        [SHEPARD, "up", "--flock", str(folder), "--no-inbox"],
        env={**os.environ},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield f
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        f.close()


OTHER = (
    "import os, pathlib; "
    "pathlib.Path(os.environ['ROOT_OUTPUT_NAME'], 'output').write_text('other model')"
)


@pytest.fixture(scope="module")
def client(flock: Flock) -> Iterator[TestClient]:
    with TestClient(create_app(flock, ServeSettings(shepherd=True))) as c:
        yield c


def new_id() -> str:
    return f"sh-{uuid.uuid4()}"


def start(client: TestClient, job_id: str, **fields: Any) -> Any:
    body = {"job_id": job_id, "model": {"name": "tests", "version": "stress"}, **fields}
    return client.post("/start-job", json=body)


def wait(client: TestClient, job_id: str) -> dict[str, Any]:
    resp = client.get(f"/jobs/{job_id}/wait_ready", params={"timeout": 60})
    assert resp.status_code == 200, resp.text
    record: dict[str, Any] = resp.json()
    return record


def test_inline_payload_lifecycle(client: TestClient, flock: Flock, s3: Any) -> None:
    job_id = new_id()
    resp = start(client, job_id, payload=json.dumps({"input": "42"}))
    assert resp.status_code == 200 and resp.json() == {"success": True}
    stored = s3.get_object(Bucket=job_id, Key="inputs/input")["Body"].read()
    assert json.loads(stored) == {"input": "42"}
    status = client.get(f"/jobs/{job_id}/status")
    assert status.status_code == 200
    record = status.json()
    assert set(record) == {
        "status", "error_details", "model", "enqueued_at", "processing_started_at",
        "finished_at",
    }  # fmt: skip
    assert record["model"] == {"name": "tests", "version": "stress"}
    assert STAMP.match(record["enqueued_at"])
    done = wait(client, job_id)
    assert done["status"] == "done" and done["error_details"] is None
    assert STAMP.match(done["processing_started_at"]) and STAMP.match(done["finished_at"])
    result = client.get(f"/jobs/{job_id}/result")
    assert result.status_code == 200
    assert result.headers["content-type"] == "application/octet-stream"
    assert int(result.headers["content-length"]) == len(result.content)
    assert result.json() == {"result": "42", "model": "tests:stress"}
    assert client.get(f"/jobs/{job_id}/input").content == stored
    # the bucket holds shepherd's layout, and the job is an ordinary Shepard job
    in_bucket = json.loads(s3.get_object(Bucket=job_id, Key="job_status.json")["Body"].read())
    assert in_bucket["status"] == "done" and STAMP.match(in_bucket["finished_at"])
    jobs = list(flock.batch_ids(f"shepherd:{job_id}"))
    job = flock.job(jobs[0])
    assert job.status is JobStatus.SUCCEEDED
    assert job.params == {"MODEL_NAME": "tests", "MODEL_VERSION": "stress"}


def test_inputs_put_by_the_client(client: TestClient, s3: Any) -> None:
    job_id = new_id()
    s3.create_bucket(Bucket=job_id)
    s3.put_object(Bucket=job_id, Key="inputs/input", Body=b'{"input": "from s3"}')
    s3.put_object(Bucket=job_id, Key="inputs/sub/notes.txt", Body=b"nested")
    assert start(client, job_id).status_code == 200
    assert wait(client, job_id)["status"] == "done"
    assert client.get(f"/jobs/{job_id}/result").json()["result"] == "from s3"
    nested = client.get(f"/jobs/{job_id}/result/copies/sub/notes.txt")
    assert nested.status_code == 200 and nested.content == b"nested"
    assert nested.headers["content-type"].startswith("text/plain")
    assert client.get(f"/jobs/{job_id}/input/sub/notes.txt").content == b"nested"
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=job_id)["Contents"]}
    assert {"outputs/output", "outputs/copies/sub/notes.txt", "job_status.json"} <= keys


def test_ten_megabyte_inline_payload(client: TestClient) -> None:
    job_id = new_id()
    text = "é" + "x" * (BIG - 1)  # not ASCII: byte and character counts differ
    assert start(client, job_id, payload=json.dumps({"input": text})).status_code == 200
    assert wait(client, job_id)["status"] == "done"
    result = client.get(f"/jobs/{job_id}/result")
    assert result.status_code == 200 and json.loads(result.content)["result"] == text


def test_failed_job(client: TestClient, s3: Any) -> None:
    job_id = new_id()
    assert start(client, job_id, payload=json.dumps({"input": "fail"})).status_code == 200
    record = wait(client, job_id)
    assert record["status"] == "failed"
    assert record["error_details"]["message"] == "exit code 3"
    result = client.get(f"/jobs/{job_id}/result")
    assert result.status_code == 500 and result.json() == {"message": "exit code 3"}
    partial = s3.get_object(Bucket=job_id, Key="outputs/partial.txt")["Body"].read()
    assert partial == b"half done"  # partial outputs are kept, as shepherd does


def test_not_ready_then_cancelled(client: TestClient, flock: Flock) -> None:
    job_id = new_id()
    body = json.dumps({"input": "wait", "seconds": 30})
    assert start(client, job_id, payload=body).status_code == 200
    resp = client.get(f"/jobs/{job_id}/result")
    assert resp.status_code == 202 and resp.json() == {"ready": False}
    short = client.get(f"/jobs/{job_id}/wait_ready", params={"timeout": 0.2})
    assert short.status_code == 202 and short.json()["status"] in ("queued", "processing")
    shepard_id = next(iter(flock.batch_ids(f"shepherd:{job_id}")))
    assert flock.cancel([shepard_id]) == [shepard_id]
    record = wait(client, job_id)
    assert record["status"] == "failed" and record["error_details"]["message"].startswith(
        "cancelled"
    )


def test_model_with_its_own_payload(client: TestClient) -> None:
    job_id = new_id()
    body = {"job_id": job_id, "model": {"name": "other", "version": "2"}, "payload": "{}"}
    assert client.post("/start-job", json=body).status_code == 200
    assert wait(client, job_id)["model"] == {"name": "other", "version": "2"}
    assert client.get(f"/jobs/{job_id}/result").content == b"other model"


def test_unknown_jobs_are_400(client: TestClient) -> None:
    for job_id in ("non-existent", new_id(), "Not_A_Bucket"):
        text = f"Data for job `{job_id}` does not exist"
        for path in ("status", "result", "input", "wait_ready", "result/x"):
            resp = client.get(f"/jobs/{job_id}/{path}")
            assert (resp.status_code, resp.json()) == (400, {"message": text}), path


def test_start_job_refusals(client: TestClient, flock: Flock, s3: Any) -> None:
    job_id = new_id()
    # no payload and no bucket
    resp = start(client, job_id)
    assert resp.status_code == 400
    assert resp.json() == {"message": f"Data for job `{job_id}` does not exist"}
    # unknown sheep: refused before anything is stored or registered
    resp = start(client, job_id, sheep_id="nosuch", payload="{}")
    assert resp.status_code == 400 and resp.json() == {"message": "Unknown sheep id `nosuch`"}
    assert list(flock.batch_ids(f"shepherd:{job_id}")) == []
    with pytest.raises(s3.exceptions.ClientError):
        s3.head_bucket(Bucket=job_id)
    # a known sheep is accepted
    assert start(client, job_id, sheep_id="sheep-1", payload='{"input": "1"}').status_code == 200
    # the same id again: refused whether or not it carries a payload
    again = start(client, job_id, payload='{"input": "2"}')
    assert again.status_code == 409
    assert again.json() == {"message": "A job with this ID was already submitted"}
    assert start(client, job_id).status_code == 409
    # a bucket that exists already (S3 answers 200 to creating it again)
    taken = new_id()
    s3.create_bucket(Bucket=taken)
    assert start(client, taken, payload="{}").status_code == 409
    # bodies shepherd refuses
    bad: list[tuple[Any, str]] = [
        ({"job_id": new_id(), "model": {}, "foo": 1}, "Invalid input: ``{'foo': 'Rogue field'}``"),
        ({"job_id": new_id()}, "Invalid input: ``{'model': 'This field is required.'}``"),
        ({"job_id": new_id(), "model": {}, "payload": {"a": 1}}, "Invalid input"),
        ("a string", "The request body must be a JSON object"),
        ({"job_id": "q1", "model": {}, "payload": "x"}, "Invalid job id `q1`"),
        ({"job_id": "Upper_Case", "model": {}, "payload": "x"}, "Invalid job id"),
    ]
    for body, text in bad:
        resp = client.post("/start-job", json=body)
        assert resp.status_code == 400 and resp.json()["message"].startswith(text), body
    not_json = client.post(
        "/start-job", content=b"not-json", headers={"content-type": "application/json"}
    )
    assert not_json.status_code == 400
    assert not_json.json() == {"message": "The request body must be a JSON object"}
    plain = client.post("/start-job", content=b"{}", headers={"content-type": "text/plain"})
    assert plain.status_code == 400


def test_missing_files_and_unknown_routes(client: TestClient) -> None:
    job_id = new_id()
    assert start(client, job_id, payload='{"input": "x"}').status_code == 200
    wait(client, job_id)
    for path in ("result/nosuch", "input/nosuch", "result/..%2Fjob_status.json"):
        resp = client.get(f"/jobs/{job_id}/{path}")
        assert resp.status_code == 404, path
        assert resp.json() == {"message": "Requested file does not exist"}
    assert client.get("/no/such/route").status_code == 404
    wrong = client.delete("/start-job")
    assert wrong.status_code == 405 and wrong.headers["content-type"] == "application/json"


def test_status_lists_the_slots_as_sheep(client: TestClient) -> None:
    sheep = client.get("/status").json()["sheep"]
    assert set(sheep) == {"sheep-1", "sheep-2"}
    for one in sheep.values():
        assert set(one) == {"running", "model", "request"}
        assert isinstance(one["running"], bool) and set(one["model"]) == {"name", "version"}


def test_body_limit_is_413(flock: Flock) -> None:
    app = create_app(flock, ServeSettings(shepherd=True, max_body=1000))
    with TestClient(app) as small:
        body = {"job_id": new_id(), "model": {}, "payload": "x" * 2000}
        resp = small.post("/start-job", json=body)
        # refused by the server's body limit before the route reads it, in shepherd's shape
        assert resp.status_code == 413 and "limit of 1,000 bytes" in resp.json()["message"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: refused while streaming
            yield b'{"job_id": "abc", "payload": "'
            for _ in range(10):
                yield b"x" * 500
            yield b'"}'

        streamed = small.post(
            "/start-job", content=chunks(), headers={"content-type": "application/json"}
        )
        assert streamed.status_code == 413


def test_tokens_when_asked(flock: Flock) -> None:
    _, secret = flock.create_token(f"w-{uuid.uuid4().hex[:8]}")
    _, read_only = flock.create_token(f"r-{uuid.uuid4().hex[:8]}", read_only=True)
    app = create_app(flock, ServeSettings(shepherd=True, shepherd_token=True))
    with TestClient(app) as c:
        assert c.get("/status").status_code == 401
        assert c.get("/status", headers={"Authorization": f"Bearer {read_only}"}).status_code == 200
        body = {"job_id": new_id(), "model": {}, "payload": "{}"}
        auth = {"Authorization": f"Bearer {read_only}"}
        assert c.post("/start-job", json=body, headers=auth).status_code == 403
        auth = {"Authorization": f"Bearer {secret}"}
        assert c.post("/start-job", json=body, headers=auth).status_code == 200


def test_minio_client_as_shepherds_load_test(client: TestClient, s3: Any) -> None:
    minio = pytest.importorskip("minio")
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    host = endpoint.split("://", 1)[1].rstrip("/")
    mc = minio.Minio(host, access_key="testing", secret_key="testing", secure=False)
    job_id = str(uuid.uuid4())
    payload = b'{"input":"42"}'
    mc.make_bucket(job_id)
    mc.put_object(job_id, "inputs/input", io.BytesIO(payload), len(payload))
    body = {"job_id": job_id, "model": {"name": "tests", "version": "stress"}}
    assert client.post("/start-job", json=body).status_code == 200
    assert client.get(f"/jobs/{job_id}/status").status_code == 200
    assert wait(client, job_id)["status"] == "done"
    assert client.get(f"/jobs/{job_id}/result").json()["result"] == "42"
    stored = mc.get_object(job_id, "outputs/output").read()
    assert json.loads(stored)["result"] == "42"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the status write follows the outputs
        status = json.loads(mc.get_object(job_id, "job_status.json").read())
        if status["status"] == "done":
            break
        time.sleep(0.1)
    assert status["status"] == "done"


@pytest.mark.postgres
def test_on_slurm(tmp_path: Path, s3: Any) -> None:
    """A shepherd job on the Slurm backend: its array task (another process, started by
    Slurm) takes the inputs from the job's bucket and leaves the outputs there."""
    from tests.slurm import cancel_tasks, require_slurm, use_slurm

    require_slurm()
    folder = tmp_path / "flock"
    folder.mkdir()
    (folder / "echo.py").write_text(ECHO)
    data: dict[str, Any] = {
        "name": "shepherd-slurm",
        "payload": {"command": f"{sys.executable} {folder / 'echo.py'}"},
    }
    use_slurm(data, "array")
    f = Flock.create(folder, config.parse(data))
    proc = subprocess.Popen(
        [SHEPARD, "up", "--flock", str(folder), "--no-inbox"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        with TestClient(create_app(f, ServeSettings(shepherd=True))) as c:
            job_id = new_id()
            assert start(c, job_id, payload='{"input": "on slurm"}').status_code == 200
            assert wait(c, job_id)["status"] == "done"
            assert c.get(f"/jobs/{job_id}/result").json()["result"] == "on slurm"
            job = f.job(next(iter(f.batch_ids(f"shepherd:{job_id}"))))
            assert job.worker is not None and "slurm" in job.worker
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        cancel_tasks(folder)
        f.close()


def test_a_failed_start_leaves_nothing(
    client: TestClient, flock: Flock, s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shepard.errors import CatalogError

    def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise CatalogError("the catalog cannot be reached")

    monkeypatch.setattr(flock.catalog, "add_jobs_once", unreachable)
    job_id = new_id()
    resp = start(client, job_id, payload='{"input": "1"}')
    assert resp.status_code == 503 and resp.json() == {"message": "the catalog cannot be reached"}
    with pytest.raises(s3.exceptions.ClientError):
        s3.head_bucket(Bucket=job_id)  # made, then removed
    # a client's own bucket stays, without the status this call wrote
    s3.create_bucket(Bucket=job_id)
    s3.put_object(Bucket=job_id, Key="inputs/input", Body=b'{"input": "1"}')
    assert start(client, job_id).status_code == 503
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=job_id)["Contents"]]
    assert keys == ["inputs/input"]
    monkeypatch.undo()
    assert start(client, job_id).status_code == 200  # and it can be started again
    assert wait(client, job_id)["status"] == "done"
