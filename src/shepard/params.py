"""Job parameters: the runtime contract for the names and values that become environment variables.

A job's parameters are a flat JSON object. Every key becomes an environment variable of the
payload, so keys must be valid variable names and must not clash with the variables the runtime
sets itself (`RESERVED`, `EXTRA_RESERVED`, compared case-insensitively). Values must be scalars
that have one obvious text form: strings, booleans and integers (`null` becomes `"None"`, and an
integral float such as `3.0` becomes the integer `3`).
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from shepard.errors import ParamsError
from shepard.model import ParamValue

RESERVED: frozenset[str] = frozenset(
    {
        "UUID",
        "START_TIME",
        "END_TIME",
        "JOB_STATUS",
        "EFS_INPUT_NAME",
        "EFS_OUTPUT_NAME",
        "LUSTRE_INPUT_NAME",
        "LUSTRE_OUTPUT_NAME",
        "ROOT_INPUT_NAME",
        "ROOT_OUTPUT_NAME",
        "INPUTS_BUCKET",
        "OUTPUTS_BUCKET",
        "ERROR_BUCKET",
        "INPUT_ZIP_NAME",
        "PATH",
        "HOSTNAME",
        "USES_EFS",
        "USES_LUSTRE",
        "LUSTRE_READ_ONLY_PATH",
        "EFS_READ_ONLY_PATH",
        "ULIMIT_FILENO",
        "IS_INVOKED",
        "ALLOW_DOCKER_ACCESS",
    }
)
"""Variables the payload runtime sets for every job; a parameter may not use these names."""

EXTRA_RESERVED: frozenset[str] = frozenset({"QUICK_DEPLOY_BUCKET", "ERRORS_BUCKET"})
"""Further variables this runtime sets, reserved for the same reason."""

_ALL_RESERVED = RESERVED | EXTRA_RESERVED
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SCALARS = "use a string, an integer, a boolean or null"


def validate_params(obj: object, *, source: str = "parameters") -> dict[str, ParamValue]:
    """Check `obj` against the parameter contract and return the normalised parameters.

    `obj` must be a dict. Keys are kept exactly (case-sensitive, same order); `null` values
    become `"None"` and integral floats become ints. Every problem found is reported in one
    ParamsError (one line per problem) whose message starts with `source`.
    """
    if not isinstance(obj, dict):
        raise ParamsError(f"{source} must be a JSON object, got {_json_kind(obj)}")
    problems: list[str] = []
    reserved: list[str] = []
    result: dict[str, ParamValue] = {}
    for key, value in obj.items():
        key_problem = _key_problem(key)
        if key_problem:
            problems.append(key_problem)
        elif key.upper() in _ALL_RESERVED:
            reserved.append(key)
        normalised, value_problem = _normalise_value(key, value)
        if value_problem:
            problems.append(value_problem)
        elif normalised is not None and not key_problem:
            result[key] = normalised
    if reserved:
        problems.append(_reserved_problem(reserved))
    problems += env_size_problems(result)
    if problems:
        raise ParamsError(f"invalid {source}:\n" + "\n".join(f"  - {p}" for p in problems))
    return result


MAX_ARG_STRLEN = 32 * 4096
"""Linux's limit on one `NAME=value` string of an environment, its final NUL included."""

RUNTIME_ENV_MARGIN = 64 << 10
"""Bytes of the environment kept for what the runtime adds to a job's parameters (the reserved
variables, the worker's inherited variables, the command line)."""

_FALLBACK_ARG_MAX = 2 << 20  # Linux's usual total when sysconf cannot say
_POINTER = 8  # the kernel counts one pointer per variable against the same total


def env_entry_size(name: str, value: str) -> int:
    """Bytes that `NAME=value` takes in a process's environment, its NUL included."""
    return len(name.encode("utf-8")) + 1 + len(value.encode("utf-8", "surrogateescape")) + 1


@functools.cache
def env_total_limit() -> int:
    """Bytes a job's parameters and payload.env may take in all: this host's ARG_MAX (the
    limit on the arguments plus the environment of a new process) less RUNTIME_ENV_MARGIN."""
    try:
        arg_max = os.sysconf("SC_ARG_MAX")
    except (ValueError, OSError):
        arg_max = -1
    return (arg_max if arg_max > 0 else _FALLBACK_ARG_MAX) - RUNTIME_ENV_MARGIN


