"""Commands that deploy payloads: an image built from a folder, and quick-deploy folders."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError

from shepard import deploy as deployments
from shepard.cli.common import FlockOption, console, err_console, open_flock
from shepard.config import PayloadConfig
from shepard.errors import ConfigError

if TYPE_CHECKING:
    from shepard.flock import Flock


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
    no_push: Annotated[
        bool,
        typer.Option(
            "--no-push",
            help="aws-batch: do not push the worker image (Batch shares this engine's images).",
        ),
    ] = False,
) -> None:
    """Build an image from FOLDER and make it the flock's payload (payload.image); on
    aws-batch, also the worker image Batch runs, pushed and registered."""
    f = open_flock(flock)
    if tag is not None:
        payload_config(f.config.payload.command, tag, None)  # refuse a malformed tag early

    def show(text: str) -> None:
        err_console.out(text, end="", highlight=False)

    if f.config.backend.kind == "aws-batch":
        _deploy_batch(f, folder, tag, no_push, None if quiet else show)
        return
    built = deployments.build_image(f.dir, folder, tag=tag, on_output=None if quiet else show)
    path = deployments.set_payload_image(f.dir, built.tag)
    short = built.image_id.removeprefix("sha256:")[:12]
    console.print(
        f"deployed {built.tag} (id {short}): the payload image of flock {f.config.name}",
        markup=False,
    )
    console.print(f"  recorded in {path}", markup=False)
    console.print("  jobs started from now on run it; restart running `shepard up` processes")


def _deploy_batch(
    f: Flock, folder: Path, tag: str | None, no_push: bool, show: Callable[[str], None] | None
) -> None:
    """deploy on aws-batch (backends/aws_batch/deploy.py): build, derive, push, register."""
    from shepard.backends.aws_batch import deploy as batch
    from shepard.backends.aws_batch.api import BatchApi, RateLimiter, clients
    from shepard.backends.aws_batch.backend import BatchScheduler, ensure_job_definition
    from shepard.backends.aws_batch.checks import check_queue, check_storage
    from shepard.backends.aws_batch.config import BatchConfig
    from shepard.backends.aws_batch.image import derive

    cfg = f.config.backend.section()
    assert isinstance(cfg, BatchConfig)
    check_storage(f.dir.storage_url)
    api = BatchApi(*clients(cfg.region, cfg.endpoint_url), RateLimiter(cfg.submit_rate))
    check_queue(api, cfg)  # before the build: a wrong queue or region is said at once
    built = deployments.build_image(f.dir, folder, tag=tag, on_output=show)
    engine = deployments.open_engine(f.dir)
    worker = derive(engine.client, built.tag, batch.worker_tag(cfg, built.tag))
    if not no_push:
        batch.push(engine.client, worker, cfg.region, show or (lambda text: None))
    if not f.config.payload.command:
        deployments.set_payload_image(f.dir, built.tag)
    path = batch.set_batch_image(f.dir, worker)
    updated = cfg.model_copy(update={"image": worker})
    scheduler = BatchScheduler(f.backend_context(), updated, api)
    arn = ensure_job_definition(api, scheduler.definition_name(), updated, f.dir.folder)
    console.print(f"deployed {worker} for AWS Batch (from {built.tag})", markup=False)
    console.print(f"  job definition {arn}", markup=False)
    console.print(f"  recorded in {path}" + ("" if no_push else "; pushed"), markup=False)
    if f.config.aws.stack:  # serverless: the functions read the state bucket's copy
        from shepard.aws.flockfiles import tag_definition, upload_local

        tag_definition(f.dir, arn)
        console.print(f"  and in {upload_local(f.dir)}", markup=False)


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
