"""The `shepard` command: entry point and command registry."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from shepard import __version__, backends, config
from shepard.catalog import check_url
from shepard.cli import aws, deploy, fastpath, jobs, newflock, ops, profiles
from shepard.cli import workitems as cli_items
from shepard.cli.common import (
    FlockOption,
    apply_profile_defaults,
    between,
    close_flocks,
    console,
    err_console,
    flags_without_type,
    open_flock,
    seconds,
    terminable,
)
from shepard.cli.secrets import secretify
from shepard.cli.serve import serve
from shepard.cli.tasks import tasks_app
from shepard.cli.tokens import token_app
from shepard.config import MAX_ATTEMPTS, MAX_WORKERS
from shepard.errors import ShepardError
from shepard.flock import Flock

app = typer.Typer(
    name="shepard",
    help="Turn any script or container image into a scalable, tracked batch workflow.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
worker_app = typer.Typer(help="Worker-side commands, called by backends.", no_args_is_help=True)
app.add_typer(worker_app, name="worker")
app.add_typer(token_app, name="token")
app.add_typer(tasks_app, name="tasks")


def _backend_kind(value: str) -> str:
    """`--backend` must name a registered backend kind (shepard.backends.KINDS)."""
    if value not in backends.KINDS:
        raise typer.BadParameter(f"{value!r} is not a backend; choose one of {_kinds_help()}")
    return value


def _kinds_help() -> str:
    return "; ".join(f"{k} ({backends.KINDS[k].summary})" for k in backends.kinds())


def _version(value: bool) -> None:
    if value:
        console.print(f"shepard {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print version.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log details.")] = False,
) -> None:
    level = logging.DEBUG if verbose else os.environ.get("SHEPARD_LOG_LEVEL", "WARNING").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    apply_profile_defaults(ctx)


@app.command()
def init(
    folder: Annotated[Path, typer.Argument(help="Folder to create the flock in.")],
    name: Annotated[str | None, typer.Option(help="Flock name (default: folder name).")] = None,
    payload_command: Annotated[
        str | None,
        typer.Option(
            help="Command every job runs (through /bin/sh -c), e.g. 'python3 job.py'; "
            "files it names relative to this folder are stored as absolute paths."
        ),
    ] = None,
    payload_image: Annotated[
        str | None,
        typer.Option(
            help="Container image every job runs in (docs/containers.md), e.g. localhost/tool:1."
        ),
    ] = None,
    payload_tasks: Annotated[
        Path | None,
        typer.Option(
            help="A tasks.json document every job runs (docs/tasks.md); checked now, stored "
            "as its absolute path."
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            callback=between(1, MAX_WORKERS),
            help=f"Local worker slots, 1 to {MAX_WORKERS} (default: cores).",
        ),
    ] = None,
    catalog: Annotated[
        str | None, typer.Option(help="Catalog URL (default: sqlite:///FOLDER/catalog.db).")
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(callback=seconds, help="Seconds per attempt (> 0).")
    ] = None,
    attempts: Annotated[
        int,
        typer.Option(
            callback=between(1, MAX_ATTEMPTS), help=f"Attempts per job, 1 to {MAX_ATTEMPTS}."
        ),
    ] = 1,
    storage: Annotated[
        str | None,
        typer.Option(
            help="Where the stores live: a folder or s3://BUCKET\\[/PREFIX] (default: FOLDER).",
            envvar="SHEPARD_STORAGE",
        ),
    ] = None,
    backend_kind: Annotated[
        str,
        typer.Option("--backend", callback=_backend_kind, help=f"Where jobs run: {_kinds_help()}."),
    ] = "local",
    batch_queue: Annotated[
        str | None, typer.Option(help="aws-batch: the Batch job queue (name or ARN).")
    ] = None,
    region: Annotated[str | None, typer.Option(help="aws-batch: the AWS region.")] = None,
    image: Annotated[
        str | None,
        typer.Option(help="aws-batch: REPO:TAG of the image Batch runs (`deploy` builds it)."),
    ] = None,
    worker_env: Annotated[
        list[str] | None,
        typer.Option(help="aws-batch: KEY=VALUE passed to every Batch task (repeatable)."),
    ] = None,
    array_size: Annotated[
        int | None,
        typer.Option(callback=between(1, 10_000), help="aws-batch: children per array job."),
    ] = None,
    jobs_per_child: Annotated[
        int | None,
        typer.Option(
            callback=between(1, 10_000),
            help="aws-batch: jobs each Batch child runs in turn (short jobs share one "
            "container start; default 1).",
        ),
    ] = None,
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="For the existing flock in FOLDER: create its missing catalog (empty) and "
            "stores. No other option may be given.",
        ),
    ] = False,
) -> None:
    """Create a flock: FOLDER/flock.toml plus its stores and catalog."""
    if repair:
        given = [
            name, payload_command, payload_image, payload_tasks, workers, catalog, timeout,
            storage,
        ]  # fmt: skip
        if any(v is not None for v in given) or attempts != 1:
            raise ShepardError(
                "init --repair takes the flock's flock.toml as it is: give no options"
            )
        _repair(folder)
        return
    batch = _batch_section(
        backend_kind, batch_queue, region, image, worker_env, array_size, jobs_per_child
    )
    tasks_doc = None
    if payload_tasks is not None:
        from shepard.payloads.tasks import check_document

        if payload_command is not None or payload_image is not None:
            raise ShepardError(
                "--payload-tasks runs a tasks document: give no --payload-command or "
                "--payload-image with it"
            )

        check_document(payload_tasks)  # every problem listed, nothing written
        tasks_doc = str(payload_tasks.resolve())
    data: dict[str, object] = {
        "name": name or folder.resolve().name,
        "backend": {
            "kind": backend_kind,
            **({} if workers is None else {"workers": workers}),
            **({"aws-batch": batch} if batch else {}),
        },
        "payload": deploy.payload_config(  # its errors name the options
            newflock.resolve_command(payload_command, Path.cwd()),
            payload_image,
            timeout,
            tasks_doc,
        ).model_dump(exclude_defaults=True),
        "retry": {"attempts": attempts},
    }
    if storage:
        data["storage"] = {"root": storage}
    if catalog:
        data["catalog"] = {"url": catalog}
        check_url(catalog)  # a bad URL is refused before anything is written
    cfg = config.parse(data, source="init")
    if backend_kind == "aws-batch":
        from shepard.backends.aws_batch.checks import check_settings

        check_settings(cfg.backend.section(), cfg.storage.root)  # type: ignore[arg-type]
    flock = newflock.create_flock(folder, cfg)
    console.print(f"created flock [bold]{escape(cfg.name)}[/] in {escape(str(flock.dir.folder))}")
    console.print(f"  catalog  {flock.dir.catalog_url}", markup=False)
    console.print(f"  stores   {flock.dir.storage_url}", markup=False)
    if cfg.payload.command and cfg.payload.command != payload_command:
        console.print(f"  payload  {cfg.payload.command}", markup=False)
    if cfg.payload.tasks:
        console.print(f"  tasks    {cfg.payload.tasks}", markup=False)
    console.print(f"next: export SHEPARD_FLOCK={folder}  (or pass --flock {folder})", markup=False)


def _batch_section(
    kind: str,
    queue: str | None,
    region: str | None,
    image: str | None,
    worker_env: list[str] | None,
    array_size: int | None,
    jobs_per_child: int | None,
) -> dict[str, object]:
    """`[backend.aws-batch]` from init's options; they need `--backend aws-batch`."""
    given = {"queue": queue, "region": region, "image": image, "array_size": array_size,
             "jobs_per_child": jobs_per_child}  # fmt: skip
    section: dict[str, object] = {k: v for k, v in given.items() if v is not None}
    env: dict[str, str] = {}
    for item in worker_env or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ShepardError(f"--worker-env takes KEY=VALUE, not {item!r}")
        env[key] = value
    if env:
        section["worker_env"] = env
    if section and kind != "aws-batch":
        raise ShepardError(
            "--batch-queue, --region, --image, --worker-env, --array-size and "
            "--jobs-per-child are for `--backend aws-batch`"
        )
    if kind == "aws-batch" and not queue:
        raise ShepardError("--backend aws-batch needs --batch-queue QUEUE (the Batch job queue)")
    return section


