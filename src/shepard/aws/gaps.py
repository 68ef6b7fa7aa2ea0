"""What `aws deploy` makes sure of through the APIs, after the stack: the parts of the
template that moto's CloudFormation ignores (docs/aws.md). On AWS, where CloudFormation made
them, each check finds them in place and changes nothing.

- the inbox's ObjectCreated notification to the events queue;
- the Secrets Manager secret with the flock's Fernet key (keys.aws_key: made at the first
  deploy, never printed);
- the API function's URL (IAM auth);
- the flock's tag on its Batch job queue and compute environment (moto drops the tags the
  template gives them; `aws destroy` removes what an emulator leaves by that tag).
"""

from __future__ import annotations

from shepard.aws import stackops
from shepard.aws.clients import Aws, AwsError, aws_errors, error_code
from shepard.aws.stackflock import StackFlock

INBOX_EVENTS = "s3:ObjectCreated:*"
URL_AUTH = "AWS_IAM"


def queue_arn(aws: Aws, queue_url: str) -> str:
    with aws_errors("read the events queue's ARN"):
        attributes = aws.client("sqs").get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=["QueueArn"]
        )
    return str(attributes["Attributes"]["QueueArn"])


def ensure_inbox_events(aws: Aws, stack: StackFlock) -> bool:
    """The inbox sends its ObjectCreated events to the events queue; True if this set it."""
    s3 = aws.client("s3")
    arn = queue_arn(aws, stack.events_queue)
    with aws_errors(f"read the notifications of bucket {stack.inbox_bucket}"):
        config = s3.get_bucket_notification_configuration(Bucket=stack.inbox_bucket)
    config.pop("ResponseMetadata", None)
    queues = config.get("QueueConfigurations") or []
    if any(q.get("QueueArn") == arn and INBOX_EVENTS in q.get("Events", []) for q in queues):
        return False
    config["QueueConfigurations"] = [*queues, {"QueueArn": arn, "Events": [INBOX_EVENTS]}]
    with aws_errors(f"send the events of bucket {stack.inbox_bucket} to the events queue"):
        s3.put_bucket_notification_configuration(
            Bucket=stack.inbox_bucket, NotificationConfiguration=config
        )
    return True


def ensure_batch_tags(aws: Aws, stack: StackFlock) -> bool:
    """The job queue and its compute environments carry the flock's tag; True if this set it."""
    batch = aws.client("batch")
    tags = {stackops.TAG: stack.name}
    with aws_errors(f"tag the Batch resources of flock {stack.name}"):
        queues = batch.describe_job_queues(jobQueues=[stack.job_queue])["jobQueues"]
        arns = [(q["jobQueueArn"], q.get("tags") or {}) for q in queues]
        names = [c["computeEnvironment"] for q in queues for c in q["computeEnvironmentOrder"]]
        if names:
            found = batch.describe_compute_environments(computeEnvironments=names)
            arns += [
                (c["computeEnvironmentArn"], c.get("tags") or {})
                for c in found["computeEnvironments"]
            ]
        missing = [arn for arn, have in arns if have.get(stackops.TAG) != stack.name]
        for arn in missing:
            batch.tag_resource(resourceArn=arn, tags=tags)
    return bool(missing)


def function_name(stack_name: str, role: str) -> str:
    """A function's name: `<flock>-scheduler`, `-reconciler`, `-api` (stack.yaml)."""
    return f"{stack_name}-{role}"


def ensure_function_url(aws: Aws, stack_name: str) -> tuple[str, bool]:
    """The API function's URL (made with IAM auth if missing) and whether this made it."""
    from botocore.exceptions import ClientError

    functions = aws.client("lambda")
    name = function_name(stack_name, "api")
    try:
        found = functions.get_function_url_config(FunctionName=name)
        return str(found["FunctionUrl"]), False
    except ClientError as exc:
        if error_code(exc) != "ResourceNotFoundException":
            raise AwsError(f"cannot read the URL of function {name}: {exc}") from None
    with aws_errors(f"make the URL of function {name}"):
        made = functions.create_function_url_config(FunctionName=name, AuthType=URL_AUTH)
    return str(made["FunctionUrl"]), True


def function_url(aws: Aws, stack_name: str) -> str | None:
    """The API function's URL, None when it has none."""
    from botocore.exceptions import ClientError

    try:
        found = aws.client("lambda").get_function_url_config(
            FunctionName=function_name(stack_name, "api")
        )
    except ClientError:
        return None
    return str(found["FunctionUrl"])
