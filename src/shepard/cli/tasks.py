"""`shepard tasks check FILE`: validate a tasks.json document, listing every error."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from shepard.cli.common import JsonOption, console, err_console, print_json

tasks_app = typer.Typer(
    help="Tasks documents (tasks.json, the `tasks` payload kind).", no_args_is_help=True
)


@tasks_app.command("check")
def check(
    file: Annotated[Path, typer.Argument(help="The tasks.json document.")],
    as_json: JsonOption = False,
) -> None:
    """Check FILE against the tasks schema: every error is listed with its path (exit code 2
    when there is one)."""
    from shepard.tasks import document

    try:
        doc = document.read(file)
        problems = document.problems(doc)
    except document.DocumentError as exc:
        problems = exc.problems
    if as_json:
        print_json({"file": str(file), "valid": not problems, "errors": problems})
    elif problems:
        err_console.print(f"{file}: {len(problems)} error(s)", markup=False)
        for problem in problems:
            err_console.print(f"  {problem}", markup=False, soft_wrap=True)
    else:
        console.print(f"{file}: valid", markup=False)
    if problems:
        raise typer.Exit(2)
