"""Pages of jobs on DynamoDB (`Catalog.page`), with every filter the SQL catalog offers.

Each page is an index read in seq order, chosen by the filters: `by_batch` (a status range of
one batch; a batch without a status is read one status at a time and merged), `by_status`,
or `by_seq`. DynamoDB applies the worker and time filters while it reads; the filters on
parameters (tag, any parameter, text) look inside the JSON parameters, which no index or
filter expression can compare ignoring case, so they are checked here on the rows read. A
rare value would read far: one page stops once such filters rejected `filter_budget` rows,
and returns what it found (maybe nothing) as a `PartPage` saying where it stopped, from
which the next page goes on (docs/dynamodb.md: what a filtered page costs).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from typing import Any

from shepard.catalog.base import PartPage
from shepard.catalog.dynamodb import items
from shepard.catalog.dynamodb.core import Core, Row
from shepard.model import Job, JobStatus

FILTER_BUDGET = 10_000
"""Rows one page filtered by parameters reads and rejects at most before it stops (about
5 MB of index entries: some 600 read units, a few round trips)."""


def row_filter(
    tag: str | None, param: tuple[str, str] | None, text: str | None
) -> Callable[[Row], bool] | None:
    """The check of the parameter filters on a row (None when there is none)."""
    checks: list[Callable[[Row], bool]] = []
    if tag is not None:
        checks.append(lambda row: items.param_matches(row, "TAG", tag))
    if param is not None:
        checks.append(lambda row: items.param_matches(row, *param))
    if text is not None:
        checks.append(lambda row: items.text_in(row, text))
    if not checks:
        return None
    return lambda row: all(check(row) for check in checks)


class Listing(Core):
    """Mixed into DynamoCatalog."""

    filter_budget = FILTER_BUDGET

    def page(
        self,
        *,
        status: JobStatus | None = None,
        worker: str | None = None,
        batch: str | None = None,
        tag: str | None = None,
        since: float | None = None,
        limit: int = 50,
        before_seq: int | None = None,
        after_seq: int | None = None,
        newest_first: bool = True,
        param: tuple[str, str] | None = None,
        text: str | None = None,
    ) -> list[Job]:
        """See Catalog.page and the module docstring."""
        if limit < 1:
            return []
        lo = 0 if after_seq is None else after_seq + 1
        hi = 10**items.SEQ_WIDTH - 1 if before_seq is None else before_seq - 1
        if lo > hi:
            return []
        filters: list[str] = []
        names: dict[str, str] = {}
        values: dict[str, Any] = {}
        if worker is not None:
            filters.append("#w = :w")
            names["#w"], values[":w"] = "worker", {"S": worker}
        if since is not None:
            filters.append("submitted_at >= :since")
            values[":since"] = {"N": repr(float(since))}
        base: dict[str, Any] = {"ScanIndexForward": not newest_first}
        if filters:
            base["FilterExpression"] = " AND ".join(filters)
        wanted = row_filter(tag, param, text)
        size = min(1000, max(limit * 2, 50))

        def read(index: str, key: str, key_values: dict[str, Any], key_names: dict[str, str]
                 ) -> Iterator[Row]:  # fmt: skip
            request = {**base, "IndexName": index, "KeyConditionExpression": key, "Limit": size,
                       "ExpressionAttributeValues": {**values, **key_values}}  # fmt: skip
            if names or key_names:
                request["ExpressionAttributeNames"] = {**names, **key_names}
            return self._query(**request)

        def in_batch(s: JobStatus) -> Iterator[Row]:
            return read(
                "by_batch", "gb = :b AND gbs BETWEEN :lo AND :hi",
                {":b": {"S": f"b#{batch}"}, ":lo": {"S": items.batch_sort(s.value, lo)},
                 ":hi": {"S": items.batch_sort(s.value, hi)}}, {},
            )  # fmt: skip

        seq_range = {":lo": {"N": str(lo)}, ":hi": {"N": str(hi)}}
        with self._errors():
            if batch is not None:
                chosen = [status] if status is not None else list(JobStatus)
                streams = [in_batch(s) for s in chosen]
                sign = -1 if newest_first else 1
                rows: Iterator[Row] = heapq.merge(*streams, key=lambda r: sign * r["seq"])
            elif status is not None:
                key = "#st = :st AND seq BETWEEN :lo AND :hi"
                rows = read("by_status", key, {":st": {"S": status.value}, **seq_range},
                            {"#st": "status"})  # fmt: skip
            else:
                rows = read("by_seq", "kind = :k AND seq BETWEEN :lo AND :hi",
                            {":k": {"S": "job"}, **seq_range}, {})  # fmt: skip
            kept = self._keep(rows, limit, wanted)
        if isinstance(kept, tuple):
            return PartPage((items.to_job(r) for r in kept[0]), read_to=kept[1])
        return [items.to_job(r) for r in kept]

    def _keep(self, rows: Iterator[Row], limit: int, wanted: Callable[[Row], bool] | None
              ) -> list[Row] | tuple[list[Row], int]:  # fmt: skip
        """The first `limit` visible rows of `rows` that `wanted` accepts; or, once
        `filter_budget` rows were rejected by it, those found so far and the seq of the last
        row read."""
        kept: list[Row] = []
        rejected = 0
        while len(kept) < limit:
            chunk = []
            stopped: int | None = None
            for row in rows:
                if wanted is None or wanted(row):
                    chunk.append(row)
                    if len(chunk) >= limit - len(kept):
                        break
                else:
                    rejected += 1
                    if rejected >= self.filter_budget:
                        stopped = row["seq"]
                        break
            if chunk:
                hidden = self._hidden(chunk)  # after the jobs were read (see Core._hidden)
                kept += [r for r in chunk if r.get("sub") not in hidden]
            if stopped is not None:
                return kept, stopped
            if not chunk:
                break
        return kept[:limit]
