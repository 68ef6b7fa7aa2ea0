"""Commands that deploy payloads: an image built from a folder, and quick-deploy folders."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from shepard import deploy as deployments
from shepard.cli.common import FlockOption, console, err_console, open_flock
from shepard.config import PayloadConfig
from shepard.errors import ConfigError


def deploy(
    folder: Annotated[
        Path, typer.Argument(help="Folder holding a Dockerfile (or Dockerfile.txt).")
    ],
    flock: FlockOption = Path("."),
    tag: Annotated[
        str | None,
        typer.Option(help="Tag of the new image (default: localhost/<flock>:<UTC time>)."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Hide the build's output.")] = False,
) -> None:
    """Build an image from FOLDER and make it the flock's payload (payload.image)."""
    f = open_flock(flock)
    if tag is not None:
        payload_config(f.config.payload.command, tag, None)  # refuse a malformed tag early

    def show(text: str) -> None:
        err_console.out(text, end="", highlight=False)

    built = deployments.build_image(f.dir, folder, tag=tag, on_output=None if quiet else show)
    path = deployments.set_payload_image(f.dir, built.tag)
    short = built.image_id.removeprefix("sha256:")[:12]
    console.print(
        f"deployed {built.tag} (id {short}): the payload image of flock {f.config.name}",
        markup=False,
    )
    console.print(f"  recorded in {path}", markup=False)
    console.print("  jobs started from now on run it; restart running `shepard up` processes")


def quick_deploy(
    folder: Annotated[Path, typer.Argument(help="Folder holding run.sh (and what it needs).")],
    flock: FlockOption = Path("."),
    name: Annotated[
        str | None,
        typer.Option(help="Name jobs use in QUICK_DEPLOY_DIRECTORY (default: FOLDER's name)."),
    ] = None,
) -> None:
    """Upload FOLDER to the flock's quick-deploy store (replacing a folder of that name)."""
    f = open_flock(flock)
    stored, count = deployments.upload_quick_deploy(f.store("quick-deploy"), folder, name)
    console.print(f"uploaded {count} file(s) as quick-deploy folder {stored}", markup=False)
    where = "in the flock's image" if f.config.payload.image else "as a process"
    console.print(
        f"  jobs with QUICK_DEPLOY_DIRECTORY={stored} run `sh run.sh` from its copy, {where}",
        markup=False,
    )


def payload_config(
    command: str | None, image: str | None, timeout: float | None, tasks: str | None = None
) -> PayloadConfig:
    """A PayloadConfig from command-line values; ConfigError naming the option if one is bad."""
    try:
        if tasks is not None:
            return PayloadConfig(
                kind="tasks", tasks=tasks, command=command, image=image, timeout=timeout
            )
        return PayloadConfig(command=command, image=image, timeout=timeout)
    except ValidationError as exc:
        options = {
            "command": "--payload-command", "image": "--payload-image", "tasks": "--payload-tasks"
        }  # fmt: skip
        problems = []
        for error in exc.errors():
            key = str(error["loc"][0]) if error["loc"] else "payload"
            message = str(error["msg"]).removeprefix("Value error, ")
            problems.append(f"{options.get(key, '--' + key)}: {message}")
        raise ConfigError("; ".join(problems)) from None


def register(app: typer.Typer) -> None:
    """Add `deploy` and `quick-deploy` (also spelt `quick_deploy`) to `app`."""
    app.command()(deploy)
    app.command("quick-deploy")(quick_deploy)
    app.command("quick_deploy", hidden=True)(quick_deploy)
