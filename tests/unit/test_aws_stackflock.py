"""The names of a deployed flock, read from stack outputs or a function's environment, and
the flock settings they make."""

from __future__ import annotations

import pytest

from shepard.aws.stackflock import StackError, StackFlock, flock_table
from shepard.config import FlockConfig

OUTPUTS = {
    "InboxBucket": "demo-inbox-abc",
    "InputsBucket": "demo-inputs-abc",
    "OutputsBucket": "demo-outputs-abc",
    "ErrorsBucket": "demo-errors-abc",
    "QuickDeployBucket": "demo-quick-deploy-abc",
    "StateBucket": "demo-state-abc",
    "EventsQueue": "https://sqs.eu-west-1.amazonaws.com/1/demo-events",
    "EventsDeadLetterQueue": "https://sqs.eu-west-1.amazonaws.com/1/demo-events-dlq",
    "CatalogUrl": "dynamodb://demo-catalog?region=eu-west-1",
    "JobQueue": "arn:aws:batch:eu-west-1:1:job-queue/demo-jobs",
    "JobDefinition": "arn:aws:batch:eu-west-1:1:job-definition/demo-job:3",
    "Repository": "1.dkr.ecr.eu-west-1.amazonaws.com/demo/worker",
    "SecretName": "demo/secrets",
    "JobLogGroup": "/shepard/demo/jobs",
}


def test_outputs_make_a_valid_flock_whose_stores_are_the_stacks_buckets() -> None:
    stack = StackFlock.from_outputs("demo", "eu-west-1", OUTPUTS)
    settings = {"payload": {"kind": "command", "command": "echo hi"}, "retry": {"attempts": 3}}
    config = FlockConfig.model_validate(flock_table(stack, settings))
    assert config.storage.root == "s3://demo-state-abc"
    assert config.storage.stores["outputs"] == "s3://demo-outputs-abc"
    assert "logs" not in config.storage.stores  # under the state bucket's root
    assert config.catalog.url == "dynamodb://demo-catalog?region=eu-west-1"
    batch = config.backend.section("aws-batch")
    assert batch.queue == OUTPUTS["JobQueue"]  # type: ignore[attr-defined]
    assert batch.job_definition == "demo-job"  # type: ignore[attr-defined]
    assert batch.image == OUTPUTS["Repository"] + ":latest"  # type: ignore[attr-defined]
    assert config.retry.attempts == 3 and config.aws.stack == "demo"
    assert stack.outputs() == OUTPUTS


def test_the_stacks_names_win_over_stale_settings_but_the_users_tuning_stays() -> None:
    stack = StackFlock.from_outputs("demo", "eu-west-1", OUTPUTS)
    stale = {
        "storage": {"root": "s3://elsewhere", "endpoint_url": "http://127.0.0.1:9"},
        "backend": {"kind": "local", "aws-batch": {"queue": "old", "array_size": 50}},
    }
    table = flock_table(stack, stale)
    assert table["storage"]["root"] == "s3://demo-state-abc"
    assert "endpoint_url" not in table["storage"]
    assert table["backend"]["kind"] == "aws-batch"
    assert table["backend"]["aws-batch"]["array_size"] == 50
    assert table["backend"]["aws-batch"]["queue"] == OUTPUTS["JobQueue"]


def test_a_stack_without_the_outputs_says_which_are_missing() -> None:
    outputs = {k: v for k, v in OUTPUTS.items() if k != "StateBucket"}
    with pytest.raises(StackError, match="StateBucket"):
        StackFlock.from_outputs("demo", "eu-west-1", outputs)


def test_a_functions_environment_gives_the_same_names() -> None:
    from shepard.aws.template import ENVIRONMENT

    stack = StackFlock.from_outputs("demo", "eu-west-1", OUTPUTS)
    env = {"AWS_REGION": "eu-west-1", "SHEPARD_FLOCK_NAME": "demo"}
    by_output = {
        "SHEPARD_CATALOG": "CatalogUrl",
        "SHEPARD_DEAD_LETTERS": "EventsDeadLetterQueue",
        "SHEPARD_JOB_QUEUE": "JobQueue",
        "SHEPARD_JOB_DEFINITION": "JobDefinition",
        "SHEPARD_SECRET_NAME": "SecretName",
        "SHEPARD_EVENTS_QUEUE": "EventsQueue",
        "SHEPARD_JOB_LOG_GROUP": "JobLogGroup",
    }
    for key in ENVIRONMENT:
        if key == "SHEPARD_FLOCK_NAME":
            continue
        output = by_output.get(key) or "".join(
            w.capitalize() for w in key.removeprefix("SHEPARD_").split("_")
        )
        env[key] = OUTPUTS[output]
    seen = StackFlock.from_environment(env)
    assert flock_table(seen) == flock_table(StackFlock(**{**stack.__dict__, "repository": ""}))
    with pytest.raises(StackError, match="SHEPARD_STATE_BUCKET"):
        StackFlock.from_environment({k: v for k, v in env.items() if k != "SHEPARD_STATE_BUCKET"})
