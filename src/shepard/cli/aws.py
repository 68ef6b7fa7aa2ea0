"""`shepard aws ...`: a serverless flock on AWS (docs/aws.md). `aws template` prints the
CloudFormation template of the flock's stack (shepard/aws/stack.yaml; boto3 is not needed
for it); `aws deploy`, `describe` and `destroy` manage a deployed flock (shepard.aws)."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from shepard.cli.common import JsonOption, console, err_console, print_json
from shepard.errors import ShepardError

if TYPE_CHECKING:
    from shepard.aws.template import Options

aws_app = typer.Typer(
    help="A serverless flock on AWS: S3 drop -> job, nothing of yours running.",
    no_args_is_help=True,
)


# the stack's options, shared by `aws template` and `aws deploy`
EfsOption = Annotated[bool, typer.Option("--efs", help="An EFS file system in every job.")]
LustreOption = Annotated[
    bool, typer.Option("--lustre", help="An FSx for Lustre file system in every job.")
]
GpuOption = Annotated[bool, typer.Option("--gpu", help="GPU instances for the jobs.")]
SpotOption = Annotated[bool, typer.Option("--spot", help="Spot instances for the jobs.")]
FargateOption = Annotated[bool, typer.Option("--fargate", help="Fargate for the jobs.")]
MaxVcpusOption = Annotated[int, typer.Option("--max-vcpus", help="Most vCPUs in use at once.")]


@aws_app.command("template")
def template(
    name: Annotated[
        str, typer.Option("--name", help="The flock's name (a default; deploy sets it).")
    ] = "myflock",
    efs: EfsOption = False,
    lustre: LustreOption = False,
    gpu: GpuOption = False,
    spot: SpotOption = False,
    fargate: FargateOption = False,
    max_vcpus: MaxVcpusOption = 256,
) -> None:
    """Print the flock's CloudFormation template (YAML), its options as parameter defaults."""
    from shepard.aws.template import render

    options = _options(name, efs, lustre, gpu, spot, fargate, max_vcpus, [])
    sys.stdout.write(render(options))


def _options(
    name: str, efs: bool, lustre: bool, gpu: bool, spot: bool, fargate: bool, max_vcpus: int,
    worker_env: list[str], lambda_python: str = "3.12",
) -> Options:  # fmt: skip
    from shepard.aws.template import Options

    if spot and fargate:
        raise ShepardError("--spot and --fargate exclude each other: choose one")
    compute = "SPOT" if spot else "FARGATE" if fargate else "EC2"
    env: dict[str, str] = {}
    for item in worker_env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ShepardError(f"--worker-env takes KEY=VALUE, not {item!r}")
        env[key] = value
    options = Options(
        flock=name, compute=compute, max_vcpus=max_vcpus, gpu=gpu, efs=efs, lustre=lustre,
        worker_env=env, lambda_python=lambda_python,
    )  # fmt: skip
    options.check()
    return options


RegionOption = Annotated[
    str | None,
    typer.Option(
        "--region", envvar="AWS_REGION", help="AWS region (default: AWS_REGION, else "
        "AWS_DEFAULT_REGION).", show_default=False,
    ),
]  # fmt: skip


def _region(region: str | None) -> str:
    found = region or os.environ.get("AWS_DEFAULT_REGION")
    if not found:
        raise ShepardError("no AWS region: give --region (or set AWS_REGION)")
    return found


@aws_app.command("deploy")
def deploy(
    name: Annotated[str, typer.Argument(help="The flock's name (3-32 of a-z, 0-9, '-').")],
    region: RegionOption = None,
    efs: EfsOption = False,
    lustre: LustreOption = False,
    gpu: GpuOption = False,
    spot: SpotOption = False,
    fargate: FargateOption = False,
    max_vcpus: MaxVcpusOption = 256,
    worker_env: Annotated[
        list[str] | None,
        typer.Option(
            "--worker-env", metavar="KEY=VALUE",
            help="A variable for every Batch task and function (repeatable).",
        ),
    ] = None,
    lambda_python: Annotated[
        str, typer.Option("--lambda-python", help="The functions' Python: 3.11, 3.12 or 3.13.")
    ] = "3.12",
) -> None:  # fmt: skip
    """Create or update flock NAME's stack on AWS, upload its functions' code and write its
    settings; a second run with nothing changed changes nothing."""
    from shepard.aws.deploy import deploy as deploy_flock

    options = _options(
        name, efs, lustre, gpu, spot, fargate, max_vcpus, worker_env or [], lambda_python
    )
    where = _region(region)
    done = deploy_flock(
        options, where,
        on_event=lambda line: err_console.print(f"  {escape(line)}", soft_wrap=True),
        on_step=lambda line: err_console.print(f"[bold]{escape(line)}[/]", soft_wrap=True),
    )  # fmt: skip
    _report_deploy(done)


