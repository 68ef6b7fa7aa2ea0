"""The `move` steps: local files and folders matched by `includeFilePattern` (recursive
globs under `inputFolder`), less those matching `excludeFilePattern`, moved to `outputFolder`
keeping their path relative to `inputFolder`; existing files are overwritten.

As in the original, a missing `inputFolder` moves nothing and succeeds (with a warning), and
a failure gives 213. Unlike the original, `inputFolder: "."` works, and an output folder that
lies inside the input folder is never moved into itself.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from shepard.tasks.runner import MOVE_FAILED, Context, Step


def move(step: Step, ctx: Context) -> int:
    """Run one `move` step; 0 or 213."""
    source = ctx.path(str(step["inputFolder"]))
    dest = ctx.path(str(step["outputFolder"]))
    excludes = list(step.get("excludeFilePattern") or [])
    if not source.is_dir():
        ctx.say(f"move [{step['name']}]: {step['inputFolder']} does not exist: no files moved")
        return 0
    moved = 0
    try:
        for pattern in step["includeFilePattern"]:
            for path in sorted(source.rglob(pattern)):
                if _skipped(path, dest, excludes):
                    continue
                target = dest / os.path.relpath(path, source)
                _move(path, target)
                moved += 1
    except OSError as exc:
        ctx.say(f"move [{step['name']}]: failed: {exc}")
        return MOVE_FAILED
    ctx.say(f"move [{step['name']}]: moved {moved} item(s) to {step['outputFolder']}")
    return 0


def _skipped(path: Path, dest: Path, excludes: list[str]) -> bool:
    if not os.path.lexists(path):  # moved already, with a folder that held it
        return True
    if any(path.match(pattern) for pattern in excludes):
        return True
    absolute, target = path.absolute(), dest.absolute()
    return absolute == target or target.is_relative_to(absolute) or absolute.is_relative_to(target)


def _move(path: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir() and not path.is_symlink() and target.is_dir():
        shutil.copytree(path, target, dirs_exist_ok=True, symlinks=True)
        shutil.rmtree(path)
        return
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    shutil.move(str(path), str(target))
