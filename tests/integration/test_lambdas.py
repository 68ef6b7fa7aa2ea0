"""The serverless flock's functions, their handlers called in-process with the events Lambda
gives them (the S3 -> SQS bodies captured from moto: data/s3_sqs_bodies.json), against the
AWS test server (env SHEPARD_TEST_AWS): S3 stores, the DynamoDB catalog, SQS, Batch. Batch
children run an image whose worker exits at once (tests/serverless.py), so nothing heavy runs."""

from __future__ import annotations

import base64
import io
import json
import zipfile
from collections.abc import Iterator
from typing import Any

import pytest

from shepard.lambdas import api, reconciler, scheduler
from shepard.lambdas.common import forget_flocks, open_flock
from shepard.model import JobStatus
from tests import aws
from tests.serverless import Context, Stack, exiting_image, stack


@pytest.fixture
def flock_stack() -> Iterator[Stack]:
    url = aws.endpoint()
    with stack(url, image=exiting_image()) as made:
        yield made
    forget_flocks()


def bundle(params: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("inputs.json", json.dumps(params))
    return buf.getvalue()


def put(made: Stack, key: str, data: bytes) -> None:
    made.client("s3").put_object(Bucket=made.bucket("inbox"), Key=key, Body=data)


def inbox_keys(made: Stack) -> list[str]:
    listed = made.client("s3").list_objects_v2(Bucket=made.bucket("inbox"))
    return sorted(o["Key"] for o in listed.get("Contents", []))


def jobs(made: Stack) -> list[Any]:
    import os

    return open_flock(os.environ).catalog.page(limit=1000, newest_first=False)


def test_dropped_bundles_become_jobs_handed_to_batch(flock_stack: Stack) -> None:
    made = flock_stack
    put(made, "sub dir/job+1.zip", bundle({"ITEM": 1}))  # the key of the captured event
    put(made, "two.zip", bundle({"ITEM": 2}))
    event = made.sqs_event([made.s3_body("test_event"), made.s3_body("put"),
                            made.put_event("two.zip")])  # fmt: skip
    answer = scheduler.handler(event, Context())
    assert answer == {"batchItemFailures": []}
    found = jobs(made)
    assert sorted(j.params["ITEM"] for j in found) == [1, 2]
    assert inbox_keys(made) == []  # taken: deleted from the inbox
    # the round handed them to Batch as one array
    assert all(j.placement and "@" in j.placement for j in found), found
    assert len({j.placement for j in found}) == 1
    array_id = found[0].placement.split("@", 1)[1]
    described = made.client("batch").describe_jobs(jobs=[array_id])["jobs"]
    assert described[0]["arrayProperties"]["size"] == 2


def test_a_duplicate_delivery_registers_one_job(flock_stack: Stack) -> None:
    made = flock_stack
    put(made, "big.zip", bundle({"ITEM": 7}))
    first, second = made.s3_body("multipart")  # moto's two messages for one upload
    assert scheduler.handler(made.sqs_event([first, second]), Context()) == {
        "batchItemFailures": []
    }
    # the same object delivered again later (an SQS redelivery): gone, nothing registered
    assert scheduler.handler(made.sqs_event([second]), Context()) == {"batchItemFailures": []}
    assert [j.params["ITEM"] for j in jobs(made)] == [7]


def test_a_malformed_drop_is_moved_to_rejected_with_its_reason(flock_stack: Stack) -> None:
    made = flock_stack
    put(made, "bad.zip", b"this is not a zip")
    put(made, "good.zip", bundle({"ITEM": 3}))
    event = made.sqs_event([made.put_event("bad.zip"), made.put_event("good.zip")])
    assert scheduler.handler(event, Context()) == {"batchItemFailures": []}
    assert inbox_keys(made) == ["rejected/bad.zip", "rejected/bad.zip.reason.txt"]
    reason = (
        made.client("s3")
        .get_object(Bucket=made.bucket("inbox"), Key="rejected/bad.zip.reason.txt")["Body"]
        .read()
    )
    assert b"zip" in reason.lower()
    assert [j.params["ITEM"] for j in jobs(made)] == [3]
    # the rejected/ object's own event (a copy lands there) is left alone
    event = made.sqs_event([made.put_event("rejected/bad.zip")])
    assert scheduler.handler(event, Context()) == {"batchItemFailures": []}
    assert len(inbox_keys(made)) == 2


def test_a_failing_record_is_reported_alone(flock_stack: Stack) -> None:
    made = flock_stack
    put(made, "ok.zip", bundle({"ITEM": 4}))
    event = made.sqs_event([made.put_event("ok.zip"), "not json at all", '{"what": 1}'])
    answer = scheduler.handler(event, Context())
    ids = [r["messageId"] for r in event["Records"]]
    assert answer == {"batchItemFailures": [{"itemIdentifier": i} for i in sorted(ids[1:])]}
    assert [j.params["ITEM"] for j in jobs(made)] == [4]


def test_an_object_the_store_cannot_read_now_goes_back_to_the_queue(
    flock_stack: Stack,
) -> None:
    made = flock_stack
    put(made, "ok.zip", bundle({"ITEM": 5}))
    s3 = made.client("s3")
    s3.delete_bucket(Bucket=made.bucket("inputs"))
    event = made.sqs_event([made.put_event("ok.zip"), json.dumps({"shepard": "dispatch"})])
    answer = scheduler.handler(event, Context())
    assert answer == {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["messageId"]}]}
    assert inbox_keys(made) == ["ok.zip"]  # still there for the redelivery
    s3.create_bucket(Bucket=made.bucket("inputs"))
    forget_flocks()
    assert scheduler.handler(made.sqs_event([made.put_event("ok.zip")]), Context()) == {
        "batchItemFailures": []
    }
    assert [j.params["ITEM"] for j in jobs(made)] == [5]


