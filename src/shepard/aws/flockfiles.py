"""A serverless flock's settings: `flock.toml` in its state bucket (what the functions read)
and its copy in a local flock folder (what the CLI opens, through a profile).

The local folder is `<config dir>/flocks/<NAME>/` (profiles.default_config_dir: the user's
configuration folder, or SHEPARD_CONFIG_DIR). Both copies hold the same table
(stackflock.flock_table); neither holds an endpoint.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import tomli_w

from shepard import config
from shepard.aws import stackops
from shepard.aws.clients import Aws, AwsError, aws_errors, error_code
from shepard.aws.stackflock import FLOCK_KEY, StackFlock
from shepard.errors import ConfigError
from shepard.profiles import default_config_dir


def local_folder(name: str) -> Path:
    """Where the CLI keeps the local copy of serverless flock `name`."""
    return default_config_dir() / "flocks" / name


def deployed(aws: Aws, name: str) -> StackFlock:
    """The names of flock `name`'s resources, from its stack's outputs."""
    stack = stackops.find(aws.client("cloudformation"), name)
    if stack is None:
        raise AwsError(
            f"no stack {name!r} in region {aws.region}: deploy it with "
            f"`shepard aws deploy {name} --region {aws.region}` (or give its --region)"
        )
    return StackFlock.from_outputs(name, aws.region, stack.outputs)


def read_state(aws: Aws, stack: StackFlock) -> dict[str, Any] | None:
    """flock.toml of the state bucket, parsed; None when there is none yet."""
    from botocore.exceptions import ClientError

    try:
        body = aws.client("s3").get_object(Bucket=stack.state_bucket, Key=FLOCK_KEY)["Body"]
    except ClientError as exc:
        if error_code(exc) in {"NoSuchKey", "404"}:
            return None
        raise AwsError(f"cannot read s3://{stack.state_bucket}/{FLOCK_KEY}: {exc}") from None
    try:
        return tomllib.loads(body.read().decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"s3://{stack.state_bucket}/{FLOCK_KEY}: not valid TOML: {exc}") from exc


def dumps(table: dict[str, Any], source: str) -> str:
    """flock.toml's text for `table`, checked to be a valid flock first."""
    config.parse(table, source=source)
    header = "# A serverless flock's settings (shepard aws deploy); the functions read them\n"
    return header + tomli_w.dumps(table)


def write_state(aws: Aws, stack: StackFlock, text: str) -> None:
    """Put flock.toml's `text` into the state bucket."""
    with aws_errors(f"write s3://{stack.state_bucket}/{FLOCK_KEY}"):
        aws.client("s3").put_object(
            Bucket=stack.state_bucket, Key=FLOCK_KEY, Body=text.encode(), ContentType="text/plain"
        )


def write_local(folder: Path, text: str) -> Path:
    """Write flock.toml's `text` into `folder` (made if missing); its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / config.CONFIG_NAME
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def state_bucket_of(flockdir: config.Flockdir) -> str:
    """The state bucket of a serverless flock's local copy (its `[storage] root`)."""
    root = flockdir.config.storage.root
    if not root.startswith("s3://"):
        raise ConfigError(f"{flockdir.folder}: [storage] root {root!r} is not the state bucket")
    return root.removeprefix("s3://").split("/", 1)[0]


def _aws_of(flockdir: config.Flockdir) -> Aws:
    return Aws(flockdir.config.aws.region or "us-east-1")


def tag_definition(flockdir: config.Flockdir, arn: str) -> None:
    """Tag a job definition the CLI registered with the flock's name (`aws destroy` of an
    emulated flock removes what carries it)."""
    name = flockdir.config.aws.stack or flockdir.config.name
    with aws_errors(f"tag job definition {arn}"):
        _aws_of(flockdir).client("batch").tag_resource(resourceArn=arn, tags={stackops.TAG: name})


def upload_local(flockdir: config.Flockdir) -> str:
    """Put the local flock.toml of a serverless flock back into its state bucket (after
    `deploy` changed it), so the functions use it too; its s3:// URL."""
    bucket = state_bucket_of(flockdir)
    text = (flockdir.folder / config.CONFIG_NAME).read_text()
    aws = _aws_of(flockdir)
    with aws_errors(f"write s3://{bucket}/{FLOCK_KEY}"):
        aws.client("s3").put_object(Bucket=bucket, Key=FLOCK_KEY, Body=text.encode())
    return f"s3://{bucket}/{FLOCK_KEY}"
