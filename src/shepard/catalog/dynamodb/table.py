"""The DynamoDB table behind a `dynamodb://TABLE` catalog: its URL, client, key schema and
indexes, and the translation of AWS failures into CatalogError.

One table holds everything, told apart by the partition key `pk` (see docs/dynamodb.md):
`j#<id>` a job (its history in the item itself), `c#<n>` a shard of the status counters,
`meta#seq` the sequence counter, `meta#pending` the submissions being written, `sub#<id>`
one such submission, `k#<key>` an idempotency key. boto3 is imported here only, so the
plain CLI never loads it unless a flock's catalog is on DynamoDB.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from shepard.errors import CatalogError, CatalogMissing

SCHEMA = 1
"""The version of the item layout; stored in `meta#catalog`."""

BY_SEQ, BY_STATUS, BY_BATCH, BY_BUNDLE, BY_PLACEMENT = (
    "by_seq", "by_status", "by_batch", "by_bundle", "by_placement",
)  # fmt: skip

JOB_ATTRIBUTES = (
    "id", "seq", "status", "params", "bundle_key", "attempt", "max_attempts", "timeout",
    "batch", "submitted_at", "not_before", "started_at", "finished_at", "lease_until", "worker",
    "reason", "exit_code", "outputs", "error_bundle", "placement", "lost", "ver", "sub",
)  # fmt: skip
"""What the job indexes project (the history list `ev` stays in the table only)."""

KEY_TYPES = {
    "pk": "S", "kind": "S", "seq": "N", "status": "S", "gb": "S", "gbs": "S", "gu": "S",
    "gp": "S",
}  # fmt: skip

# (index, partition key, sort key, projected attributes: None = keys only)
INDEXES: tuple[tuple[str, str, str, tuple[str, ...] | None], ...] = (
    (BY_SEQ, "kind", "seq", JOB_ATTRIBUTES),  # every job in submission order
    (BY_STATUS, "status", "seq", JOB_ATTRIBUTES),  # claims, status pages, expiry
    (BY_BATCH, "gb", "gbs", JOB_ATTRIBUTES),  # a batch's jobs by status, then seq
    (BY_BUNDLE, "gu", "seq", None),  # which bundles jobs name
    (BY_PLACEMENT, "gp", "seq", JOB_ATTRIBUTES),  # placed jobs only (sparse)
)

_TABLE_NAME = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")
_USAGE = "use dynamodb://TABLE[?region=REGION][&endpoint=URL]"


@dataclass(frozen=True)
class Address:
    """Where the table is: its name, region and endpoint (None: boto3's usual chain, which
    reads AWS_REGION, AWS_ENDPOINT_URL_DYNAMODB, AWS_ENDPOINT_URL and profiles)."""

    table: str
    region: str | None
    endpoint: str | None


def parse_url(url: str) -> Address:
    """Parse `dynamodb://TABLE?region=R&endpoint=URL`; CatalogError if malformed."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "dynamodb":
        raise CatalogError(f"not a DynamoDB catalog URL {url!r}: {_USAGE}")
    table = parts.netloc or parts.path.lstrip("/")
    if parts.netloc and parts.path.strip("/"):
        raise CatalogError(f"invalid DynamoDB catalog URL {url!r}: {_USAGE}")
    if not _TABLE_NAME.match(table):
        raise CatalogError(
            f"invalid DynamoDB table name {table!r} in {url!r}: 3 to 255 letters, digits, "
            f"'_', '-' or '.' ({_USAGE})"
        )
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - {"region", "endpoint"})
    if unknown:
        raise CatalogError(f"unknown option {unknown[0]!r} in {url!r}: {_USAGE}")
    region = query.get("region", [None])[-1] or None
    endpoint = query.get("endpoint", [None])[-1] or None
    return Address(table, region, endpoint)


def client(address: Address) -> Any:
    """A DynamoDB client of its own session (no process-wide boto3 state), with the
    standard retry mode (throttling and transaction conflicts are retried by botocore)."""
    import boto3
    from botocore.config import Config

    session = boto3.session.Session()
    config = Config(
        retries={"max_attempts": 10, "mode": "standard"},
        max_pool_connections=32,
        connect_timeout=10,
        read_timeout=60,
    )
    try:
        return session.client(
            "dynamodb", region_name=address.region, endpoint_url=address.endpoint, config=config
        )
    except Exception as exc:  # NoRegionError and friends
        raise CatalogError(
            f"cannot open the DynamoDB catalog {address.table!r}: {exc} "
            "(give ?region=REGION in the catalog URL or set AWS_REGION)"
        ) from exc


