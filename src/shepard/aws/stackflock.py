"""A deployed serverless flock, as its stack names it, and the flock.toml those names make.

The same names reach two places: the CLI reads them from the stack's outputs (`shepard aws
deploy`, `configure --aws-stack`), a Lambda function from its environment (template.py's
ENVIRONMENT). Both build the flock's settings from them with `flock_table`, so the CLI, the
functions and the Batch tasks agree on every store, the catalog and the Batch queue.

The flock's own settings (payload, retry, limits...) live in one object, `flock.toml` in the
state bucket (`FLOCK_KEY`): the CLI writes it (`aws deploy`, `deploy`), the functions read it.
Endpoints are never stored in it: each side takes its own (`AWS_ENDPOINT_URL`, boto3's chain),
since the CLI and the functions may reach AWS (or the emulator) by different addresses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from shepard.errors import ShepardError

FLOCK_KEY = "flock.toml"
"""Key of the flock's settings in its state bucket."""

STATE_STORES = ("logs", "manifests", "secrets")
"""The stores kept under the state bucket (the others have a bucket each)."""

_OUTPUTS = {  # field -> the stack output holding it
    "inbox_bucket": "InboxBucket",
    "inputs_bucket": "InputsBucket",
    "outputs_bucket": "OutputsBucket",
    "errors_bucket": "ErrorsBucket",
    "quick_deploy_bucket": "QuickDeployBucket",
    "state_bucket": "StateBucket",
    "events_queue": "EventsQueue",
    "dead_letters": "EventsDeadLetterQueue",
    "catalog_url": "CatalogUrl",
    "job_queue": "JobQueue",
    "job_definition": "JobDefinition",
    "repository": "Repository",
    "secret_name": "SecretName",
    "job_log_group": "JobLogGroup",
}

_ENVIRONMENT = {  # field -> the function's environment variable holding it
    "inbox_bucket": "SHEPARD_INBOX_BUCKET",
    "inputs_bucket": "SHEPARD_INPUTS_BUCKET",
    "outputs_bucket": "SHEPARD_OUTPUTS_BUCKET",
    "errors_bucket": "SHEPARD_ERRORS_BUCKET",
    "quick_deploy_bucket": "SHEPARD_QUICK_DEPLOY_BUCKET",
    "state_bucket": "SHEPARD_STATE_BUCKET",
    "events_queue": "SHEPARD_EVENTS_QUEUE",
    "dead_letters": "SHEPARD_DEAD_LETTERS",
    "catalog_url": "SHEPARD_CATALOG",
    "job_queue": "SHEPARD_JOB_QUEUE",
    "job_definition": "SHEPARD_JOB_DEFINITION",
    "secret_name": "SHEPARD_SECRET_NAME",
    "job_log_group": "SHEPARD_JOB_LOG_GROUP",
}


class StackError(ShepardError):
    """The stack (or a function's environment) lacks what a deployed flock needs."""


@dataclass(frozen=True)
class StackFlock:
    """The names of one deployed flock's resources."""

    name: str
    region: str
    inbox_bucket: str
    inputs_bucket: str
    outputs_bucket: str
    errors_bucket: str
    quick_deploy_bucket: str
    state_bucket: str
    events_queue: str  # the queue's URL
    dead_letters: str  # the dead-letter queue's URL
    catalog_url: str  # dynamodb://TABLE?region=R
    job_queue: str
    job_definition: str
    secret_name: str
    job_log_group: str
    repository: str = ""  # the ECR repository's URI (not given to the functions)

    @classmethod
    def from_outputs(cls, name: str, region: str, outputs: Mapping[str, str]) -> StackFlock:
        """From a stack's outputs (`describe_stacks(...)["Outputs"]` as key -> value)."""
        missing = sorted(key for key in _OUTPUTS.values() if not outputs.get(key))
        if missing:
            raise StackError(
                f"the stack of flock {name!r} lacks the outputs {', '.join(missing)}: "
                "it was not made by this version of `shepard aws deploy` (run it again)"
            )
        values = {f: outputs[key] for f, key in _OUTPUTS.items()}
        return cls(name=name, region=region, **values)

    @classmethod
    def from_environment(cls, env: Mapping[str, str]) -> StackFlock:
        """Inside a function: from the variables the template gives every function."""
        wanted = {"SHEPARD_FLOCK_NAME", *_ENVIRONMENT.values()}
        missing = sorted(key for key in wanted if not env.get(key))
        region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
        if missing or not region:
            lacking = ", ".join(missing + ([] if region else ["AWS_REGION"]))
            raise StackError(f"this function's environment lacks {lacking}")
        values = {f: env[key] for f, key in _ENVIRONMENT.items()}
        return cls(name=env["SHEPARD_FLOCK_NAME"], region=region, **values)

    def outputs(self) -> dict[str, str]:
        """The stack outputs this was read from (the inverse of `from_outputs`)."""
        return {key: getattr(self, f) for f, key in _OUTPUTS.items()}

    def store_urls(self) -> dict[str, str]:
        """Every store of the flock, by name (config.STORE_NAMES), as an s3:// URL."""
        urls = {
            "inbox": f"s3://{self.inbox_bucket}",
            "inputs": f"s3://{self.inputs_bucket}",
            "outputs": f"s3://{self.outputs_bucket}",
            "errors": f"s3://{self.errors_bucket}",
            "quick-deploy": f"s3://{self.quick_deploy_bucket}",
        }
        urls.update({name: f"s3://{self.state_bucket}/{name}" for name in STATE_STORES})
        return urls


def flock_table(stack: StackFlock, settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """flock.toml's table for `stack`: `settings` (the flock's own: payload, retry, limits,
    `[backend.aws-batch]` tuning...) with every name the stack decides put over them.

    No endpoint is written: the CLI and the functions each use their own (module docstring).
    """
    table: dict[str, Any] = {k: v for k, v in (settings or {}).items()}
    table["name"] = stack.name
    urls = stack.store_urls()
    table["storage"] = {
        **{k: v for k, v in dict(table.get("storage") or {}).items() if k == "workspace"},
        "root": f"s3://{stack.state_bucket}",
        "region": stack.region,
        "stores": {k: v for k, v in urls.items() if k not in STATE_STORES},
    }
    table["catalog"] = {"url": stack.catalog_url}
    backend = dict(table.get("backend") or {})
    batch = {
        k: v
        for k, v in dict(backend.get("aws-batch") or {}).items()
        if k not in {"queue", "region", "endpoint_url", "job_definition", "log_group"}
    }
    batch.update(
        queue=stack.job_queue,
        region=stack.region,
        job_definition=_definition_name(stack.job_definition),
        log_group=stack.job_log_group,
    )
    batch.setdefault("image", f"{stack.repository}:latest" if stack.repository else None)
    if batch["image"] is None:
        del batch["image"]
    table["backend"] = {**backend, "kind": "aws-batch", "aws-batch": batch}
    table["aws"] = {"stack": stack.name, "region": stack.region}
    return table


def _definition_name(value: str) -> str:
    """A job definition's name from its ARN (`...:job-definition/NAME:REV`) or name."""
    name = value.rsplit("/", 1)[-1]
    return name.split(":", 1)[0]


def names() -> tuple[str, ...]:
    """The fields of StackFlock (for messages and tests)."""
    return tuple(f.name for f in fields(StackFlock))