def env_size_problems(
    params: Mapping[str, ParamValue], extra: Mapping[str, str] | None = None
) -> list[str]:
    """Why the environment made of `params` (plus `extra`, e.g. payload.env, which the
    parameters do not override) could never be given to a payload, or [] when it can.

    Each `NAME=value` must stay under MAX_ARG_STRLEN, and all of them (a pointer each
    included) under `env_total_limit()`; otherwise every attempt would fail to start with
    `Argument list too long`. Runs for every submitted job, so an upper bound is tried first
    and the exact sizes are measured only when it does not settle the question.
    """
    rough = 0
    for name, value in params.items():
        rough += _rough_size(name, value)
    if extra:
        for name, text in extra.items():
            rough += _rough_size(name, text)
    if rough <= MAX_ARG_STRLEN or (
        rough <= env_total_limit()
        and all(_rough_size(k, v) <= MAX_ARG_STRLEN for k, v in params.items())
        and all(_rough_size(k, v) <= MAX_ARG_STRLEN for k, v in (extra or {}).items())
    ):
        return []  # the total bounds each variable too (the usual case: small jobs)
    return _exact_problems(params, extra or {})


def _rough_size(name: str, value: ParamValue) -> int:
    """At least the bytes `name=value` takes (a UTF-8 character is at most 4 bytes, a
    decimal digit holds more than 3 bits), plus a pointer."""
    if isinstance(value, str):
        return len(name) + 4 * len(value) + 2 + _POINTER
    return len(name) + value.bit_length() // 3 + 4 + _POINTER  # sign and digits, `=`, NUL


def _exact_problems(params: Mapping[str, ParamValue], extra: Mapping[str, str]) -> list[str]:
    problems = []
    total = 0
    for name, value in {**extra, **{k: env_value(v) for k, v in params.items()}}.items():
        size = env_entry_size(name, value)
        total += size + _POINTER
        if size > MAX_ARG_STRLEN:
            problems.append(
                f"{name!r}: the value takes {size:,} bytes as the variable {name}=...; "
                f"Linux allows at most {MAX_ARG_STRLEN:,} bytes (128 KiB) per variable, so pass "
                "large data in an input bundle instead"
            )
    limit = env_total_limit()
    if total > limit:
        problems.append(
            f"the job's variables take {total:,} bytes in all; this host allows "
            f"{limit:,} bytes (its ARG_MAX less {RUNTIME_ENV_MARGIN:,} bytes kept for the "
            "runtime's own variables), so pass large data in an input bundle instead"
        )
    return problems


def check_env_size(
    params: Mapping[str, ParamValue], extra: Mapping[str, str], *, source: str = "parameters"
) -> None:
    """Raise ParamsError when `params` together with `extra` (payload.env) cannot be a
    payload's environment (see `env_size_problems`)."""
    problems = env_size_problems(params, extra)
    if problems:
        raise ParamsError(f"invalid {source}:\n" + "\n".join(f"  - {p}" for p in problems))


def env_value(value: ParamValue) -> str:
    """The text a payload sees for `value`: `True`/`False`, decimal digits, or the string."""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, int):
        return str(value)
    return value


def parse_params_json(text: str, *, source: str) -> dict[str, ParamValue]:
    """Parse `text` as a JSON object of parameters and validate it (see `validate_params`).

    Raises ParamsError naming `source` for invalid JSON (with line and column), for a key that
    appears twice in one object, and for every contract violation.
    """
    text = text.removeprefix("\ufeff")
    if not text.strip():
        raise ParamsError(f"{source} is empty: it must hold a JSON object such as {{}}")
    duplicates: list[str] = []
    try:
        obj = json.loads(text, object_pairs_hook=lambda pairs: _no_duplicates(pairs, duplicates))
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column" if "\n" in text.strip() else "column"
        raise ParamsError(f"{source} is not valid JSON: {exc.msg} at {where} {exc.colno}") from exc
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise ParamsError(f"{source} is not usable JSON: {exc}") from exc
    except RecursionError:  # thousands of nested [ or {: no parameter object looks like that
        raise ParamsError(
            f"{source} is nested too deeply to be a parameter object (a flat JSON object)"
        ) from None
    if duplicates:
        names = ", ".join(repr(d) for d in dict.fromkeys(duplicates))
        raise ParamsError(
            f"{source} repeats the key(s) {names} in one object: only one value would be kept, "
            "so remove the duplicates"
        )
    return validate_params(obj, source=source)


