"""Slurm's own notations, parsed without I/O: time limits, memory sizes, array index sets.

Used by the `[backend.slurm]` section (to refuse bad values before anything is submitted) and by the
Slurm backend (to read what `squeue` prints and to write `--array` and `scancel` arguments).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_MEMORY = re.compile(r"^(\d+)([KMGT]?)$", re.IGNORECASE)
_MB_PER_UNIT = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024 * 1024}
_TIME = re.compile(r"^(?:(\d+)-)?(\d+(?::\d+){0,2})$")
_TIME_FORMS = "30 (minutes), 30:00, 1:00:00, 2-00 (days-hours), 1-12:00:00"


def memory_megabytes(value: int | str) -> int:
    """Megabytes in a Slurm memory size: `2048` (MB, Slurm's default unit), `512M`, `2G`, `1T`.

    Raises ValueError with the accepted forms.
    """
    match = _MEMORY.match(str(value).strip())
    if match is None or int(match.group(1)) == 0:
        raise ValueError(
            f"expected megabytes (2048) or a size with a unit (512M, 2G, 1T), not {value!r}"
        )
    return max(1, int(int(match.group(1)) * _MB_PER_UNIT[match.group(2).upper()]))


def time_seconds(value: int | str) -> int:
    """Seconds in a Slurm time limit: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS.

    Raises ValueError naming the accepted forms. `UNLIMITED`/`INFINITE` are refused: a flock's
    limits must be finite so that sheep know when to stop taking jobs.
    """
    match = _TIME.match(str(value).strip())
    if match is None:
        raise ValueError(f"expected a Slurm time limit such as {_TIME_FORMS}, not {value!r}")
    days, rest = match.group(1), match.group(2)
    numbers = [int(p) for p in rest.split(":")]
    day_count = int(days) if days else 0
    if days:  # D-HH, D-HH:MM, D-HH:MM:SS
        h, m, s = [*numbers, 0, 0][:3]
    elif len(numbers) == 1:  # minutes
        h, m, s = 0, numbers[0], 0
    elif len(numbers) == 2:  # MM:SS
        h, m, s = 0, numbers[0], numbers[1]
    else:
        h, m, s = numbers
    total = ((day_count * 24 + h) * 60 + m) * 60 + s
    if total <= 0:
        raise ValueError(f"a time limit must be positive, not {value!r}")
    return total


def slurm_time(seconds: int) -> str:
    """`seconds` as a Slurm time limit (`D-HH:MM:SS`), rounded up to whole seconds."""
    days, rest = divmod(max(1, int(seconds)), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"


def parse_indexes(text: str) -> set[int]:
    """The task indexes of an array expression as squeue prints it: `7`, `2-9`, `[0-3,8]`,
    `0-99%4` (the `%` throttle is ignored), `1-9:2` (a step). Raises ValueError otherwise."""
    body = text.strip()
    if body.startswith("[") and body.endswith("]"):
        body = body[1:-1]
    body = body.split("%", 1)[0]
    found: set[int] = set()
    for part in filter(None, body.split(",")):
        span, _, step_text = part.partition(":")
        first, dash, last = span.partition("-")
        try:
            lo = int(first)
            hi = int(last) if dash else lo
            step = int(step_text) if step_text else 1
        except ValueError:
            raise ValueError(f"not an array index expression: {text!r}") from None
        if step < 1 or hi < lo:
            raise ValueError(f"not an array index expression: {text!r}")
        found.update(range(lo, hi + 1, step))
    if not found:
        raise ValueError(f"not an array index expression: {text!r}")
    return found


def format_indexes(indexes: Iterable[int]) -> str:
    """A compact index expression for `--array` or `scancel ID_[...]`: `0-3,7,9-12`."""
    parts: list[str] = []
    ordered = sorted(set(indexes))
    start = prev = None
    for i in ordered:
        if prev is not None and i == prev + 1:
            prev = i
            continue
        if start is not None:
            parts.append(_span(start, prev))
        start = prev = i
    if start is not None:
        parts.append(_span(start, prev))
    return ",".join(parts)


def _span(start: int, end: int | None) -> str:
    return str(start) if end is None or end == start else f"{start}-{end}"
