"""`shepard aws deploy NAME`: the flock's stack, its functions' code, what the emulator's
CloudFormation ignores, and its settings (flock.toml in the state bucket and locally).

1. the template (template.render) is created as a stack, or the stack updated, and waited for;
2. the functions' code zip (shepard.aws.package.build_code_zip) goes to the quick-deploy
   bucket under a key naming its content hash, and the stack's `LambdaCodeKey` is set to it
   (where the functions still run other code afterwards, e.g. in an emulator that does not
   update them from the stack, their code is updated directly and `Deployed.notes` says so);
3. gaps.py: the inbox's event notification, the secret holding the flock's key, the API URL;
4. flock.toml (stackflock.flock_table over the one in the state bucket, so the user's own
   settings survive a re-deploy) goes to the state bucket and to the local flock folder.

Each step checks first and changes nothing that is already right: a second deploy with the
same options and code sends no update.
"""

from __future__ import annotations

import base64
import hashlib
import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shepard.aws import flockfiles, gaps, stackops
from shepard.aws.clients import Aws, aws_errors, error_code
from shepard.aws.stackflock import StackFlock, flock_table
from shepard.aws.template import Options, render
from shepard.keys import AwsSecret, aws_key

CODE_PREFIX = "lambda-code/"
CODE_ENV = "SHEPARD_LAMBDA_CODE"
HANDLERS = {
    "scheduler": "shepard.lambdas.scheduler.handler",
    "reconciler": "shepard.lambdas.reconciler.handler",
    "api": "shepard.lambdas.api.handler",
}

Say = Callable[[str], None]


@dataclass
class Deployed:
    """What a deploy did: `changes` lists what it changed (empty: nothing had to)."""

    stack: StackFlock
    local: Path
    api_url: str | None
    code_key: str | None
    changes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def deploy(
    options: Options,
    region: str,
    *,
    on_event: Say = lambda line: None,
    on_step: Say = lambda line: None,
) -> Deployed:
    """Deploy flock `options.flock` into `region` (module docstring); the functions' code is
    built for `options.lambda_python`, the template's LambdaRuntime."""
    options.check()
    aws = Aws(region)
    cf = aws.client("cloudformation")
    name = options.flock
    template = render(options)
    params: dict[str, str] = {}
    changes: list[str] = []
    current = stackops.find(cf, name)
    if current is None:
        on_step(f"creating stack {name} in {region}")
        current, _ = stackops.apply(cf, name, template, {**params, "LambdaCodeKey": ""}, on_event)
        changes.append("created the stack")
    stack = StackFlock.from_outputs(name, region, current.outputs)
    on_step("packaging the functions' code")
    code = _upload_code(aws, stack, options.lambda_python, changes)
    params["LambdaCodeKey"] = code[0] if code else current.parameters.get("LambdaCodeKey", "")
    current, sent = stackops.apply(cf, name, template, params, on_event)
    if sent:
        changes.append("updated the stack")
    stack = StackFlock.from_outputs(name, region, current.outputs)
    notes: list[str] = []
    if code is not None and _ensure_code(aws, stack, *code):
        notes.append("the functions' code was updated directly: the stack update did not do it")
        changes.append("updated the functions' code")
    from shepard.catalog import open_catalog

    open_catalog(stack.catalog_url, create=True).close()  # its marker item, once
    local = _write_settings(aws, stack, options, changes)  # before the inbox's first event
    _ensure_gaps(aws, stack, changes, on_step)
    url, made = gaps.ensure_function_url(aws, name)
    if made:
        changes.append("made the API's function URL")
    return Deployed(stack, local, url, code[0] if code else None, changes, notes)


def _upload_code(
    aws: Aws, stack: StackFlock, python: str, changes: list[str]
) -> tuple[str, str] | None:
    """Build the code zip and put it into the quick-deploy bucket (unless there already);
    its key and its CodeSha256 (base64 of its SHA-256). None when SHEPARD_LAMBDA_CODE=none
    (the functions keep what they run: a way to deploy the stack alone)."""
    if os.environ.get(CODE_ENV, "") == "none":
        return None
    from shepard.aws.package import build_code_zip

    path = build_code_zip(python)
    data = path.read_bytes()
    digest = hashlib.sha256(data)
    key = f"{CODE_PREFIX}{path.name}"  # its name holds a hash of its content
    s3 = aws.client("s3")
    from botocore.exceptions import ClientError

    try:
        s3.head_object(Bucket=stack.quick_deploy_bucket, Key=key)
    except ClientError as exc:
        if error_code(exc) not in {"404", "NoSuchKey", "NotFound"}:
            raise
        with aws_errors(f"upload the functions' code to {stack.quick_deploy_bucket}"):
            s3.put_object(Bucket=stack.quick_deploy_bucket, Key=key, Body=data)
        changes.append(f"uploaded the functions' code ({len(data) / 1e6:.1f} MB)")
    return key, base64.b64encode(digest.digest()).decode()


