"""`shepard aws ...`: a serverless flock on AWS. So far `aws template`, which prints the
CloudFormation template of the flock's stack (shepard/aws/stack.yaml) for review or for
the user's own tooling; boto3 is not needed for it."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from shepard.errors import ShepardError

aws_app = typer.Typer(
    help="A serverless flock on AWS: S3 drop -> job, nothing of yours running.",
    no_args_is_help=True,
)


@aws_app.command("template")
def template(
    name: Annotated[
        str, typer.Option("--name", help="The flock's name (a default; deploy sets it).")
    ] = "myflock",
    efs: Annotated[bool, typer.Option("--efs", help="An EFS file system in every job.")] = False,
    lustre: Annotated[
        bool, typer.Option("--lustre", help="An FSx for Lustre file system in every job.")
    ] = False,
    gpu: Annotated[bool, typer.Option("--gpu", help="GPU instances for the jobs.")] = False,
    spot: Annotated[bool, typer.Option("--spot", help="Spot instances for the jobs.")] = False,
    fargate: Annotated[bool, typer.Option("--fargate", help="Fargate for the jobs.")] = False,
    max_vcpus: Annotated[int, typer.Option("--max-vcpus", help="Most vCPUs in use at once.")] = 256,
) -> None:
    """Print the flock's CloudFormation template (YAML), its options as parameter defaults."""
    from shepard.aws.template import Options, render

    if spot and fargate:
        raise ShepardError("--spot and --fargate exclude each other: choose one")
    compute = "SPOT" if spot else "FARGATE" if fargate else "EC2"
    options = Options(
        flock=name, compute=compute, max_vcpus=max_vcpus, gpu=gpu, efs=efs, lustre=lustre
    )
    sys.stdout.write(render(options))


def register(app: typer.Typer) -> None:
    """Add `shepard aws ...` to `app`."""
    app.add_typer(aws_app, name="aws")
