"""The functions' pure parts: how the scheduler sorts the messages of a batch (the bodies
moto sends, captured in tests/integration/data), the API's request fields, the deadline of a
round, one-line logs."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from shepard.errors import ParamsError
from shepard.lambdas import api, scheduler
from shepard.lambdas.common import MARGIN, OneLineFormatter, deadline

BODIES = json.loads(
    (Path(__file__).parent.parent / "integration" / "data" / "s3_sqs_bodies.json").read_text()
)


def records(*bodies: str) -> list[Mapping[str, Any]]:
    return [{"messageId": f"m{n}", "body": body} for n, body in enumerate(bodies)]


def body(kind: str, bucket: str = "inbox-b") -> Any:
    found = BODIES[kind]
    if isinstance(found, list):
        return [text.replace("BUCKET", bucket) for text in found]
    return found.replace("BUCKET", bucket)


def test_messages_are_sorted_by_what_they_ask() -> None:
    first, second = body("multipart")
    plan = scheduler.read_messages(
        records(body("test_event"), body("put"), first, second, '{"shepard": "dispatch"}',
                "not json", '{"other": 1}', body("put", bucket="elsewhere")),
        "inbox-b",
    )  # fmt: skip
    # the key arrives URL-encoded ("sub+dir%2Fjob%2B1.zip"); both messages of one upload
    # name one object
    assert plan.objects == {"sub dir/job+1.zip": ["m1"], "big.zip": ["m2", "m3"]}
    assert plan.kicks == ["m4"]
    assert plan.failed == {"m5", "m6"}
    assert plan.ignored == 2  # the test event, the other bucket's object


def test_a_malformed_s3_record_fails_its_message_only() -> None:
    broken = json.dumps({"Records": [{"eventName": "ObjectCreated:Put", "s3": {}}]})
    removed = json.loads(body("put"))
    removed["Records"][0]["eventName"] = "ObjectRemoved:Delete"
    plan = scheduler.read_messages(records(broken, json.dumps(removed)), "inbox-b")
    assert plan.failed == {"m0"} and plan.objects == {} and plan.ignored == 1


def test_api_fields_take_the_clis_range_and_a_tag() -> None:
    fields = api.submit_fields({"range": "ITEM=1-100", "params": {"A": 1}, "tag": "t"})
    assert fields == {"range": {"name": "ITEM", "start": 1, "end": 100},
                      "params": {"A": 1, "TAG": "t"}}  # fmt: skip
    jobs = api.submit_fields({"jobs": [{"A": 1}, {"A": 2}], "tag": "t"})
    assert jobs == {"jobs": [{"A": 1, "TAG": "t"}, {"A": 2, "TAG": "t"}]}
    with pytest.raises(ParamsError, match="NAME=START-END"):
        api.submit_fields({"range": "ITEM=a-b"})
    with pytest.raises(api.HttpError, match="JSON object"):
        api.submit_fields([1, 2])


class _Context:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def get_remaining_time_in_millis(self) -> int:
        return self.ms


class _Flock:
    def clock(self) -> float:
        return 1000.0


def test_a_round_ends_before_the_invocation_does() -> None:
    flock: Any = _Flock()
    assert deadline(flock, _Context(120_000), limit=100) == 1100.0
    assert deadline(flock, _Context(60_000), limit=100) == 1000.0 + 60 - MARGIN
    assert deadline(flock, _Context(1_000)) == 1000.0  # no time left: nothing is started
    assert deadline(flock, None) == 1060.0


def test_log_records_are_one_json_line_each() -> None:
    logger = logging.getLogger(f"test-{uuid.uuid4().hex}")
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        record = logger.makeRecord(logger.name, logging.ERROR, __file__, 1, "failed: %s",
                                   ("x",), exc_info=__import__("sys").exc_info())  # fmt: skip
    line = OneLineFormatter().format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["message"] == "failed: x" and parsed["level"] == "ERROR"
    assert "ValueError: boom" in parsed["error"]