def _report_deploy(done: Any) -> None:
    stack = done.stack
    say = console.print
    if done.changes:
        say(f"deployed flock {stack.name} in {stack.region}:", markup=False)
        for change in done.changes:
            say(f"  {change}", markup=False)
    else:
        say(f"flock {stack.name} in {stack.region} is up to date: nothing changed", markup=False)
    for note in done.notes:
        err_console.print(f"[yellow]note:[/] {escape(note)}", soft_wrap=True)
    rows = [
        ("inbox", f"s3://{stack.inbox_bucket}"), ("inputs", f"s3://{stack.inputs_bucket}"),
        ("outputs", f"s3://{stack.outputs_bucket}"), ("errors", f"s3://{stack.errors_bucket}"),
        ("quick-deploy", f"s3://{stack.quick_deploy_bucket}"),
        ("state", f"s3://{stack.state_bucket}"), ("API", done.api_url or "-"),
        ("local copy", str(done.local)),
    ]  # fmt: skip
    for label, value in rows:
        say(f"  {label:<13} {value}", markup=False)
    say("next:", markup=False)
    say(f"  shepard configure {stack.name} --aws-stack {stack.name} --region {stack.region}"
        f" && shepard set-profile {stack.name}", markup=False)  # fmt: skip
    say("  shepard deploy ./code          # your image, for every job", markup=False)
    say(f"  aws s3 cp job.zip s3://{stack.inbox_bucket}/   # a job", markup=False)


@aws_app.command("describe")
def describe(
    name: Annotated[str, typer.Argument(help="The flock's name.")],
    region: RegionOption = None,
    as_json: JsonOption = False,
) -> None:
    """Stack status, buckets, queue depths, the API URL, the catalog, the job queue, and
    what costs money while idle."""
    from shepard.aws.clients import Aws
    from shepard.aws.describe import describe as describe_flock

    info = describe_flock(Aws(_region(region)), name)
    if as_json:
        print_json(info)
        return
    say = console.print
    say(f"flock {name} in {info['region']}: {info['status']}"
        + (f" ({info['reason']})" if info.get("reason") else ""), markup=False)  # fmt: skip
    for role, bucket in (info.get("buckets") or {}).items():
        say(f"  bucket {role:<13} s3://{bucket}", markup=False)
    for key, label in (("events_queue", "events queue"), ("dead_letters", "dead letters")):
        if key in info:
            queue = info[key]
            say(f"  {label:<20} {queue['waiting']} waiting, {queue['in_flight']} in flight",
                markup=False)  # fmt: skip
    for key, label in (("api_url", "API"), ("catalog", "catalog table"),
                       ("job_queue", "job queue"), ("repository", "image repository"),
                       ("secret", "secret"), ("code", "functions' code")):  # fmt: skip
        if key in info:
            say(f"  {label:<20} {info[key] or '-'}", markup=False)
    if info.get("idle_costs"):
        say("costs while idle:", markup=False)
        for cost in info["idle_costs"]:
            say(f"  {cost}", markup=False)


@aws_app.command("destroy")
def destroy(
    name: Annotated[str, typer.Argument(help="The flock's name.")],
    region: RegionOption = None,
    keep_data: Annotated[
        bool,
        typer.Option("--keep-data", help="Keep the buckets, the catalog table and the secret."),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete flock NAME's stack; without --keep-data also its buckets (emptied, every
    version), its catalog table and its secret."""
    from shepard.aws.clients import Aws
    from shepard.aws.destroy import destroy as destroy_flock

    where = _region(region)
    if not yes:
        if not sys.stdin.isatty():
            raise ShepardError(
                "aws destroy asks for confirmation: give --yes when not on a terminal"
            )
        what = "the stack" if keep_data else "the stack AND ALL ITS DATA (buckets, catalog, secret)"
        if not typer.confirm(f"delete flock {name} in {where}: {what}?", default=False):
            raise typer.Exit(1)
    done = destroy_flock(
        Aws(where), name, keep_data=keep_data,
        on_event=lambda line: err_console.print(f"  {escape(line)}", soft_wrap=True),
    )  # fmt: skip
    console.print(f"destroyed flock {name} in {where}", markup=False)
    for item in done.removed:
        console.print(f"  removed {item}", markup=False)
    for item in done.kept:
        console.print(f"  kept {item}", markup=False)


def register(app: typer.Typer) -> None:
    """Add `shepard aws ...` to `app`."""
    app.add_typer(aws_app, name="aws")
