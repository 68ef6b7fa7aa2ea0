"""`shepard aws destroy NAME [--keep-data]`: the flock's stack and, unless kept, its data.

The template marks the data `DeletionPolicy: Retain` (the six buckets, the catalog table
and the secret holding the key of the stored secrets), so deleting the stack never deletes
data by itself, whoever deletes it. Without --keep-data this then empties the buckets (every
version too) and deletes them, the table and the secret. With it, they stay, and a later
`aws deploy` of the same name makes a new stack with new, empty buckets (the kept ones'
names carry the old stack's suffix).

Last, what an emulator's stack deletion leaves (moto keeps Batch compute environments, job
queues and job definitions, and the VPC with its gateway and route table) is removed, and
only what carries the flock's tag.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shepard.aws import flockfiles, stackops
from shepard.aws.clients import Aws, AwsError, aws_errors, error_code
from shepard.aws.stackflock import StackError, StackFlock

Say = Callable[[str], None]


@dataclass
class Destroyed:
    """What a destroy removed and what it kept."""

    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def data_of(stack: StackFlock) -> list[str]:
    """The buckets that hold the flock's data (kept by --keep-data)."""
    return [
        stack.inbox_bucket, stack.inputs_bucket, stack.outputs_bucket, stack.errors_bucket,
        stack.quick_deploy_bucket, stack.state_bucket,
    ]  # fmt: skip


def destroy(
    aws: Aws, name: str, *, keep_data: bool, on_event: Say = lambda line: None
) -> Destroyed:
    """Delete flock `name`'s stack (module docstring); AwsError when there is no such flock."""
    cf = aws.client("cloudformation")
    found = stackops.find(cf, name)
    done = Destroyed()
    names: StackFlock | None = None
    if found is not None:
        try:
            names = StackFlock.from_outputs(name, aws.region, found.outputs)
        except StackError:  # a stack that failed to create has no outputs: nothing to empty
            names = None
        stackops.delete(cf, found, on_event)
        done.removed.append(f"stack {name}")
    if names is not None:
        table = names.catalog_url.removeprefix("dynamodb://").split("?", 1)[0]
        if keep_data:
            done.kept += [f"bucket {b}" for b in data_of(names)]
            done.kept += [f"table {table}", f"secret {names.secret_name}"]
        else:
            for bucket in data_of(names):
                if remove_bucket(aws, bucket):
                    done.removed.append(f"bucket {bucket}")
            if _delete_table(aws, table):
                done.removed.append(f"table {table}")
            if _delete_secret(aws, names.secret_name):
                done.removed.append(f"secret {names.secret_name}")
    done.removed += remove_batch_leftovers(aws, name)
    done.removed += remove_network_leftovers(aws, name)
    if not keep_data:
        local = flockfiles.local_folder(name)
        if local.is_dir():
            shutil.rmtree(local)
            done.removed.append(f"local copy {local}")
    if found is None and not done.removed:
        raise AwsError(f"no flock {name!r} in region {aws.region}: nothing to destroy")
    return done


def remove_bucket(aws: Aws, bucket: str) -> bool:
    """Empty `bucket` (every object version and delete marker) and delete it; False if it
    does not exist."""
    from botocore.exceptions import ClientError

    s3 = aws.client("s3")
    try:
        pages = s3.get_paginator("list_object_versions").paginate(Bucket=bucket)
        for page in pages:
            doomed = [
                {"Key": v["Key"], "VersionId": v["VersionId"]}
                for v in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
            ]
            for start in range(0, len(doomed), 1000):
                s3.delete_objects(
                    Bucket=bucket, Delete={"Objects": doomed[start : start + 1000], "Quiet": True}
                )
        s3.delete_bucket(Bucket=bucket)
    except ClientError as exc:
        if error_code(exc) == "NoSuchBucket":
            return False
        raise AwsError(f"cannot empty and delete bucket {bucket}: {exc}") from None
    return True


