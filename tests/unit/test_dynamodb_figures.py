"""The pure parts of the DynamoDB catalog's figures and filters (no table needed)."""

from __future__ import annotations

import json

import pytest

from shepard.catalog.dynamodb import figures, items
from shepard.catalog.dynamodb.listing import row_filter
from shepard.model import JobStatus


def test_count_marks_pack_counts_negative_ones_included() -> None:
    counts = {s: n * 1_000_003 for n, s in enumerate(JobStatus)}
    counts[JobStatus.RUNNING] = -2  # shards read one by one can disagree for a moment
    assert figures._unpack(figures._pack(counts)) == counts


def test_an_hour_item_counts_ended_attempts_by_minute() -> None:
    at = 7 * 3600 + 5 * 60 + 30.0  # 07:05:30 on the first day
    update = items.ended_update(3, at, {"succeeded": 2, "failed": 1, "queued": 4})
    assert update is not None and update["Key"] == {"pk": {"S": "e#7#3"}}
    names = update["ExpressionAttributeNames"]
    values = update["ExpressionAttributeValues"]
    added = {names[f"#{c}"]: values[f":{c}"]["N"] for c in ("s", "f")}
    assert added == {"s05": "2", "f05": "1"}
    assert items.ended_update(3, at, {"cancelled": 1}) is None


def test_the_counter_shard_notes_the_hour_of_its_latest_ended_attempt() -> None:
    plain = items.counter_update(1, {"running": -1, "succeeded": 1})
    assert plain is not None and "SET" not in plain["UpdateExpression"]
    noted = items.counter_update(1, {"running": -1, "succeeded": 1}, ended_hour=12)
    assert noted is not None and noted["UpdateExpression"].endswith(" SET #h = :h")
    assert noted["ExpressionAttributeValues"][":h"] == {"N": "12"}


@pytest.mark.parametrize(
    ("params", "tag", "param", "text", "kept"),
    [
        ({"TAG": "Demo"}, "demo", None, None, True),
        ({"tag": True}, "TRUE", None, None, True),
        ({"NAME": "s-1", "N": 7}, None, ("n", "7"), None, True),
        ({"NAME": "s-1"}, None, ("NAME", "s-2"), None, False),
        ({"NOTE": "50%_off"}, None, ("note", "50%_OFF"), "%_O", True),
        ({"NOTE": "50%_off"}, "x", None, "%_o", False),
    ],
)
def test_the_filters_on_parameters(
    params: dict[str, object],
    tag: str | None,
    param: tuple[str, str] | None,
    text: str | None,
    kept: bool,
) -> None:
    check = row_filter(tag, param, text)
    assert check is not None and check({"params": json.dumps(params)}) is kept
    assert row_filter(None, None, None) is None
