"""Submissions on DynamoDB: any number of jobs, all or nothing, and exactly once per key.

DynamoDB has no transaction larger than 100 items, so a submission is made visible by one
small transaction at its end instead:

1. its record `sub#<id>` is written and its id added to the set `meta#pending`: from then
   on its jobs are invisible (reads check the set after reading jobs);
2. for each chunk, a range of `seq` numbers is taken from `meta#seq` and noted in the record
   (so the chunk can be found again), then its items are written with BatchWriteItem (25 a
   call, several calls at once), each carrying the submission's id;
3. one TransactWriteItems removes the id from `meta#pending`, adds the jobs to a status
   counter, deletes the record and (keyed submissions) marks the keys done: all of it at
   once becomes visible. Each job cost one write (plus its index entries).

A failure before 3 deletes the written jobs; a process that died is cleaned up by
`sweep_submissions`, like the SQL catalog's staged rows (staging.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from typing import Any

from shepard.catalog.base import IdempotencyConflict, Registered
from shepard.catalog.dynamodb import items
from shepard.catalog.dynamodb.core import COUNTER_SHARDS, Core
from shepard.catalog.staging import STALE_AFTER_S
from shepard.errors import CatalogError
from shepard.model import JobSpec, JobStatus, new_job_id

CHUNK = 2_000
"""Jobs per seq range (and per note in the submission record)."""

WRITERS = 8
"""BatchWriteItem calls in flight at once."""

KEYS_PER_COMMIT = 90
"""Idempotency keys marked done in one commit transaction (of DynamoDB's 100 items)."""

KEY_WAIT_S = 120.0
"""How long a keyed submission waits for another process registering the same key."""


class Submissions(Core):
    """The submission half of DynamoCatalog."""

    def add_jobs(self, specs: Iterable[JobSpec], *, now: float, default_attempts: int) -> list[str]:
        """See JobStore.add_jobs: all or nothing, visible at once (the module docstring)."""
        ids: list[str] = []
        with self._errors():
            self._submit(specs, now=now, default_attempts=default_attempts, ids=ids)
        return ids

    def submit_jobs(
        self,
        specs: Iterable[JobSpec],
        *,
        batch: str,
        now: float,
        default_attempts: int,
        clock: Callable[[], float] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """See JobStore.submit_jobs: no lock is held, so this is `add_jobs` with the label
        `batch` on every job, one submission of that label at a time, without the ids."""
        with self._errors():
            return self._submit(
                specs, now=now, default_attempts=default_attempts, label=batch, clock=clock,
                progress=progress,
            )  # fmt: skip

    def _submit(
        self,
        specs: Iterable[JobSpec],
        *,
        now: float,
        default_attempts: int,
        ids: list[str] | None = None,
        label: str | None = None,
        clock: Callable[[], float] | None = None,
        progress: Callable[[int], None] | None = None,
        keys: Sequence[tuple[str, list[str], str, str]] = (),
    ) -> int:
        """Write `specs` as one submission (see the module docstring); `keys`: (key, ids,
        request hash, batch) marked done by the commit. Returns the number of jobs."""
        sub = uuid.uuid4().hex
        self._begin(sub, now, clock, owned=[k[0] for k in keys], label=label)
        tally = [0]
        try:
            written = self._write(specs, sub, now=now, default_attempts=default_attempts,
                                  ids=ids, label=label, clock=clock, progress=progress,
                                  tally=tally)  # fmt: skip
            self._finish_submission(sub, written, keys, label=label)
        except BaseException:
            # the sweep removes them later; the first error is the one to report
            with contextlib.suppress(Exception):
                self._roll_back(sub, expected=tally[0])
            raise
        return written

    def _begin(self, sub: str, now: float, clock: Callable[[], float] | None,
               owned: Sequence[str] = (), label: str | None = None) -> None:  # fmt: skip
        """Record submission `sub` (which hides its jobs until the commit deletes the
        record); a labelled one first takes its label, one submission per label at once."""
        from botocore.exceptions import ClientError

        if label is not None:
            try:
                self._db.put_item(
                    TableName=self._table,
                    Item={"pk": {"S": f"label#{label}"}, "sub": {"S": sub}},
                    ConditionExpression="attribute_not_exists(pk)",
                )  # fmt: skip
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                if code == "ConditionalCheckFailedException":
                    raise CatalogError(
                        f"batch {label!r} is being submitted by another process"
                    ) from exc
                raise
        record = {
            "pk": {"S": f"sub#{sub}"}, "started_at": {"N": repr(now)},
            "updated_at": {"N": repr((clock or time.time)())}, "host": {"S": socket.gethostname()},
            "pid": {"N": str(os.getpid())}, "ranges": {"L": []},
        }  # fmt: skip
        if owned:
            record["keys"] = {"SS": list(dict.fromkeys(owned))}
        if label is not None:
            record["label"] = {"S": label}
        self._db.put_item(TableName=self._table, Item=record)
        self._hint(sub, "ADD")

    def _hint(self, sub: str, verb: str) -> None:
        """Note (ADD) or forget (DELETE) `sub` in `meta#pending`, where the sweep looks."""
        self._db.update_item(
            TableName=self._table, Key={"pk": {"S": "meta#pending"}},
            UpdateExpression=f"{verb} subs :s", ExpressionAttributeValues={":s": {"SS": [sub]}},
        )  # fmt: skip

    def _write(
        self,
        specs: Iterable[JobSpec],
        sub: str,
        *,
        now: float,
        default_attempts: int,
        ids: list[str] | None,
        label: str | None,
        clock: Callable[[], float] | None,
        progress: Callable[[int], None] | None,
        tally: list[int] | None = None,
    ) -> int:
        """Write the jobs of `specs` (chunk by chunk, WRITERS calls at once); return how many.
        `tally[0]`: kept at the number of jobs known to be written, for a roll-back."""
        total = 0
        spec_iter = iter(specs)
        with ThreadPoolExecutor(WRITERS, thread_name_prefix="shepard-ddb") as pool:
            while chunk := list(islice(spec_iter, CHUNK)):
                first = self._take_seqs(len(chunk))
                self._note_range(sub, first, len(chunk), (clock or time.time)())
                puts = []
                for offset, spec in enumerate(chunk):
                    job_id = new_job_id()
                    if ids is not None:
                        ids.append(job_id)
                    item = items.new_job(
                        job_id,
                        first + offset,
                        spec,
                        now=now,
                        default_attempts=default_attempts,
                        batch=label,
                        sub=sub,
                    )
                    puts.append({"PutRequest": {"Item": item}})  # fmt: skip
                futures = [pool.submit(self._batch_write, puts[i : i + 25])
                           for i in range(0, len(puts), 25)]  # fmt: skip
                _wait_all(futures)
                total += len(chunk)
                if tally is not None:
                    tally[0] = total
                if progress is not None:
                    progress(total)
        return total

    def _take_seqs(self, n: int) -> int:
        """Reserve `n` consecutive seq numbers; return the first."""
        answer = self._db.update_item(
            TableName=self._table, Key={"pk": {"S": "meta#seq"}},
            UpdateExpression="ADD #n :n", ExpressionAttributeNames={"#n": "next"},
            ExpressionAttributeValues={":n": {"N": str(n)}}, ReturnValues="UPDATED_NEW",
        )  # fmt: skip
        return int(answer["Attributes"]["next"]["N"]) - n + 1

    def _note_range(self, sub: str, first: int, n: int, now: float) -> None:
        from botocore.exceptions import ClientError

        try:
            self._db.update_item(
                TableName=self._table, Key={"pk": {"S": f"sub#{sub}"}},
                UpdateExpression="SET #r = list_append(#r, :r), #t = :t",
                ExpressionAttributeNames={"#r": "ranges", "#t": "updated_at"},
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues={
                    ":r": {"L": [{"L": [{"N": str(first)}, {"N": str(first + n - 1)}]}]},
                    ":t": {"N": repr(now)},
                },
            )  # fmt: skip
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                raise CatalogError(
                    "the submission was taken for dead (its record did not move for too long) "
                    "and removed; nothing of it was registered: submit it again"
                ) from exc
            raise

    def _batch_write(self, requests: list[dict[str, Any]]) -> None:
        """One BatchWriteItem, retried until DynamoDB took every item."""
        pending: dict[str, Any] = {self._table: requests}
        delay = 0.02
        while pending:
            answer = self._db.batch_write_item(RequestItems=pending)
            pending = answer.get("UnprocessedItems") or {}
            if pending:
                time.sleep(delay)
                delay = min(1.0, delay * 2)

    def _finish_submission(
        self,
        sub: str,
        n: int,
        keys: Sequence[tuple[str, list[str], str, str]],
        *,
        label: str | None = None,
    ) -> None:
        """The commit: one transaction deletes the submission's record (its jobs become
        visible), counts its jobs, frees its label and marks its keys done."""
        ops: list[dict[str, Any]] = [
            {"Delete": {"Key": {"pk": {"S": f"sub#{sub}"}},
                        "ConditionExpression": "attribute_exists(pk)"}},
        ]  # fmt: skip
        if label is not None:
            ops.append({"Delete": {"Key": {"pk": {"S": f"label#{label}"}}}})
        counter = items.counter_update(self._rng.randrange(COUNTER_SHARDS), {"queued": n})
        if counter is not None:
            ops.append({"Update": counter})
        for key, ids, _request_hash, batch in keys:
            ops.append({"Update": {
                "Key": {"pk": {"S": f"k#{key}"}},
                "UpdateExpression": "SET #st = :done, #ids = :ids, #b = :b REMOVE #owner",
                "ConditionExpression": "#owner = :me",
                "ExpressionAttributeNames": {"#st": "state", "#owner": "owner", "#ids": "ids",
                                             "#b": "batch"},
                "ExpressionAttributeValues": {
                    ":done": {"S": "done"}, ":ids": {"S": json.dumps(ids)}, ":b": {"S": batch},
                    ":me": {"S": sub},
                },
            }})  # fmt: skip
        if self._transact(ops) is not None:
            raise CatalogError(
                "the submission was taken for dead (its record did not move for too long) "
                "and removed; nothing of it was registered: submit it again"
            )
        self._hint(sub, "DELETE")

    def _roll_back(self, sub: str, *, expected: int | None = None) -> int:
        """Delete the jobs of uncommitted submission `sub`, its owned keys, its record and
        its pending mark; return how many jobs were deleted. `expected`: how many it
        wrote, when known (an index may show fresh items a moment late: wait for them)."""
        found = self._db.get_item(TableName=self._table, Key={"pk": {"S": f"sub#{sub}"}},
                                  ConsistentRead=True).get("Item")  # fmt: skip
        deleted = 0
        if found is not None:
            ranges = [(int(r["L"][0]["N"]), int(r["L"][1]["N"])) for r in found["ranges"]["L"]]
            deadline = time.monotonic() + 30.0
            while True:
                keys = [k for lo, hi in ranges for k in self._keys_between(sub, lo, hi)]
                for start in range(0, len(keys), 25):
                    self._batch_write([{"DeleteRequest": {"Key": k}}
                                       for k in keys[start : start + 25]])  # fmt: skip
                deleted += len(keys)
                if expected is None or deleted >= expected or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            if expected is not None and deleted < expected:
                return deleted  # left pending (invisible): the sweep deletes the rest later
            for key in found.get("keys", {}).get("SS", []):
                self._release_key(key, sub)
        ops: list[dict[str, Any]] = [{"Delete": {"Key": {"pk": {"S": f"sub#{sub}"}}}}]
        label = None if found is None else found.get("label", {}).get("S")
        if label is not None:
            ops.append({"Delete": {
                "Key": {"pk": {"S": f"label#{label}"}}, "ConditionExpression": "#s = :s",
                "ExpressionAttributeNames": {"#s": "sub"},
                "ExpressionAttributeValues": {":s": {"S": sub}},
            }})  # fmt: skip
        self._transact(ops)
        self._hint(sub, "DELETE")
        return deleted

    def _keys_between(self, sub: str, lo: int, hi: int) -> Iterator[dict[str, Any]]:
        rows = self._query(
            IndexName="by_seq",
            KeyConditionExpression="kind = :k AND seq BETWEEN :lo AND :hi",
            FilterExpression="#sub = :sub",
            ExpressionAttributeNames={"#sub": "sub"},
            ExpressionAttributeValues={
                ":k": {"S": "job"}, ":lo": {"N": str(lo)}, ":hi": {"N": str(hi)},
                ":sub": {"S": sub},
            },
            ProjectionExpression="id",
        )  # fmt: skip
        return (items.job_key(r["id"]) for r in rows)

    def sweep_submissions(
        self, *, now: float, stale_after: float = STALE_AFTER_S, budget: int | None = None
    ) -> int:
        """See JobStore.sweep_submissions: remove the jobs of submissions whose process
        died before their commit (a committed submission has nothing left to finish)."""
        handled = 0
        with self._errors():
            for sub in sorted(self._pending()):
                found = self._db.get_item(TableName=self._table,
                                          Key={"pk": {"S": f"sub#{sub}"}},
                                          ConsistentRead=True).get("Item")  # fmt: skip
                if found is None:  # committed or rolled back: only the note was left
                    self._hint(sub, "DELETE")
                    continue
                if not _dead(found, now, stale_after):
                    continue
                handled += self._roll_back(sub)
                if budget is not None and handled >= budget:
                    break
        return handled

    def batch_ids(self, batch: str, *, chunk: int = 10_000) -> Iterator[str]:
        """The ids of the visible jobs labelled `batch`, in submission order (the index holds
        a batch by status: one ordered read per status, merged)."""
        import heapq

        def per_status(status: JobStatus) -> Iterator[tuple[int, str, str]]:
            rows = self._query(
                IndexName="by_batch",
                KeyConditionExpression="gb = :b AND begins_with(gbs, :s)",
                ExpressionAttributeValues={":b": {"S": f"b#{batch}"},
                                           ":s": {"S": f"{status.value}#"}},
                ProjectionExpression="id, seq, #sub",
                ExpressionAttributeNames={"#sub": "sub"},
            )  # fmt: skip
            return ((r["seq"], r["id"], r.get("sub", "")) for r in rows)

        with self._errors():
            merged = heapq.merge(*(per_status(s) for s in JobStatus))
            while part := list(islice(merged, chunk)):
                hidden = self._hidden({"sub": sub} for _s, _i, sub in part if sub)
                yield from (i for _s, i, sub in part if sub not in hidden)

    def referenced_bundles(self, keys: Iterable[str]) -> set[str]:
        """Those of `keys` that some job (visible or being submitted) names as its bundle."""
        found: set[str] = set()
        with self._errors():
            for key in dict.fromkeys(keys):
                answer = self._db.query(
                    TableName=self._table, IndexName="by_bundle", Limit=1,
                    KeyConditionExpression="gu = :u",
                    ExpressionAttributeValues={":u": {"S": f"u#{key}"}},
                )  # fmt: skip
                if answer.get("Items"):
                    found.add(key)
        return found

    # -- exactly once per key ---------------------------------------------------------------

    def add_jobs_once(
        self,
        key: str,
        request_hash: str,
        batch: str,
        specs: Iterable[JobSpec],
        *,
        now: float,
        default_attempts: int,
    ) -> Registered:
        """See JobStore.add_jobs_once."""
        (answer,) = self.add_jobs_once_each(
            [(key, request_hash, batch, list(specs))], now=now, default_attempts=default_attempts
        )
        return answer

    def add_jobs_once_each(
        self,
        requests: Sequence[tuple[str, str, str, Sequence[JobSpec]]],
        *,
        now: float,
        default_attempts: int,
    ) -> list[Registered]:
        """See JobStore.add_jobs_once_each. Each key is registered exactly once: its item is
        taken (a conditional put) before its jobs are written, and marked done by the
        commit that makes them visible. Keys another caller holds are waited for after this
        caller's own are committed, so two callers never wait on each other. Up to
        KEYS_PER_COMMIT keys share one commit (DynamoDB's transactions hold 100 items)."""
        with self._errors():
            return self._once_each(requests, now=now, default_attempts=default_attempts)

    def _once_each(
        self,
        requests: Sequence[tuple[str, str, str, Sequence[JobSpec]]],
        *,
        now: float,
        default_attempts: int,
    ) -> list[Registered]:
        firsts: dict[str, tuple[str, str, str, Sequence[JobSpec]]] = {}
        for request in requests:
            firsts.setdefault(request[0], request)
        answers: dict[str, Registered] = {}
        deadline = time.monotonic() + KEY_WAIT_S
        while len(answers) < len(firsts):
            open_keys = [k for k in firsts if k not in answers]
            known = self._read_keys(open_keys)
            for key in open_keys:  # refuse a conflict before anything is written
                record = known.get(key)
                if record is not None and record["hash"] != firsts[key][1]:
                    raise IdempotencyConflict(
                        f"idempotency key {key!r} was already used for a different request; "
                        "use a new key for a new request"
                    )
            for key in open_keys:
                record = known.get(key)
                if record is not None and record["state"] == "done":
                    answers[key] = Registered(record["batch"], record["ids"], replayed=True)
            fresh = [firsts[k] for k in open_keys if k not in known]
            for start in range(0, len(fresh), KEYS_PER_COMMIT):
                group = fresh[start : start + KEYS_PER_COMMIT]
                answers.update(self._register_group(group, now, default_attempts))
            if len(answers) < len(firsts):
                if time.monotonic() > deadline:
                    raise CatalogError(
                        "idempotency keys stayed held by another submission for "
                        f"{KEY_WAIT_S:g} s; try again later"
                    )
                time.sleep(0.05)
        out = []
        for key, request_hash, _batch, _specs in requests:
            out.append(answers[key])
            del request_hash
        return out

    def _read_keys(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(keys), 100):
            request: dict[str, Any] = {self._table: {
                "Keys": [{"pk": {"S": f"k#{k}"}} for k in keys[start : start + 100]],
                "ConsistentRead": True,
            }}  # fmt: skip
            while request:
                answer = self._db.batch_get_item(RequestItems=request)
                for item in answer["Responses"].get(self._table, []):
                    found[item["pk"]["S"][2:]] = {
                        "hash": item["hash"]["S"],
                        "state": item["state"]["S"],
                        "batch": item.get("batch", {}).get("S", ""),
                        "ids": json.loads(item["ids"]["S"]) if "ids" in item else [],
                    }
                request = answer.get("UnprocessedKeys") or {}
        return found

    def _register_group(
        self,
        group: Sequence[tuple[str, str, str, Sequence[JobSpec]]],
        now: float,
        default_attempts: int,
    ) -> dict[str, Registered]:
        """Take the keys of `group` that nobody holds, register their jobs in one
        submission; return what they registered (keys taken meanwhile by others are left
        out, to be waited for)."""
        sub = uuid.uuid4().hex
        self._begin(sub, now, None, owned=[r[0] for r in group])
        try:
            mine = self._take_keys(group, sub, now)
            ids: list[str] = []
            specs = [spec for r in mine for spec in r[3]]
            written = self._write(specs, sub, now=now, default_attempts=default_attempts,
                                  ids=ids, label=None, clock=None, progress=None)  # fmt: skip
            done: dict[str, Registered] = {}
            marks = []
            position = 0
            for key, request_hash, batch, group_specs in mine:
                own = ids[position : position + len(group_specs)]
                position += len(group_specs)
                done[key] = Registered(batch, own, replayed=False)
                marks.append((key, own, request_hash, batch))
            self._finish_submission(sub, written, marks)
        except BaseException:
            with contextlib.suppress(Exception):
                self._roll_back(sub)
            raise
        return done

    def _take_keys(
        self, group: Sequence[tuple[str, str, str, Sequence[JobSpec]]], sub: str, now: float
    ) -> list[tuple[str, str, str, Sequence[JobSpec]]]:
        """Take, for submission `sub`, the keys of `group` nobody holds (one conditional put
        each, WRITERS at a time); return the requests whose keys are now `sub`'s. Not one
        transaction: it would fail whole for one key taken meanwhile, and moto copies the
        table for each transaction (bench/lambda_scheduler.py: 3 times slower there)."""
        from botocore.exceptions import ClientError

        def take(request: tuple[str, str, str, Sequence[JobSpec]]) -> bool:
            key, request_hash, batch, _specs = request
            try:
                self._db.put_item(
                    TableName=self._table,
                    Item={"pk": {"S": f"k#{key}"}, "hash": {"S": request_hash},
                          "state": {"S": "pending"}, "owner": {"S": sub},
                          "batch": {"S": batch}, "created_at": {"N": repr(now)}},
                    ConditionExpression="attribute_not_exists(pk)",
                )  # fmt: skip
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                    raise
                return False
            return True

        if len(group) == 1:
            return [r for r in group if take(r)]
        with ThreadPoolExecutor(min(WRITERS, len(group)), "shepard-ddb") as pool:
            futures = [pool.submit(take, request) for request in group]
            _wait_all(futures)
        return [r for r, f in zip(group, futures, strict=True) if f.result()]

    def _release_key(self, key: str, sub: str) -> None:
        """Delete key `key` if `sub` still holds it (its submission is rolled back)."""
        from botocore.exceptions import ClientError

        try:
            self._db.delete_item(
                TableName=self._table, Key={"pk": {"S": f"k#{key}"}},
                ConditionExpression="#owner = :me", ExpressionAttributeNames={"#owner": "owner"},
                ExpressionAttributeValues={":me": {"S": sub}},
            )  # fmt: skip
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise


def _wait_all(futures: list[Future[Any]]) -> None:
    """Wait for every future; re-raise the first error once all are done."""
    error: BaseException | None = None
    for future in futures:
        try:
            future.result()
        except BaseException as exc:
            error = error or exc
    if error is not None:
        raise error


def _dead(record: dict[str, Any], now: float, stale_after: float) -> bool:
    """A submission whose process is gone from this host, or whose record has not moved
    for `stale_after` seconds."""
    if float(record["updated_at"]["N"]) < now - stale_after:
        return True
    if record["host"]["S"] != socket.gethostname():
        return False
    try:
        os.kill(int(record["pid"]["N"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
