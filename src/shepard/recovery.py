"""Cleaning up after attempts whose sheep died between publishing and recording.

An attempt publishes its result zips first and records its outcome in the catalog second (so
a recorded success always has its outputs). A sheep killed between the two steps (kill -9,
out of memory, power loss) leaves result zips that no attempt recorded; its lease then
expires and the job runs again, and the new attempt's zips carry a new START_TIME. Before a
later attempt runs, `withdraw_unrecorded_results` deletes what the earlier attempts of its
job may have left, so a job ends with the results of the attempt the catalog recorded only.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from shepard.catalog.base import Catalog
from shepard.model import Job, JobEvent, JobStatus
from shepard.runtime.outputs import output_key
from shepard.storage import ObjectStore

log = logging.getLogger(__name__)

OUTPUT_KINDS = ("root", "efs", "lustre")


def earlier_start_times(events: Iterable[JobEvent], attempt: int) -> set[int]:
    """The START_TIMEs the attempts before `attempt` may have used, from the job's history.

    Each claim records a RUNNING event at the claim time `now`, and gives the attempt the
    START_TIME max(int(now), previous START_TIME + 1) (see Catalog.claim): replaying the
    RUNNING events in order rebuilds every START_TIME. int(now) is included as well, so a
    catalog that never needed the + 1 is covered whatever the replay says.
    """
    found: set[int] = set()
    previous: int | None = None
    for event in events:
        if event.status is not JobStatus.RUNNING:
            continue
        start = int(event.at) if previous is None else max(int(event.at), previous + 1)
        if event.attempt < attempt:
            found.update((start, int(event.at)))
        previous = start
    return found


def withdraw_unrecorded_results(catalog: Catalog, job: Job, outputs: ObjectStore) -> list[str]:
    """Delete result zips of `job`'s earlier attempts that the catalog does not list.

    Call it for a claimed attempt (so every earlier attempt is over or fenced out) before it
    runs. Results the catalog recorded (`job.outputs`) are kept. Returns the keys deleted.
    """
    if job.attempt <= 1:
        return []
    recorded = set(job.outputs)
    removed: list[str] = []
    for start in sorted(earlier_start_times(catalog.events(job.id), job.attempt)):
        if start == job.started_at:
            continue
        for kind in OUTPUT_KINDS:
            key = output_key(job.params, job.id, start, kind)
            if key not in recorded and outputs.exists(key):
                outputs.delete(key)
                removed.append(key)
    if removed:
        log.warning(
            "job %s: removed %d result(s) an earlier attempt published without recording: %s",
            job.id, len(removed), ", ".join(removed),
        )  # fmt: skip
    return removed


def before_attempt(catalog: Catalog, job: Job, outputs: ObjectStore) -> None:
    """`withdraw_unrecorded_results`, never raising: a failure is logged and the attempt runs
    anyway (the next attempt of the job, if any, tries again)."""
    try:
        withdraw_unrecorded_results(catalog, job, outputs)
    except Exception:
        log.exception("job %s: could not check for results of earlier attempts", job.id)
