"""A job attempt's folders: where they are, creating them, walking them, removing them."""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from shepard.runtime.context import RuntimeContext

INPUT_DIR = "input"
OUTPUT_DIR = "output"
SECRETS_DIR = "secrets"

_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

TreeEntry = tuple[str, os.DirEntry[str], int]
"""(path relative to the walked folder with `/` separators, its DirEntry, its depth from 0)."""


class SetupError(Exception):
    """The attempt could not be prepared. The message says why, for the job's reason.

    `retryable` is False when another attempt would fail the same way (bad configuration or
    bad parameters), True when the cause may go away (missing object, full disk, ...).
    """

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class Workspace:
    """The folders of one job: `root` is `<workspace_root>/<UUID>` (the payload's working
    directory); `efs` and `lustre` are `<mount>/<UUID>` when those filesystems are configured.
    Each holds `input/` and `output/`; the root input also holds `secrets/`."""

    root: Path
    efs: Path | None = None
    lustre: Path | None = None
    reused: bool = False  # root is a worker slot's folder, kept (emptied) between jobs
    input: Path = field(init=False)  # ROOT_INPUT_NAME
    output: Path = field(init=False)  # ROOT_OUTPUT_NAME
    secrets: Path = field(init=False)  # ROOT_INPUT_NAME/secrets

    def __post_init__(self) -> None:
        # Computed once: a job reads these paths many times and joins cost microseconds.
        object.__setattr__(self, "input", self.root / INPUT_DIR)
        object.__setattr__(self, "output", self.root / OUTPUT_DIR)
        object.__setattr__(self, "secrets", self.input / SECRETS_DIR)

    def folders(self) -> tuple[Path, ...]:
        """The job's top folders (root, then efs and lustre when configured)."""
        return tuple(f for f in (self.root, self.efs, self.lustre) if f is not None)

    def output_folders(self) -> tuple[tuple[str, Path], ...]:
        """(kind, folder) of every output folder; kind is `root`, `efs` or `lustre`."""
        found = [("root", self.output)]
        found += [(k, f / OUTPUT_DIR) for k, f in (("efs", self.efs), ("lustre", self.lustre)) if f]
        return tuple(found)


def plan_workspace(ctx: RuntimeContext, job_id: str, slot: Path | None = None) -> Workspace:
    """The Workspace of `job_id` under `ctx` (nothing is created).

    With `slot`, the root is that folder (a worker slot's, reused job after job and emptied
    in between) instead of `<workspace_root>/<UUID>`: creating and removing folders is the
    dearest part of a short job on many filesystems.

    Raises SetupError (not retryable) when `job_id` is not a plain folder name, so a bad id can
    never make the runtime create or remove anything outside its folders.
    """
    if not _SAFE_ID.fullmatch(job_id):
        raise SetupError(f"job id {job_id!r} is not a safe folder name", retryable=False)
    if slot is not None and ctx.efs is None and ctx.lustre is None:
        return _slot_workspace(slot)  # the same for every job of the slot
    return Workspace(
        root=slot or ctx.workspace_root / job_id,
        efs=None if ctx.efs is None else ctx.efs / job_id,
        lustre=None if ctx.lustre is None else ctx.lustre / job_id,
        reused=slot is not None,
    )


@functools.lru_cache(maxsize=256)
def _slot_workspace(slot: Path) -> Workspace:
    return Workspace(root=slot, reused=True)


class _Emptied:
    """Slot folders this process emptied after their last job: nothing has run in them since
    (their payloads' process groups were killed), so the next job need not empty them again."""

    slots: ClassVar[set[str]] = set()


def create_workspace(ws: Workspace) -> None:
    """Create every folder's `input/` and `output/`, first removing what an earlier attempt of
    the same job may have left behind (e.g. after a crash); a reused slot is emptied unless
    this process emptied it after its previous job. Raises SetupError on failure."""
    try:
        for folder in ws.folders():
            if ws.reused and folder == ws.root:
                clean = str(folder)
                if clean in _Emptied.slots:
                    _Emptied.slots.discard(clean)
                else:
                    empty_slot(folder)
                continue
            _fresh_folder(folder)
            os.mkdir(folder / INPUT_DIR)
            os.mkdir(folder / OUTPUT_DIR)
    except OSError as exc:
        raise SetupError(f"cannot create the workspace: {exc}") from exc