def test_the_reconciler_requeues_what_batch_ended_without_an_outcome(flock_stack: Stack) -> None:
    import os
    import time

    made = flock_stack
    put(made, "r.zip", bundle({"ITEM": 6}))
    scheduler.handler(made.sqs_event([made.put_event("r.zip")]), Context())
    (job,) = jobs(made)
    first = job.placement
    batch = made.client("batch")
    array_id = first.split("@", 1)[1]
    deadline = time.monotonic() + 60
    while batch.describe_jobs(jobs=[f"{array_id}"])["jobs"][0]["status"] not in (
        "SUCCEEDED", "FAILED",
    ) and time.monotonic() < deadline:  # fmt: skip
        time.sleep(0.5)
    summary = reconciler.handler({}, Context())
    # the child started (claimed) and ended without an outcome: a lost worker, queued again
    # (after the retry back-off) without spending an attempt
    assert summary["jobs"] == {"queued": 1} and summary["dead_letters"] == 0, summary
    (again,) = jobs(made)
    assert again.status is JobStatus.QUEUED and again.placement != first
    events = open_flock(os.environ).events(again.id)
    assert "failed without an outcome" in " ".join(str(e) for e in events)


def request(method: str, path: str, body: Any = None, query: str = "", *,
            b64: bool = False) -> dict[str, Any]:  # fmt: skip
    """A function URL event (payload format 2.0)."""
    text = "" if body is None else body if isinstance(body, str) else json.dumps(body)
    if b64:
        text = base64.b64encode(text.encode()).decode()
    return {
        "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": query,
        "headers": {"content-type": "application/json"},
        "requestContext": {"http": {"method": method, "path": path}},
        "body": text, "isBase64Encoded": b64,
    }  # fmt: skip


def call(event: dict[str, Any]) -> tuple[int, Any]:
    answer = api.handler(event, Context(30))
    return answer["statusCode"], json.loads(answer["body"])


def test_the_api_submits_lists_and_shows_jobs(flock_stack: Stack) -> None:
    made = flock_stack
    status, one = call(request("POST", "/jobs", {"params": {"ITEM": 1}, "batch": "b1"}))
    assert status == 201 and one["count"] == 1 and len(one["ids"]) == 1
    status, many = call(request("POST", "/jobs", {"range": "ITEM=1-5", "params": {"X": "y"},
                                                  "tag": "run"}, b64=True))  # fmt: skip
    assert status == 201 and many["count"] == 5 and len(set(many["ids"])) == 5
    status, listed = call(request("POST", "/jobs", {"jobs": [{"A": 1}, {"A": 2}]}))
    assert status == 201 and listed["count"] == 2
    # the kick went to the events queue
    sqs = made.client("sqs")
    got = sqs.receive_message(QueueUrl=made.env["SHEPARD_EVENTS_QUEUE"], MaxNumberOfMessages=10)
    assert {m["Body"] for m in got["Messages"]} == {'{"shepard": "dispatch"}'}

    status, page = call(request("GET", "/jobs", query=f"batch={many['batch']}&limit=2"))
    assert status == 200 and len(page["items"]) == 2 and page["next_cursor"]
    status, rest = call(request("GET", "/jobs", query=f"batch={many['batch']}&limit=10"
                                f"&cursor={page['next_cursor']}"))  # fmt: skip
    assert status == 200 and len(rest["items"]) == 3
    assert {i["params"]["TAG"] for i in page["items"] + rest["items"]} == {"run"}
    status, shown = call(request("GET", f"/jobs/{one['ids'][0]}"))
    assert status == 200 and shown["job"]["id"] == one["ids"][0]
    assert shown["job"]["status"] == "queued" and shown["events"]


@pytest.mark.parametrize(
    ("event", "status", "words"),
    [
        (request("GET", "/jobs/nope"), 404, "nope"),
        (request("GET", "/other"), 404, "no route"),
        (request("DELETE", "/jobs"), 405, "not allowed"),
        (request("POST", "/jobs", "{not json"), 400, "not JSON"),
        (request("POST", "/jobs", {"params": {"a b": 1}}), 400, "a b"),
        (request("POST", "/jobs", {"range": "ITEM=9-1"}), 422, "before its start"),
        (request("POST", "/jobs", {"nothing": 1}), 422, "nothing"),
        (request("POST", "/jobs", "x" * (api.MAX_BODY + 1)), 413, "at most"),
        (request("GET", "/jobs", query="limit=0"), 400, "limit"),
        (request("GET", "/jobs", query="status=sleeping"), 400, "status"),
    ],
)
def test_api_errors_are_json_with_their_status(
    flock_stack: Stack, event: dict[str, Any], status: int, words: str
) -> None:
    got, body = call(event)
    assert got == status, body
    assert words in json.dumps(body["detail"])
