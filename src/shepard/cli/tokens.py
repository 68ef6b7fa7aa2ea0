"""`shepard token`: the API tokens that `shepard serve` accepts."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from shepard.cli.common import FlockOption, JsonOption, console, open_flock, print_json, when
from shepard.errors import ShepardError

token_app = typer.Typer(
    help="API tokens for `shepard serve` (shown once, stored hashed).", no_args_is_help=True
)


@token_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="A name to list and revoke it by.")],
    flock: FlockOption = Path("."),
    read_only: Annotated[
        bool,
        typer.Option("--read-only", help="May read everything, but not submit, cancel or retry."),
    ] = False,
) -> None:
    """Make a new API token and print it on stdout, alone on its line: it is not stored, so
    this is the only time it can be seen."""
    view, secret = open_flock(flock).create_token(name, read_only=read_only)
    sys.stdout.write(secret + "\n")
    if sys.stderr.isatty():
        kind = "read-only " if view.read_only else ""
        sys.stderr.write(f"created {kind}token {view.name!r}; keep it now, it is not shown again\n")


@token_app.command("list")
def list_(flock: FlockOption = Path("."), as_json: JsonOption = False) -> None:
    """The flock's API tokens (names and use, never the secrets)."""
    tokens = open_flock(flock).list_tokens()
    if as_json:
        print_json([t.model_dump(mode="json") for t in tokens])
        return
    if not sys.stdout.isatty():
        for t in tokens:
            access = "read-only" if t.read_only else "read-write"
            sys.stdout.write(f"{t.name}\t{access}\t{t.created}\t{t.last_used or '-'}\n")
        return
    table = Table("name", "access", "created", "last used")
    for t in tokens:
        table.add_row(
            t.name,
            "read-only" if t.read_only else "read-write",
            when(t.created_at),
            when(t.last_used_at),
        )
    console.print(table if tokens else "no tokens yet: `shepard token create NAME`")


@token_app.command("revoke")
def revoke(
    name: Annotated[str, typer.Argument(help="The token's name.")],
    flock: FlockOption = Path("."),
) -> None:
    """Revoke a token: requests carrying it are refused from now on."""
    if not open_flock(flock).revoke_token(name):
        raise ShepardError(f"no token named {name!r} (see `shepard token list`)")
    console.print(f"revoked token {name!r}", markup=False)
