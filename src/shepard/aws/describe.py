"""`shepard aws describe NAME`: a deployed flock at a glance (a dict, for text or --json)."""

from __future__ import annotations

from typing import Any

from shepard.aws import gaps, stackops
from shepard.aws.clients import Aws, AwsError, aws_errors
from shepard.aws.stackflock import StackError, StackFlock

SECRET_MONTHLY = "about $0.40 a month"


def describe(aws: Aws, name: str) -> dict[str, Any]:
    """Status, names, queue depths, the API URL and what costs money while idle."""
    stack = stackops.find(aws.client("cloudformation"), name)
    if stack is None:
        raise AwsError(f"no stack {name!r} in region {aws.region}")
    info: dict[str, Any] = {
        "flock": name,
        "region": aws.region,
        "status": stack.status,
        "reason": stack.reason or None,
        "code": stack.parameters.get("LambdaCodeKey") or None,
    }
    try:
        flock = StackFlock.from_outputs(name, aws.region, stack.outputs)
    except StackError:  # a stack being made or that failed to be: no outputs yet
        return info
    info["buckets"] = {
        "inbox": flock.inbox_bucket, "inputs": flock.inputs_bucket,
        "outputs": flock.outputs_bucket, "errors": flock.errors_bucket,
        "quick-deploy": flock.quick_deploy_bucket, "state": flock.state_bucket,
    }  # fmt: skip
    info["events_queue"] = {"url": flock.events_queue, **depth(aws, flock.events_queue)}
    info["dead_letters"] = {"url": flock.dead_letters, **depth(aws, flock.dead_letters)}
    info["api_url"] = gaps.function_url(aws, name)
    info["catalog"] = flock.catalog_url.removeprefix("dynamodb://").split("?", 1)[0]
    info["job_queue"] = flock.job_queue
    info["job_definition"] = flock.job_definition
    info["repository"] = flock.repository
    info["secret"] = flock.secret_name
    info["job_log_group"] = flock.job_log_group
    info["idle_costs"] = idle_costs(stack.outputs)
    return info


def depth(aws: Aws, queue_url: str) -> dict[str, int]:
    """Messages waiting and in flight on a queue."""
    with aws_errors(f"read queue {queue_url}"):
        found = aws.client("sqs").get_queue_attributes(
            QueueUrl=queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
    return {
        "waiting": int(found.get("ApproximateNumberOfMessages", 0)),
        "in_flight": int(found.get("ApproximateNumberOfMessagesNotVisible", 0)),
    }


def idle_costs(outputs: dict[str, str]) -> list[str]:
    """What the flock pays for while no job runs (docs/aws.md, "What costs money while idle")."""
    costs = [
        "S3: the bytes stored in the flock's buckets",
        "DynamoDB: the catalog's stored bytes (on-demand: no requests, no charge)",
        "CloudWatch Logs: the stored logs (kept LogRetentionDays)",
        "ECR: the stored worker images (the last 10 are kept)",
        f"Secrets Manager: the flock's secret, {SECRET_MONTHLY}",
    ]
    if outputs.get("SharedFileSystem"):
        costs.append("EFS: the bytes stored on the shared file system")
    if outputs.get("Lustre"):
        costs.append("FSx for Lustre: its whole capacity, all the time (about $170 a month)")
    return costs
