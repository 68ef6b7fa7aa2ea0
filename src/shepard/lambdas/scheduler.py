"""The scheduler function: fed by the events queue (up to 100 messages an invocation).

Each message's body is one of
- an S3 event of the inbox bucket (`ObjectCreated:*`; keys URL-encoded): each object named
  is taken as the S3 inbox takes what it lists (triggers/object_inbox.py: validated by range
  reads, registered once under the object's identity, deleted from the inbox; a malformed
  one moved to `rejected/` beside its reason);
- S3's `s3:TestEvent` (sent when the notification is set up): nothing to do;
- the dispatch kick (`{"shepard": "dispatch"}`, sent after a submit by the CLI or the API).

Then one dispatch round hands queued jobs to Batch (rounds.head_round, without comparing
with Batch: the reconciler does that), until none is left or the invocation's time nearly is.

Failures are per message (the event source mapping's ReportBatchItemFailures): a message
whose object could not be taken now, or that cannot be read, is returned in
`batchItemFailures` and comes back after the queue's visibility timeout (after 5 receives it
goes to the dead-letter queue); the others are deleted. Taking is idempotent, so a message
delivered twice (an SQS redelivery, or moto's two messages for a multipart upload) registers
one job: the second finds the object gone, or its identity already registered.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

from shepard.flock import Flock
from shepard.lambdas.common import KICK, deadline, open_flock, setup_logging
from shepard.rounds import head_round
from shepard.storage import NoSuchObject, ObjectInfo
from shepard.triggers.object_inbox import ObjectInbox
from shepard.triggers.scan import ScanResult

log = logging.getLogger("shepard.lambdas.scheduler")

ROUND_LIMIT = 100.0
"""Seconds a dispatch round may last at most (below arrays.STALE, 120 s: a submission that
has not recorded its array id by then is looked into by the reconciler)."""

STAT_THREADS = 16


@dataclass
class Plan:
    """What a batch of messages asks for."""

    objects: dict[str, list[str]] = field(default_factory=dict)  # inbox key -> message ids
    kicks: list[str] = field(default_factory=list)  # message ids of dispatch kicks
    failed: set[str] = field(default_factory=set)  # message ids to receive again
    ignored: int = 0  # test events, other events, objects of another bucket


def handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """The function's entry point (module docstring)."""
    setup_logging()
    flock = open_flock(os.environ)
    plan = read_messages(event.get("Records") or [], os.environ["SHEPARD_INBOX_BUCKET"])
    taken = take(flock, plan)
    try:
        done = head_round(
            flock, reconcile=False, deadline=deadline(flock, context, limit=ROUND_LIMIT)
        )
        handed = done.handed
    except Exception:
        log.exception("the dispatch round failed; the reconciler's next round hands over")
        plan.failed.update(plan.kicks)  # asked for a round that did not happen: again later
        handed = -1
    summary = {**taken, "handed": handed, "ignored": plan.ignored, "failed": len(plan.failed)}
    log.info("scheduler: %s", json.dumps(summary))
    return {"batchItemFailures": [{"itemIdentifier": m} for m in sorted(plan.failed)]}


def read_messages(records: list[Mapping[str, Any]], inbox_bucket: str) -> Plan:
    """Sort SQS records by what their bodies ask (module docstring)."""
    plan = Plan()
    for record in records:
        message = str(record.get("messageId", ""))
        try:
            body = json.loads(record.get("body") or "")
        except (TypeError, ValueError):
            log.warning("message %s is not JSON: returned to the queue", message)
            plan.failed.add(message)
            continue
        if body == KICK:
            plan.kicks.append(message)
        elif isinstance(body, dict) and body.get("Event") == "s3:TestEvent":
            plan.ignored += 1
        elif isinstance(body, dict) and isinstance(body.get("Records"), list):
            _read_s3_records(body["Records"], message, inbox_bucket, plan)
        else:
            log.warning("message %s is neither an S3 event nor a kick: returned to the "
                        "queue", message)  # fmt: skip
            plan.failed.add(message)
    return plan


def _read_s3_records(records: list[Any], message: str, inbox_bucket: str, plan: Plan) -> None:
    for record in records:
        try:
            name = str(record["eventName"])
            bucket = str(record["s3"]["bucket"]["name"])
            key = unquote_plus(str(record["s3"]["object"]["key"]))
        except (KeyError, TypeError):
            log.warning("message %s holds a malformed S3 record: returned to the queue",
                        message)  # fmt: skip
            plan.failed.add(message)
            continue
        if not name.startswith("ObjectCreated:"):
            plan.ignored += 1
        elif bucket != inbox_bucket:
            log.warning("message %s: an object of bucket %s, not of the inbox %s: ignored",
                        message, bucket, inbox_bucket)  # fmt: skip
            plan.ignored += 1
        else:
            plan.objects.setdefault(key, []).append(message)


def take(flock: Flock, plan: Plan) -> dict[str, int]:
    """Take the objects `plan` names; the messages of those left for later join
    `plan.failed`. Returns counts (registered, already registered, rejected, gone)."""
    if not plan.objects:
        return {"registered": 0, "recovered": 0, "rejected": 0, "gone": 0}
    inbox_store = flock.store("inbox")
    keys = sorted(plan.objects)
    with ThreadPoolExecutor(min(STAT_THREADS, len(keys))) as pool:
        found = list(pool.map(lambda k: _stat(inbox_store, k), keys))
    infos = [info for info in found if isinstance(info, ObjectInfo)]
    later = [key for key, info in zip(keys, found, strict=True) if info == "later"]
    gone = sum(1 for info in found if info is None)
    registered = recovered = rejected = 0
    outcome = _take_all(flock, infos) if infos else ScanResult()
    if outcome is None:  # logged: every message goes back to the queue
        later += [info.key for info in infos]
    else:
        later += outcome.left
        registered, recovered, rejected = (
            outcome.registered, outcome.recovered, len(outcome.rejected)
        )  # fmt: skip
    for key in later:
        plan.failed.update(plan.objects[key])
    return {"registered": registered, "recovered": recovered, "rejected": rejected, "gone": gone}


def _take_all(flock: Flock, infos: list[ObjectInfo]) -> ScanResult | None:
    """Take the objects as the S3 inbox does (8 at once, registered a chunk of 100 at a
    time); None when that failed as a whole (logged)."""
    try:
        with ObjectInbox(flock) as inbox:
            result = inbox.take(infos)
    except Exception:
        log.exception("taking %d object(s) failed: their messages go back to the queue",
                      len(infos))  # fmt: skip
        return None
    for rejection in result.rejected:
        log.warning("rejected %s: %s", rejection.name, rejection.reason)
    return result


def _stat(store: Any, key: str) -> ObjectInfo | str | None:
    """The object as a listing would show it; None when it is gone (taken already), "later"
    when the store failed to say."""
    try:
        info: ObjectInfo = store.stat(key)
        return info
    except NoSuchObject:
        return None
    except Exception as exc:
        log.warning("cannot look at inbox object %r now: %s", key, exc)
        return "later"