MAX_REPORTED = 20
"""How many bad lines of a --json-file one error lists (their total is always given)."""


def json_file_params(
    path: Path, defaults: Mapping[str, ParamValue] | None = None, *, stdin: Iterable[str] = ()
) -> Iterator[dict[str, ParamValue]]:
    """The jobs of a --json-file, each with `defaults` under its own parameters.

    The file (UTF-8, a leading BOM allowed; `-` reads `stdin`) holds one JSON object, an array
    of objects, or one object per line (JSON lines, blank lines skipped). JSON lines are read
    and yielded one at a time; a bad line or item does not stop the reading: once the file is
    read, one ParamsError lists every bad one with its number, so a caller that registers the
    jobs as one all-or-nothing submission keeps none of them. An unreadable file (missing, a
    folder, not UTF-8) is a ParamsError naming it.
    """
    source = "stdin" if str(path) == "-" else str(path)
    lines = _guarded(iter(stdin) if str(path) == "-" else _file_lines(path), source)
    first, skipped = next(lines, "").removeprefix("\ufeff"), 0
    while first and not first.strip():
        first, skipped = next(lines, ""), skipped + 1
    if _one_value(first):
        rest = _chain(first, lines)
        yield from _json_lines(rest, base=dict(defaults or {}), source=source, start=skipped + 1)
        return
    body = first + "".join(lines)
    if body.lstrip().startswith("["):
        yield from _array(body, dict(defaults or {}), source)
        return
    try:
        yield {**(defaults or {}), **parse_params_json(body, source=source)}
    except ParamsError:
        if not _looks_like_lines(body):
            raise
        # JSON lines whose first line is bad: report every bad line, not only that one
        yield from _json_lines(iter(body.splitlines()), base=dict(defaults or {}), source=source)


def _file_lines(path: Path) -> Iterator[str]:
    if path.is_dir():
        raise ParamsError(f"--json-file {path} is a folder: give a file of JSON objects")
    with path.open(encoding="utf-8") as handle:
        yield from handle


