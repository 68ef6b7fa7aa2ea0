"""Run a tasks document: its phases in document order, each step switched on or off by the
mode and by earlier failures, with Cloudburst's exit codes (docs/tasks.md has the table).

The flow is the original's (`fw_entrypoint.py`): the phase keys `fetch`, `tasks`, `move`,
`store` run in the order they appear in the document, other keys are ignored. A failing step
with `exitOnError` (the default) ends its phase at once; once a phase has failed, later phases
run only their `required` steps. A failing step with `exitOnError: false` is a warning (listed
again at the end). The first failing phase's code is the exit code. `LOCAL_MODE=1` skips the
store phase. Unlike the original, no failure ever exits 0.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shepard.tasks.document import PHASES

# exit codes (the original's numbers where it has one; docs/tasks.md)
UNEXPECTED = 4
STORE_NO_SOURCE = 43
EXTRACT_FAILED = 211
COMPRESS_FAILED = 212
MOVE_FAILED = 213
UPLOAD_FAILED = 215
UPLOAD_THREADS_FAILED = 216
DOWNLOAD_FAILED = 217
NO_OBJECT = 218
NO_INPUT_FILES = 232
TASK_EXCEPTION = 244
INVALID_DOCUMENT = 255

Step = Mapping[str, Any]
StepRunner = Callable[[Step, "Context"], int]


class Children:
    """The process groups of the commands running now, so that a stop (SIGTERM to the runner)
    reaches every one of them, each being a group of its own for its timeout."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._groups: set[int] = set()
        self.stopping = threading.Event()

    def add(self, pgid: int) -> None:
        with self._lock:
            self._groups.add(pgid)

    def discard(self, pgid: int) -> None:
        with self._lock:
            self._groups.discard(pgid)

    def signal_all(self, sig: int) -> None:
        with self._lock:
            groups = list(self._groups)
        for pgid in groups:
            with contextlib.suppress(OSError):
                os.killpg(pgid, sig)


@dataclass
class Context:
    """What steps need: the mode, the environment the commands get, the folder relative
    paths start from, S3 settings, and where to say things."""

    env: Mapping[str, str]
    cwd: Path
    mode: str = "default"
    local_mode: bool = False
    disk_stats: bool = False
    endpoint_url: str | None = None
    region: str | None = None
    cores: int = 1
    children: Children = field(default_factory=Children)
    say: Callable[[str], None] = print
    warnings: list[str] = field(default_factory=list)
    _s3: Any = None

    def s3(self) -> Any:
        """The S3 client (boto3, the same settings as the flock's S3 stores), made once."""
        if self._s3 is None:
            from shepard.storage.base import StoreOptions
            from shepard.storage.s3 import client_for

            options = StoreOptions(
                endpoint_url=self.endpoint_url, region=self.region, max_concurrency=10
            )
            self._s3 = client_for(options)
        return self._s3

    def path(self, text: str) -> Path:
        """A document path: relative ones start from `cwd`."""
        return self.cwd / text


def mode_of(env: Mapping[str, str]) -> str:
    """MODE_STR, or `default` when unset or empty (as the original)."""
    return env.get("MODE_STR") or "default"


def selected(step: Step, mode: str) -> bool:
    """Whether the mode lets `step` run: the original's substring test for a string
    (`post` matches `"full,post"`, and also `"postprocess"`), list membership for an array."""
    include, exclude = step.get("includeWhenMode"), step.get("excludeWhenMode")
    if include is not None and mode not in include:
        return False
    return not (exclude is not None and mode in exclude)


def step_runners() -> dict[str, StepRunner]:
    from shepard.tasks import commands, files, transfer

    return {
        "fetch": transfer.fetch,
        "tasks": commands.run_task,
        "move": files.move,
        "store": transfer.store,
    }


def run(doc: Mapping[str, Any], ctx: Context) -> int:
    """Run the phases of `doc` (checked already); return the exit code (0 only when nothing
    that counts failed)."""
    ctx.say(
        f"processing: program [{doc.get('programName')}] work item [{doc.get('itemName')}] "
        f"mode [{ctx.mode}] local-mode [{ctx.local_mode}]"
    )
    supported = doc.get("supportedModes")
    if supported and ctx.mode not in supported:
        ctx.say(f"warning: mode [{ctx.mode}] is not one of supportedModes {supported}")
    runners = step_runners()
    code = 0
    report_disk(ctx)
    for key, steps in doc.items():
        if key not in PHASES:
            continue
        if key == "store" and ctx.local_mode:
            ctx.say("LOCAL_MODE=1: skipping the store steps")
            continue
        phase_code = run_phase(key, steps, runners[key], ctx, prior_errors=code != 0)
        if key == "fetch":
            report_disk(ctx)
        if phase_code and not code:
            code = phase_code
        if ctx.children.stopping.is_set():
            break
    for warning in ctx.warnings:
        ctx.say(f"warning (exitOnError false): {warning}")
    code = exit_status(code)
    ctx.say(f"processing completed with exit code {code}")
    report_disk(ctx)
    return code


def report_disk(ctx: Context) -> None:
    """With DISK_STATS=1, the free space of the working folder's filesystem (the original
    printed `df -h` at the same points: start, after fetching, end)."""
    if ctx.disk_stats:
        usage = shutil.disk_usage(ctx.cwd)
        ctx.say(
            f"disk: {usage.used / 2**30:.1f} GiB used, {usage.free / 2**30:.1f} GiB free of "
            f"{usage.total / 2**30:.1f} GiB ({ctx.cwd})"
        )


def run_phase(
    kind: str, steps: list[Step], runner: StepRunner, ctx: Context, *, prior_errors: bool
) -> int:
    """One phase: its steps in order; the code of the failure that ended it, else 0."""
    for step in steps:
        name = step.get("name", "?")
        if not selected(step, ctx.mode):
            ctx.say(f"{kind} [{name}]: skipped (mode {ctx.mode})")
            continue
        if prior_errors and not step.get("required", False):
            ctx.say(f"{kind} [{name}]: skipped (an earlier phase failed; not required)")
            continue
        if ctx.children.stopping.is_set():
            return TASK_EXCEPTION
        ctx.say(f"{kind} [{name}]: starting")
        try:
            code = runner(step, ctx)
        except Exception as exc:  # the original: "unexpected error", code 4, phase over
            ctx.say(f"{kind} [{name}]: unexpected error: {exc!r}")
            return UNEXPECTED
        if not code:
            continue
        if step.get("exitOnError", True):
            ctx.say(f"{kind} [{name}]: failed with code {code}")
            return code
        ctx.warnings.append(f"{kind} [{name}] failed with code {code}")
        ctx.say(f"{kind} [{name}]: failed with code {code} (exitOnError false: going on)")
    return 0


def exit_status(code: int) -> int:
    """A process exit status for `code`: 0 stays 0, 1..255 stay, a negative one (a signal)
    becomes 256 - N, anything else that would wrap to 0 or beyond becomes 255."""
    if code == 0:
        return 0
    if code < 0:
        return 256 + code if code >= -255 else 255
    return code if code <= 255 else 255
