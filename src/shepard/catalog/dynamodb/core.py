"""What every part of the DynamoDB catalog uses: the client and table, reads of jobs by
key and by index, the set of submissions still being written, and transactions that
write state-machine Changes together with their counters (one random counter shard per
transaction, so concurrent transactions seldom meet on one item).
"""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from shepard.catalog import states
from shepard.catalog.dynamodb import items
from shepard.catalog.dynamodb.table import Address, aws_errors
from shepard.errors import CatalogError
from shepard.model import JobStatus

COUNTER_SHARDS = 16
"""Status counters are split over this many items, summed by `counts`."""

MAX_TRANSACTION = 100
"""DynamoDB's limit of items per TransactWriteItems."""

JOBS_PER_TRANSACTION = MAX_TRANSACTION - 2
"""Jobs changed by one transaction, which also writes a counter shard and an hour's item
of ended attempts (`items.ended_update`)."""

RESERVATION_S = 60.0
"""A job reserved for a transaction longer than this is taken over (its writer died)."""

ROUNDS = 200
"""A change retried this many times against concurrent writers gives up (CatalogError)."""

Row = dict[str, Any]
Decide = Callable[[states.Facts], states.Change | None]


class Core:
    """The shared machinery; DynamoCatalog adds the contract's methods (see __init__)."""

    def __init__(self, address: Address, db: Any) -> None:
        self._address = address
        self._db = db
        self._table = address.table
        self._rng = random.Random()
        self._committed: set[str] = set()  # submissions known to be committed

    def _errors(self) -> Any:
        return aws_errors(self._address)

    # -- reads ------------------------------------------------------------------------------

    def _pending(self) -> set[str]:
        """The submissions noted as being written (a hint for `sweep_submissions`; what
        hides jobs is their submission's record, see `_hidden`)."""
        found = self._db.get_item(
            TableName=self._table, Key={"pk": {"S": "meta#pending"}}, ConsistentRead=True
        )
        return set(found.get("Item", {}).get("subs", {}).get("SS", []))

    def _hidden(self, rows: Iterable[Row]) -> set[str]:
        """Those submissions of `rows` still being written: their record `sub#<id>` exists
        (the commit deletes it). Read AFTER the rows: a job exists only once its record
        does, so a job read earlier whose record is gone is committed (or deleted). A
        committed submission stays committed, so each is looked up once per catalog."""
        subs = {r["sub"] for r in rows if "sub" in r} - self._committed
        if not subs:
            return set()
        keys = [{"pk": {"S": f"sub#{s}"}} for s in sorted(subs)]
        found: set[str] = set()
        for start in range(0, len(keys), 100):
            request: dict[str, Any] = {
                self._table: {"Keys": keys[start : start + 100], "ConsistentRead": True}
            }
            while request:
                answer = self._db.batch_get_item(RequestItems=request)
                found.update(i["pk"]["S"][4:] for i in answer["Responses"].get(self._table, []))
                request = answer.get("UnprocessedKeys") or {}
        self._committed.update(subs - found)
        return found

    def _shards(self, *, consistent: bool = True) -> list[dict[str, Any]]:
        """The counter shards' items (typed): 16 small reads (8 read units when not
        `consistent`, which may miss the changes of the last second or so)."""
        keys = [{"pk": {"S": f"c#{n}"}} for n in range(COUNTER_SHARDS)]
        found: list[dict[str, Any]] = []
        request: dict[str, Any] = {self._table: {"Keys": keys, "ConsistentRead": consistent}}
        while request:
            answer = self._db.batch_get_item(RequestItems=request)
            found += answer["Responses"].get(self._table, [])
            request = answer.get("UnprocessedKeys") or {}
        return found

    def _counters(self, *, consistent: bool = True) -> dict[JobStatus, int]:
        """Jobs per status: the sum of the counter shards."""
        total: Counter[str] = Counter()
        for item in self._shards(consistent=consistent):
            for status in JobStatus:
                if status.value in item:
                    total[status.value] += int(item[status.value]["N"])
        return {status: total[status.value] for status in JobStatus}

    def _get_row(self, job_id: str) -> Row | None:
        found = self._db.get_item(TableName=self._table, Key=items.job_key(job_id),
                                  ConsistentRead=True)  # fmt: skip
        return items.plain(found["Item"]) if "Item" in found else None

    def _get_rows(self, job_ids: Iterable[str]) -> list[Row]:
        """The rows of `job_ids` that exist (consistent reads, 100 keys per call)."""
        wanted = list(dict.fromkeys(job_ids))
        rows: list[Row] = []
        for start in range(0, len(wanted), 100):
            keys = [items.job_key(i) for i in wanted[start : start + 100]]
            request: dict[str, Any] = {self._table: {"Keys": keys, "ConsistentRead": True}}
            while request:
                answer = self._db.batch_get_item(RequestItems=request)
                rows.extend(items.plain(i) for i in answer["Responses"].get(self._table, []))
                request = answer.get("UnprocessedKeys") or {}
                if request:
                    time.sleep(0.05)
        return rows

    def _query(self, **request: Any) -> Iterator[Row]:
        """Every row a Query answers, page after page (read lazily)."""
        request = {"TableName": self._table, **request}
        while True:
            answer = self._db.query(**request)
            for item in answer.get("Items", []):
                yield items.plain(item)
            last = answer.get("LastEvaluatedKey")
            if not last:
                return
            request["ExclusiveStartKey"] = last

    def _by_status(self, status: str, *, filter_: str | None = None,
                   values: Mapping[str, Any] | None = None,
                   names: Mapping[str, str] | None = None) -> Iterator[Row]:  # fmt: skip
        """Jobs in `status`, oldest seq first, through the `by_status` index."""
        request: dict[str, Any] = {
            "IndexName": "by_status",
            "KeyConditionExpression": "#s = :s",
            "ExpressionAttributeNames": {"#s": "status", **(names or {})},
            "ExpressionAttributeValues": {":s": {"S": status}, **(values or {})},
        }
        if filter_:
            request["FilterExpression"] = filter_
        return self._query(**request)

    # -- writes -----------------------------------------------------------------------------

    def _transact(self, ops: Sequence[dict[str, Any]]) -> list[str | None] | None:
        """Run TransactWriteItems; None when it committed, else the cancellation code per
        item ("ConditionalCheckFailed", ...; None for items that were not the cause)."""
        from botocore.exceptions import ClientError

        request = [{kind: {"TableName": self._table, **body}} for kind, body in
                   (next(iter(op.items())) for op in ops)]  # fmt: skip
        for round_ in range(ROUNDS):
            try:
                self._db.transact_write_items(TransactItems=request)
                return None
            except ClientError as exc:
                error = exc.response.get("Error", {})
                if error.get("Code") != "TransactionCanceledException":
                    raise
                reasons = exc.response.get("CancellationReasons") or []
                codes = [r.get("Code") if r.get("Code") != "None" else None for r in reasons]
                if any(c == "ConditionalCheckFailed" for c in codes):
                    return codes
                # a conflict with another transaction, or throttling: try again shortly
                time.sleep(min(0.5, 0.005 * 2 ** min(round_, 7)) * self._rng.random())
        raise CatalogError(f"the DynamoDB catalog {self._table!r} stayed too busy to change")

    def _apply(
        self,
        rows: Iterable[Row],
        decide: Decide,
        *,
        now: float,
        still: Callable[[Row], bool] = lambda row: True,
        record: bool = True,
    ) -> list[tuple[Row, Row, states.Change]]:
        """Ask `decide` what happens to each of `rows` and write the answers, with their
        history entries and counters (`_write`), up to 98 jobs at a time; return (row
        before, row after, change) of each job changed. A job changed or held by someone
        else since it was read is read again, checked with `still` (does it still belong to
        the change?) and decided again."""
        done: list[tuple[Row, Row, states.Change]] = []
        todo = [r for r in rows if still(r)]
        rounds = 0
        while todo:
            part, todo = todo[:JOBS_PER_TRANSACTION], todo[JOBS_PER_TRANSACTION:]
            while part:
                rounds += 1
                if rounds > ROUNDS * 10:
                    raise CatalogError(
                        f"the DynamoDB catalog {self._table!r} stayed too busy to change"
                    )
                planned = [(r, c) for r in part if (c := decide(items.to_facts(r))) is not None]
                written, lost = self._write_changes(planned, now=now, record=record)
                done.extend((r, items.changed(r, c), c) for r, c in written)
                if not lost:
                    break
                fresh = self._get_rows(r["id"] for r in lost)
                if any("tx" in r for r in fresh):  # another writer is in the middle
                    time.sleep(0.01 + 0.05 * self._rng.random())
                part = [r for r in fresh if still(r)]
        return done

    def _write_changes(
        self, planned: Sequence[tuple[Row, states.Change]], *, now: float, record: bool
    ) -> tuple[list[tuple[Row, states.Change]], list[Row]]:
        """Write `planned` changes (at most JOBS_PER_TRANSACTION); return those written and
        the rows of the jobs that changed (or were held by another writer) since they were
        read.

        A change within a status is one conditional UpdateItem. Changes of status move the
        counters too, so they go in one TransactWriteItems with a counter shard (and, for
        attempts that ended, an hour's item of ended attempts: `_counting`); first each job
        is reserved by a single conditional write (`items.reserve`), so the transaction
        itself never fails on a condition: under contention only the cheap single writes
        fail (a failed transaction is billed for every item in it), and DynamoDB emulators
        whose failed transactions are not isolated from concurrent ones stay correct."""
        written: list[tuple[Row, states.Change]] = []
        lost: list[Row] = []
        moving: list[tuple[Row, states.Change]] = []
        for row, change in planned:
            if row["status"] != change.status.value:
                moving.append((row, change))
            elif self._update_one(items.update(row, change, now=now, record=record)):
                written.append((row, change))
            else:
                lost.append(row)
        if not moving:
            return written, lost
        token = uuid.uuid4().hex
        held: list[tuple[Row, states.Change]] = []
        bodies = [items.reserve(r, token, clock=time.time(), stale=RESERVATION_S)
                  for r, _c in moving]  # fmt: skip
        if len(bodies) > 1:
            with ThreadPoolExecutor(min(8, len(bodies)), "shepard-ddb") as pool:
                reserved = list(pool.map(self._update_one, bodies))
        else:
            reserved = [self._update_one(bodies[0])]
        for (row, change), ok in zip(moving, reserved, strict=True):
            if ok:
                held.append((row, change))
            else:
                lost.append(row)
        if not held:
            return written, lost
        ops = [{"Update": items.update(r, c, now=now, record=record, token=token)} for r, c in held]
        ops += self._counting(held, now=now, record=record)
        if self._transact(ops) is None:
            return written + held, lost
        for row, _change in held:  # a reservation was taken over: give back the others
            self._release(row["id"], token)
        return written, lost + [r for r, _c in held]

    def _counting(
        self, held: Sequence[tuple[Row, states.Change]], *, now: float, record: bool
    ) -> list[dict[str, Any]]:
        """The counter updates of a transaction moving `held` jobs to other statuses: a
        random counter shard and, for the attempts that ended (recorded in the history),
        the same shard of their hour's item, the shard noting that hour."""
        deltas: Counter[str] = Counter()
        ended: Counter[str] = Counter()
        for row, change in held:
            deltas[row["status"]] -= 1
            deltas[change.status.value] += 1
            if record and change.status.value in items.ENDED:
                ended[change.status.value] += 1
        shard = self._rng.randrange(COUNTER_SHARDS)
        hour = int(now // 3600) if ended else None
        ops = []
        if (counter := items.counter_update(shard, deltas, ended_hour=hour)) is not None:
            ops.append({"Update": counter})
        if (minute := items.ended_update(shard, now, ended)) is not None:
            ops.append({"Update": minute})
        return ops

    def _release(self, job_id: str, token: str) -> None:
        self._update_one({
            "Key": items.job_key(job_id),
            "UpdateExpression": "REMOVE #tx, #txat",
            "ConditionExpression": "#tx = :tok",
            "ExpressionAttributeNames": {"#tx": "tx", "#txat": "tx_at"},
            "ExpressionAttributeValues": {":tok": {"S": token}},
        })  # fmt: skip

    def _update_one(self, body: dict[str, Any]) -> bool:
        """One conditional UpdateItem; False when its condition failed."""
        from botocore.exceptions import ClientError

        try:
            self._db.update_item(TableName=self._table, **body)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise
        return True
