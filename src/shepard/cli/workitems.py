"""`submit --items/--items-file` and `stop`: jobs by work item, previewed unless --apply."""

from __future__ import annotations

import contextlib
import itertools
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from shepard import workitems
from shepard.cli.common import (
    FlockOption,
    JsonOption,
    console,
    err_console,
    open_flock,
    print_json,
)
from shepard.errors import ParamsError, ShepardError
from shepard.flock import Flock
from shepard.model import ParamValue
from shepard.params import validate_params

PREVIEW_ROWS = 10
"""Jobs a preview shows on a terminal (a script gets every one)."""


@contextlib.contextmanager
def item_jobs(
    *,
    items: str | None,
    items_file: str | None,
    prefix: str,
    padding: int,
    base: dict[str, ParamValue],
    name_values: list[str],
    mode: str | None,
    item_var: str,
) -> Iterator[Iterator[dict[str, ParamValue]]]:
    """The parameters of one job per work item (streamed from a file), checked up front for
    the options that can be checked without reading the items."""
    if items is not None and items_file is not None:
        raise ParamsError("give --items or --items-file, not both")
    extra = workitems.parse_name_values(name_values)
    var = workitems.check_item_var(item_var)
    head: dict[str, ParamValue] = {**base, **extra}
    if items is not None:
        names = workitems.expand_items(items, prefix=prefix, padding=padding)
        yield workitems.item_params(names, base=head, item_var=var, mode=mode)
        return
    assert items_file is not None
    handle = workitems.open_items_file(items_file, sys.stdin)
    try:
        names = workitems.read_items(handle, prefix=prefix)
        yield workitems.item_params(names, base=head, item_var=var, mode=mode)
    finally:
        if handle is not sys.stdin:
            handle.close()


def preview(jobs: Iterator[dict[str, ParamValue]]) -> int:
    """Check every job as a submission would, and show them without submitting: on a
    terminal a table of the first few, elsewhere one JSON line per job (name and
    parameters). Return how many there are; ParamsError (nothing shown) for a bad one."""
    if console.is_terminal:
        shown: list[dict[str, ParamValue]] = []
        count = 0
        for params in jobs:
            checked = validate_params(params)
            if len(shown) < PREVIEW_ROWS:
                shown.append(checked)
            count += 1
        _preview_table(shown, count)
    else:
        count = _preview_lines(jobs)
    if count == 0:
        raise ParamsError("no work items: the list or file names none")
    err_console.print(
        f"preview: {count} job(s) would be submitted; run again with --apply to submit them",
        markup=False,
    )
    return count


def _preview_lines(jobs: Iterator[dict[str, ParamValue]]) -> int:
    """Every job as a JSON line on stdout, written in chunks; nothing when one is bad."""
    count = 0
    encode = json.JSONEncoder(separators=(",", ":")).encode
    while chunk := list(itertools.islice(jobs, 10_000)):
        lines = []
        for params in chunk:
            checked = validate_params(params)
            name = workitems.job_name(checked)
            lines.append(encode({"name": name, "params": checked}) + "\n")
        count += len(chunk)
        sys.stdout.write("".join(lines))
    sys.stdout.flush()
    return count


def _preview_table(shown: list[dict[str, ParamValue]], count: int) -> None:
    table = Table(title=f"Would submit {count} job(s)", title_justify="left")
    table.add_column("name", overflow="fold")
    table.add_column("params", overflow="fold")
    for params in shown:
        rest = " ".join(f"{k}={v}" for k, v in params.items() if k != workitems.NAME_PARAM)
        table.add_row(escape(workitems.job_name(params) or ""), escape(rest))
    if count > len(shown):
        table.add_row(f"… and {count - len(shown)} more", "")
    console.print(table)


def apply_by_default(f: Flock) -> bool:
    """The flock's `[submit] apply_by_default`."""
    return f.config.submit.apply_by_default


# -- stop ------------------------------------------------------------------------------------


def stop(
    flock: FlockOption = Path("."),
    all_: Annotated[
        bool, typer.Option("--all", help="Every queued and running job, named or not.")
    ] = False,
    items: Annotated[
        str | None,
        typer.Option(
            "--items",
            help="Work items (job names): an item, a comma list a,b,c or a range 001-010.",
        ),
    ] = None,
    items_file: Annotated[
        str | None,
        typer.Option("--items-file", help="File of work items, one a line ('-' = stdin)."),
    ] = None,
    prefix: Annotated[str, typer.Option(help="Put in front of every work item.")] = "",
    padding: Annotated[
        int, typer.Option(help="Zero-fill --items entries to this width.")
    ] = workitems.DEFAULT_PADDING,
    apply: Annotated[
        bool, typer.Option("--apply", help="Cancel them (without it: only show them).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Cancel queued and running jobs by work item (job name), or all of them: previews
    which jobs it would cancel unless --apply is given."""
    given = sum(x is not None for x in (items, items_file)) + all_
    if given != 1:
        raise ShepardError("stop: give exactly one of --all, --items or --items-file")
    names: set[str] | None = None
    if items is not None:
        names = set(workitems.expand_items(items, prefix=prefix, padding=padding))
    elif items_file is not None:
        handle = workitems.open_items_file(items_file, sys.stdin)
        try:
            names = set(workitems.read_items(handle, prefix=prefix))
        finally:
            if handle is not sys.stdin:
                handle.close()
    f = open_flock(flock)
    found = f.active_named(names)
    cancelled = f.cancel([job.id for job in found]) if apply and found else []
    rows = [
        {"id": job.id, "name": workitems.job_name(job.params), "status": job.status}
        for job in found
    ]
    if as_json:
        print_json({"applied": apply, "jobs": rows, "cancelled": cancelled})
        return
    for row in rows:
        console.print(f"{row['id']}  {row['status']:<8}  {row['name'] or '-'}", markup=False)
    if not apply:
        err_console.print(
            f"preview: {len(found)} queued or running job(s) match; run again with --apply "
            "to cancel them",
            markup=False,
        )
    else:
        err_console.print(f"cancelled {len(cancelled)} job(s)", markup=False)
