"""Work items: one job per item, the way Cloudburst's `start_jobs.py` names them.

A work item is a free-form string (a site id, `Dam001/Period03`) that reaches the job as
`WORK_ITEM` and is the job's name (`job_name`: what `query`, `show` and `stop` show and
match). `--items` takes what `start_jobs.py -workitems` takes: one item, a comma list,
or a numeric range `START-END`, each zero-filled to a padding width, with a prefix in front.

Where `start_jobs.py` misbehaves we refuse or do the right thing (docs/tasks.md says which):
a non-numeric item with a dash is an item (the original crashed), a reversed range is an
error (the original yielded nothing), blank lines of a file are skipped (the original made
items of them), and `KEY=a=b` keeps `a=b` (the original kept `a`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import TextIO

from shepard.errors import ParamsError
from shepard.model import ParamValue
from shepard.params import find_key

NAME_PARAM = "JOB_NAME"
"""A parameter naming its job; a job without one is named by its WORK_ITEM."""

ITEM_VAR = "WORK_ITEM"
MODE_VAR = "MODE_STR"
DEFAULT_PADDING = 3

_RANGE = re.compile(r"\s*(\d+)\s*-\s*(\d+)\s*")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def expand_items(text: str, *, prefix: str = "", padding: int = DEFAULT_PADDING) -> Iterator[str]:
    """The items `--items TEXT` names: `START-END` (both numbers) is the inclusive range,
    else a comma list; each entry is zero-filled to `padding` (only short entries change:
    `7` -> `007`, `abc` stays) and gets `prefix` in front. A range is generated as it is
    read, so a range of millions costs no memory.

    ParamsError (raised at once) for a reversed range, an empty entry, or nothing at all.
    """
    if padding < 0:
        raise ParamsError(f"--padding {padding}: give a width of 0 or more")
    if match := _RANGE.fullmatch(text):
        start, end = int(match[1]), int(match[2])
        if end < start:
            raise ParamsError(
                f"--items {text!r}: the range runs backwards; write it as {end}-{start}"
            )
        return (f"{prefix}{str(i).zfill(padding)}" for i in range(start, end + 1))
    entries = [entry.strip() for entry in text.split(",")]
    if not text.strip() or any(not entry for entry in entries):
        raise ParamsError(
            f"--items {text!r}: expected an item, a comma list (a,b,c) or a range (01-16), "
            "with no empty entry"
        )
    return iter([f"{prefix}{entry.zfill(padding)}" for entry in entries])


def read_items(lines: Iterable[str], *, prefix: str = "") -> Iterator[str]:
    """One item per non-blank line of `lines` (a file or stdin), trailing whitespace and
    the line end removed, `prefix` in front. Streamed: a file of millions of lines is never
    held whole. Blank lines are skipped (the original made an item of the bare prefix)."""
    for line in lines:
        item = line.rstrip("\r\n").strip()
        if item:
            yield f"{prefix}{item}"


def parse_name_values(pairs: Iterable[str]) -> dict[str, str]:
    """`--name-value KEY=VALUE` pairs: split at the first `=`, so the value keeps any
    further `=` (the original dropped them). ParamsError for a pair without `=` or with a
    name that cannot be an environment variable."""
    found: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not _NAME.fullmatch(key):
            raise ParamsError(
                f"--name-value {pair!r}: expected KEY=VALUE with KEY a variable name, "
                "e.g. BUCKET_NAME=my-bucket"
            )
        found[key] = value
    return found


def check_item_var(name: str) -> str:
    """`--item-var`: a variable name other than JOB_NAME."""
    if not _NAME.fullmatch(name) or name.upper() == NAME_PARAM:
        raise ParamsError(
            f"--item-var {name!r}: give a variable name (letters, digits, _), not {NAME_PARAM}"
        )
    return name


def item_params(
    items: Iterable[str],
    *,
    base: Mapping[str, ParamValue],
    item_var: str = ITEM_VAR,
    mode: str | None = None,
) -> Iterator[dict[str, ParamValue]]:
    """The parameters of one job per item: `base` (the --json and --name-value parameters),
    then MODE_STR when a mode is given, then the item under `item_var` (and as JOB_NAME when
    `item_var` is not WORK_ITEM, so that it still names the job)."""
    head: dict[str, ParamValue] = dict(base)
    if mode is not None:
        head[MODE_VAR] = mode
    if item_var.upper() == ITEM_VAR:  # the item names the job already
        for item in items:
            yield {**head, item_var: item}
        return
    for item in items:
        yield {**head, item_var: item, NAME_PARAM: item}


def job_name(params: Mapping[str, ParamValue]) -> str | None:
    """A job's name: its JOB_NAME parameter, else its WORK_ITEM (any case), else None."""
    return find_key(params, NAME_PARAM) or find_key(params, ITEM_VAR)


def open_items_file(path: str, stdin: TextIO) -> TextIO:
    """The file `--items-file` names ('-' is stdin), opened as text; ParamsError when it
    cannot be read."""
    if path == "-":
        return stdin
    try:
        return open(path, encoding="utf-8")
    except OSError as exc:
        raise ParamsError(f"--items-file {path}: {exc.strerror or exc}") from None
