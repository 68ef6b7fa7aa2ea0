"""Commands that act on jobs already submitted: logs, cancel, retry; and `query --watch`."""

from __future__ import annotations

import contextlib
import copy
import re
import sys
import threading
import time
import typing
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Protocol

import typer

from shepard import joblogs
from shepard.cli import render, serverless
from shepard.cli.common import (
    FlockOption,
    JsonOption,
    console,
    err_console,
    open_flock,
    print_json,
)
from shepard.errors import ShepardError
from shepard.flock import Flock, PacedCounts
from shepard.model import JobStatus
from shepard.remote import server_url

WATCH_REFRESH = 0.5  # seconds between two looks at the counts
LIST_AT_MOST = 50  # ids listed one per line; beyond, only the count


def _long_only(option: typing.Any) -> typing.Any:
    """The shared --flock option's settings without its short name (`logs` uses -f for
    --follow)."""
    info = copy.copy(typing.get_args(option)[1])
    info.param_decls = tuple(d for d in info.param_decls if d.startswith("--"))
    return info


FlockLongOption = Annotated[Path, _long_only(FlockOption)]


# -- logs ------------------------------------------------------------------------------------


def logs(
    job_id: Annotated[str, typer.Argument(metavar="JOB", help="The job's id.")],
    flock: FlockLongOption = Path("."),
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            "-f",
            help="Stream new output, attempt after attempt, until the job ends (with "
            "--attempt: until that attempt ends). Exit code: 0 if the job succeeded, "
            "1 if it failed or was cancelled.",
        ),
    ] = False,
    stderr: Annotated[bool, typer.Option("--stderr", help="Show stderr instead of stdout.")] = (
        False
    ),
    attempt: Annotated[
        int | None,
        typer.Option(help="Which attempt (default: the running one, else the latest)."),
    ] = None,
    engine: Annotated[
        bool,
        typer.Option(
            "--engine",
            help="Print the engine's own log of the job's latest run instead (aws-batch: the "
            "CloudWatch Logs stream of its Batch child).",
        ),
    ] = False,
) -> None:
    """Print a job attempt's stdout (or stderr), or follow it live with --follow."""
    f: joblogs.JobSource
    if server_url():
        from shepard.cli import remote

        f = remote.remote_flock()
    else:
        f = open_flock(flock)
    stream = "stderr" if stderr else "stdout"
    out = sys.stdout.buffer

    def write(data: bytes) -> None:
        out.write(data)
        out.flush()

    if engine:
        if not isinstance(f, Flock):
            raise ShepardError(
                "--engine reads the engine's log from the flock folder: unset SHEPARD_SERVER"
            )
        write(_engine_log(f, job_id, follow or stderr or attempt is not None).encode())
        return

    if not follow:
        joblogs.copy_log(joblogs.pick_log(f, f.job(job_id), attempt=attempt, stream=stream), write)
        return
    stop = threading.Event()
    try:
        end = joblogs.follow(
            f, job_id, write, attempt=attempt, stream=stream, stop=stop,
            on_wait=lambda message: err_console.print(message, soft_wrap=True, markup=False),
        )  # fmt: skip
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    if end is not None:
        err_console.print(end.message, soft_wrap=True, markup=False)
        if end.status is not JobStatus.SUCCEEDED or end.attempt != end.current:
            raise typer.Exit(1)  # failed or cancelled (or, with --attempt, that attempt failed)


def _engine_log(f: Flock, job_id: str, other_options: bool) -> str:
    """The engine's own log of the job's latest run, from backends that keep one."""
    from shepard.backends import open_scheduler

    if other_options:
        raise ShepardError("--engine prints the engine's whole log: give it without -f, "
                           "--stderr or --attempt")  # fmt: skip
    job = f.job(job_id)
    scheduler = open_scheduler(f.config.backend.kind, f.backend_context())
    read = getattr(scheduler, "engine_log", None)
    if read is None:
        raise ShepardError(
            f"the {f.config.backend.kind} backend keeps no engine log of its own; the job's "
            "output is what `shepard logs JOB` prints"
        )
    text: str = read(job)
    return text


# -- cancel ----------------------------------------------------------------------------------


class ActiveStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"


def cancel(
    job_ids: Annotated[
        list[str] | None, typer.Argument(metavar="JOB", help="Jobs to cancel.")
    ] = None,
    flock: FlockOption = Path("."),
    all_: Annotated[bool, typer.Option("--all", help="Cancel every queued and running job.")] = (
        False
    ),
    status: Annotated[
        ActiveStatus | None,
        typer.Option(help="Cancel every job in this status (with JOB ids: only those)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Cancel jobs: queued ones never start, running ones are killed and end `cancelled`."""
    ids = list(job_ids or [])
    if all_ and (ids or status):
        raise ShepardError("cancel: --all cannot be combined with JOB ids or --status")
    if not (ids or all_ or status):
        raise ShepardError("cancel: say which jobs: JOB ids, --all or --status queued|running")
    statuses = [JobStatus(status.value)] if status else [JobStatus.QUEUED, JobStatus.RUNNING]
    if server_url():
        from shepard.cli import remote

        return remote.cancel(ids, statuses, all_=all_, as_json=as_json)
    f = open_flock(flock)
    running_before = JobStatus.RUNNING in statuses and f.counts()[JobStatus.RUNNING] > 0
    cancelled = f.cancel(ids or None, statuses=statuses)
    if cancelled:
        serverless.after_cancel(f)
    skipped = _not_changed(f, ids, cancelled)
    if as_json:
        print_json({"cancelled": cancelled, "not_cancelled": skipped})
    else:
        _report_ids("cancelled", cancelled)
        if cancelled and running_before:
            console.print("running ones are stopped by their sheep within a few seconds")
        for why in skipped.values():
            err_console.print(f"not cancelled: {why}", soft_wrap=True, markup=False)
    if any(why.startswith("no job") for why in skipped.values()):
        raise typer.Exit(1)


# -- retry -----------------------------------------------------------------------------------


def retry(
    job_ids: Annotated[
        list[str] | None,
        typer.Argument(metavar="JOB", help="Only these jobs (default: all that match)."),
    ] = None,
    flock: FlockOption = Path("."),
    failed: Annotated[
        bool, typer.Option("--failed", help="Retry failed jobs (the default with JOB ids).")
    ] = False,
    cancelled: Annotated[bool, typer.Option("--cancelled", help="Retry cancelled jobs.")] = False,
    since: Annotated[
        str | None,
        typer.Option(
            help="Only jobs that ended this recently (30m, 2h, 1d, 1h30m) or since this time "
            "(ISO 8601; UTC unless it says otherwise)."
        ),
    ] = None,
    tag: Annotated[
        str | None, typer.Option(help="Only jobs whose TAG parameter is this (any case).")
    ] = None,
    attempts: Annotated[
        int, typer.Option(min=1, max=100, help="Attempts each job gets from now on.")
    ] = 1,
    as_json: JsonOption = False,
) -> None:
    """Run failed (and with --cancelled, cancelled) jobs again as new attempts of the same ids."""
    ids = list(job_ids or [])
    if not (failed or cancelled or ids):
        raise ShepardError("retry: say which jobs: --failed, --cancelled and/or JOB ids")
    statuses = [s for s, on in ((JobStatus.FAILED, failed), (JobStatus.CANCELLED, cancelled)) if on]
    statuses = statuses or [JobStatus.FAILED]
    after = None if since is None else parse_since(since, time.time())
    if server_url():
        from shepard.cli import remote

        return remote.retry(ids, statuses, since=after, tag=tag, attempts=attempts, as_json=as_json)
    f = open_flock(flock)
    requeued = f.retry(
        ids or None, statuses=statuses, since=after, tag=tag, extra_attempts=attempts
    )
    skipped = _not_changed(f, ids, requeued, statuses)
    if requeued:
        serverless.after_submit(f)
    if as_json:
        print_json({"requeued": requeued, "not_requeued": skipped})
        return
    if requeued:
        _report_ids("requeued", requeued)
        if serverless.is_serverless(f):
            console.print("they run as new attempts: the flock's functions hand them to Batch")
        else:
            console.print("they run as new attempts when a sheep is up (`shepard up`)")
    elif not ids:
        console.print("nothing to retry")
    for why in skipped.values():
        err_console.print(f"not requeued: {why}", soft_wrap=True, markup=False)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])", re.IGNORECASE)
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, now: float) -> float:
    """Epoch seconds for `--since`: a duration before `now` (`30m`, `2h`, `1d`, `1h30m`, `45s`,
    `1w`) or an ISO 8601 time (`2024-05-01T12:00`, `2024-05-01 12:00:00 UTC`, `...+02:00`;
    UTC when no offset is given, like the times `shepard show` prints)."""
    value = text.strip()
    if value and _DURATION.sub("", value).strip() == "" and _DURATION.match(value):
        seconds = sum(float(n) * _UNIT[u.lower()] for n, u in _DURATION.findall(value))
        return now - seconds
    iso = value[:-4].rstrip() if value.upper().endswith(" UTC") else value
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        raise ShepardError(
            f"--since {text!r}: expected a duration (30m, 2h, 1d, 1h30m) "
            "or an ISO 8601 time (2024-05-01T12:00:00)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


# -- query --watch ---------------------------------------------------------------------------


class Counted(Protocol):
    def counts(self) -> dict[JobStatus, int]: ...


def watch(f: Counted, *, until_done: bool = False, refresh: float = WATCH_REFRESH) -> None:
    """Show live counts until Ctrl-C, or (until_done) until nothing is queued or running;
    then print the counts table. On a terminal, a progress bar; elsewhere (a pipe, a file),
    one plain line each time the counts change, written at once."""
    counter = PacedCounts(f.counts)
    counts = counter.count()
    show = _print_changes() if not console.is_terminal else None
    try:
        with contextlib.ExitStack() as stack:
            update = show or stack.enter_context(render.job_progress(None, out=console))
            while True:
                update(counts)
                if until_done and counts[JobStatus.QUEUED] + counts[JobStatus.RUNNING] == 0:
                    break
                time.sleep(max(refresh, counter.spacing()))
                counts = counter.count()
    except KeyboardInterrupt:
        pass
    console.print(render.counts_table(counts))


def _print_changes() -> Callable[[dict[JobStatus, int]], None]:
    """An update function that prints the counts as a plain line when they changed."""
    last = ""

    def update(counts: dict[JobStatus, int]) -> None:
        nonlocal last
        line = render.counts_line(counts)
        if line != last:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
            last = line

    return update


# -- helpers ---------------------------------------------------------------------------------


def _report_ids(verb: str, ids: list[str]) -> None:
    console.print(f"{verb} {len(ids)} job(s)")
    for job_id in ids[:LIST_AT_MOST]:
        console.print(f"  {job_id}", markup=False)
    if len(ids) > LIST_AT_MOST:
        console.print(f"  ... and {len(ids) - LIST_AT_MOST} more")


def _not_changed(
    f: Flock, ids: list[str], changed: list[str], wanted: list[JobStatus] | None = None
) -> dict[str, str]:
    """Why each named job of flock `f` that was not changed was left alone."""

    def status(job_id: str) -> JobStatus | None:
        job = f.catalog.get(job_id)
        return None if job is None else job.status

    return not_changed(status, f"flock {f.config.name!r}", ids, changed, wanted)


def not_changed(
    status_of: Callable[[str], JobStatus | None],
    where: str,
    ids: list[str],
    changed: list[str],
    wanted: list[JobStatus] | None = None,
) -> dict[str, str]:
    """Why each named job that was not changed was left alone (`status_of` a job id: its
    status, None for no such job in `where`)."""
    done = set(changed)
    why: dict[str, str] = {}
    for job_id in dict.fromkeys(ids):
        if job_id in done:
            continue
        status = status_of(job_id)
        if status is None:
            why[job_id] = f"no job {job_id!r} in {where}"
        elif wanted is not None and status is JobStatus.CANCELLED and status not in wanted:
            why[job_id] = f"job {job_id} is cancelled (add --cancelled to retry it)"
        elif wanted is not None and status in wanted:
            why[job_id] = f"job {job_id} is {status.value} but did not match the filters"
        else:
            why[job_id] = f"job {job_id} is {status.value}"
    return why
