"""DynamoCatalog: the Catalog on one DynamoDB table (`dynamodb://TABLE?region=...`).

For a serverless flock: nothing of the user's runs while it is idle, and an on-demand table
costs only its storage then. The table design (keys, indexes, counters, costs) is in
docs/dynamodb.md. How it keeps the contract:
- every change is decided by the state machine (states.py) on the facts read from the job's
  item, and written with a condition that the item has not changed since (`ver`), together
  with the change of a status counter, in one TransactWriteItems (core.py);
- a claim reads the oldest claimable jobs from the `by_status` index and takes them with
  such conditional writes: two claimers never get the same job, as the condition of the
  second one fails;
- counts read 16 counter items, never the jobs;
- a submission of any size becomes visible at once, or not at all (writing.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from itertools import islice
from typing import Any

from shepard.catalog import states
from shepard.catalog.dynamodb import items, table
from shepard.catalog.dynamodb.core import JOBS_PER_TRANSACTION, Row
from shepard.catalog.dynamodb.figures import Figures
from shepard.catalog.dynamodb.listing import Listing
from shepard.catalog.dynamodb.tokens import DynamoTokens
from shepard.catalog.dynamodb.writing import Submissions
from shepard.model import Ended, Job, JobEvent, JobStatus, Outcome

_QUEUED, _RUNNING = JobStatus.QUEUED.value, JobStatus.RUNNING.value


class DynamoCatalog(Submissions, Listing, Figures, DynamoTokens):
    """A Catalog stored in one DynamoDB table (see `shepard.catalog.open_catalog`)."""

    def __init__(self, url: str, *, create: bool = True, patient: bool = False) -> None:
        address = table.parse_url(url)
        self._url_text = url
        db = table.client(address)
        with table.aws_errors(address):
            table.ensure_table(db, address, create=create)
        super().__init__(address, db)
        self.patient = patient

    @classmethod
    def from_url(cls, url: str, *, create: bool, patient: bool) -> DynamoCatalog:
        """See shepard.catalog.CatalogClass."""
        return cls(url, create=create, patient=patient)

    @classmethod
    def check_url(cls, url: str) -> None:
        """See shepard.catalog.CatalogClass."""
        table.parse_url(url)

    @classmethod
    def in_process(cls, url: str) -> bool:
        """See shepard.catalog.CatalogClass: a table is reachable from anywhere."""
        return False

    def be_patient(self) -> None:
        """See Catalog.be_patient: DynamoDB holds no locks; busy moments are retried."""
        self.patient = True

    @property
    def url(self) -> str:
        return self._url_text

    def __repr__(self) -> str:
        return f"DynamoCatalog({self.url!r})"

    def close(self) -> None:
        self._db.close()

    # -- the life of an attempt -------------------------------------------------------------

    def claim(
        self,
        worker: str,
        *,
        now: float,
        lease: float,
        limit: int = 1,
        job_ids: Sequence[str] | None = None,
    ) -> list[Job]:
        """See JobStore.claim (`states.claimed`)."""
        if limit < 1 or (job_ids is not None and not job_ids):
            return []
        decide = partial(states.claimed, worker=worker, now=now, lease=lease)
        with self._errors():
            changed = self._take(decide, now=now, limit=limit, job_ids=job_ids, record=True)
        return [items.to_job(after) for _before, after, _c in changed]

    def _claimable(self, now: float) -> Iterator[Row]:
        """QUEUED, unplaced, due jobs, oldest first, as the index shows them (possibly a
        moment stale: the conditional write tells)."""
        return self._by_status(
            _QUEUED,
            filter_="attribute_not_exists(placement) AND "
            "(attribute_not_exists(not_before) OR not_before <= :now)",
            values={":now": {"N": repr(now)}},
        )

    def _take(
        self,
        decide: Callable[[states.Facts], states.Change | None],
        *,
        now: float,
        limit: int,
        job_ids: Sequence[str] | None,
        record: bool,
    ) -> list[tuple[Row, Row, states.Change]]:
        """Change up to `limit` claimable jobs (oldest first) with `decide`, for claims and
        placements. A job another caller took first fails its condition and is skipped for
        the next candidates; the rest of its transaction is tried again."""

        def claimable(row: Row) -> bool:
            due = row.get("not_before") is None or row["not_before"] <= now
            return row["status"] == _QUEUED and row.get("placement") is None and due

        if job_ids is not None:
            source: Iterator[Row] = iter(
                sorted((r for r in self._get_rows(job_ids) if claimable(r)),
                       key=lambda r: r["seq"])
            )  # fmt: skip
        else:
            source = self._claimable(now)
        taken: list[tuple[Row, Row, states.Change]] = []
        candidates: list[Row] = []
        hidden: set[str] | None = None
        exhausted = False
        while len(taken) < limit:
            want = limit - len(taken)
            if len(candidates) < want and not exhausted:
                more = list(islice(source, max(want * 2, 25)))
                exhausted = not more
                hidden = self._hidden(more)  # after the jobs were read (see _hidden)
                candidates += [r for r in more if r.get("sub") not in hidden and claimable(r)]
            if not candidates:
                break
            part = candidates[: min(want, JOBS_PER_TRANSACTION)]
            candidates = candidates[len(part) :]
            planned = [(r, c) for r in part if (c := decide(items.to_facts(r))) is not None]
            written, _lost = self._write_changes(planned, now=now, record=record)
            taken.extend((r, items.changed(r, c), c) for r, c in written)
        return sorted(taken, key=lambda t: t[0]["seq"])

    def heartbeat(self, held: Sequence[tuple[str, int]], *, now: float, lease: float) -> set[str]:
        """See JobStore.heartbeat: one conditional update per attempt still held."""
        from botocore.exceptions import ClientError

        extended: set[str] = set()
        with self._errors():
            for job_id, attempt in held:
                try:
                    self._db.update_item(
                        TableName=self._table, Key=items.job_key(job_id),
                        UpdateExpression="SET lease_until = :l ADD ver :one",
                        ConditionExpression="#s = :r AND attempt = :a",
                        ExpressionAttributeNames={"#s": "status"},
                        ExpressionAttributeValues={
                            ":l": {"N": repr(now + lease)}, ":one": {"N": "1"},
                            ":r": {"S": _RUNNING}, ":a": {"N": str(attempt)},
                        },
                    )  # fmt: skip
                    extended.add(job_id)
                except ClientError as exc:
                    code = exc.response.get("Error", {}).get("Code")
                    if code != "ConditionalCheckFailedException":
                        raise
        return extended

    def finish(
        self,
        job_id: str,
        attempt: int,
        outcome: Outcome,
        *,
        now: float,
        retry_at: float | None = None,
    ) -> JobStatus | None:
        """See JobStore.finish (`states.finished`)."""
        if not outcome.status.terminal:
            raise ValueError(f"an attempt cannot end as {outcome.status.value!r}")
        decide = partial(states.finished, attempt=attempt, outcome=outcome, now=now,
                         retry_at=retry_at)  # fmt: skip
        return self._one(job_id, decide, now=now)

    def finish_and_claim(
        self,
        ended: Sequence[Ended],
        *,
        now: float,
        worker: str,
        lease: float,
        limit: int = 1,
    ) -> tuple[list[JobStatus | None], list[Job]]:
        """See Catalog.finish_and_claim. Each finish and the claim are atomic each, one
        after the other (not one transaction: DynamoDB's hold 100 items)."""
        statuses = [
            self.finish(job_id, attempt, outcome, now=now, retry_at=retry_at)
            for job_id, attempt, outcome, retry_at in ended
        ]
        return statuses, self.claim(worker, now=now, lease=lease, limit=limit)

    def release(self, job_id: str, attempt: int, *, now: float, detail: str) -> JobStatus | None:
        """See JobStore.release (`states.released`)."""
        return self._one(job_id, partial(states.released, attempt=attempt, detail=detail),
                         now=now)  # fmt: skip

    def lose(
        self, job_id: str, attempt: int, *, now: float, reason: str, retry_at: float | None = None
    ) -> JobStatus | None:
        """See PlacementStore.lose (`states.lost`)."""
        decide = partial(
            states.lost, attempt=attempt, now=now, reason=reason, retry_at=retry_at,
            times=f" ({states.MAX_LOST} times)",
        )  # fmt: skip
        return self._one(job_id, decide, now=now)

    def _one(
        self,
        job_id: str,
        decide: Callable[[states.Facts], states.Change | None],
        *,
        now: float,
        still: Callable[[Row], bool] = lambda row: True,
    ) -> JobStatus | None:
        """Apply `decide` to job `job_id`; its new status, None if nothing changed."""
        with self._errors():
            row = self._get_row(job_id)
            if row is None or row.get("sub") in self._hidden([row]):
                return None
            changed = self._apply([row], decide, now=now, still=still)
        return changed[0][2].status if changed else None

    def expire_leases(self, *, now: float, retry_at: float | None = None) -> list[str]:
        """See JobStore.expire_leases (`states.expired`)."""

        def expired(row: Row) -> bool:
            lease = row.get("lease_until")
            return row["status"] == _RUNNING and lease is not None and lease < now

        with self._errors():
            rows = list(self._by_status(_RUNNING, filter_="lease_until < :now",
                                        values={":now": {"N": repr(now)}}))  # fmt: skip
            changed = self._apply(
                rows, partial(states.expired, now=now, retry_at=retry_at), now=now, still=expired
            )
        return items.ids_of(before for before, _a, _c in changed)

    # -- user actions -----------------------------------------------------------------------

    def cancel(
        self,
        job_ids: Sequence[str] | None = None,
        *,
        now: float,
        statuses: Sequence[JobStatus] = (JobStatus.QUEUED, JobStatus.RUNNING),
    ) -> list[str]:
        """See JobStore.cancel (`states.cancelled`)."""
        wanted = {s.value for s in statuses if not s.terminal}
        return self._many(job_ids, wanted, partial(states.cancelled, now=now), now=now)

    def requeue(
        self,
        job_ids: Sequence[str] | None = None,
        *,
        now: float,
        statuses: Sequence[JobStatus] = (JobStatus.FAILED,),
        since: float | None = None,
        extra_attempts: int = 1,
    ) -> list[str]:
        """See JobStore.requeue (`states.requeued`)."""
        if extra_attempts < 1:
            raise ValueError(f"extra_attempts must be at least 1, not {extra_attempts}")
        wanted = {s.value for s in statuses if s.terminal}
        decide = partial(states.requeued, extra_attempts=extra_attempts)
        return self._many(job_ids, wanted, decide, now=now, since=since)

    def _many(
        self,
        job_ids: Sequence[str] | None,
        wanted: set[str],
        decide: Callable[[states.Facts], states.Change | None],
        *,
        now: float,
        since: float | None = None,
    ) -> list[str]:
        """Apply `decide` to the jobs in a status of `wanted` (among `job_ids`, if given;
        finished at or after `since`, if given); the ids changed, in seq order."""
        if job_ids is not None and not job_ids:
            return []

        def still(row: Row) -> bool:
            finished = row.get("finished_at")
            late = since is None or (finished is not None and finished >= since)
            return row["status"] in wanted and late

        with self._errors():
            if job_ids is None:
                rows: list[Row] = [r for s in sorted(wanted) for r in self._by_status(s)]
            else:
                rows = self._get_rows(job_ids)
            hidden = self._hidden(rows)
            rows = [r for r in rows if r.get("sub") not in hidden]
            changed = self._apply(rows, decide, now=now, still=still)
        return items.ids_of(before for before, _a, _c in changed)

    def ready(self, *, now: float) -> int:
        """See JobStore.ready: a count over the queued jobs' index entries."""
        with self._errors():
            rows = list(self._claimable(now))
            hidden = self._hidden(rows)
        return sum(1 for r in rows if r.get("sub") not in hidden)

    # -- queries ----------------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        with self._errors():
            row = self._get_row(job_id)
            if row is None or row.get("sub") in self._hidden([row]):
                return None
        return items.to_job(row)

    def events(self, job_id: str) -> list[JobEvent]:
        with self._errors():
            row = self._get_row(job_id)
            if row is None or row.get("sub") in self._hidden([row]):
                return []
        return items.to_events(row)

    def counts(self, *, batch: str | None = None) -> dict[JobStatus, int]:
        """Jobs per status: the sum of the counter shards (16 small reads, whatever the
        number of jobs); with `batch`, a count over that batch's index entries per status."""
        with self._errors():
            if batch is None:
                return self._counters()
            return {s: self._count_in_batch(batch, s) for s in JobStatus}

    def _count_in_batch(self, batch: str, status: JobStatus) -> int:
        """The batch's jobs in `status`: a read of their index entries (id and submission
        only), not of the table."""
        rows = list(self._query(
            IndexName="by_batch", ProjectionExpression="#sub",
            KeyConditionExpression="gb = :b AND begins_with(gbs, :s)",
            ExpressionAttributeNames={"#sub": "sub"},
            ExpressionAttributeValues={":b": {"S": f"b#{batch}"}, ":s": {"S": f"{status.value}#"}},
        ))  # fmt: skip
        hidden = self._hidden(rows)  # a submission being written is not counted yet
        return sum(1 for r in rows if r.get("sub") not in hidden)

    # -- placements -------------------------------------------------------------------------

    def place(self, placement: str, *, now: float, limit: int) -> list[str]:
        """See PlacementStore.place: a claim that only marks the jobs (no event)."""
        if limit < 1:
            return []

        def mark(facts: states.Facts) -> states.Change | None:
            if facts.status is not JobStatus.QUEUED or facts.placement is not None:
                return None
            return states.Change(JobStatus.QUEUED, {"placement": placement})

        with self._errors():
            changed = self._take(mark, now=now, limit=limit, job_ids=None, record=False)
        return [before["id"] for before, _a, _c in changed]

    def rename_placement(self, old: str, new: str) -> int:
        """See PlacementStore.rename_placement."""

        def rename(facts: states.Facts) -> states.Change | None:
            if facts.placement != old:
                return None
            return states.Change(facts.status, {"placement": new})

        with self._errors():
            rows = list(self._placed_under(old))
            changed = self._apply(rows, rename, now=0.0, record=False,
                                  still=lambda r: r.get("placement") == old)  # fmt: skip
        return len(changed)

    def _placed_under(self, placement: str) -> Iterator[Row]:
        return self._query(
            IndexName="by_placement", KeyConditionExpression="gp = :p",
            ExpressionAttributeValues={":p": {"S": f"p#{placement}"}},
        )  # fmt: skip

    def claim_placed(
        self,
        worker: str,
        job_id: str,
        placements: Sequence[str],
        *,
        now: float,
        lease: float,
    ) -> Job | None:
        """See PlacementStore.claim_placed (`states.claimed`)."""
        if not placements:
            return None

        def mine(row: Row) -> bool:
            return row["status"] == _QUEUED and row.get("placement") in placements

        decide = partial(states.claimed, worker=worker, now=now, lease=lease)
        with self._errors():
            row = self._get_row(job_id)
            if row is None or not mine(row) or row.get("sub") in self._hidden([row]):
                return None
            changed = self._apply([row], decide, now=now, still=mine)
        return items.to_job(changed[0][1]) if changed else None

    def unplace(
        self,
        job_ids: Sequence[str],
        placement: str,
        *,
        now: float,
        detail: str,
        lost: bool = True,
    ) -> list[str]:
        """See PlacementStore.unplace (`states.unplaced`)."""
        if not job_ids:
            return []
        decide = partial(states.unplaced, placement=placement, now=now, detail=detail,
                         count_lost=lost)  # fmt: skip

        def still(row: Row) -> bool:
            return row["status"] == _QUEUED and row.get("placement") == placement

        with self._errors():
            changed = self._apply(self._get_rows(job_ids), decide, now=now, still=still)
        return items.ids_of(before for before, _a, _c in changed)

    def _placed_rows(self) -> list[Row]:
        """Every job carrying a placement (the sparse `by_placement` index: placed jobs
        only), oldest first."""
        rows: list[Row] = []
        request: dict[str, Any] = {"TableName": self._table, "IndexName": "by_placement"}
        while True:
            answer = self._db.scan(**request)
            rows.extend(items.plain(i) for i in answer.get("Items", []))
            if not answer.get("LastEvaluatedKey"):
                return sorted(rows, key=lambda r: r["seq"])
            request["ExclusiveStartKey"] = answer["LastEvaluatedKey"]

    def placed(self, *, limit: int = 1000, after_seq: int | None = None) -> list[Job]:
        """See PlacementStore.placed."""
        with self._errors():
            rows = [r for r in self._placed_rows() if r["status"] == _QUEUED
                    and (after_seq is None or r["seq"] > after_seq)]  # fmt: skip
        return [items.to_job(r) for r in rows[:limit]]

    def placements(self) -> dict[str, int]:
        """See PlacementStore.placements."""
        with self._errors():
            rows = self._placed_rows()
        return dict(Counter(r["placement"] for r in rows if r["status"] == _QUEUED))

    def placed_in(self, placements: Sequence[str]) -> list[Job]:
        """See PlacementStore.placed_in."""
        with self._errors():
            rows = [r for p in dict.fromkeys(placements) for r in self._placed_under(p)]
        return [items.to_job(r) for r in sorted(rows, key=lambda r: r["seq"])]
