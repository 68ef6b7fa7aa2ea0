"""The TokenStore half of SqlCatalog: API tokens by name, with their secrets' digests."""

from __future__ import annotations

import contextlib

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from shepard.catalog.base import TOUCH_EVERY, StoredToken
from shepard.catalog.schema import api_tokens
from shepard.errors import ShepardError

__all__ = ["TOUCH_EVERY", "SqlTokens"]


class SqlTokens:
    """Mixed into SqlCatalog, which supplies `_transaction`."""

    def _transaction(
        self, *, read_only: bool = False
    ) -> contextlib.AbstractContextManager[Connection]:
        raise NotImplementedError

    def add_token(self, token: StoredToken) -> None:
        with self._transaction() as conn:
            taken = conn.execute(
                sa.select(api_tokens.c.name).where(api_tokens.c.name == token.name)
            ).first()
            if taken:
                raise ShepardError(
                    f"a token named {token.name!r} exists already; "
                    "revoke it first or choose another name"
                )
            conn.execute(
                api_tokens.insert().values(
                    name=token.name,
                    digest=token.digest,
                    read_only=int(token.read_only),
                    created_at=token.created_at,
                    last_used_at=token.last_used_at,
                )
            )

    def tokens(self) -> list[StoredToken]:
        with self._transaction(read_only=True) as conn:
            rows = conn.execute(sa.select(api_tokens).order_by(api_tokens.c.name)).all()
        return [_token(row._mapping) for row in rows]

    def find_token(self, digest: str, *, now: float) -> StoredToken | None:
        with self._transaction(read_only=True) as conn:
            row = conn.execute(sa.select(api_tokens).where(api_tokens.c.digest == digest)).first()
        if row is None:
            return None
        token = _token(row._mapping)
        if token.last_used_at is None or now - token.last_used_at >= TOUCH_EVERY:
            with self._transaction() as conn:
                conn.execute(
                    api_tokens.update()
                    .where(api_tokens.c.name == token.name)
                    .values(last_used_at=now)
                )
        return token

    def revoke_token(self, name: str) -> bool:
        with self._transaction() as conn:
            gone = conn.execute(api_tokens.delete().where(api_tokens.c.name == name))
        return bool(gone.rowcount)


def _token(row: sa.RowMapping) -> StoredToken:
    return StoredToken(
        name=row["name"],
        digest=row["digest"],
        read_only=bool(row["read_only"]),
        created_at=row["created_at"],
        last_used_at=row["last_used_at"],
    )
