"""stackops: waiting for a stack shows its events and, when it fails, names the failed
resources with CloudFormation's reasons; an update that would change nothing is not sent.
A small stand-in for the CloudFormation client replays what AWS answers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from shepard.aws import stackops
from shepard.aws.clients import AwsError


class Paginator:
    def __init__(self, cf: FakeCloudFormation) -> None:
        self.cf = cf

    def paginate(self, StackName: str) -> list[dict[str, Any]]:
        return [{"StackEvents": list(reversed(self.cf.events))}]  # newest first, as AWS


class FakeCloudFormation:
    def __init__(self, statuses: list[str], events: list[dict[str, Any]]) -> None:
        self.statuses, self.events = statuses, events
        self.calls: list[str] = []
        self.template = ""
        self.parameters: dict[str, str] = {}

    def describe_stacks(self, StackName: str) -> dict[str, Any]:
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        params = [{"ParameterKey": k, "ParameterValue": v} for k, v in self.parameters.items()]
        return {"Stacks": [{"StackName": "f1", "StackId": "id-f1", "StackStatus": status,
                            "Parameters": params, "Outputs": []}]}  # fmt: skip

    def get_paginator(self, name: str) -> Paginator:
        return Paginator(self)

    def get_template(self, **kwargs: Any) -> dict[str, Any]:
        return {"TemplateBody": self.template}

    def update_stack(self, **kwargs: Any) -> None:
        self.calls.append("update_stack")


def _event(status: str, logical: str, reason: str = "") -> dict[str, Any]:
    return {"EventId": f"{logical}-{status}", "Timestamp": datetime.now(UTC),
            "ResourceStatus": status, "ResourceType": "AWS::S3::Bucket",
            "LogicalResourceId": logical, "ResourceStatusReason": reason}  # fmt: skip


def test_a_failed_stack_names_its_failed_resources_and_reasons() -> None:
    events = [_event("CREATE_IN_PROGRESS", "InboxBucket"),
              _event("CREATE_FAILED", "InboxBucket", "f1-inbox-x already exists"),
              _event("ROLLBACK_COMPLETE", "f1")]  # fmt: skip
    cf = FakeCloudFormation(["CREATE_IN_PROGRESS", "ROLLBACK_COMPLETE"], events)
    shown: list[str] = []
    with pytest.raises(AwsError) as caught:
        stackops.wait(cf, "f1", shown.append, since=0.0, sleep=lambda s: None)
    message = str(caught.value)
    assert "ROLLBACK_COMPLETE" in message
    assert "InboxBucket (AWS::S3::Bucket): f1-inbox-x already exists" in message
    assert len(shown) == 3 and "CREATE_FAILED" in shown[1]  # each event shown once


def test_an_update_that_changes_nothing_is_not_sent() -> None:
    cf = FakeCloudFormation(["UPDATE_COMPLETE"], [])
    cf.template, cf.parameters = "Resources: {}\n", {"LambdaCodeKey": "k1"}
    stack, sent = stackops.apply(cf, "f1", "Resources: {}\n", {"LambdaCodeKey": "k1"},
                                 lambda line: None)  # fmt: skip
    assert not sent and cf.calls == [] and stack.status == "UPDATE_COMPLETE"
    _, sent = stackops.apply(cf, "f1", "Resources: {}\n", {"LambdaCodeKey": "k2"},
                             lambda line: None, sleep=lambda s: None)  # fmt: skip
    assert sent and cf.calls == ["update_stack"]


def test_a_stack_that_failed_to_create_must_be_destroyed_first() -> None:
    cf = FakeCloudFormation(["ROLLBACK_COMPLETE"], [])
    with pytest.raises(AwsError, match="shepard aws destroy f1"):
        stackops.apply(cf, "f1", "Resources: {}\n", {}, lambda line: None)
