"""The job commands against a `shepard serve` (the CLI's remote mode, shepard.remote).

Each command of cli/jobs.py and cli/ops.py hands over to the function of the same name here
when `SHEPARD_SERVER` is set; they print what the local commands print, from the server's
answers. The flock is the server's: `--flock` is not used.
"""

from __future__ import annotations

import itertools
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

from shepard.cli import render
from shepard.cli.common import console, err_console, interruptible, print_json
from shepard.config import LimitsConfig
from shepard.errors import JobNotFound, ParamsError, ShepardError
from shepard.model import JobStatus, ParamValue
from shepard.remote.client import Client
from shepard.remote.flock import RemoteFlock, job_of
from shepard.views import (
    CancelRequest,
    JobDetail,
    RangeSpec,
    RetryRequest,
    SubmitRequest,
    SubmitResult,
)

CHUNK = 10_000
"""Jobs per request when a file of jobs is sent (each request is registered atomically and
carries an idempotency key, so a request retried after a lost answer adds nothing twice)."""
POLL = 1.0


def client() -> Client:
    return Client.from_env()


def remote_flock() -> RemoteFlock:
    return RemoteFlock(client())


# -- submit and batch ------------------------------------------------------------------------


def submit(
    jobs: Iterator[dict[str, ParamValue]],
    range_: tuple[str, int, int] | None,
    base: dict[str, ParamValue] | None,
    *,
    attempts: int | None,
    timeout: float | None,
    wait: bool,
    ids: bool,
) -> None:
    c = client()
    from shepard.flock import new_batch_label

    label = new_batch_label()
    results: list[SubmitResult] = []
    if range_ is not None:  # sent as a range: the server expands it
        name, start, end = range_
        request = SubmitRequest(
            params=base or {}, range=RangeSpec(name=name, start=start, end=end), batch=label,
            attempts=attempts, timeout=timeout, idempotency_key=f"{label}-0",
        )  # fmt: skip
        results.append(c.submit(request))
    else:
        for n, chunk in enumerate(_chunks(jobs)):
            request = SubmitRequest(
                jobs=chunk, batch=label, attempts=attempts, timeout=timeout,
                idempotency_key=f"{label}-{n}",
            )  # fmt: skip
            results.append(c.submit(request))
    count = sum(r.count for r in results)
    if count == 0:
        raise ParamsError("nothing to submit: give --json, --json-file or --range")
    if ids:
        for r in results:
            sys.stdout.write("".join(f"{job_id}\n" for job_id in r.ids))
    elif count == 1:
        console.print(f"submitted job {results[0].ids[0]}", markup=False)
    else:
        console.print(f"submitted {count} jobs (batch {label})", markup=False)
    if wait:
        wait_for(c, label, count)


def _chunks(jobs: Iterator[dict[str, ParamValue]]) -> Iterator[list[dict[str, Any]]]:
    while chunk := list(itertools.islice(jobs, CHUNK)):
        yield [dict(j) for j in chunk]


def batch(folder: Path, *, zip_name: str | None, wait: bool, as_json: bool) -> None:
    """Zip FOLDER here (or take a zip as is) and upload it; the server validates it again."""
    from shepard.bundle import make_bundle

    c = client()
    with tempfile.TemporaryDirectory(prefix="shepard-upload-") as tmp:
        path = folder
        if not folder.is_file():
            path = make_bundle(folder, Path(tmp) / "bundle.zip", LimitsConfig())
        name = zip_name or (folder.name if folder.is_file() else f"{folder.name}.zip")
        result = c.submit_bundle(path, name)
    job = c.job(result.ids[0]).job
    if as_json:
        print_json({"id": job.id, "batch": result.batch, "bundle": job.bundle})
    else:
        console.print(f"submitted job {job.id} (bundle {job.bundle})", markup=False)
    if wait:
        wait_for(c, result.batch, 1)


def wait_for(c: Client, batch: str, total: int) -> None:
    """Follow a batch on the server until none of its jobs is queued or running; exit 1 if
    one failed or was cancelled, 130 on Ctrl-C (the jobs go on on the server)."""
    started = time.monotonic()
    counts: dict[JobStatus, int] = {}
    with interruptible() as stop, render.job_progress(total) as progress:
        while True:
            counts = RemoteFlock(c).counts(batch)
            progress(counts)
            if counts[JobStatus.QUEUED] + counts[JobStatus.RUNNING] == 0 or stop.wait(POLL):
                break
    elapsed = max(time.monotonic() - started, 1e-9)
    console.print(
        render.counts_table(
            counts, title=f"Summary ({sum(counts.values())} jobs in {elapsed:.1f} s)"
        )
    )
    if stop.is_set():
        err_console.print("interrupted: the jobs go on on the server")
        raise typer.Exit(130)
    if counts[JobStatus.FAILED] or counts[JobStatus.CANCELLED]:
        raise typer.Exit(1)


# -- inspect ---------------------------------------------------------------------------------