def _fresh_folder(folder: Path) -> None:
    """Create `folder` (and its parents), empty: a leftover one is removed first."""
    try:
        os.mkdir(folder)  # the common case: one system call
    except FileExistsError:
        remove_tree(folder)
        os.mkdir(folder)
    except FileNotFoundError:
        os.makedirs(folder)


def remove_workspace(ws: Workspace) -> None:
    """Remove all the job's folders (a reused slot is emptied, not removed). Never raises."""
    for folder in ws.folders():
        with contextlib.suppress(Exception):
            if ws.reused and folder == ws.root:
                empty_slot(folder)
                _Emptied.slots.add(str(folder))
            else:
                remove_tree(folder)


def vacate_slot(folder: Path) -> None:
    """Remove everything inside a slot folder but the folder itself (it stays the process's
    working directory): what an idle worker leaves, nothing of its jobs, not even their empty
    folders. The next job's `create_workspace` makes them again. Never raises."""
    with contextlib.suppress(OSError):
        with os.scandir(folder) as it:
            entries = [entry.path for entry in it]
        for path in entries:
            remove_tree(Path(path))
    _Emptied.slots.discard(str(folder))


_SLOT_KEEP: dict[str, Any] = {INPUT_DIR: {SECRETS_DIR: {}}, OUTPUT_DIR: {}}


def empty_slot(folder: Path) -> None:
    """Make a slot folder hold just empty `input/`, `input/secrets/` and `output/`, removing
    everything else but keeping those folders (no mkdir/rmdir for the common case). Works on
    plain strings: this runs once per job, and its cost is mostly Python's."""
    path = str(folder)
    try:
        kept = _empty(path, _SLOT_KEEP)
    except FileNotFoundError:
        os.makedirs(path, exist_ok=True)
        kept = set()
    for sub in (INPUT_DIR, OUTPUT_DIR):
        if sub not in kept:
            with contextlib.suppress(FileExistsError):
                os.mkdir(os.path.join(path, sub))


def _empty(path: str, keep: dict[str, Any]) -> set[str]:
    """Remove the entries of `path`, except folders named in `keep`, which are emptied;
    return the names of the folders kept."""
    with os.scandir(path) as it:
        entries = list(it)
    kept = set()
    for entry in entries:
        inner = keep.get(entry.name)
        if not entry.is_dir(follow_symlinks=False):
            os.unlink(entry.path)
        elif inner is None:
            remove_tree(Path(entry.path))
        else:
            _empty(entry.path, inner)
            kept.add(entry.name)
    return kept


def remove_tree(path: Path) -> None:
    """Remove `path` and everything below it (symlinks are removed, never followed), even
    folders the payload made read-only. Raises OSError if something could not be removed."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(mode):
        os.unlink(path)
        return
    try:
        _remove(str(path))
    except (OSError, RecursionError):
        _make_writable(path)
        shutil.rmtree(path)


def _remove(path: str) -> None:
    """Fast removal with plain system calls (shutil.rmtree costs several more per folder)."""
    with os.scandir(path) as it:
        for entry in it:
            if entry.is_dir(follow_symlinks=False):
                _remove(entry.path)
            else:
                os.unlink(entry.path)
    os.rmdir(path)


def walk_tree(folder: Path) -> Iterator[TreeEntry]:
    """Every entry under `folder`, depth first, sorted by name, parents before children.

    Symlinks are reported but never followed; unreadable folders are reported but not entered.
    """
    pending = [_children(folder, "", 0)]
    while pending:
        item = next(pending[-1], None)
        if item is None:
            pending.pop()
            continue
        yield item
        rel, entry, depth = item
        if entry.is_dir(follow_symlinks=False):
            pending.append(_children(Path(entry.path), rel + "/", depth + 1))


def _children(folder: Path, prefix: str, depth: int) -> Iterator[TreeEntry]:
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError:
        return iter(())
    return ((prefix + e.name, e, depth) for e in entries)


def _make_writable(root: Path) -> None:
    """Give the owner full access to every folder under `root` (so its content can go)."""
    pending = [str(root)]
    while pending:
        folder = pending.pop()
        with contextlib.suppress(OSError):
            os.chmod(folder, 0o700)
            with os.scandir(folder) as it:
                pending.extend(e.path for e in it if e.is_dir(follow_symlinks=False))
