"""Bearer tokens on the API: who may read, who may act.

Every `/api/v1` route depends on `reader` or `writer`: no token or an unknown (revoked) one is
401, a read-only token on a route that changes something is 403.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, HTTPException, Request, status

from shepard.views import TokenView

if TYPE_CHECKING:
    from shepard.flock import Flock


def flock_of(request: Request) -> Flock:
    """The flock this app serves (set by `create_app`)."""
    flock: Flock = request.app.state.flock
    return flock


def bearer_secret(request: Request) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, if there is one."""
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        return None
    return secret.strip()


def token_of(request: Request, secret: str | None) -> TokenView:
    """The token `secret` belongs to; 401 (with the header clients expect) if none."""
    if secret is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing token: send `Authorization: Bearer <token>` (`shepard token create NAME`)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    cache = getattr(request.app.state, "tokens", None)  # server/tokencache.py
    token = cache.verify(secret) if cache is not None else flock_of(request).verify_token(secret)
    if token is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "unknown or revoked token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return token


def reader(request: Request) -> TokenView:
    """Any valid token."""
    return token_of(request, bearer_secret(request))


def writer(token: Annotated[TokenView, Depends(reader)]) -> TokenView:
    """A token that may change things (submit, cancel, retry)."""
    if token.read_only:
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"token {token.name!r} is read-only")
    return token


Reader = Annotated[TokenView, Depends(reader)]
Writer = Annotated[TokenView, Depends(writer)]
