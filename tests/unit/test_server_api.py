"""The REST API (server/api.py) through FastAPI's TestClient, over a real flock (SQLite
catalog, folder stores). Jobs are moved through their lives on the catalog directly, as a
worker elsewhere would; `shepard serve` itself is driven in tests/acceptance/test_cli_serve.py.
"""

from __future__ import annotations

import io
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

import shepard
from shepard.config import FlockConfig, PayloadConfig
from shepard.flock import Flock
from shepard.model import JobStatus, Outcome
from shepard.runtime import log_key
from shepard.server.app import create_app
from shepard.server.settings import ServeSettings
from shepard.server.tokencache import TokenCache

T0 = 1_800_000_000.0


@pytest.fixture
def flock(tmp_path: Path) -> Iterator[Flock]:
    cfg = FlockConfig(name="api", payload=PayloadConfig(command="true"))
    Flock.create(tmp_path / "flock", cfg).close()
    opened = shepard.open(tmp_path / "flock")
    yield opened
    opened.close()


@pytest.fixture
def tokens(flock: Flock) -> dict[str, str]:
    return {
        "rw": flock.create_token("rw")[1],
        "ro": flock.create_token("ro", read_only=True)[1],
    }


def make_client(flock: Flock, **settings: object) -> TestClient:
    return TestClient(create_app(flock, ServeSettings(**settings)))  # type: ignore[arg-type]


@pytest.fixture
def client(flock: Flock, tokens: dict[str, str]) -> Iterator[TestClient]:
    with make_client(flock) as c:
        c.headers["Authorization"] = f"Bearer {tokens['rw']}"
        yield c