@contextlib.contextmanager
def aws_errors(address: Address) -> Iterator[None]:
    """Turn botocore failures inside the block into CatalogError naming the table."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code, message = error.get("Code", "?"), error.get("Message", "")
        if code == "ResourceNotFoundException":
            raise CatalogMissing(
                f"the DynamoDB catalog table {address.table!r} does not exist (any more): "
                f"{message}; `shepard init --catalog dynamodb://{address.table}` creates one"
            ) from exc
        raise CatalogError(
            f"the DynamoDB catalog {address.table!r} failed: {code}: {message}"
        ) from exc
    except BotoCoreError as exc:
        raise CatalogError(f"cannot reach the DynamoDB catalog {address.table!r}: {exc}") from exc


def definition(table: str) -> dict[str, Any]:
    """The CreateTable request: on-demand capacity, key `pk`, the five indexes. The stack
    template (shepard/aws) declares the same."""
    used = {"pk"} | {name for _i, pk, sk, _p in INDEXES for name in (pk, sk)}
    indexes = []
    for name, pk, sk, projected in INDEXES:
        projection: dict[str, Any] = {"ProjectionType": "KEYS_ONLY"}
        if projected is not None:
            extra = [a for a in projected if a not in ("pk", pk, sk)]
            projection = {"ProjectionType": "INCLUDE", "NonKeyAttributes": extra}
        indexes.append({
            "IndexName": name,
            "KeySchema": [
                {"AttributeName": pk, "KeyType": "HASH"},
                {"AttributeName": sk, "KeyType": "RANGE"},
            ],
            "Projection": projection,
        })  # fmt: skip
    return {
        "TableName": table,
        "BillingMode": "PAY_PER_REQUEST",
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
        "AttributeDefinitions": [
            {"AttributeName": name, "AttributeType": KEY_TYPES[name]} for name in sorted(used)
        ],
        "GlobalSecondaryIndexes": indexes,
    }


def ensure_table(db: Any, address: Address, *, create: bool) -> None:
    """Make sure the table exists and holds a catalog; with `create`, make what is missing
    (a new table is on-demand, so it costs nothing while idle). Without, CatalogMissing."""
    from botocore.exceptions import ClientError

    name = address.table
    exists = True
    try:
        status = db.describe_table(TableName=name)["Table"]["TableStatus"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
            raise
        exists, status = False, ""
    if not exists:
        if not create:
            raise _missing(address)
        try:
            db.create_table(**definition(name))
        except ClientError as exc:  # another process made it meanwhile
            if exc.response.get("Error", {}).get("Code") != "ResourceInUseException":
                raise
        status = "CREATING"
    if status != "ACTIVE":
        _wait_active(db, name)
    marker = db.get_item(TableName=name, Key={"pk": {"S": "meta#catalog"}}, ConsistentRead=True)
    if "Item" in marker:
        found = int(marker["Item"]["schema"]["N"])
        if found > SCHEMA:
            raise CatalogError(
                f"the DynamoDB catalog {name!r} was made by a newer Shepard (layout {found}, "
                f"this one knows {SCHEMA}): upgrade Shepard"
            )
        return
    if not create:
        raise _missing(address)
    with contextlib.suppress(ClientError):  # a concurrent opener wrote it first
        db.put_item(
            TableName=name,
            Item={"pk": {"S": "meta#catalog"}, "schema": {"N": str(SCHEMA)}},
            ConditionExpression="attribute_not_exists(pk)",
        )


def _wait_active(db: Any, name: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        table = db.describe_table(TableName=name)["Table"]
        if table["TableStatus"] == "ACTIVE" and all(
            i.get("IndexStatus", "ACTIVE") == "ACTIVE"
            for i in table.get("GlobalSecondaryIndexes", [])
        ):
            return
        if time.monotonic() > deadline:
            raise CatalogError(
                f"the DynamoDB table {name!r} did not become ACTIVE in {timeout:g} s"
            )
        time.sleep(1.0)


def _missing(address: Address) -> CatalogMissing:
    return CatalogMissing(
        f"the flock's catalog, the DynamoDB table {address.table!r}, does not exist or holds "
        "no catalog, so the history of its jobs is gone (was it deleted?); commands refuse to "
        "run without it. If it cannot be brought back, `shepard init --repair FLOCK_FOLDER` "
        "creates a new, empty one"
    )
