"""The `tasks` steps: a shell command, run once, or once per input file matched by
`inputFolder` + `inputFilePattern` (the `[INPUT_FILE_PATH]` macro), `workers` at a time.

As in the original: every item runs to the end even after one fails; the step's code is the
status of a failing item (the last one to end); a command killed by signal N gives 256 - N; a
timeout or an error starting it gives 244; no matching file gives 232. Better than the
original: each command runs as a process group of its own, so a timeout kills the whole
command, not only `/bin/sh`; `logBehavior: "capture"` sends the whole command's output to
`logs/<name>-<tag>.log` and `.err`, not only its last simple command's; and a pattern that
matches nothing with `exitOnError: false` is a warning instead of a crash (code 4).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import IO

from shepard.tasks.runner import NO_INPUT_FILES, TASK_EXCEPTION, Context, Step

MACRO = "[INPUT_FILE_PATH]"
LOG_TAIL_LINES = 9
KILL_GRACE_S = 2.0


def run_task(step: Step, ctx: Context) -> int:
    """Run one `tasks` step; its exit code (0: every item succeeded)."""
    name, command = str(step["name"]), str(step["command"])
    if out := step.get("outputFolder"):
        ctx.path(out).mkdir(parents=True, exist_ok=True)
    items = work_list(step, ctx)
    if not items:
        ctx.say(
            f"Error preparing {name} work list. No files found in {step.get('inputFilePattern')}"
        )
        return NO_INPUT_FILES
    workers = min(int(step.get("workers") or 0) or ctx.cores, len(items))
    timeout = int(step.get("timeout") or 0)
    capture = step.get("logBehavior") == "capture"
    logs = ctx.path("logs")
    code = 0
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="task") as pool:
        futures = [
            pool.submit(
                run_item,
                command.replace(MACRO, item),
                ctx,
                timeout=timeout if timeout > 0 else None,
                capture=(logs / f"{name}-{tag(item)}") if capture else None,
            )
            for item in items
        ]
        for future in as_completed(futures):
            status = future.result()
            if status:
                code = status
    if capture:
        report_captured(logs, name, ctx, failed=code != 0)
    return code


def work_list(step: Step, ctx: Context) -> list[str]:
    """The input paths of the step (`Sites/X/haz.in`, relative as written), or [""] for a
    step without a pattern (the macro then becomes empty)."""
    pattern = step.get("inputFilePattern")
    if not pattern:
        return [""]
    folder = Path(str(step["inputFolder"]))
    root = ctx.path(str(folder))
    found = sorted(root.rglob(pattern))
    return [str(folder / p.relative_to(root)) for p in found]


def tag(item: str) -> str:
    """The original's log-name tag: `/` -> `-`, with `.in` and `.txt` removed."""
    return item.replace("/", "-").replace(".in", "").replace(".txt", "")


def run_item(command: str, ctx: Context, *, timeout: float | None, capture: Path | None) -> int:
    """Run `command` through /bin/sh -c as a process group; its exit status as the original
    reports it (see the module docstring)."""
    out: IO[bytes] | None = None
    err: IO[bytes] | None = None
    try:
        if capture is not None:
            capture.parent.mkdir(parents=True, exist_ok=True)
            out = open(f"{capture}.log", "wb")  # noqa: SIM115 - closed below
            err = open(f"{capture}.err", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            ["/bin/sh", "-c", command], cwd=ctx.cwd, env=dict(ctx.env), stdin=subprocess.DEVNULL,
            stdout=out, stderr=err, process_group=0,
        )  # fmt: skip
    except OSError as exc:
        ctx.say(f"cannot start {command!r}: {exc}")
        return TASK_EXCEPTION
    finally:
        for f in (out, err):
            if f is not None:
                f.close()
    ctx.children.add(proc.pid)
    try:
        return _wait(proc, command, ctx, timeout)
    finally:
        ctx.children.discard(proc.pid)


def _wait(proc: subprocess.Popen[bytes], command: str, ctx: Context, timeout: float | None) -> int:
    try:
        status = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        ctx.say(f"timeout after {timeout:g}s: {command}")
        _kill_group(proc)
        return TASK_EXCEPTION
    if ctx.children.stopping.is_set():
        _kill_group(proc)
    if status < 0:
        return 256 + status
    return status


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after KILL_GRACE_S, to the whole group of `proc`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except OSError:
            return
        try:
            proc.wait(timeout=KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            continue
        with contextlib.suppress(OSError):  # the shell ended; what it left in its group goes too
            os.killpg(proc.pid, signal.SIGKILL)
        return


def report_captured(logs: Path, name: str, ctx: Context, *, failed: bool) -> None:
    """Delete the step's empty `.err` files; after a failure print every remaining `.err`
    with the last lines of its `.log` (they reach the job's log and its error bundle)."""
    for err in sorted(logs.glob(f"{_glob_escape(name)}-*.err")):
        if err.stat().st_size == 0:
            err.unlink()
        elif failed:
            log = err.with_suffix(".log")
            tail = _tail(log) if log.exists() else []
            ctx.say(f"--- {err.name} ---\n{err.read_text(errors='replace').rstrip()}")
            if tail:
                ctx.say(f"--- {log.name} (last {len(tail)} lines) ---\n" + "\n".join(tail))


def _tail(path: Path) -> list[str]:
    return path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]


def _glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)
