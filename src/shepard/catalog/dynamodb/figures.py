"""The dashboard's figures on DynamoDB: throughput per minute, live count marks, recent
batches; none of them reads every job (docs/dynamodb.md).

- Ended attempts per minute: every transaction that ends attempts adds them to the minute
  of an hour's item `e#<hour>#<shard>` (the shard of its status counter), and notes that
  hour in the counter shard (`ended_hour`). A read takes the 16 counter shards, then the
  hours' items from `since` to the latest hour noted (plus one, for clocks that disagree).
- Count marks: the status counters are exact and cost 16 small reads whatever the size of
  the flock, so the marks are the counts themselves (packed into the first integer) and the
  changes since are the counts now minus those.
- Recent batches: the newest job's batch, then the newest job's before that batch's first
  job, and so on, through the `by_seq` and `by_batch` indexes, as the SQL catalog does.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import partial
from itertools import islice
from typing import Any

from shepard.catalog.dynamodb import items
from shepard.catalog.dynamodb.core import COUNTER_SHARDS, Core, Row
from shepard.model import JobStatus

MAX_HOURS = 48
"""`ended_per_minute` reads at most this many hours, ending with the latest hour in which
an attempt ended (the dashboard asks for 24 at most)."""

_BITS = 48
_BIAS = 1 << (_BITS - 1)
MARKS_LAYOUT = 0xD0 + len(JobStatus)
"""The second count mark: says the first one holds packed counts (`_pack`)."""


def _pack(counts: dict[JobStatus, int]) -> int:
    """The counts as one integer, `_BITS` bits a status (biased: a sum of shards read one
    by one can be a little negative for a moment)."""
    return sum((counts[s] + _BIAS) << (_BITS * i) for i, s in enumerate(JobStatus))


def _unpack(packed: int) -> dict[JobStatus, int]:
    mask = (1 << _BITS) - 1
    return {s: ((packed >> (_BITS * i)) & mask) - _BIAS for i, s in enumerate(JobStatus)}


class Figures(Core):
    """Mixed into DynamoCatalog."""

    def ended_per_minute(self, *, since: float) -> dict[int, dict[JobStatus, int]]:
        """See Catalog.ended_per_minute: 16 counter reads, then 16 item reads per hour
        from `since` to the latest hour an attempt ended in (at most MAX_HOURS), all
        eventually consistent (half a read unit each)."""
        with self._errors():
            shards = self._shards(consistent=False)
            noted = [int(i["ended_hour"]["N"]) for i in shards if "ended_hour" in i]
            if not noted:
                return {}
            last = max(noted) + 1
            first = max(int(since // 3600), last - MAX_HOURS + 1)
            keys = [items.hour_key(h, n) for h in range(first, last + 1)
                    for n in range(COUNTER_SHARDS)]  # fmt: skip
            found = self._get_items(keys)
        statuses = {letter: JobStatus(s) for s, letter in items.ENDED.items()}
        ended: dict[int, dict[JobStatus, int]] = {}
        for item in found:
            hour = int(item["pk"]["S"].split("#")[1])
            for name, typed in item.items():
                if name[:1] not in statuses or not name[1:].isdigit():
                    continue
                minute = hour * 60 + int(name[1:])
                if (minute + 1) * 60 <= since:  # whole minutes: the one holding `since` counts
                    continue
                status = statuses[name[0]]
                per_status = ended.setdefault(minute, {})
                per_status[status] = per_status.get(status, 0) + int(typed["N"])
        return ended

    def _get_items(self, keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The items of `keys` that exist (eventually consistent: figures may lag a moment)."""
        found: list[dict[str, Any]] = []
        for start in range(0, len(keys), 100):
            request: dict[str, Any] = {self._table: {"Keys": keys[start : start + 100]}}
            while request:
                answer = self._db.batch_get_item(RequestItems=request)
                found += answer["Responses"].get(self._table, [])
                request = answer.get("UnprocessedKeys") or {}
        return found

    def count_marks(self) -> tuple[int, int]:
        """See Catalog.count_marks: the counts now, packed (16 consistent item reads)."""
        with self._errors():
            return _pack(self._counters()), MARKS_LAYOUT

    def count_changes(self, *, after_event: int, after_seq: int) -> dict[JobStatus, int]:
        """See Catalog.count_changes: the counts now minus those the marks hold (16 item
        reads, eventually consistent: a change of the last second may show a moment late)."""
        if after_seq != MARKS_LAYOUT or after_event < 0:
            raise ValueError("count marks not made by a DynamoDB catalog's count_marks")
        then = _unpack(after_event)
        with self._errors():
            now = self._counters(consistent=False)
        return {s: now[s] - then[s] for s in JobStatus}

    def recent_batches(self, *, limit: int = 8) -> list[str]:
        """See Catalog.recent_batches: per batch, one short read of the newest jobs and one
        of the oldest index entry of each status of the batch (read at once)."""
        labels: list[str] = []
        before: int | None = None
        with self._errors(), ThreadPoolExecutor(len(JobStatus), "shepard-ddb") as pool:
            while len(labels) < limit:
                row = self._newest_labelled(before)
                if row is None:
                    break
                label = row["batch"]
                labels.append(label)
                firsts = [f for f in pool.map(partial(self._first_of, label), JobStatus)
                          if f is not None]  # fmt: skip
                before = min(firsts, default=row["seq"])
        return labels

    def _newest_labelled(self, before: int | None) -> Row | None:
        """The newest visible job with a batch label and a seq below `before`."""
        hi = 10**items.SEQ_WIDTH - 1 if before is None else before - 1
        rows = self._query(
            IndexName="by_seq", ScanIndexForward=False, Limit=50,
            KeyConditionExpression="kind = :k AND seq <= :hi",
            FilterExpression="attribute_exists(#b)",
            ProjectionExpression="seq, #b, #sub",
            ExpressionAttributeNames={"#b": "batch", "#sub": "sub"},
            ExpressionAttributeValues={":k": {"S": "job"}, ":hi": {"N": str(hi)}},
        )  # fmt: skip
        while chunk := list(islice(rows, 50)):
            hidden = self._hidden(chunk)  # after the jobs were read (see Core._hidden)
            for row in chunk:
                if row.get("sub") not in hidden:
                    return row
        return None

    def _first_of(self, label: str, status: JobStatus) -> int | None:
        """The smallest seq of batch `label`'s jobs in `status` (None if it has none)."""
        rows = self._db.query(
            TableName=self._table, IndexName="by_batch", Limit=1, ProjectionExpression="seq",
            KeyConditionExpression="gb = :b AND begins_with(gbs, :s)",
            ExpressionAttributeValues={":b": {"S": f"b#{label}"},
                                       ":s": {"S": f"{status.value}#"}},
        ).get("Items", [])  # fmt: skip
        return int(rows[0]["seq"]["N"]) if rows else None