def as_(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def run_one(flock: Flock, job_id: str, outcome: Outcome) -> None:
    (job,) = flock.catalog.claim("elsewhere:1", now=time.time(), lease=60, job_ids=[job_id])
    flock.catalog.finish(job.id, job.attempt, outcome, now=time.time(), retry_at=None)


def bundle_bytes(inputs: str = '{"ITEM": 7}') -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("inputs.json", inputs)
    return buf.getvalue()


# -- auth ------------------------------------------------------------------------------------


def test_no_token_unknown_token_and_revoked_token_are_401(
    flock: Flock, tokens: dict[str, str]
) -> None:
    with make_client(flock) as c:
        assert c.get("/healthz").json() == {"status": "ok"}  # no auth there
        missing = c.get("/api/v1/jobs")
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert "Bearer" in missing.json()["detail"]
        assert c.get("/api/v1/jobs", headers=as_("shp_nope")).status_code == 401
        assert c.get("/api/v1/jobs", headers=as_(tokens["rw"])).status_code == 200
        assert c.delete("/api/v1/tokens/rw", headers=as_(tokens["rw"])).status_code == 204
        revoked = c.get("/api/v1/jobs", headers=as_(tokens["rw"]))
        assert revoked.status_code == 401
        assert revoked.json() == {"detail": "unknown or revoked token"}


def test_a_token_revoked_elsewhere_is_refused_within_the_cache_ttl(flock: Flock) -> None:
    view, secret = flock.create_token("ci")
    now = [0.0]
    cache = TokenCache(flock.verify_token, ttl=1.0, clock=lambda: now[0])
    assert cache.verify(secret) == view
    flock.revoke_token("ci")  # another process: `shepard token revoke ci`
    assert cache.verify(secret) == view  # still trusted for up to a second
    now[0] = 1.0
    assert cache.verify(secret) is None
    assert cache.verify("shp_unknown") is None


def test_read_only_token_reads_but_may_not_act(flock: Flock, tokens: dict[str, str]) -> None:
    job_id = flock.submit([{"ITEM": 1}]).ids[0]
    with make_client(flock) as c:
        c.headers.update(as_(tokens["ro"]))
        assert c.get(f"/api/v1/jobs/{job_id}").status_code == 200
        assert c.get("/api/v1/counts").status_code == 200
        writes = [
            c.post("/api/v1/jobs", json={"params": {"A": 1}}),
            c.post("/api/v1/bundles", content=bundle_bytes()),
            c.post(f"/api/v1/jobs/{job_id}/cancel"),
            c.post("/api/v1/cancel", json={"all": True}),
            c.post("/api/v1/retry", json={}),
            c.get("/api/v1/tokens"),
            c.post("/api/v1/tokens", json={"name": "x"}),
            c.delete("/api/v1/tokens/rw"),
        ]
        for answer in writes:
            assert answer.status_code == 403, answer.request.url
            assert answer.json() == {"detail": "token 'ro' is read-only"}
    assert flock.get_job(job_id).status is JobStatus.QUEUED
    assert flock.count().total == 1
    assert [t.name for t in flock.list_tokens()] == ["ro", "rw"]


# -- submitting ------------------------------------------------------------------------------


def test_submit_one_many_and_a_range(client: TestClient, flock: Flock) -> None:
    one = client.post("/api/v1/jobs", json={"params": {"ITEM": 1, "NAME": "a"}})
    assert one.status_code == 201
    body = one.json()
    assert body["count"] == 1 and not body["replayed"]
    assert flock.get_job(body["ids"][0]).params == {"ITEM": 1, "NAME": "a"}
    many = client.post(
        "/api/v1/jobs", json={"jobs": [{"ITEM": 2}, {"ITEM": 3}], "batch": "b1", "attempts": 3}
    ).json()
    assert many["batch"] == "b1" and many["count"] == 2
    assert [flock.get_job(i).max_attempts for i in many["ids"]] == [3, 3]
    ranged = client.post(
        "/api/v1/jobs", json={"range": {"name": "ITEM", "start": 1, "end": 20}, "params": {"S": 1}}
    ).json()
    assert ranged["count"] == 20 == len(ranged["ids"])
    assert flock.get_job(ranged["ids"][-1]).params == {"S": 1, "ITEM": 20}
    assert flock.count().total == 23


def test_bad_parameters_register_nothing_and_say_why(client: TestClient, flock: Flock) -> None:
    bad = client.post("/api/v1/jobs", json={"jobs": [{"ITEM": 1}, {"PATH": "/x"}]})
    assert bad.status_code == 400
    assert "jobs item 2" in bad.json()["detail"] and "PATH" in bad.json()["detail"]
    shapeless = client.post("/api/v1/jobs", json={"jobs": [], "params": {}})
    assert shapeless.status_code == 422
    broken = client.post("/api/v1/jobs", content=b"{", headers={"content-type": "application/json"})
    assert broken.status_code == 422
    assert flock.count().total == 0


def test_idempotency_key_registers_once_and_refuses_another_request(
    client: TestClient, flock: Flock
) -> None:
    key = {"Idempotency-Key": "run-42"}
    first = client.post("/api/v1/jobs", json={"jobs": [{"I": 1}, {"I": 2}]}, headers=key)
    again = client.post("/api/v1/jobs", json={"jobs": [{"I": 1}, {"I": 2}]}, headers=key)
    assert first.status_code == again.status_code == 201
    assert again.json()["ids"] == first.json()["ids"] and again.json()["replayed"]
    other = client.post("/api/v1/jobs", json={"jobs": [{"I": 3}]}, headers=key)
    assert other.status_code == 409 and "run-42" in other.json()["detail"]
    in_body = client.post("/api/v1/jobs", json={"params": {"I": 1}, "idempotency_key": "b"})
    header = client.post(
        "/api/v1/jobs", json={"params": {"I": 1}}, headers={"Idempotency-Key": "b"}
    )
    assert header.json() == {**in_body.json(), "replayed": True}
    clash = client.post(
        "/api/v1/jobs", json={"params": {"I": 1}, "idempotency_key": "c"}, headers=key
    )
    assert clash.status_code == 400
    assert flock.count().total == 3


def test_bundle_raw_and_multipart_validated_like_batch(client: TestClient, flock: Flock) -> None:
    raw = client.post("/api/v1/bundles?name=mine.zip", content=bundle_bytes(),
                      headers={"content-type": "application/zip"})  # fmt: skip
    assert raw.status_code == 201, raw.text
    job = flock.get_job(raw.json()["ids"][0])
    assert (job.params, job.bundle) == ({"ITEM": 7}, "mine.zip")
    assert flock.store("inputs").get_bytes("mine.zip") == bundle_bytes()
    form = client.post("/api/v1/bundles", files={"bundle": ("b.zip", bundle_bytes('{"X": "y"}'))})
    assert form.status_code == 201, form.text
    assert flock.get_job(form.json()["ids"][0]).params == {"X": "y"}
    taken = client.post("/api/v1/bundles?name=mine.zip", content=bundle_bytes())
    assert taken.status_code == 400 and "already exists" in taken.json()["detail"]
    assert flock.count().total == 2


def test_bad_bundle_gets_the_cli_message_and_leaves_nothing(
    client: TestClient, flock: Flock
) -> None:
    not_zip = client.post("/api/v1/bundles", files={"bundle": ("up.zip", b"hello")})
    assert not_zip.status_code == 400
    assert not_zip.json()["detail"].startswith("bundle 'up.zip' ")
    no_inputs = io.BytesIO()
    with zipfile.ZipFile(no_inputs, "w") as zf:
        zf.writestr("other.txt", "x")
    missing = client.post("/api/v1/bundles?name=n.zip", content=no_inputs.getvalue())
    assert missing.status_code == 400 and "inputs.json" in missing.json()["detail"]
    empty = client.post("/api/v1/bundles", content=b"")
    assert empty.status_code == 400 and "empty" in empty.json()["detail"]
    wrong_field = client.post("/api/v1/bundles", files={"zip": ("a.zip", bundle_bytes())})
    assert wrong_field.status_code == 400 and "`bundle`" in wrong_field.json()["detail"]
    assert flock.count().total == 0
    assert list(flock.store("inputs").list("")) == []
    work = flock.dir.store_path("work")
    assert not any(p.name.startswith(".batch-") for p in work.iterdir())


def test_bodies_over_the_limit_are_413_before_being_read(
    flock: Flock, tokens: dict[str, str]
) -> None:
    with make_client(flock, max_body=1000) as c:
        c.headers.update(as_(tokens["rw"]))
        declared = c.post("/api/v1/jobs", json={"params": {"A": "x" * 2000}})
        assert declared.status_code == 413 and "1,000 bytes" in declared.json()["detail"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
            for _ in range(10):
                yield b"x" * 500

        streamed = c.post("/api/v1/bundles", content=chunks())
        assert streamed.status_code == 413
        small = c.post("/api/v1/jobs", json={"params": {"A": "x"}})
        assert small.status_code == 201
    assert flock.count().total == 1


# -- looking ---------------------------------------------------------------------------------


def test_list_filters_and_pages_by_cursor(client: TestClient, flock: Flock) -> None:
    ids = flock.submit([{"ITEM": i, "TAG": "t" if i % 2 else "u"} for i in range(7)]).ids
    run_one(flock, ids[0], Outcome(JobStatus.FAILED, reason="boom"))
    seen: list[str] = []
    page = client.get("/api/v1/jobs", params={"limit": 3, "order": "oldest"}).json()
    while True:
        seen += [j["id"] for j in page["items"]]
        if page["next_cursor"] is None:
            break
        page = client.get("/api/v1/jobs", params={"limit": 3, "cursor": page["next_cursor"]}).json()
    assert seen == ids
    failed = client.get("/api/v1/jobs", params={"status": "failed"}).json()["items"]
    assert [j["id"] for j in failed] == [ids[0]] and failed[0]["reason"] == "boom"
    tagged = client.get("/api/v1/jobs", params={"tag": "T"}).json()["items"]
    assert sorted(j["id"] for j in tagged) == sorted(ids[1::2])
    assert client.get("/api/v1/jobs", params={"since": T0 * 2}).json()["items"] == []
    since_iso = client.get("/api/v1/jobs", params={"since": "2000-01-01T00:00:00"}).json()
    assert len(since_iso["items"]) == 7
    cursor = client.get("/api/v1/jobs", params={"limit": 2}).json()["next_cursor"]
    other = client.get("/api/v1/jobs", params={"limit": 2, "cursor": cursor, "tag": "t"})
    assert other.status_code == 400 and "other filters" in other.json()["detail"]
    assert client.get("/api/v1/jobs", params={"cursor": "%%%"}).status_code == 400
    assert client.get("/api/v1/jobs", params={"limit": 0}).status_code == 422
    assert client.get("/api/v1/jobs", params={"status": "lost"}).status_code == 422


def test_job_detail_counts_and_404(client: TestClient, flock: Flock) -> None:
    job_id = flock.submit([{"ITEM": 1}], batch="b").ids[0]
    flock.store("outputs").put_bytes("r.zip", b"PK-data")
    run_one(flock, job_id, Outcome(JobStatus.SUCCEEDED, exit_code=0, outputs=("r.zip",)))
    detail = client.get(f"/api/v1/jobs/{job_id}").json()
    assert detail["job"]["status"] == "succeeded" and detail["job"]["params"] == {"ITEM": 1}
    assert [e["status"] for e in detail["events"]] == ["queued", "running", "succeeded"]
    assert detail["attempts"][0]["number"] == 1 and detail["outputs"][0]["key"] == "r.zip"
    counts = client.get("/api/v1/counts", params={"batch": "b"}).json()
    assert counts["counts"]["succeeded"] == 1 and counts["settled"] and counts["total"] == 1
    assert client.get("/api/v1/counts", params={"batch": "none"}).json()["total"] == 0
    missing = client.get("/api/v1/jobs/nope")
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]
    for path in ("/logs", "/outputs", "/outputs/r.zip", "/cancel"):
        method = client.post if path == "/cancel" else client.get
        assert method(f"/api/v1/jobs/nope{path}").status_code == 404, path


def test_outputs_listed_and_downloaded_whole(client: TestClient, flock: Flock) -> None:
    job_id = flock.submit([{"ITEM": 1}]).ids[0]
    data = bytes(range(256)) * 9000  # over one chunk of the stream
    flock.store("outputs").put_bytes("sub/r.zip", data)
    run_one(flock, job_id, Outcome(JobStatus.SUCCEEDED, outputs=("sub/r.zip",)))
    (listed,) = client.get(f"/api/v1/jobs/{job_id}/outputs").json()
    assert (listed["key"], listed["size"], listed["store"]) == ("sub/r.zip", len(data), "outputs")
    got = client.get(f"/api/v1/jobs/{job_id}/outputs/sub/r.zip")
    assert got.status_code == 200 and got.content == data
    assert got.headers["content-length"] == str(len(data))
    assert got.headers["content-type"] == "application/zip"
    assert 'filename="r.zip"' in got.headers["content-disposition"]
    other = client.get(f"/api/v1/jobs/{job_id}/outputs/../inputs/x.zip")
    assert other.status_code == 404


def test_logs_whole_from_an_offset_and_bad_attempts(client: TestClient, flock: Flock) -> None:
    job_id = flock.submit([{"ITEM": 1}]).ids[0]
    queued = client.get(f"/api/v1/jobs/{job_id}/logs")
    assert queued.status_code == 400 and "has not run yet" in queued.json()["detail"]
    logs = flock.store("logs")
    logs.put_bytes(log_key(job_id, 1, "stdout"), b"hello world\n")
    logs.put_bytes(log_key(job_id, 1, "stderr"), b"oops\n")
    run_one(flock, job_id, Outcome(JobStatus.FAILED, exit_code=3))
    out = client.get(f"/api/v1/jobs/{job_id}/logs")
    assert out.text == "hello world\n" and out.headers["x-shepard-attempt"] == "1"
    assert client.get(f"/api/v1/jobs/{job_id}/logs?stream=stderr").text == "oops\n"
    assert client.get(f"/api/v1/jobs/{job_id}/logs?offset=6").text == "world\n"
    assert client.get(f"/api/v1/jobs/{job_id}/logs?follow=true").text == "hello world\n"
    assert client.get(f"/api/v1/jobs/{job_id}/logs?attempt=2").status_code == 400
    assert client.get(f"/api/v1/jobs/{job_id}/logs?stream=other").status_code == 422


def test_following_a_log_streams_until_the_attempt_ends(client: TestClient, flock: Flock) -> None:
    job_id = flock.submit([{"ITEM": 1}]).ids[0]
    flock.catalog.claim("elsewhere:1", now=time.time(), lease=60, job_ids=[job_id])
    logs, key = flock.store("logs"), log_key(job_id, 1, "stdout")
    logs.put_bytes(key, b"one\n")

    def later() -> None:
        time.sleep(0.8)
        logs.put_bytes(key, b"one\ntwo\n")
        time.sleep(0.8)
        flock.catalog.finish(
            job_id, 1, Outcome(JobStatus.SUCCEEDED), now=time.time(), retry_at=None
        )

    writer = threading.Thread(target=later)
    writer.start()
    began = time.monotonic()
    with client.stream("GET", f"/api/v1/jobs/{job_id}/logs", params={"follow": "true"}) as got:
        chunks = list(got.iter_bytes())
    writer.join()
    assert b"".join(chunks) == b"one\ntwo\n"
    assert time.monotonic() - began >= 1.5  # it waited for the attempt's end


# -- acting ----------------------------------------------------------------------------------


def test_cancel_one_a_selection_and_bad_selections(client: TestClient, flock: Flock) -> None:
    ids = flock.submit([{"ITEM": i} for i in range(4)]).ids
    one = client.post(f"/api/v1/jobs/{ids[0]}/cancel").json()
    assert one == {"action": "cancel", "ids": [ids[0]], "count": 1}
    assert client.post(f"/api/v1/jobs/{ids[0]}/cancel").json()["count"] == 0  # already ended
    some = client.post("/api/v1/cancel", json={"ids": [ids[1], "nope"]}).json()
    assert some["ids"] == [ids[1]]
    assert client.post("/api/v1/cancel", json={}).status_code == 422
    assert client.post("/api/v1/cancel", json={"all": True, "ids": [ids[2]]}).status_code == 422
    assert client.post("/api/v1/cancel", json={"status": "failed"}).status_code == 422
    rest = client.post("/api/v1/cancel", json={"status": "queued"}).json()
    assert sorted(rest["ids"]) == sorted(ids[2:])
    assert flock.count().counts[JobStatus.CANCELLED] == 4


def test_retry_selections(client: TestClient, flock: Flock) -> None:
    ids = flock.submit([{"ITEM": i, "TAG": "a" if i else "b"} for i in range(3)]).ids
    for job_id in ids:
        run_one(flock, job_id, Outcome(JobStatus.FAILED, exit_code=1))
    flock.cancel([ids[2]])  # already failed: stays failed
    tagged = client.post("/api/v1/retry", json={"tag": "B"}).json()
    assert tagged == {"action": "retry", "ids": [ids[0]], "count": 1}
    assert flock.get_job(ids[0]).status is JobStatus.QUEUED
    named = client.post("/api/v1/retry", json={"ids": [ids[1]], "extra_attempts": 2}).json()
    assert named["ids"] == [ids[1]] and flock.get_job(ids[1]).max_attempts == 3
    future = client.post("/api/v1/retry", json={"since": "2999-01-01T00:00:00Z"}).json()
    assert future["count"] == 0
    assert client.post("/api/v1/retry", json={"statuses": ["queued"]}).status_code == 422
    assert client.post("/api/v1/retry", json={"extra_attempts": 0}).status_code == 422


def test_tokens_and_flock_routes(client: TestClient, flock: Flock) -> None:
    made = client.post("/api/v1/tokens", json={"name": "bot", "read_only": True})
    assert made.status_code == 201
    secret = made.json()["secret"]
    assert made.json()["token"]["name"] == "bot" and flock.verify_token(secret) is not None
    assert [t["name"] for t in client.get("/api/v1/tokens").json()] == ["bot", "ro", "rw"]
    assert client.post("/api/v1/tokens", json={"name": "bot"}).status_code == 400
    assert client.post("/api/v1/tokens", json={"name": "bad name"}).status_code == 400
    assert client.delete("/api/v1/tokens/bot").status_code == 204
    assert client.delete("/api/v1/tokens/bot").status_code == 404
    assert flock.verify_token(secret) is None
    info = client.get("/api/v1/flock").json()
    assert info["name"] == "api" and info["backend"] == "local" and info["payload"] == "command"
    assert info["stores"]["outputs"].endswith("outputs")
    assert info["config"]["payload"]["command"] == "true"


def test_metrics_count_jobs_submissions_and_requests(client: TestClient, flock: Flock) -> None:
    client.post("/api/v1/jobs", json={"jobs": [{"I": 1}, {"I": 2}]})
    client.get("/api/v1/jobs/nope")
    text = client.get("/metrics").text
    assert 'shepard_jobs{status="queued"} 2' in text
    assert "shepard_submissions_total 1" in text and "shepard_submitted_jobs_total 2" in text
    assert 'route="/api/v1/jobs",status="201"' in text
    assert 'route="/api/v1/jobs/{job_id}",status="404"' in text
    assert 'shepard_http_request_duration_seconds_count{route="/api/v1/jobs"} 1' in text
    assert "shepard_dispatcher_up 0" in text


def test_openapi_is_served_and_lists_the_routes(client: TestClient) -> None:
    spec = client.get("/api/v1/openapi.json").json()
    for path in ("/api/v1/jobs", "/api/v1/bundles", "/api/v1/jobs/{job_id}/logs",
                 "/api/v1/cancel", "/api/v1/retry", "/api/v1/counts", "/api/v1/flock",
                 "/api/v1/tokens", "/api/v1/jobs/{job_id}/outputs/{key}"):  # fmt: skip
        assert path in spec["paths"], path
