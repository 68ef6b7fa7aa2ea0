"""The reconciler function: run on a schedule (an EventBridge rule, every 5 minutes), or by
hand (`aws lambda invoke`), with any event.

One round (rounds.head_round with reconciling): leases of lost workers expire; the catalog is
compared with Batch (children that started are claimed, outcomes the children left in the
manifests store are recorded with the retry policy, children that vanished are re-run
without spending an attempt, children Batch stopped at their time limit spend one; arrays
whose submission never recorded an id are adopted or given back); then queued jobs are
handed over. Returns a small summary: jobs handed over, jobs per status, and the messages
waiting in the dead-letter queue.

Safe beside the scheduler and other reconcilers (docs/aws-functions.md, "Two heads"): every
change goes through the catalog's conditional writes. The stack still runs one reconciler at
a time (ReservedConcurrentExecutions 1), which keeps Batch's API calls down.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from shepard.lambdas.common import deadline, open_flock, setup_logging
from shepard.rounds import head_round

log = logging.getLogger("shepard.lambdas.reconciler")


def handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """The function's entry point (module docstring)."""
    setup_logging()
    flock = open_flock(os.environ)
    done = head_round(flock, reconcile=True, deadline=deadline(flock, context))
    counts = {status.value: n for status, n in flock.counts().items() if n}
    summary: dict[str, Any] = {
        "handed": done.handed,
        "seconds": round(done.seconds, 3),
        "jobs": counts,
        "dead_letters": dead_letters(os.environ.get("SHEPARD_DEAD_LETTERS", "")),
    }
    log.info("reconciler: %s", summary)
    return summary


def dead_letters(queue_url: str) -> int | None:
    """Messages waiting in the dead-letter queue (approximate, as SQS counts); None when it
    cannot be read."""
    if not queue_url:
        return None
    import boto3

    try:
        attributes = boto3.client("sqs").get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"])
    except Exception as exc:
        log.warning("cannot count the dead-letter queue's messages: %s", exc)
        return None
