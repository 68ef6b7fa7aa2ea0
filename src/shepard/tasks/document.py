"""A tasks.json document: read, checked against the shipped JSON Schema (every error, with its
path and a did-you-mean for a misspelled key), and its variables substituted.

Substitution follows the original's rule (`os.path.expandvars`): `${NAME}` and `$NAME` (the
longest run of letters, digits and `_`) take the variable's value, and an undefined variable
is left as written. Unlike the original it is applied to the parsed document's string values,
not to the file's text, so a value holding `"` or `\\` cannot break the JSON.

Needs the `tasks` extra (jsonschema), imported on first use.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

SCHEMA_FILE = "tasks.schema.json"
PHASES = ("fetch", "tasks", "move", "store")

_VAR = re.compile(r"\$(\w+|\{[^}]*\})", re.ASCII)


class DocumentError(Exception):
    """The document cannot be run: unreadable, not JSON, or invalid. `problems` lists every
    error found, each naming where it is (`tasks[2].comand: unknown key, ...`)."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: not a valid tasks document:\n{lines}")


def schema_text() -> str:
    """The JSON Schema shipped in the package (what editors can use too)."""
    from importlib import resources

    return resources.files("shepard.tasks").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")


@cache
def _validator() -> Any:
    try:
        import jsonschema
    except ImportError:  # pragma: no cover - the extra is part of dev
        raise DocumentError(
            "tasks", ["checking a tasks document needs jsonschema: pip install 'shepard[tasks]'"]
        ) from None
    schema = json.loads(schema_text())
    return jsonschema.Draft202012Validator(schema)


def read(path: Path) -> Any:
    """The parsed JSON of `path` (key order kept: it is the phase order); DocumentError when it
    cannot be read or parsed."""
    return read_digest(path)[0]


def read_digest(path: Path) -> tuple[Any, str]:
    """`read`, and the SHA-256 of the file's bytes."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DocumentError(str(path), [f"cannot read it: {exc.strerror or exc}"]) from None
    try:
        return json.loads(raw.decode("utf-8")), hashlib.sha256(raw).hexdigest()
    except ValueError as exc:
        raise DocumentError(str(path), [f"not JSON: {exc}"]) from None


def checked_digest(path: Path) -> str | None:
    """The SHA-256 of the document at `path` when it is valid, else None. A runner given it
    (`--checked`) skips the schema check of a file with that digest: loading jsonschema
    costs a job start some 0.2-0.6 s of CPU."""
    try:
        doc, digest = read_digest(path)
    except DocumentError:
        return None
    return None if problems(doc) else digest


def problems(doc: Any) -> list[str]:
    """Every error of `doc` against the schema, in document order, each with its path."""
    found = []
    for error in _validator().iter_errors(doc):
        found.extend(_describe(error))
    return sorted(set(found), key=found.index)


def check(doc: Any, source: str) -> dict[str, Any]:
    """`doc` when valid, else DocumentError listing every problem."""
    listed = problems(doc)
    if listed:
        raise DocumentError(source, listed)
    assert isinstance(doc, dict)
    return doc


def load(path: Path, env: Mapping[str, str], *, checked: str | None = None) -> dict[str, Any]:
    """Read, substitute `env` into, and check the document at `path`. `checked`: the digest of
    a file found valid already (`checked_digest`): a file with it is not checked again
    (substitution only puts text into text)."""
    doc, digest = read_digest(path)
    if checked is not None and digest == checked and isinstance(doc, dict):
        result: dict[str, Any] = substitute(doc, env)
        return result
    return check(substitute(doc, env), str(path))


def substitute(value: Any, env: Mapping[str, str]) -> Any:
    """`value` with `$NAME`/`${NAME}` replaced in every string (keys included), undefined
    names left as they are."""
    if isinstance(value, str):
        return expand(value, env)
    if isinstance(value, list):
        return [substitute(v, env) for v in value]
    if isinstance(value, dict):
        return {expand(k, env): substitute(v, env) for k, v in value.items()}
    return value


def expand(text: str, env: Mapping[str, str]) -> str:
    """`os.path.expandvars` over `env` instead of the process's environment."""
    if "$" not in text:
        return text

    def one(match: re.Match[str]) -> str:
        name = match[1]
        if name.startswith("{"):
            name = name[1:-1]
        value = env.get(name)
        return match[0] if value is None else value

    return _VAR.sub(one, text)


# -- messages ----------------------------------------------------------------------------------


def where(path: Any) -> str:
    """`tasks[2].command` from a jsonschema path."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(document)"


def _describe(error: Any) -> list[str]:
    here = where(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = list(error.schema.get("properties", {}))
        extra = [k for k in error.instance if k not in allowed]
        return [f"{_join(here, k)}: unknown key{_did_you_mean(k, allowed)}" for k in extra]
    if error.validator == "required":
        missing = re.match(r"'([^']*)' is a required property", error.message)
        key = missing[1] if missing else error.message
        return [f"{_join(here, key)}: missing (required)"]
    if error.validator == "oneOf" and error.schema.get("oneOf"):
        return [f"{here}: expected a string or an array of strings"]
    if error.validator == "dependentRequired":
        return [f"{here}: {error.message}"]
    return [f"{here}: {error.message}"]


def _join(here: str, key: str) -> str:
    return key if here == "(document)" else f"{here}.{key}"


def _did_you_mean(key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    if not close:
        close = [a for a in allowed if a.lower() == key.lower()]
    return f", did you mean {close[0]}?" if close else f" (known: {', '.join(allowed)})"