def _ensure_code(aws: Aws, stack: StackFlock, key: str, sha: str) -> bool:
    """Each function runs the uploaded code with its handler; True if one had to be fixed."""
    functions = aws.client("lambda")
    fixed = False
    for role, handler in HANDLERS.items():
        name = gaps.function_name(stack.name, role)
        with aws_errors(f"read function {name}"):
            found = functions.get_function_configuration(FunctionName=name)
        if found.get("CodeSha256") != sha:
            with aws_errors(f"update the code of function {name}"):
                functions.update_function_code(
                    FunctionName=name, S3Bucket=stack.quick_deploy_bucket, S3Key=key
                )
            fixed = True
        if found.get("Handler") != handler:
            with aws_errors(f"set the handler of function {name}"):
                functions.update_function_configuration(FunctionName=name, Handler=handler)
            fixed = True
    return fixed


def _ensure_gaps(aws: Aws, stack: StackFlock, changes: list[str], on_step: Say) -> None:
    if gaps.ensure_inbox_events(aws, stack):
        changes.append("sent the inbox's events to the events queue")
    if gaps.ensure_batch_tags(aws, stack):
        changes.append("tagged the Batch queue and compute environment")
    key = aws_key(
        AwsSecret(stack.secret_name, aws.region), create=True, tags={stackops.TAG: stack.name}
    )
    if key.created:
        changes.append(f"stored a new key for the flock's secrets in {stack.secret_name}")


def _write_settings(aws: Aws, stack: StackFlock, options: Options, changes: list[str]) -> Path:
    """flock.toml: the state bucket's (kept: the user's settings) under the stack's names."""
    before = flockfiles.read_state(aws, stack) or {}
    table = flock_table(stack, _settings(aws, stack, before, options))
    text = flockfiles.dumps(table, source=f"flock {stack.name}")
    if before != tomllib.loads(text):
        flockfiles.write_state(aws, stack, text)
        changes.append(f"wrote s3://{stack.state_bucket}/flock.toml")
    folder = flockfiles.local_folder(stack.name)
    path = folder / "flock.toml"
    if not path.is_file() or path.read_text() != text:
        flockfiles.write_local(folder, text)
    return folder


def _settings(
    aws: Aws, stack: StackFlock, before: dict[str, Any], options: Options
) -> dict[str, Any]:
    """The flock's own settings for flock_table: the stored ones, with what Batch tasks need
    from the deploy (its --worker-env pairs, the secret's name, the stack's job roles)."""
    settings = dict(before)
    backend = dict(settings.get("backend") or {})
    batch = dict(backend.get("aws-batch") or {})
    env = {**dict(batch.get("worker_env") or {}), **options.worker_env}
    env["SHEPARD_SECRET_NAME"] = stack.secret_name
    batch["worker_env"] = env
    batch.update(_job_roles(aws, stack))
    backend["aws-batch"] = batch
    settings["backend"] = backend
    return settings


def _job_roles(aws: Aws, stack: StackFlock) -> dict[str, str]:
    """job_role and execution_role of the stack's job definition, for the revisions the CLI
    registers (`deploy ./code`)."""
    with aws_errors(f"read job definition {stack.job_definition}"):
        found = aws.client("batch").describe_job_definitions(jobDefinitions=[stack.job_definition])[
            "jobDefinitions"
        ]
    roles: dict[str, str] = {}
    for definition in found[:1]:
        container: dict[str, Any] = definition.get("containerProperties") or {}
        if container.get("jobRoleArn"):
            roles["job_role"] = str(container["jobRoleArn"])
        if container.get("executionRoleArn"):
            roles["execution_role"] = str(container["executionRoleArn"])
    return roles
