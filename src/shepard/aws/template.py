"""The flock's CloudFormation template: stack.yaml, shipped in the package, with the
options of `shepard aws template` / `aws deploy` set as its parameters' defaults.

stack.yaml leaves three places to code, so they can never drift from it: the catalog
table's attributes and indexes (from shepard.catalog.dynamodb.table, the definition the
catalog itself creates) and the environment every function gets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources

from shepard.errors import ShepardError

COMPUTE_TYPES = ("EC2", "SPOT", "FARGATE")
LAMBDA_PYTHONS = ("3.11", "3.12", "3.13")  # the stack's LambdaRuntime values, as X.Y
FLOCK_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{1,30}[a-z0-9]$")

ENVIRONMENT = {
    "SHEPARD_FLOCK_NAME": "!Ref FlockName",
    "SHEPARD_CATALOG": '!Sub "dynamodb://${CatalogTable}?region=${AWS::Region}"',
    "SHEPARD_INBOX_BUCKET": "!Ref InboxBucket",
    "SHEPARD_INPUTS_BUCKET": "!Ref InputsBucket",
    "SHEPARD_OUTPUTS_BUCKET": "!Ref OutputsBucket",
    "SHEPARD_ERRORS_BUCKET": "!Ref ErrorsBucket",
    "SHEPARD_QUICK_DEPLOY_BUCKET": "!Ref QuickDeployBucket",
    "SHEPARD_STATE_BUCKET": "!Ref StateBucket",
    "SHEPARD_EVENTS_QUEUE": "!Ref EventsQueue",
    "SHEPARD_JOB_LOG_GROUP": "!Ref JobLogGroup",
    "SHEPARD_DEAD_LETTERS": "!Ref EventsDeadLetterQueue",
    "SHEPARD_JOB_QUEUE": "!Ref JobQueue",
    "SHEPARD_JOB_DEFINITION": "!Ref JobDefinition",
    "SHEPARD_SECRET_NAME": '!Sub "${FlockName}/secrets"',
}
"""What every function is told about the flock (CloudFormation values, as YAML)."""


@dataclass(frozen=True)
class Options:
    """The choices of `shepard aws template` / `aws deploy`, as parameter defaults."""

    flock: str = "myflock"
    compute: str = "EC2"  # EC2, SPOT (--spot) or FARGATE (--fargate)
    max_vcpus: int = 256
    gpu: bool = False
    efs: bool = False
    lustre: bool = False
    worker_env: dict[str, str] = field(default_factory=dict)
    lambda_python: str = "3.12"  # the functions' Python (LambdaRuntime): 3.11, 3.12 or 3.13

    def check(self) -> None:
        """ShepardError (exit code 2 in the CLI) for a combination AWS would refuse."""
        if not FLOCK_NAME.match(self.flock):
            raise ShepardError(
                f"invalid flock name {self.flock!r} for AWS: 3 to 32 lower-case letters, "
                "digits or '-', starting and ending with a letter or digit (it names buckets)"
            )
        if self.compute not in COMPUTE_TYPES:
            raise ShepardError(f"unknown compute type {self.compute!r}: one of {COMPUTE_TYPES}")
        if not 1 <= self.max_vcpus <= 100_000:
            raise ShepardError(f"--max-vcpus must be 1 to 100000, not {self.max_vcpus}")
        if self.compute == "FARGATE" and (self.gpu or self.lustre):
            used = "--gpu" if self.gpu else "--lustre"
            raise ShepardError(f"{used} needs EC2 instances: it cannot go with --fargate")
        if self.lambda_python not in LAMBDA_PYTHONS:
            raise ShepardError(
                f"no Lambda runtime for Python {self.lambda_python!r}: one of "
                f"{', '.join(LAMBDA_PYTHONS)}"
            )
        for key in self.worker_env:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
                raise ShepardError(f"invalid --worker-env name {key!r}: use KEY=VALUE")


def render(options: Options | None = None) -> str:
    """The template, as YAML text, with `options` as its parameters' defaults."""
    options = options or Options()
    options.check()
    text = resources.files("shepard.aws").joinpath("stack.yaml").read_text(encoding="utf-8")
    defaults = {
        "FlockName": _quoted(options.flock),
        "ComputeType": _quoted(options.compute),
        "MaxVcpus": str(options.max_vcpus),
        "UseGpu": _flag(options.gpu),
        "UseEfs": _flag(options.efs),
        "UseLustre": _flag(options.lustre),
        "LambdaRuntime": _quoted(f"python{options.lambda_python}"),
    }
    for name, value in defaults.items():
        text, n = re.subn(
            rf"(\n  {name}:\n(?:    .*\n)*?    Default: ).*\n", rf"\g<1>{value}\n", text, count=1
        )
        assert n == 1, name
    text = text.replace("__ATTRIBUTES__", _attributes()).replace("__INDEXES__", _indexes())
    return text.replace("__ENVIRONMENT__", _environment(options.worker_env))


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _flag(on: bool) -> str:
    return '"true"' if on else '"false"'


def _attributes() -> str:
    from shepard.catalog.dynamodb.table import definition

    rows = definition("x")["AttributeDefinitions"]
    return "\n".join(
        f"        - {{AttributeName: {a['AttributeName']}, AttributeType: {a['AttributeType']}}}"
        for a in rows
    )


def _indexes() -> str:
    from shepard.catalog.dynamodb.table import definition

    lines = []
    for index in definition("x")["GlobalSecondaryIndexes"]:
        keys = ", ".join(
            f"{{AttributeName: {k['AttributeName']}, KeyType: {k['KeyType']}}}"
            for k in index["KeySchema"]
        )
        projection = index["Projection"]
        lines.append(f"        - IndexName: {index['IndexName']}")
        lines.append(f"          KeySchema: [{keys}]")
        lines.append("          Projection:")
        lines.append(f"            ProjectionType: {projection['ProjectionType']}")
        if "NonKeyAttributes" in projection:
            lines.append(
                f"            NonKeyAttributes: [{', '.join(projection['NonKeyAttributes'])}]"
            )
    return "\n".join(lines)


def _environment(extra: dict[str, str]) -> str:
    pairs = [f"{k}: {v}" for k, v in ENVIRONMENT.items()]
    pairs += [f"{k}: {_quoted(v)}" for k, v in sorted(extra.items())]
    return "{" + ", ".join(pairs) + "}"
