"""Hot-path statements: compiled once per dialect, then run on the DBAPI cursor directly.

A job's life costs a handful of statements (claim, finish, their history rows). Going through
SQLAlchemy's execution machinery costs several times what the database itself spends on them,
so these few are compiled once by SQLAlchemy (one definition for SQLite and PostgreSQL) and
executed on the pooled connection's own cursor, inside the same transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler


class Prepared:
    """`statement` compiled for `dialect`; `columns` names the RETURNING columns, if any."""

    def __init__(
        self,
        statement: ClauseElement,
        dialect: Dialect,
        columns: Sequence[str] = (),
        *,
        insert_keys: Sequence[str] | None = None,  # for an INSERT: the columns given
    ) -> None:
        compiled = statement.compile(
            dialect=dialect, column_keys=None if insert_keys is None else list(insert_keys)
        )
        assert isinstance(compiled, SQLCompiler)
        self._compiled = compiled
        self.sql = self._compiled.string
        self.columns = tuple(columns)
        self._order: tuple[str, ...] | None = (
            tuple(self._compiled.positiontup or ()) if dialect.positional else None
        )

    def _args(self, params: Mapping[str, Any]) -> Any:
        values = self._compiled.construct_params(dict(params)) or {}
        return values if self._order is None else tuple(values[n] for n in self._order)

    def rows(self, conn: Connection, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Execute once; return the RETURNING rows as dicts keyed by `columns`."""
        cursor = _cursor(conn)
        try:
            cursor.execute(self.sql, self._args(params))
            if not self.columns:
                return []
            return [dict(zip(self.columns, row, strict=True)) for row in cursor.fetchall()]
        finally:
            cursor.close()

    def many(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Execute once per row (no RETURNING)."""
        cursor = _cursor(conn)
        try:
            cursor.executemany(self.sql, [self._args(row) for row in rows])
        finally:
            cursor.close()


def _cursor(conn: Connection) -> Any:
    return conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