def _guarded(lines: Iterator[str], source: str) -> Iterator[str]:
    """`lines`, with read and decoding failures turned into a ParamsError naming `source`."""
    try:
        yield from lines
    except UnicodeDecodeError as exc:
        raise ParamsError(f"{source} is not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    except OSError as exc:
        raise ParamsError(f"cannot read --json-file {source}: {exc.strerror or exc}") from None


def _looks_like_lines(body: str) -> bool:
    """Whether `body`, which is not one JSON value, was meant as JSON lines: one of its lines
    is an object by itself, or each of its (several) lines starts one."""
    lines = [line for line in body.splitlines() if line.strip()]
    if any(_one_value(line) for line in lines):
        return True
    return len(lines) > 1 and all(line.lstrip().startswith("{") for line in lines)


def _one_value(line: str) -> bool:
    """Whether `line` holds one complete JSON object (so its file is JSON lines)."""
    if not line.lstrip().startswith("{"):
        return False
    try:
        json.loads(line)
    except (ValueError, RecursionError):
        return False
    return True


def _json_lines(
    lines: Iterator[str], *, base: dict[str, ParamValue], source: str, start: int = 1
) -> Iterator[dict[str, ParamValue]]:
    """One job per non-blank line; the first of `lines` is line `start` of the file."""
    bad = _Problems(source, "line")
    for n, line in enumerate(lines, start):
        if line.strip():
            try:
                yield {**base, **parse_params_json(line, source=f"line {n}")}
            except ParamsError as exc:
                bad.add(str(exc))
    bad.check()


def _chain(first: str, rest: Iterator[str]) -> Iterator[str]:
    yield first
    yield from rest


def _array(body: str, base: dict[str, ParamValue], source: str) -> Iterator[dict[str, ParamValue]]:
    """The jobs of a file holding one JSON array of objects."""
    try:
        items = json.loads(body)
    except json.JSONDecodeError as exc:
        raise ParamsError(
            f"{source} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from exc
    except RecursionError:
        raise ParamsError(f"{source} is nested too deeply to hold parameter objects") from None
    bad = _Problems(source, "item")
    for n, item in enumerate(items, 1):
        try:
            yield {**base, **validate_params(item, source=f"item {n}")}
        except ParamsError as exc:
            bad.add(str(exc))
    bad.check()


class _Problems:
    """The bad lines (or items) of one file: the first MAX_REPORTED, and how many in all."""

    def __init__(self, source: str, unit: str) -> None:
        self.source, self.unit = source, unit
        self.shown: list[str] = []
        self.count = 0

    def add(self, problem: str) -> None:
        self.count += 1
        if len(self.shown) < MAX_REPORTED:
            self.shown.append(problem)

    def check(self) -> None:
        """Raise one ParamsError listing the problems, if there were any."""
        if not self.count:
            return
        more = self.count - len(self.shown)
        tail = f"\n... and {more} more bad {self.unit}(s)" if more else ""
        raise ParamsError(
            f"{self.source}: {self.count} bad {self.unit}(s), nothing was submitted:\n"
            + "\n".join(self.shown)
            + tail
        )


def find_key(params: Mapping[str, ParamValue], name: str) -> str | None:
    """The text value (see `env_value`) of the key equal to `name` ignoring case, or None.

    When several keys match (e.g. `tag` and `TAG`), the last one in `params` order wins.
    """
    wanted = name.upper()
    found: str | None = None
    for key, value in params.items():
        if key.upper() == wanted:
            found = env_value(value)
    return found


def _no_duplicates(pairs: list[tuple[str, object]], duplicates: list[str]) -> dict[str, object]:
    """object_pairs_hook for json.loads that records keys repeated within one object."""
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            duplicates.append(key)
        result[key] = value
    return result


def _key_problem(key: object) -> str | None:
    """Why `key` cannot be an environment variable name, or None if it can."""
    if not isinstance(key, str):
        return f"key {key!r} is not a string"
    if not key:
        return "an empty key is not a valid variable name"
    if not _NAME.fullmatch(key):
        return (
            f"key {key!r} is not a valid variable name: use only ASCII letters, digits and _, "
            "and do not start with a digit"
        )
    return None


def _normalise_value(key: object, value: object) -> tuple[ParamValue | None, str | None]:
    """Return (normalised value, None) or (None, problem) for the value of `key`."""
    if value is None:
        return "None", None
    if isinstance(value, bool):
        return value, None
    if isinstance(value, int):
        return _checked_int(key, value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return None, f"{key!r}: {value} is not a finite number; {_SCALARS}"
        if not value.is_integer():
            return None, f"{key!r}: {value} is not a whole number; pass it as a string instead"
        return _checked_int(key, int(value))
    if isinstance(value, str):
        return _checked_str(key, value)
    if isinstance(value, dict):
        return None, f"{key!r}: nested objects are not allowed; {_SCALARS}"
    if isinstance(value, list | tuple):
        return None, f"{key!r}: arrays are not allowed; {_SCALARS}"
    return None, f"{key!r}: values of type {type(value).__name__} are not allowed; {_SCALARS}"


def _checked_int(key: object, value: int) -> tuple[ParamValue | None, str | None]:
    try:
        str(value)
    except ValueError:
        return None, f"{key!r}: the integer is too large; pass it as a string instead"
    return value, None


def _checked_str(key: object, value: str) -> tuple[ParamValue | None, str | None]:
    if "\x00" in value:
        return None, f"{key!r}: the value contains a NUL byte, which no environment can hold"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None, f"{key!r}: the value is not valid Unicode (it holds a lone surrogate)"
    return value, None


def _reserved_problem(keys: list[str]) -> str:
    names = ", ".join(keys)
    return (
        f"reserved name(s) {names}: these variables are set by the runtime for every job; "
        "rename the parameter(s)"
    )


def _json_kind(obj: object) -> str:
    """How `obj` reads in JSON terms, for error messages."""
    if obj is None:
        return "null"
    if isinstance(obj, bool):
        return "a boolean"
    if isinstance(obj, int | float):
        return "a number"
    if isinstance(obj, str):
        return "a string"
    if isinstance(obj, list | tuple):
        return "a list"
    return f"a {type(obj).__name__}"