def _delete_table(aws: Aws, table: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        aws.client("dynamodb").delete_table(TableName=table)
    except ClientError as exc:
        if error_code(exc) == "ResourceNotFoundException":
            return False
        raise AwsError(f"cannot delete table {table}: {exc}") from None
    return True


def _delete_secret(aws: Aws, name: str) -> bool:
    """Delete the secret at once (no recovery window: the data it decrypts is gone too)."""
    from botocore.exceptions import ClientError

    try:
        aws.client("secretsmanager").delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)
    except ClientError as exc:
        if error_code(exc) in {"ResourceNotFoundException", "InvalidRequestException"}:
            return False
        raise AwsError(f"cannot delete secret {name}: {exc}") from None
    return True


def _tagged(resource: dict[str, Any], name: str) -> bool:
    return (resource.get("tags") or {}).get(stackops.TAG) == name


def remove_batch_leftovers(aws: Aws, name: str) -> list[str]:
    """Job queues, compute environments and job definitions tagged with flock `name` that
    are still there once its stack is gone (an emulator leaves them; AWS does not)."""
    batch = aws.client("batch")
    removed: list[str] = []
    with aws_errors(f"remove the Batch resources of flock {name}"):
        for queue in batch.describe_job_queues().get("jobQueues", []):
            if _tagged(queue, name):
                if queue.get("state") != "DISABLED":
                    batch.update_job_queue(jobQueue=queue["jobQueueArn"], state="DISABLED")
                batch.delete_job_queue(jobQueue=queue["jobQueueArn"])
                removed.append(f"job queue {queue['jobQueueName']}")
        for ce in batch.describe_compute_environments().get("computeEnvironments", []):
            if _tagged(ce, name):
                if ce.get("state") != "DISABLED":
                    batch.update_compute_environment(
                        computeEnvironment=ce["computeEnvironmentArn"], state="DISABLED"
                    )
                batch.delete_compute_environment(computeEnvironment=ce["computeEnvironmentArn"])
                removed.append(f"compute environment {ce['computeEnvironmentName']}")
        pages = batch.get_paginator("describe_job_definitions").paginate(status="ACTIVE")
        for page in pages:
            for definition in page.get("jobDefinitions", []):
                if _tagged(definition, name):
                    batch.deregister_job_definition(jobDefinition=definition["jobDefinitionArn"])
                    removed.append(
                        f"job definition {definition['jobDefinitionName']}:{definition['revision']}"
                    )
    return removed


def remove_network_leftovers(aws: Aws, name: str) -> list[str]:
    """The VPC, internet gateway, route tables, subnets and security groups tagged with flock
    `name` that are still there once its stack is gone (an emulator leaves them)."""
    ec2 = aws.client("ec2")
    tagged = [{"Name": f"tag:{stackops.TAG}", "Values": [name]}]
    removed: list[str] = []
    with aws_errors(f"remove the network of flock {name}"):
        vpcs = [v["VpcId"] for v in ec2.describe_vpcs(Filters=tagged)["Vpcs"]]
        for gateway in ec2.describe_internet_gateways(Filters=tagged)["InternetGateways"]:
            for attached in gateway.get("Attachments", []):
                ec2.detach_internet_gateway(
                    InternetGatewayId=gateway["InternetGatewayId"], VpcId=attached["VpcId"]
                )
            ec2.delete_internet_gateway(InternetGatewayId=gateway["InternetGatewayId"])
            removed.append(f"internet gateway {gateway['InternetGatewayId']}")
        for subnet in ec2.describe_subnets(Filters=tagged)["Subnets"]:
            ec2.delete_subnet(SubnetId=subnet["SubnetId"])
            removed.append(f"subnet {subnet['SubnetId']}")
        for table in ec2.describe_route_tables(Filters=tagged)["RouteTables"]:
            for link in table.get("Associations", []):
                if not link.get("Main"):
                    ec2.disassociate_route_table(AssociationId=link["RouteTableAssociationId"])
            ec2.delete_route_table(RouteTableId=table["RouteTableId"])
            removed.append(f"route table {table['RouteTableId']}")
        for group in ec2.describe_security_groups(Filters=tagged)["SecurityGroups"]:
            ec2.delete_security_group(GroupId=group["GroupId"])
            removed.append(f"security group {group['GroupId']}")
        for vpc in vpcs:
            ec2.delete_vpc(VpcId=vpc)
            removed.append(f"VPC {vpc}")
    return removed
