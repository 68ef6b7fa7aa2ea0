"""The start-up shortcut (cli/fastpath.py) leans on attributes Typer does not document: these
tests fail when a Typer release changes them in a way a user would see. Every command, and
every command of a group, must reach the narrowed app and show the same --help through it
as through the whole app."""

from __future__ import annotations

import contextlib
import io

import pytest
import typer

from shepard.cli.common import flags_without_type
from shepard.cli.fastpath import command_name, narrowed
from shepard.cli.main import app


def help_text(typer_app: typer.Typer, args: list[str]) -> str:
    """What `shepard ARGS --help` prints, run through `typer_app` as the CLI runs it."""
    command = typer.main.get_command(typer_app)
    flags_without_type(command)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exited:
        command.main([*args, "--help"], prog_name="shepard")
    assert exited.value.code == 0, out.getvalue()
    return out.getvalue()


def full_group() -> typer.core.TyperGroup:
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    return group


def every_command_line() -> list[list[str]]:
    """[name] of each command and [group, name] of each command of a group, in the full app."""
    lines: list[list[str]] = []
    for name, command in full_group().commands.items():
        lines.append([name])
        if isinstance(command, typer.core.TyperGroup):
            lines += [[name, sub] for sub in command.commands]
    return lines


def test_the_narrowed_app_reaches_every_command_of_the_full_app() -> None:
    reached = set()
    for name in full_group().commands:
        narrow = narrowed(app, [name])
        assert narrow is not app, name
        reached |= set(typer.main.get_command(narrow).commands)  # type: ignore[attr-defined]
    assert reached == set(full_group().commands)


@pytest.mark.parametrize("line", every_command_line(), ids=" ".join)
def test_every_command_shows_the_same_help_through_the_narrowed_app(line: list[str]) -> None:
    narrow = narrowed(app, line)
    assert narrow is not app
    assert help_text(narrow, line) == help_text(app, line)


@pytest.mark.parametrize(
    ("args", "commands", "groups"),
    [
        (["submit", "--range", "ITEM=1-3"], ["submit"], []),
        (["-v", "batch_via_api", "--json", "{}"], ["batch_via_api"], []),
        (["set_profile", "x"], ["set_profile"], []),
        (["worker", "run", "--help"], [], ["worker"]),
    ],
)
def test_the_cli_builds_only_the_command_it_runs(
    args: list[str], commands: list[str], groups: list[str]
) -> None:
    narrow = narrowed(app, args)
    assert [command_name(info) for info in narrow.registered_commands] == commands
    assert [g.name for g in narrow.registered_groups] == groups
    assert narrow.registered_callback is app.registered_callback  # global options kept


@pytest.mark.parametrize("args", [[], ["--help"], ["--version"], ["subimt"]])
def test_without_a_known_command_the_whole_cli_runs(args: list[str]) -> None:
    assert narrowed(app, args) is app  # help lists every command; click suggests near names


def test_every_command_can_be_narrowed_to() -> None:
    """Each registered name reaches exactly its own command: none is shadowed or lost."""
    for info in app.registered_commands:
        assert narrowed(app, [command_name(info)]).registered_commands == [info]
