"""The TokenStore contract (API tokens kept as digests), on every catalog implementation."""

from __future__ import annotations

import pytest

from shepard.catalog import Catalog
from shepard.catalog.base import StoredToken
from shepard.catalog.tokens import TOUCH_EVERY
from shepard.errors import ShepardError

T0 = 1_700_000_000.0


def token(name: str, digest: str, *, read_only: bool = False) -> StoredToken:
    return StoredToken(name, digest, read_only, T0, None)


def test_tokens_are_found_by_digest_listed_by_name_and_revoked(catalog: Catalog) -> None:
    catalog.add_token(token("viewer", "d2", read_only=True))
    catalog.add_token(token("ci", "d1"))
    assert [t.name for t in catalog.tokens()] == ["ci", "viewer"]
    found = catalog.find_token("d2", now=T0 + 1)
    assert found is not None and found.name == "viewer" and found.read_only
    assert catalog.find_token("nope", now=T0) is None
    assert catalog.revoke_token("viewer") is True
    assert catalog.revoke_token("viewer") is False
    assert catalog.find_token("d2", now=T0 + 2) is None


def test_a_taken_name_is_refused_and_changes_nothing(catalog: Catalog) -> None:
    catalog.add_token(token("ci", "d1"))
    with pytest.raises(ShepardError, match="exists already"):
        catalog.add_token(token("ci", "d9"))
    assert [(t.name, t.digest) for t in catalog.tokens()] == [("ci", "d1")]


def test_use_is_noted_at_most_once_a_minute(catalog: Catalog) -> None:
    catalog.add_token(token("ci", "d1"))
    catalog.find_token("d1", now=T0 + 10)
    catalog.find_token("d1", now=T0 + 20)
    assert catalog.tokens()[0].last_used_at == T0 + 10
    catalog.find_token("d1", now=T0 + 10 + TOUCH_EVERY)
    assert catalog.tokens()[0].last_used_at == T0 + 10 + TOUCH_EVERY
