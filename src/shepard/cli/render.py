"""Rich renderings: progress bars, tables, job details."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from shepard.cli.common import console, err_console, print_json, when
from shepard.flock import Flock
from shepard.flock import Progress as ProgressFn
from shepard.model import Job, JobEvent, JobStatus
from shepard.retrieval import Retrieval
from shepard.service import object_url
from shepard.views import event_view, job_view
from shepard.workitems import job_name

STYLE = {
    JobStatus.QUEUED: "cyan",
    JobStatus.RUNNING: "yellow",
    JobStatus.SUCCEEDED: "green",
    JobStatus.FAILED: "red",
    JobStatus.CANCELLED: "magenta",
}


def counts_text(counts: dict[JobStatus, int]) -> str:
    return "  ".join(f"[{STYLE[s]}]{s.value} {n}[/]" for s, n in counts.items() if n)


def counts_line(counts: dict[JobStatus, int]) -> str:
    """The counts as one plain line, every status shown: `queued 3  running 2  ...  total 9`."""
    total = sum(counts.values())
    return "  ".join([*(f"{s.value} {n}" for s, n in counts.items()), f"total {total}"])


def table(title: str, **options: Any) -> Table:
    """A table with a title (plain text, not markup) and, when stdout is not a terminal,
    no box drawing: one plain line per row, for scripts."""
    style = box.HEAVY_HEAD if console.is_terminal else None
    return Table(title=escape(title), title_justify="left", box=style, **options)


@contextmanager
def job_progress(total: int | None, *, out: Console = err_console) -> Iterator[ProgressFn]:
    """A progress bar fed with status counts: over `total` jobs, or over every job counted
    so far when `total` is None (the whole flock)."""
    progress = Progress(
        TextColumn("[bold]jobs"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=out,
        # redrawn by each `update` (callers run it a few times a second): no drawing thread,
        # so `--wait` can still fork its runner processes (see backends/forked.py)
        auto_refresh=False,
    )
    task = progress.add_task("", total=total)

    def update(counts: dict[JobStatus, int]) -> None:
        finished = sum(n for s, n in counts.items() if s.terminal)
        progress.update(
            task,
            total=sum(counts.values()) if total is None else total,
            completed=finished,
            description=counts_text(counts) or "no jobs",
            refresh=True,
        )

    with progress:
        yield update


@contextmanager
def file_progress(label: str) -> Iterator[Callable[[Path], None]]:
    """A spinner with a running count of files, for transfers of unknown length."""
    progress = Progress(
        SpinnerColumn(), TextColumn(f"[bold]{label}"), TextColumn("{task.completed} file(s)"),
        TimeElapsedColumn(), console=err_console, transient=True,
    )  # fmt: skip
    task = progress.add_task(label, total=None)
    with progress:
        yield lambda _path: progress.advance(task)


def counts_table(counts: dict[JobStatus, int], title: str = "Jobs") -> Table:
    shown = table(title)
    shown.add_column("status")
    shown.add_column("jobs", justify="right")
    for status, n in counts.items():
        shown.add_row(f"[{STYLE[status]}]{status.value}[/]", str(n))
    shown.add_row("[bold]total[/]", f"[bold]{sum(counts.values())}[/]")
    return shown


def jobs_table(jobs: list[Job], title: str = "Recent jobs") -> Table:
    """The jobs, one a row; a name column when any of them has a name (a work item)."""
    shown = table(title)
    names = [job_name(job.params) for job in jobs]
    named = any(names)
    columns = ("job id", "name", "status", "attempt", "submitted", "params", "reason")
    for col in columns if named else tuple(c for c in columns if c != "name"):
        shown.add_column(col, overflow="fold")
    for job, name in zip(jobs, names, strict=True):
        params = " ".join(f"{k}={v}" for k, v in job.params.items())
        cells = [
            escape(job.id),
            *([escape(name or "-")] if named else []),
            f"[{STYLE[job.status]}]{job.status.value}[/]",
            str(job.attempt),
            when(job.submitted_at),
            escape(params[:60] + ("…" if len(params) > 60 else "")),
            escape(job.reason or ""),
        ]
        shown.add_row(*cells)
    return shown


def job_json(job: Job, flock: Flock) -> dict[str, Any]:
    """A job's JobView as JSON, plus what the CLI has always shown: `start_time`, and the
    outputs and error bundle as locations rather than keys."""
    info = job_view(job).model_dump(mode="json")
    outputs, errors = flock.store("outputs").location, flock.store("errors").location
    info["start_time"] = job.started_at
    info["outputs"] = [object_url(outputs, key) for key in job.outputs]
    info["error_bundle"] = job.error_bundle and object_url(errors, job.error_bundle)
    return info


def job_dict(job: Job, events: list[JobEvent], flock: Flock) -> dict[str, Any]:
    """`shepard show --json`: `job_json`, its logs (where each is: `store.url(key)`, a file
    path for a folder store, s3://... otherwise) and its history."""
    logs = flock.store("logs")
    return {
        **job_json(job, flock),
        "logs": [
            {"attempt": a, "stdout": logs.url(out), "stderr": logs.url(err)}
            for a, out, err in flock.log_keys(job)
        ],
        "history": [event_view(e).model_dump(mode="json") for e in events],
    }


def print_job(info: dict[str, Any]) -> None:
    status = JobStatus(info["status"])
    console.print(f"[bold]job[/] {escape(info['id'])}  [{STYLE[status]}]{status.value}[/]")
    rows = [
        *([("name", info["name"])] if info.get("name") else []),
        ("batch", info["batch"]),
        ("bundle", info["bundle"] or "- (parameters only)"),
        ("attempt", f"{info['attempt']} of {info['max_attempts']}"),
        ("submitted", when(info["submitted_at"])),
        ("START_TIME", info["start_time"] or "-"),
        ("finished", when(info["finished_at"])),
        ("worker", info["worker"] or "-"),
        ("reason", info["reason"] or "-"),
        ("exit code", "-" if info["exit_code"] is None else info["exit_code"]),
    ]
    if info.get("placement") and status is JobStatus.QUEUED:
        rows.append(("handed to", f"{info['placement']} (waiting in the engine's queue)"))
    for name, value in rows:
        console.print(f"  {name:<10} {escape(str(value))}")
    console.print("  params")
    for key, value in info["params"].items():
        console.print(f"    {key} = {escape(repr(value))}")
    for label, items in (("outputs", info["outputs"]), ("error bundle", [info["error_bundle"]])):
        for item in filter(None, items):
            console.print(f"  {label:<10} {escape(item)}")
    for log in info["logs"]:
        console.print(
            f"  logs #{log['attempt']:<4} {escape(log['stdout'])}  {escape(log['stderr'])}"
        )
    history = table("history", padding=(0, 2))
    history.box = None
    for col in ("at", "attempt", "status", "detail"):
        history.add_column(col)
    for e in info["history"]:
        history.add_row(when(e["at"]), str(e["attempt"]), e["status"], escape(e["detail"] or ""))
    console.print(history)


def summary(flock: Flock, counts: dict[JobStatus, int], started: float) -> None:
    elapsed = max(time.monotonic() - started, 1e-9)
    total = sum(counts.values())
    console.print(counts_table(counts, title=f"Summary ({total} jobs in {elapsed:.1f} s)"))
    console.print(f"outputs: {escape(flock.store('outputs').location)}")
    if counts[JobStatus.FAILED]:
        console.print(f"error bundles: {escape(flock.store('errors').location)}")


def print_retrieval(got: Retrieval, dest: Path, *, as_json: bool = False) -> None:
    """Report a retrieval: the files, then what was left out (warnings) and what could not
    be copied or unzipped (errors), on stderr; or all of it as JSON on stdout."""
    if as_json:
        print_json(
            {
                "dest": str(dest),
                "files": [str(p) for p in got.files],
                "skipped": got.skipped,
                "failed": got.failed,
            }
        )
        return
    console.print(f"{len(got.files)} file(s) in {escape(str(dest))}")
    for line in got.skipped:
        err_console.print(f"warning: {line}", markup=False)
    for line in got.failed:
        err_console.print(f"error: {line}", markup=False)
    if got.failed:
        err_console.print(f"{len(got.failed)} item(s) could not be retrieved", markup=False)
