"""Profile commands: configure, set-profile, check-profile, delete-profile, clear-profile,
where-am-i (plus the original CLI's underscore spellings as hidden aliases)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from shepard.cli.common import JsonOption, console, err_console, print_json
from shepard.profiles import (
    FIELDS,
    PROFILE_ENV,
    Profile,
    ProfileError,
    ProfileStore,
    holds_flock,
    validate_name,
)

PANEL = "Profiles"


def configure(
    name: Annotated[str, typer.Argument(help="Profile name: letters, digits, '.', '_', '-'.")],
    flock: Annotated[
        Path | None,
        typer.Option(
            "--flock",
            "-f",
            help="Flock folder. A relative path is resolved from the current folder now and "
            "stored absolute.",
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, max=4096, help="Default worker slots for `up`.")
    ] = None,
    wait: Annotated[
        bool | None,
        typer.Option("--wait/--no-wait", help="Default of --wait for `batch` and `submit`."),
    ] = None,
    clear: Annotated[
        list[str] | None,
        typer.Option(
            "--clear", metavar="KEY", help=f"Blank a field ({', '.join(FIELDS)}); repeatable."
        ),
    ] = None,
    aws_stack: Annotated[
        str | None,
        typer.Option(
            "--aws-stack", metavar="FLOCK",
            help="A serverless flock deployed by `shepard aws deploy FLOCK`: its settings are "
            "copied from its state bucket into a local flock folder the profile points at.",
        ),
    ] = None,
    region: Annotated[
        str | None,
        typer.Option("--region", help="With --aws-stack: its region (default: AWS_REGION).",
                     show_default=False),
    ] = None,
) -> None:  # fmt: skip
    """Create or update profile NAME. With no options, ask for its flock folder."""
    store = ProfileStore.from_env()
    validate_name(name)
    if aws_stack is not None:
        if flock is not None:
            raise ProfileError("--flock and --aws-stack exclude each other: give one")
        flock = _aws_flock(aws_stack, region)
    elif region is not None:
        raise ProfileError("--region goes with --aws-stack")
    if flock is None and workers is None and wait is None and not clear:
        known = store.load(name).flock if store.exists(name) else None
        flock = Path(typer.prompt("Flock folder", default=str(known) if known else "."))
    profile, created = store.configure(
        name, flock=flock, workers=workers, wait=wait, clear=clear or ()
    )
    _say(
        f"{'created' if created else 'updated'} profile [bold]{escape(name)}[/] "
        f"in {escape(str(store.path(name)))}"
    )
    _say("  " + _describe(profile))
    if profile.flock is not None and not holds_flock(profile.flock):
        _warn(
            f"[yellow]warning:[/] {escape(str(profile.flock))} holds no flock.toml yet "
            f"(create one with `shepard init {escape(str(profile.flock))}`)"
        )
    if created and _current_or_none(store) != name:
        _say(f"select it with `shepard set-profile {escape(name)}`")


def _aws_flock(stack: str, region: str | None) -> Path:
    """The local flock folder of serverless flock `stack`, refreshed from its state bucket."""
    from shepard.aws.clients import Aws, AwsError
    from shepard.aws.flockfiles import deployed, dumps, local_folder, read_state, write_local

    where = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not where:
        raise ProfileError("--aws-stack needs --region (or AWS_REGION)")
    aws = Aws(where)
    names = deployed(aws, stack)
    table = read_state(aws, names)
    if table is None:
        raise AwsError(
            f"the state bucket of flock {stack!r} holds no flock.toml: run "
            f"`shepard aws deploy {stack} --region {where}`"
        )
    folder = local_folder(stack)
    write_local(folder, dumps(table, source=f"s3://{names.state_bucket}/flock.toml"))
    _say(f"copied flock {escape(stack)}'s settings into {escape(str(folder))}")
    return folder


def set_profile(name: Annotated[str, typer.Argument(help="The profile to select.")]) -> None:
    """Select profile NAME for the commands that follow."""
    store = ProfileStore.from_env()
    profile = store.select(name)
    _say(f"current profile: [bold]{escape(name)}[/]  {_describe(profile)}")
    forced = os.environ.get(PROFILE_ENV, "")
    if forced and forced != name:
        _warn(
            f"[yellow]note:[/] {PROFILE_ENV}={escape(forced)} is set and takes precedence "
            "in this shell"
        )


def check_profile(as_json: JsonOption = False) -> None:
    """List the profiles with their values; '*' marks the current one."""
    store = ProfileStore.from_env()
    current = _current_or_none(store)
    rows: list[dict[str, Any]] = []
    details: list[str] = []
    for name in store.names():
        row: dict[str, Any] = {"name": name, "current": name == current}
        try:
            profile = store.load(name)
        except ProfileError as exc:
            row["error"] = str(exc)
            details.append(f"[red]unreadable:[/] {escape(str(exc))}")
        else:
            values = profile.values()
            row.update({k: str(v) if isinstance(v, Path) else v for k, v in values.items()})
            row["flock_ok"] = profile.flock is not None and holds_flock(profile.flock)
            details.append(_describe(profile))
        rows.append(row)
    if as_json:
        print_json(
            {
                "directory": str(store.profiles_dir),
                "current": current,
                "env_profile": os.environ.get(PROFILE_ENV) or None,
                "profiles": rows,
            }
        )
        return
    if not rows:
        _say(
            f"no profiles in {escape(str(store.profiles_dir))}; "
            "create one with `shepard configure NAME --flock PATH`"
        )
        return
    _say(f"profiles in {escape(str(store.profiles_dir))} (* = current)")
    width = max(len(r["name"]) for r in rows)
    for row, detail in zip(rows, details, strict=True):
        mark = "*" if row["current"] else " "
        _say(f"{mark} {escape(row['name']).ljust(width)}  {detail}")
    if current is not None and current not in {r["name"] for r in rows}:
        _say(f"[red]the current profile {escape(current)!r} no longer exists[/]")
    forced = os.environ.get(PROFILE_ENV, "")
    if forced:
        _say(f"{PROFILE_ENV}={escape(forced)} overrides the current profile here")


def delete_profile(name: Annotated[str, typer.Argument(help="The profile to delete.")]) -> None:
    """Delete profile NAME (if it was the current one, no profile is selected afterwards)."""
    store = ProfileStore.from_env()
    was_current = store.delete(name)
    _say(f"deleted profile [bold]{escape(name)}[/]")
    if was_current:
        _say("it was the current profile; no profile is selected now")


def clear_profile() -> None:
    """Select no profile: commands use --flock, SHEPARD_FLOCK or the current folder."""
    previous = ProfileStore.from_env().clear_selection()
    if previous:
        _say(f"no profile selected (was {escape(previous)})")
    else:
        _say("no profile was selected")


def where_am_i(as_json: JsonOption = False) -> None:
    """Print the profile folder, the current profile and the flock commands would use."""
    store = ProfileStore.from_env()
    info: dict[str, Any] = {
        "config_dir": str(store.root),
        "profiles_dir": str(store.profiles_dir),
        "current": None,
        "env_profile": os.environ.get(PROFILE_ENV) or None,
        "flock": None,
        "flock_source": None,
        "problem": None,
    }
    try:
        info["current"] = store.current()
        if os.environ.get("SHEPARD_FLOCK"):
            flock = Path(os.environ["SHEPARD_FLOCK"])
            info["flock"], info["flock_source"] = str(flock.absolute()), "SHEPARD_FLOCK"
        elif found := store.active_flock():
            info["flock"], info["flock_source"] = str(found[0]), f"profile {found[1].name!r}"
        else:
            info["flock"], info["flock_source"] = str(Path.cwd()), "the current folder"
    except ProfileError as exc:
        info["problem"] = str(exc)
    if as_json:
        print_json(info)
        return
    lines = [
        ("profile directory", info["profiles_dir"]),
        ("current profile", info["current"] or "(none)"),
    ]
    if info["env_profile"]:
        lines.append((PROFILE_ENV, f"{info['env_profile']} (overrides the current profile)"))
    if info["flock"]:
        lines.append(("flock", f"{info['flock']} (from {info['flock_source']})"))
    for label, value in lines:
        _say(f"{label:<18} {escape(value)}")
    if info["problem"]:
        _say(f"[red]problem:[/] {escape(info['problem'])}")


def _say(text: str) -> None:
    console.print(text, soft_wrap=True)  # paths stay whole, for copying and for scripts


def _warn(text: str) -> None:
    err_console.print(text, soft_wrap=True)


def _describe(profile: Profile) -> str:
    """`flock=/a/b  workers=4  wait=true`, blank fields as '-', a missing flock flagged."""
    parts = []
    for key, value in profile.values().items():
        text = "-" if value is None else str(value).lower() if isinstance(value, bool) else value
        parts.append(f"{key}={escape(str(text))}")
    if profile.flock is not None and not holds_flock(profile.flock):
        parts.append("[yellow](no flock.toml there)[/]")
    return "  ".join(parts)


def _current_or_none(store: ProfileStore) -> str | None:
    try:
        return store.current()
    except ProfileError:
        return None


COMMANDS: list[tuple[str, Callable[..., None], tuple[str, ...]]] = [
    ("configure", configure, ()),
    ("set-profile", set_profile, ("set_profile",)),
    ("check-profile", check_profile, ("check_profile",)),
    ("delete-profile", delete_profile, ("delete_profile",)),
    ("clear-profile", clear_profile, ("clear_profile_config", "clear_profile")),
    ("where-am-i", where_am_i, ("where_am_i",)),
]


def register(app: typer.Typer) -> None:
    """Add the profile commands, and their underscore spellings as hidden aliases, to `app`."""
    for name, command, aliases in COMMANDS:
        app.command(name, rich_help_panel=PANEL)(command)
        for alias in aliases:
            app.command(alias, hidden=True)(command)