def _repair(folder: Path) -> None:
    """`init --repair`: the missing catalog and stores of the flock at `folder`."""
    made = Flock.open(folder).repair()
    if not made:
        console.print(
            f"nothing to repair: the flock in {folder} has its catalog and stores", markup=False
        )
    for line in made:
        console.print(f"created {line}", markup=False)


app.command()(jobs.batch)
app.command()(jobs.submit)
app.command("batch-via-api", hidden=True)(jobs.submit)
app.command("batch_via_api", hidden=True)(jobs.submit)
app.command()(jobs.up)
app.command()(jobs.query)
app.command()(jobs.show)
app.command()(jobs.retrieve)
app.command()(ops.logs)
app.command()(ops.cancel)
app.command()(cli_items.stop)
app.command()(ops.retry)
app.command()(secretify)
app.command()(serve)
deploy.register(app)
profiles.register(app)
aws.register(app)


@worker_app.command("run")
def worker_run(
    job_id: Annotated[
        str | None, typer.Argument(help="The job to run (must be queued; or use --manifest).")
    ] = None,
    flock: FlockOption = Path("."),
    manifest: Annotated[
        Path | None,
        typer.Option(help="An array's task manifest (TOKEN.jobs): run the job on line --index."),
    ] = None,
    index: Annotated[
        int | None,
        typer.Option(
            help="With --manifest: the task index (default: this task's, from its scheduler, "
            "e.g. $SLURM_ARRAY_TASK_ID).",
        ),
    ] = None,
) -> None:
    """Claim one queued job and run it here (what a backend's task executes)."""
    if (job_id is None) == (manifest is None):
        raise ShepardError("worker run: give either a JOB id or --manifest")
    f = open_flock(flock)
    if manifest is not None:
        _run_task(f, manifest, index)
        return
    assert job_id is not None
    status = f.run_job(job_id)
    if status is None:
        err_console.print(
            f"job {job_id} was not claimable (taken, finished or cancelled)", markup=False
        )
        raise typer.Exit(3)
    console.print(f"job {job_id}: {status.value}", markup=False)


