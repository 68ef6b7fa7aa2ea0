"""The TokenStore half of DynamoCatalog: API tokens in the catalog's table.

Two kinds of items (docs/dynamodb.md):
- `token#<digest>`: one token, found by the digest of its secret in one read (no index);
- `meta#tokens`: the names in use, one attribute `name:<name>` per token holding its digest.
  A conditional write of that attribute is what makes a name unique, and one read of the
  item lists every token.
A token is added and revoked by one transaction over both items, so they never disagree.
"""

from __future__ import annotations

from typing import Any

from shepard.catalog.base import TOUCH_EVERY, StoredToken
from shepard.catalog.dynamodb.core import Core
from shepard.errors import ShepardError

NAMES = {"pk": {"S": "meta#tokens"}}
"""The key of the item that lists the names in use."""


def _key(digest: str) -> dict[str, Any]:
    return {"pk": {"S": f"token#{digest}"}}


def _attribute(name: str) -> str:
    """The attribute of `meta#tokens` that holds token `name`'s digest (prefixed: a token
    may be called `pk`)."""
    return f"name:{name}"


class DynamoTokens(Core):
    """Mixed into DynamoCatalog."""

    def add_token(self, token: StoredToken) -> None:
        """See TokenStore.add_token."""
        item: dict[str, Any] = {
            **_key(token.digest), "name": {"S": token.name},
            "read_only": {"BOOL": token.read_only}, "created_at": {"N": repr(token.created_at)},
        }  # fmt: skip
        if token.last_used_at is not None:
            item["last_used_at"] = {"N": repr(token.last_used_at)}
        ops: list[dict[str, Any]] = [
            {"Update": {
                "Key": NAMES, "UpdateExpression": "SET #n = :d",
                "ConditionExpression": "attribute_not_exists(#n)",
                "ExpressionAttributeNames": {"#n": _attribute(token.name)},
                "ExpressionAttributeValues": {":d": {"S": token.digest}},
            }},
            {"Put": {"Item": item, "ConditionExpression": "attribute_not_exists(pk)"}},
        ]  # fmt: skip
        with self._errors():
            refused = self._transact(ops)
        if refused is None:
            return
        if refused[0] is not None:
            raise ShepardError(
                f"a token named {token.name!r} exists already; "
                "revoke it first or choose another name"
            )
        raise ShepardError("a token with the same secret exists already: make a new secret")

    def tokens(self) -> list[StoredToken]:
        """See TokenStore.tokens: one read of the names, then the tokens 100 at a time."""
        with self._errors():
            digests = list(self._names().values())
            found: list[StoredToken] = []
            for start in range(0, len(digests), 100):
                keys = [_key(d) for d in digests[start : start + 100]]
                request: dict[str, Any] = {self._table: {"Keys": keys, "ConsistentRead": True}}
                while request:
                    answer = self._db.batch_get_item(RequestItems=request)
                    found += [_token(i) for i in answer["Responses"].get(self._table, [])]
                    request = answer.get("UnprocessedKeys") or {}
        return sorted(found, key=lambda t: t.name)

    def find_token(self, digest: str, *, now: float) -> StoredToken | None:
        """See TokenStore.find_token: one read by key, and a write at most once a minute."""
        from botocore.exceptions import ClientError

        with self._errors():
            item = self._db.get_item(TableName=self._table, Key=_key(digest),
                                     ConsistentRead=True).get("Item")  # fmt: skip
            if item is None:
                return None
            token = _token(item)
            if token.last_used_at is not None and now - token.last_used_at < TOUCH_EVERY:
                return token
            try:  # not on a token revoked meanwhile: that would bring back a lone item
                self._db.update_item(
                    TableName=self._table, Key=_key(digest),
                    UpdateExpression="SET last_used_at = :now",
                    ConditionExpression="attribute_exists(pk)",
                    ExpressionAttributeValues={":now": {"N": repr(now)}},
                )  # fmt: skip
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                    raise
        return token

    def revoke_token(self, name: str) -> bool:
        """See TokenStore.revoke_token: False also when another caller revoked it first."""
        with self._errors():
            digest = self._names().get(name)
            if digest is None:
                return False
            ops: list[dict[str, Any]] = [
                {"Update": {
                    "Key": NAMES, "UpdateExpression": "REMOVE #n",
                    "ConditionExpression": "#n = :d",
                    "ExpressionAttributeNames": {"#n": _attribute(name)},
                    "ExpressionAttributeValues": {":d": {"S": digest}},
                }},
                {"Delete": {"Key": _key(digest)}},
            ]  # fmt: skip
            return self._transact(ops) is None

    def _names(self) -> dict[str, str]:
        """Token name -> digest, for every token."""
        item = self._db.get_item(TableName=self._table, Key=NAMES, ConsistentRead=True)
        prefix = _attribute("")
        return {
            attribute.removeprefix(prefix): typed["S"]
            for attribute, typed in item.get("Item", {}).items()
            if attribute.startswith(prefix)
        }


def _token(item: dict[str, Any]) -> StoredToken:
    used = item.get("last_used_at")
    return StoredToken(
        name=item["name"]["S"],
        digest=item["pk"]["S"].removeprefix("token#"),
        read_only=bool(item["read_only"]["BOOL"]),
        created_at=float(item["created_at"]["N"]),
        last_used_at=None if used is None else float(used["N"]),
    )
