"""Commands that submit, run and inspect jobs."""

from __future__ import annotations

import contextlib
import gc
import itertools
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from shepard import workitems
from shepard.cli import render
from shepard.cli import workitems as cli_items
from shepard.cli.common import (
    FlockOption,
    JsonOption,
    NoInboxOption,
    WorkersOption,
    between,
    console,
    err_console,
    interruptible,
    open_flock,
    print_json,
    seconds,
)
from shepard.config import MAX_ATTEMPTS
from shepard.errors import ParamsError
from shepard.flock import Flock, Submission
from shepard.model import JobStatus, ParamValue
from shepard.params import json_file_params, parse_params_json
from shepard.remote import server_url

if TYPE_CHECKING:
    from shepard.triggers import ScanResult

WaitOption = Annotated[
    bool,
    typer.Option("--wait/--no-wait", "-w", help="Run the jobs here and wait until they end."),
]


def batch(
    folder: Annotated[
        Path,
        typer.Argument(help="Folder holding inputs.json or inputs.txt, or a ready zip bundle."),
    ],
    flock: FlockOption = Path("."),
    wait: WaitOption = False,
    zip_name: Annotated[
        str | None, typer.Option("--zip-name", help="Name of the bundle in the inputs store.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Zip FOLDER into an input bundle (or take a zip as is) and submit it as one job."""
    if server_url():
        from shepard.cli import remote

        return remote.batch(folder, zip_name=zip_name, wait=wait, as_json=as_json)
    f = open_flock(flock)
    if folder.is_file():
        sub = f.submit_bundle(folder, key=zip_name)
    else:
        sub = f.batch(folder, zip_name=zip_name)
    if as_json:
        print_json({"id": sub.ids[0], "batch": sub.batch, "bundle": f.job(sub.ids[0]).bundle_key})
    else:
        console.print(
            f"submitted job {sub.ids[0]} (bundle {f.job(sub.ids[0]).bundle_key})", markup=False
        )
    if wait:
        _wait(f, sub)


def submit(
    flock: FlockOption = Path("."),
    json_text: Annotated[
        str | None, typer.Option("--json", "-j", help="Parameters of one job, a JSON object.")
    ] = None,
    json_file: Annotated[
        Path | None,
        typer.Option(
            "--json-file",
            help="File of jobs: a JSON object, an array of objects, or one object per line "
            "(JSON lines). '-' reads stdin.",
        ),
    ] = None,
    range_: Annotated[
        str | None,
        typer.Option(
            "--range",
            help="NAME=START-END: one job per integer in the range (inclusive), with NAME set "
            "to it, on top of the --json parameters.",
        ),
    ] = None,
    attempts: Annotated[
        int | None,
        typer.Option(
            callback=between(1, MAX_ATTEMPTS),
            help=f"Attempts per job, retries included: 1 to {MAX_ATTEMPTS}.",
        ),
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(callback=seconds, help="Seconds per attempt (> 0).")
    ] = None,
    wait: WaitOption = False,
    ids: Annotated[bool, typer.Option("--ids", help="Print only the job ids, one a line.")] = False,
    items: Annotated[
        str | None,
        typer.Option(
            "--items",
            help="Work items, one job each: an item, a comma list a,b,c or a numeric range "
            "01-16 (zero-filled to --padding, --prefix in front). Previews unless --apply.",
        ),
    ] = None,
    items_file: Annotated[
        str | None,
        typer.Option(
            "--items-file",
            help="File of work items, one a line ('-' = stdin); blank lines "
            "are skipped. Previews unless --apply.",
        ),
    ] = None,
    prefix: Annotated[str, typer.Option(help="Put in front of every work item.")] = "",
    padding: Annotated[
        int, typer.Option(help="Zero-fill --items entries to this width.")
    ] = workitems.DEFAULT_PADDING,
    mode: Annotated[
        str | None, typer.Option(help="With work items: MODE_STR of every job.")
    ] = None,
    name_value: Annotated[
        list[str] | None,
        typer.Option(
            "--name-value",
            help="KEY=VALUE for every work-item job (repeatable); the value keeps any further '='.",
        ),
    ] = None,
    item_var: Annotated[
        str, typer.Option(help="The variable that holds the work item.")
    ] = workitems.ITEM_VAR,
    apply: Annotated[
        bool | None,
        typer.Option(
            "--apply/--preview",
            help="With work items: submit (--apply) or only show the jobs (--preview, the "
            "default unless the flock's [submit] apply_by_default is true).",
        ),
    ] = None,
) -> None:
    """Submit parameter-only jobs (no bundle): their parameters become environment variables."""
    by_items = items is not None or items_file is not None
    if by_items and (json_file or range_):
        raise ParamsError("work items (--items, --items-file) cannot be combined with "
                          "--json-file or --range")  # fmt: skip
    if not by_items and (mode is not None or name_value or apply is not None):
        raise ParamsError("--mode, --name-value, --apply and --preview go with --items or "
                          "--items-file")  # fmt: skip
    if server_url() and not by_items:
        return _submit_remote(json_text, json_file, range_, attempts, timeout, wait, ids)
    if server_url():  # work items: previewed here, sent as jobs with --apply
        from shepard.cli import remote

        base = dict(parse_params_json(json_text, source="--json")) if json_text else {}
        with cli_items.item_jobs(
            items=items, items_file=items_file, prefix=prefix, padding=padding, base=base,
            name_values=name_value or [], mode=mode, item_var=item_var,
        ) as item_jobs:  # fmt: skip
            if not apply:
                cli_items.preview(item_jobs)
                return None
            remote.submit(
                item_jobs, None, None, attempts=attempts, timeout=timeout, wait=wait, ids=ids
            )
        return None
    f = open_flock(flock)
    f.check_submission()  # e.g. a tasks flock's document, before anything is read
    with contextlib.ExitStack() as stack:
        if by_items:
            base = dict(parse_params_json(json_text, source="--json")) if json_text else {}
            jobs = stack.enter_context(cli_items.item_jobs(
                items=items, items_file=items_file, prefix=prefix, padding=padding,
                base=base, name_values=name_value or [], mode=mode, item_var=item_var,
            ))  # fmt: skip
            if not (cli_items.apply_by_default(f) if apply is None else apply):
                cli_items.preview(jobs)
                return
        else:
            # consumed lazily, chunk by chunk, by Flock.submit: memory stays flat
            jobs = _param_sets(json_text, json_file, range_)
        first = next(jobs, None)
        if first is None:
            raise ParamsError(
                "no work items: the list or file names none" if by_items
                else "nothing to submit: give --json, --json-file, --range or --items"
            )  # fmt: skip
        with _collector_paused(), _submit_progress(_range_size(range_)) as progress:
            sub = f.submit(
                itertools.chain([first], jobs), max_attempts=attempts, timeout=timeout,
                progress=progress,
            )  # fmt: skip
    if ids:  # streamed from the catalog, never held in memory all at once
        listed = f.batch_ids(sub.batch)
        while chunk := list(itertools.islice(listed, 10_000)):
            sys.stdout.write("".join(f"{job_id}\n" for job_id in chunk))
    elif sub.count == 1:
        console.print(f"submitted job {sub.ids[0]}", markup=False)
    else:
        console.print(f"submitted {sub.count} jobs (batch {sub.batch})", markup=False)
    if wait:
        _wait(f, sub)


def _submit_remote(
    json_text: str | None,
    json_file: Path | None,
    range_: str | None,
    attempts: int | None,
    timeout: float | None,
    wait: bool,
    ids: bool,
) -> None:
    """`submit` through a server: a lone --range (with --json defaults) goes as a range
    the server expands; anything else as the jobs themselves, in chunks."""
    if range_ and not json_file:
        base = dict(parse_params_json(json_text, source="--json")) if json_text else {}
        jobs: Iterator[dict[str, ParamValue]] = iter(())
        spec: tuple[str, int, int] | None = _parse_range(range_)
    else:
        base, jobs, spec = None, _param_sets(json_text, json_file, range_), None
    from shepard.cli import remote

    remote.submit(jobs, spec, base, attempts=attempts, timeout=timeout, wait=wait, ids=ids)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for the block (reference counting goes on), while a
    command registers jobs. Each chunk of a bulk insert (catalog/bulk.py) keeps 20,000 rows
    alive long enough to be promoted, which triggers full passes over the heap: pausing takes
    14% off the CPU time of registering jobs (7.1 to 6.1 µs per job, 300,000 jobs into SQLite,
    median of 4). The rows hold no cycles, so nothing is freed late. It is a process-wide
    switch, so it is the command line's to flip, never the library's."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


PROGRESS_AFTER_S = 0.5
"""A submission shows a progress bar (on a terminal) once it has taken this long."""


@contextlib.contextmanager
def _submit_progress(total: int | None) -> Iterator[Callable[[int], None]]:
    """A callback fed with the number of jobs written so far, which draws a progress bar on
    stderr once the submission has lasted PROGRESS_AFTER_S, when stderr is a terminal."""
    started = time.monotonic()
    bar: Progress | None = None
    task: TaskID | None = None

    def update(done: int) -> None:
        nonlocal bar, task
        if bar is None:
            if not err_console.is_terminal or time.monotonic() - started < PROGRESS_AFTER_S:
                return
            bar = Progress(
                TextColumn("submitting"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), console=err_console, transient=True, auto_refresh=False,
            )  # fmt: skip
            bar.start()
            task = bar.add_task("", total=total)
        assert task is not None
        bar.update(task, completed=done, refresh=True)

    try:
        yield update
    finally:
        if bar is not None:
            bar.stop()


def _range_size(range_: str | None) -> int | None:
    """The number of jobs a valid --range makes (for the progress bar), else None."""
    if not range_:
        return None
    try:
        _, start, end = _parse_range(range_)
    except ParamsError:
        return None
    return end - start + 1


def _param_sets(
    json_text: str | None, json_file: Path | None, range_: str | None
) -> Iterator[dict[str, ParamValue]]:
    """The jobs of a submission: --json alone is one job; with --range or --json-file its
    parameters are defaults under those of every job they make."""
    base: dict[str, ParamValue] = (
        dict(parse_params_json(json_text, source="--json")) if json_text else {}
    )
    if range_:
        name, start, end = _parse_range(range_)
        for i in range(start, end + 1):
            yield {**base, name: i}
    if json_file:
        yield from json_file_params(json_file, base, stdin=sys.stdin)
    if json_text and not range_ and not json_file:
        yield base


def _parse_range(text: str) -> tuple[str, int, int]:
    name, _, span = text.partition("=")
    lo, sep, hi = span.partition("-")
    try:
        start, end = int(lo), int(hi)
    except ValueError:
        start, end = 0, -1
    if not name or not sep or end < start:
        raise ParamsError(
            f"--range {text!r}: expected NAME=START-END with START <= END, e.g. ITEM=1-200"
        )
    return name, start, end


def _wait(f: Flock, sub: Submission) -> None:
    started = time.monotonic()
    with interruptible() as stop, render.job_progress(sub.count) as progress:
        counts = f.wait(sub.batch, stop, on_progress=progress)
    render.summary(f, counts, started)
    if stop.is_set():
        if f.config.backend.kind == "slurm":
            err_console.print(
                "interrupted: jobs handed to Slurm keep running there (`shepard cancel` stops "
                "them); the others stay queued and `shepard up` hands them over"
            )
        else:
            err_console.print("interrupted: unfinished jobs stay queued; `shepard up` resumes them")
        raise typer.Exit(130)
    if counts[JobStatus.FAILED] or counts[JobStatus.CANCELLED]:
        raise typer.Exit(1)


def up(
    flock: FlockOption = Path("."),
    workers: WorkersOption = None,
    no_inbox: NoInboxOption = False,
    inbox_interval: Annotated[
        float | None,
        typer.Option(
            "--inbox-interval",
            envvar="SHEPARD_INBOX_INTERVAL",
            callback=seconds,
            help="Seconds between two looks at an idle inbox (default: 0.5 for a folder, 1 "
            "for S3).",
        ),
    ] = None,
) -> None:
    """Run queued jobs in the foreground until Ctrl-C; bundles dropped into inbox/ become jobs."""
    f = open_flock(flock)
    f.sweep_leftovers()  # of `batch` commands killed midway
    n = f.config.backend.workers if workers is None else workers
    if f.config.backend.kind == "slurm":
        mode = getattr(f.config.backend.section(), "mode", "")
        console.print(
            f"flock {f.config.name}: handing jobs to Slurm ({mode} mode; Ctrl-C to stop)",
            markup=False,
        )
    else:
        console.print(
            f"flock {f.config.name}: running jobs with {n} workers (Ctrl-C to stop)", markup=False
        )
    wakeup = threading.Event()
    inbox: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
    if not no_inbox:
        console.print(
            f"turning bundles dropped into {f.store('inbox').location} into jobs", markup=False
        )
        from shepard.triggers import watching  # `up` alone needs the inbox's modules

        inbox = watching(f, wakeup=wakeup, interval=inbox_interval, on_result=_report_inbox)
    backend = f.open_backend(workers=n, wakeup=wakeup)  # before the inbox's thread starts
    with interruptible() as stop:
        running = False
        try:
            with inbox:
                running = True
                f.run(stop, wakeup=wakeup, backend=backend)  # shuts the backend down
        finally:
            if not running:  # the inbox could not start
                backend.shutdown(kill=True)
    console.print(render.counts_table(f.counts()))


def _report_inbox(result: ScanResult) -> None:
    if result.jobs:
        console.print(f"inbox: registered {len(result.jobs)} bundle(s)")
    for r in result.rejected:
        err_console.print(f"[red]inbox: rejected {escape(r.name)}[/]: {escape(r.reason)}")


def query(
    flock: FlockOption = Path("."),
    limit: Annotated[int, typer.Option(help="How many recent jobs to list.")] = 20,
    status: Annotated[JobStatus | None, typer.Option(help="Only jobs in this status.")] = None,
    as_json: JsonOption = False,
    watch: Annotated[
        bool, typer.Option("--watch", help="Live counts with a progress bar, until Ctrl-C.")
    ] = False,
    until_done: Annotated[
        bool,
        typer.Option("--until-done", help="With --watch: end once nothing is queued or running."),
    ] = False,
) -> None:
    """Job counts per status and the most recent jobs (or live counts with --watch)."""
    if server_url():
        from shepard.cli import remote

        return remote.query(limit, status, as_json=as_json, watch=watch, until=until_done)
    f = open_flock(flock)
    if watch or until_done:
        from shepard.cli.ops import watch as watch_counts

        watch_counts(f, until_done=until_done)
        return
    counts = f.counts()
    jobs = f.recent(limit, status)
    from shepard.triggers import count_rejected

    rejected = count_rejected(f)
    if as_json:
        print_json(
            {
                "counts": {s.value: n for s, n in counts.items()},
                "rejected": rejected,
                "jobs": [render.job_json(j, f) for j in jobs],
            }
        )
        return
    table = render.counts_table(counts)
    table.add_section()
    table.add_row("[red]rejected bundles[/] (inbox/rejected)", str(rejected))
    console.print(table)
    if jobs:
        console.print(render.jobs_table(jobs))


def show(
    job_id: Annotated[str, typer.Argument(help="The job's id.")],
    flock: FlockOption = Path("."),
    as_json: JsonOption = False,
) -> None:
    """One job: parameters, status history, attempts, outputs, errors, logs."""
    if server_url():
        from shepard.cli import remote

        return remote.show(job_id, as_json=as_json)
    f = open_flock(flock)
    info = render.job_dict(f.job(job_id), f.events(job_id), f)
    if as_json:
        print_json(info)
    else:
        render.print_job(info)


def retrieve(
    dest: Annotated[Path, typer.Argument(help="Local folder to copy results into.")],
    flock: FlockOption = Path("."),
    unzip: Annotated[bool, typer.Option(help="Also extract every result zip.")] = False,
    errors: Annotated[
        bool, typer.Option(help="Also copy error bundles (into DEST/errors).")
    ] = False,
    job: Annotated[list[str] | None, typer.Option(help="Only these job ids.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Copy result zips (and error bundles) to a local folder.

    Exit code 1 when something could not be copied or unzipped (listed at the end); entries
    of a zip renamed or left out while unzipping are listed as warnings.
    """
    if server_url():
        from shepard.cli import remote

        return remote.retrieve(dest, unzip=unzip, errors=errors, jobs=job or [], as_json=as_json)
    f = open_flock(flock)
    with render.file_progress("retrieving") as tick:
        got = f.retrieve(dest, unzip=unzip, errors=errors, job_ids=job or (), on_file=tick)
    render.print_retrieval(got, dest, as_json=as_json)
    if not got.ok:
        raise typer.Exit(1)