def query(limit: int, status: JobStatus | None, *, as_json: bool, watch: bool, until: bool) -> None:
    c = client()
    if watch or until:
        from shepard.cli.ops import watch as watch_counts

        watch_counts(RemoteFlock(c), until_done=until)
        return
    counts = RemoteFlock(c).counts()
    page = c.jobs(limit=limit, status=status.value if status else None)
    jobs = [job_of(v) for v in page.items]
    if as_json:
        print_json(
            {
                "counts": {s.value: n for s, n in counts.items()},
                "jobs": [_job_json(v.model_dump(mode="json"), c) for v in page.items],
            }
        )
        return
    console.print(render.counts_table(counts))
    if jobs:
        console.print(render.jobs_table(jobs))


def show(job_id: str, *, as_json: bool) -> None:
    c = client()
    info = job_info(c.job(job_id), c)
    if as_json:
        print_json(info)
    else:
        render.print_job(info)


def job_info(detail: JobDetail, c: Client) -> dict[str, Any]:
    """What `show --json` prints, from a server's JobDetail (locations are the server's)."""
    info = _job_json(detail.job.model_dump(mode="json"), c)
    base = f"{c.server}/api/v1/objects/logs/"
    info["logs"] = [
        {"attempt": a.number, "stdout": base + a.stdout, "stderr": base + a.stderr}
        for a in detail.attempts
    ]
    info["history"] = [e.model_dump(mode="json") for e in detail.events]
    return info


def _job_json(info: dict[str, Any], c: Client) -> dict[str, Any]:
    info["start_time"] = info["started_at"]
    info["outputs"] = [f"{c.server}/api/v1/objects/outputs/{k}" for k in info["outputs"]]
    if info["error_bundle"]:
        info["error_bundle"] = f"{c.server}/api/v1/objects/errors/{info['error_bundle']}"
    return info


# -- act -------------------------------------------------------------------------------------


def cancel(ids: list[str], statuses: list[JobStatus], *, all_: bool, as_json: bool) -> None:
    c = client()
    status = statuses[0] if not all_ and len(statuses) == 1 else None
    request = CancelRequest(ids=ids or None, all=not ids and status is None, status=status)
    done = c.cancel(request).ids
    skipped = not_changed(c, ids, done)
    if as_json:
        print_json({"cancelled": done, "not_cancelled": skipped})
    else:
        _report("cancelled", done)
        for why in skipped.values():
            err_console.print(f"not cancelled: {why}", soft_wrap=True, markup=False)
    if any(why.startswith("no job") for why in skipped.values()):
        raise typer.Exit(1)


def retry(
    ids: list[str],
    statuses: list[JobStatus],
    *,
    since: float | None,
    tag: str | None,
    attempts: int,
    as_json: bool,
) -> None:
    c = client()
    when = None if since is None else datetime.fromtimestamp(since, UTC)
    request = RetryRequest(
        ids=ids or None, statuses=statuses, since=when, tag=tag, extra_attempts=attempts
    )
    done = c.retry(request).ids
    skipped = not_changed(c, ids, done, statuses)
    if as_json:
        print_json({"requeued": done, "not_requeued": skipped})
        return
    if done:
        _report("requeued", done)
    elif not ids:
        console.print("nothing to retry")
    for why in skipped.values():
        err_console.print(f"not requeued: {why}", soft_wrap=True, markup=False)


def not_changed(
    c: Client, ids: list[str], changed: list[str], wanted: list[JobStatus] | None = None
) -> dict[str, str]:
    """Why each named job that was not changed was left alone (as cli/ops.py says it)."""
    from shepard.cli import ops

    def status(job_id: str) -> JobStatus | None:
        try:
            return c.job(job_id).job.status
        except JobNotFound:
            return None

    return ops.not_changed(status, c.server, ids, changed, wanted)


def _report(verb: str, ids: list[str]) -> None:
    console.print(f"{verb} {len(ids)} job(s)")
    for job_id in ids[:20]:
        console.print(f"  {job_id}", markup=False)
    if len(ids) > 20:
        console.print(f"  ... and {len(ids) - 20} more")


def retrieve(dest: Path, *, unzip: bool, errors: bool, jobs: list[str], as_json: bool) -> None:
    from shepard.retrieval import Retrieval, retrieve_store

    flock = RemoteFlock(client())
    got = Retrieval()
    wanted = [f"@{job_id}_" for job_id in jobs]
    sources = [("outputs", dest)] + ([("errors", dest / "errors")] if errors else [])
    with render.file_progress("retrieving") as tick:
        for name, target in sources:
            retrieve_store(flock.store(name), target, got, unzip=unzip, wanted=wanted, on_file=tick)
    render.print_retrieval(got, dest, as_json=as_json)
    if not got.ok:
        raise typer.Exit(1)


def refuse(command: str) -> None:
    """For the commands that need the flock itself (init, up, deploy, ...)."""
    raise ShepardError(
        f"`shepard {command}` works on a flock folder, not through a server: unset "
        "SHEPARD_SERVER, or run it where the server's flock is"
    )