def _run_task(f: Flock, manifest: Path, index: int | None) -> None:
    """An array task: the job on line `index` of `manifest` (see shepard.scheduler_task)."""
    from shepard.scheduler_task import run_array_task

    with terminable() as terminate:
        status = run_array_task(f.task_setup(), manifest, index, terminate=terminate)
    if status is None:  # normal for a task whose job was cancelled or handed elsewhere
        err_console.print(
            f"task {index} of {manifest.name}: its job was not claimable", markup=False
        )
    else:
        console.print(f"task {index} of {manifest.name}: {status.value}", markup=False)


@worker_app.command("serve")
def worker_serve(
    flock: FlockOption = Path("."),
    time_limit: Annotated[
        float | None,
        typer.Option(help="Seconds this sheep may live; it stops taking jobs before the end."),
    ] = None,
    idle: Annotated[
        float, typer.Option(help="Seconds to wait on an empty queue before exiting.")
    ] = 5.0,
) -> None:
    """Run queued jobs one after another until the queue stays empty (a long-lived sheep)."""
    from shepard.runtime.process import become_runner_process
    from shepard.scheduler_task import serve

    setup = open_flock(flock).task_setup()
    become_runner_process()  # this process is the sheep: its folder may be the sheep's slot
    with terminable() as terminate:
        ran = serve(setup, time_limit=time_limit, idle=idle, terminate=terminate)
    console.print(f"ran {ran} job(s)")


def app_main() -> int | str | None:
    """Run the command line; return the exit code (user errors print one clear line, never
    a traceback, and give 2). The `shepard` command is shepard.cli.launch.run."""
    try:
        command = typer.main.get_command(fastpath.narrowed(app, sys.argv[1:]))
        flags_without_type(command)
        command()
    except ShepardError as exc:
        err_console.print(f"[red]error:[/] {escape(str(exc))}", soft_wrap=True)
        return 2
    except (OSError, RecursionError, UnicodeError) as exc:
        # what user input (a path, a file's bytes, its nesting) made a library call fail on
        err_console.print(f"[red]error:[/] {escape(describe_failure(exc))}", soft_wrap=True)
        return 2
    except SystemExit as exc:
        return exc.code
    finally:
        close_flocks()
    return 0


def describe_failure(exc: OSError | RecursionError | UnicodeError) -> str:
    """One line saying what failed, for errors no command turned into a ShepardError."""
    if isinstance(exc, RecursionError):
        return "the input is nested too deeply (thousands of levels of [ or {) to be read"
    if isinstance(exc, UnicodeDecodeError):
        return f"a file is not UTF-8 text ({exc.reason} at byte {exc.start})"
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror}"
    return str(exc) or type(exc).__name__
