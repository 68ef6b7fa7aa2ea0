"""Hot-path statements: compiled once per dialect, then run on a DBAPI connection directly.

A job's life costs a handful of statements (claim, read its facts, finish, their history rows).
Going through SQLAlchemy's execution machinery costs more than the database itself spends on
them, so these few are compiled once by SQLAlchemy (one definition for SQLite and PostgreSQL)
and executed on the pooled connection's own cursor, inside the caller's transaction. The order
of the driver's arguments is worked out once too, so a call only picks values out of a dict.

Why it is kept (bench/prepared.py, SQLite in /dev/shm, CPU time per job for claim, facts,
finish, two history rows and the commit): 62 µs this way against 140 µs through
`Connection.execute` with SQLAlchemy's compiled cache, a ratio of 2.25; the difference is some
5% of the CPU time of a whole trivial job end to end (bench/e2e_local.py: about 1.5 ms).

The price: it reads what SQLAlchemy's compiler worked out (`bind_names`, `escaped_bind_names`,
`positiontup`, the binds' values), attributes that are not a promised interface. That is
confined to this module, and tests/unit/test_prepared.py fails when a SQLAlchemy release
changes them: it checks the arguments against the compiler's public `construct_params` and
runs every hot statement both ways, comparing the rows and the tables left behind.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler


class Prepared:
    """`statement` compiled for `dialect`; `columns` names the RETURNING columns, if any.

    Parameters are passed by the keys of the statement's bind parameters; binds the statement
    fixes itself (e.g. a status literal in a WHERE clause) keep their compiled values.
    """

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
        self.sql = compiled.string
        self.columns = tuple(columns)
        # (driver name, caller's key, value when the caller gives none) of every bind
        binds: dict[str, tuple[str, Any]] = {}
        for bind, name in compiled.bind_names.items():
            driver_name = compiled.escaped_bind_names.get(name, name)
            binds[driver_name] = (bind.key, bind.effective_value if bind.callable else bind.value)
        order = compiled.positiontup if dialect.positional else None
        self._positional = order is not None
        self._binds = tuple((n, *binds[n]) for n in (order if order is not None else binds))

    def _args(self, params: Mapping[str, Any]) -> Any:
        if self._positional:
            return tuple(params.get(key, default) for _name, key, default in self._binds)
        return {name: params.get(key, default) for name, key, default in self._binds}

    def rows(self, dbapi_conn: Any, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Execute once; return the RETURNING rows as dicts keyed by `columns`."""
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute(self.sql, self._args(params))
            if not self.columns:
                return []
            return [dict(zip(self.columns, row, strict=True)) for row in cursor.fetchall()]
        finally:
            cursor.close()

    def many(self, dbapi_conn: Any, rows: Sequence[Mapping[str, Any]]) -> None:
        """Execute once per row (no RETURNING)."""
        cursor = dbapi_conn.cursor()
        try:
            cursor.executemany(self.sql, [self._args(row) for row in rows])
        finally:
            cursor.close()
