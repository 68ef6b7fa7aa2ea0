"""A flock's CloudFormation stack: find it, create or update it and wait, delete it.

Waiting shows each new stack event through `on_event`; a failure raises AwsError naming the
resources that failed and CloudFormation's reasons. An update that would change nothing (the
same template and parameters) is not sent, so a second `aws deploy` changes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from shepard.aws.clients import AwsError, aws_errors, error_code

POLL_S = 2.0
TIMEOUT_S = 3600.0
TAG = "shepard:flock"
"""The tag every resource of a flock carries (its value: the flock's name)."""

OnEvent = Callable[[str], None]


@dataclass(frozen=True)
class Stack:
    """What describe_stacks says about a stack."""

    name: str
    stack_id: str
    status: str
    reason: str
    outputs: dict[str, str]
    parameters: dict[str, str]


def find(cf: Any, name: str) -> Stack | None:
    """The stack `name`, or None when there is none (a deleted one counts as none)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        with_errors = cf.describe_stacks(StackName=name)["Stacks"]
    except ClientError as exc:
        if error_code(exc) == "ValidationError" and "does not exist" in str(exc):
            return None
        raise AwsError(f"cannot read stack {name!r}: {exc}") from None
    except BotoCoreError as exc:
        raise AwsError(f"cannot read stack {name!r}: {exc}") from None
    for raw in with_errors:
        if raw.get("StackStatus") != "DELETE_COMPLETE":
            return _stack(raw)
    return None


def _stack(raw: Mapping[str, Any]) -> Stack:
    return Stack(
        name=str(raw["StackName"]),
        stack_id=str(raw["StackId"]),
        status=str(raw["StackStatus"]),
        reason=str(raw.get("StackStatusReason") or ""),
        outputs={o["OutputKey"]: o["OutputValue"] for o in raw.get("Outputs") or []},
        parameters={
            p["ParameterKey"]: p.get("ParameterValue", "") for p in raw.get("Parameters") or []
        },
    )


def apply(
    cf: Any,
    name: str,
    template: str,
    parameters: Mapping[str, str],
    on_event: OnEvent,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[Stack, bool]:
    """Create stack `name` from `template`, or update it; wait until it settles.

    Returns the stack and whether anything was sent (False: it already was so).
    """
    current = find(cf, name)
    if current is not None and current.status.endswith("_IN_PROGRESS"):
        raise AwsError(f"stack {name!r} is busy ({current.status}): wait, then run this again")
    if current is not None and current.status in {"ROLLBACK_COMPLETE", "ROLLBACK_FAILED"}:
        raise AwsError(
            f"stack {name!r} failed to create ({current.status}) and cannot be updated: "
            f"remove it with `shepard aws destroy {name}`, then deploy again"
        )
    params = [{"ParameterKey": k, "ParameterValue": v} for k, v in sorted(parameters.items())]
    common = {
        "StackName": name,
        "TemplateBody": template,
        "Parameters": params,
        "Capabilities": ["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"],
        "Tags": [{"Key": TAG, "Value": name}],
    }
    since = time.time() - 5
    if current is None:
        with aws_errors(f"create stack {name!r}"):
            cf.create_stack(**common)
    else:
        if _unchanged(cf, current, template, parameters):
            return current, False
        from botocore.exceptions import ClientError

        try:
            cf.update_stack(**common)
        except ClientError as exc:
            if "No updates are to be performed" in str(exc):
                return current, False
            raise AwsError(f"cannot update stack {name!r}: {exc}") from None
    return wait(cf, name, on_event, since=since, sleep=sleep), True


def _unchanged(cf: Any, stack: Stack, template: str, parameters: Mapping[str, str]) -> bool:
    with aws_errors(f"read the template of stack {stack.name!r}"):
        body = cf.get_template(StackName=stack.name, TemplateStage="Original")["TemplateBody"]
    if not isinstance(body, str) or body.strip() != template.strip():
        return False
    return all(stack.parameters.get(k) == v for k, v in parameters.items())


def wait(
    cf: Any,
    name: str,
    on_event: OnEvent,
    *,
    since: float,
    sleep: Callable[[float], None] = time.sleep,
    timeout: float = TIMEOUT_S,
) -> Stack:
    """Wait until stack `name` is no longer in progress; show its events newer than `since`
    (a time.time()). AwsError when it ends in a failed or rolled-back state."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while True:
        events = _events(cf, name, since)
        for event in events:
            if event["EventId"] not in seen:
                seen.add(event["EventId"])
                on_event(_describe_event(event))
        stack = find(cf, name)
        if stack is None:
            raise AwsError(f"stack {name!r} is gone (deleted while it was being deployed?)")
        if not stack.status.endswith("_IN_PROGRESS"):
            break
        if time.monotonic() > deadline:
            raise AwsError(f"stack {name!r} still {stack.status} after {timeout:.0f} s")
        sleep(POLL_S)
    if stack.status.endswith("_FAILED") or "ROLLBACK" in stack.status:
        raise AwsError(_failure(name, stack, events))
    return stack


def _events(cf: Any, name: str, since: float) -> list[dict[str, Any]]:
    """The stack's events newer than `since`, oldest first."""
    with aws_errors(f"read the events of stack {name!r}"):
        pages = cf.get_paginator("describe_stack_events").paginate(StackName=name)
        found = []
        for page in pages:
            newer = [e for e in page["StackEvents"] if _seconds(e["Timestamp"]) >= since]
            found += newer
            if len(newer) < len(page["StackEvents"]):
                break
    return sorted(found, key=lambda e: _seconds(e["Timestamp"]))


def _seconds(stamp: Any) -> float:
    return float(stamp.timestamp()) if hasattr(stamp, "timestamp") else float(stamp)


def _describe_event(event: Mapping[str, Any]) -> str:
    line = f"{event.get('ResourceStatus', '?'):<20} {event.get('ResourceType', ''):<34} "
    line += str(event.get("LogicalResourceId", ""))
    reason = event.get("ResourceStatusReason")
    return f"{line}: {reason}" if reason else line


def _failure(name: str, stack: Stack, events: list[dict[str, Any]]) -> str:
    """What failed, resource by resource, for the error message."""
    failed = [
        f"{e.get('LogicalResourceId')} ({e.get('ResourceType')}): "
        f"{e.get('ResourceStatusReason') or 'no reason given'}"
        for e in events
        if str(e.get("ResourceStatus", "")).endswith("_FAILED")
        and e.get("LogicalResourceId") != name
    ]
    said = "; ".join(failed) or stack.reason or "no reason given"
    return f"stack {name!r} ended {stack.status}: {said}"


def delete(cf: Any, stack: Stack, on_event: OnEvent, *, retain: list[str] | None = None) -> None:
    """Delete the stack and wait until it is gone; AwsError if it cannot be deleted.

    `retain`: logical ids to leave in place (only accepted for a stack in DELETE_FAILED).
    """
    from botocore.exceptions import ClientError

    since = time.time() - 5
    extra = {"RetainResources": retain} if retain else {}
    try:
        cf.delete_stack(StackName=stack.stack_id, **extra)
    except ClientError as exc:
        # moto deletes synchronously and, tripping over its own order (the VPC before its
        # gateway), answers DependencyViolation with the stack gone: its leftovers carry the
        # flock's tag and are removed by destroy.remove_leftovers
        if error_code(exc) != "DependencyViolation" or find(cf, stack.stack_id) is not None:
            raise AwsError(f"cannot delete stack {stack.name!r}: {exc}") from None
    seen: set[str] = set()
    while True:
        found = find(cf, stack.stack_id)
        events = _events(cf, stack.stack_id, since) if found is not None else []
        for event in events:
            if event["EventId"] not in seen:
                seen.add(event["EventId"])
                on_event(_describe_event(event))
        if found is None:
            return
        if found.status == "DELETE_FAILED":
            raise AwsError(_failure(stack.name, found, events))
        time.sleep(POLL_S)
