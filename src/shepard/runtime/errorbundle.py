"""Error bundles: what a failed attempt leaves for people to look at.

`log@<UUID>_<START_TIME>.zip` in the errors store holds:
- `stdout.txt`, `stderr.txt`: the payload's output (the last LOG_TAIL_BYTES of each, with a
  note first when the start was cut off);
- `exit_status.txt`: job id, attempt, exit code or signal, reason, start and end times (UTC),
  and the traceback of an internal error;
- `workspace.txt`: every path under the job's folders with its size. Under `secrets/` only
  names are listed; no file content of the workspace is ever copied into the bundle.
"""

from __future__ import annotations

import os
import signal
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from shepard.runtime.contract import format_utc
from shepard.runtime.outputs import store_file
from shepard.runtime.workspace import walk_tree
from shepard.storage import ObjectStore

LOG_TAIL_BYTES = 10 << 20
MAX_LISTED = 10_000  # entries of workspace.txt


@dataclass(frozen=True, slots=True)
class AttemptReport:
    """The facts exit_status.txt records. `returncode` follows Popen (negative: signal);
    None when the payload never ran. `detail` is extra text such as a traceback."""

    job_id: str
    attempt: int
    start_time: int
    end_time: float
    reason: str
    returncode: int | None = None
    detail: str | None = None


def error_bundle_key(job_id: str, start_time: int) -> str:
    return f"log@{job_id}_{start_time}.zip"


def describe_returncode(returncode: int | None) -> str:
    """`exit code 3`, `signal SIGKILL (9)`, or a note that the payload did not run."""
    if returncode is None:
        return "none (the payload did not run)"
    if returncode >= 0:
        return f"exit code {returncode}"
    return f"signal {signal_name(-returncode)} ({-returncode})"


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def write_error_bundle(
    store: ObjectStore,
    key: str,
    report: AttemptReport,
    *,
    logs: tuple[Path, Path] | None,
    folders: Sequence[Path],
    secrets: Path | None,
    cap: int = LOG_TAIL_BYTES,
) -> None:
    """Build the error bundle of `report` and put it into `store` under `key`.

    `logs` are the payload's (stdout, stderr) files (None or missing files: the payload did not
    start); `folders` are the
    job's workspace folders to list; `secrets` is the folder whose files are listed by name
    only. Raises StorageError/OSError when the bundle cannot be written or stored.
    """
    fd, name = tempfile.mkstemp(prefix=".tmp-errors-", suffix=".zip")
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as raw, zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as zf:
            _add_log(zf, "stdout.txt", None if logs is None else logs[0], cap)
            _add_log(zf, "stderr.txt", None if logs is None else logs[1], cap)
            zf.writestr("exit_status.txt", exit_status_text(report))
            zf.writestr("workspace.txt", workspace_listing(folders, secrets))
        store_file(store, key, path)
    finally:
        path.unlink(missing_ok=True)


def exit_status_text(report: AttemptReport) -> str:
    lines = [
        f"job: {report.job_id}",
        f"attempt: {report.attempt}",
        f"exit: {describe_returncode(report.returncode)}",
        f"reason: {report.reason}",
        f"start: {format_utc(report.start_time)} (START_TIME {report.start_time})",
        f"end: {format_utc(report.end_time)}",
    ]
    if report.detail:
        lines += ["", report.detail.rstrip("\n")]
    return "\n".join(lines) + "\n"


def workspace_listing(folders: Sequence[Path], secrets: Path | None) -> str:
    """A `tree`-like listing of `folders`: one line per entry, indented by depth, with sizes.

    Entries under `secrets` show their names only."""
    lines: list[str] = []
    secret_prefix = "\0" if secrets is None else str(secrets) + os.sep
    for folder in folders:
        if not folder.is_dir():
            lines.append(f"{folder}/ (missing)")
            continue
        lines.append(f"{folder}/")
        for _rel, entry, depth in walk_tree(folder):
            if len(lines) >= MAX_LISTED:
                return "\n".join([*lines, f"... listing cut after {MAX_LISTED} entries"]) + "\n"
            hidden = entry.path.startswith(secret_prefix)
            lines.append("  " * (depth + 1) + _describe(entry, hidden))
    return "\n".join(lines) + "\n"


def _describe(entry: os.DirEntry[str], name_only: bool) -> str:
    try:
        if entry.is_symlink():
            return entry.name if name_only else f"{entry.name} -> {os.readlink(entry.path)}"
        if entry.is_dir(follow_symlinks=False):
            return entry.name + "/"
        if name_only:
            return entry.name
        if entry.is_file(follow_symlinks=False):
            return f"{entry.name}  {entry.stat(follow_symlinks=False).st_size} bytes"
        return f"{entry.name}  (special file)"
    except OSError as exc:
        return f"{entry.name}  (unreadable: {exc.strerror})"


def _add_log(zf: zipfile.ZipFile, name: str, log: Path | None, cap: int) -> None:
    try:
        if log is None:
            raise FileNotFoundError(name)
        fh = open(log, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        zf.writestr(name, "(no output: the payload did not start)\n")
        return
    with fh, zf.open(name, "w", force_zip64=cap >= 1 << 31) as out:
        _copy_tail(fh, out, cap)


def _copy_tail(src: IO[bytes], dst: IO[bytes], cap: int) -> None:
    size = os.fstat(src.fileno()).st_size
    if size > cap:
        src.seek(size - cap)
        note = f"[truncated: the first {size - cap} bytes are left out; the last {cap} follow]\n"
        dst.write(note.encode())
    left = cap  # the log may still grow if something outside the group writes to it
    while left > 0 and (chunk := src.read(min(left, 1 << 20))):
        dst.write(chunk)
        left -= len(chunk)
