"""API tokens: random secrets shown once, kept in the catalog only as sha256 digests.

A token is `shp_` followed by 43 URL-safe characters (256 random bits). Hashing without a
salt is enough for secrets of that strength (nobody can guess their way to a digest) and lets
a request's token be found by its digest in one indexed read.
"""

from __future__ import annotations

import hashlib
import re
import secrets

from shepard.catalog.base import StoredToken
from shepard.errors import ShepardError
from shepard.views import TokenView, iso

PREFIX = "shp_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def new_secret() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def check_name(name: str) -> str:
    """`name` if it is a valid token name, else a ShepardError saying what is allowed."""
    if not _NAME.match(name):
        raise ShepardError(
            f"bad token name {name!r}: use 1-100 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return name


def token_view(token: StoredToken) -> TokenView:
    return TokenView(
        name=token.name,
        read_only=token.read_only,
        created_at=token.created_at,
        created=iso(token.created_at) or "",
        last_used_at=token.last_used_at,
        last_used=iso(token.last_used_at),
    )
