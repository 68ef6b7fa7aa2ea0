"""Alembic environment for the catalog. Runs only on a connection handed in by the catalog.

`shepard.catalog.migrate` opens the transaction (and takes the cross-process lock), puts the
connection in `config.attributes["connection"]` and calls `alembic.command.upgrade`; this file
never creates an engine of its own, so migrations always run inside that locked transaction.
"""

from __future__ import annotations

from alembic import context

from shepard.catalog.schema import VERSION_TABLE, complete_metadata


def _run() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError(
            "the catalog migrations run only through shepard (open_catalog), "
            "which passes the connection in config.attributes['connection']"
        )
    context.configure(
        connection=connection,
        target_metadata=complete_metadata(),
        version_table=VERSION_TABLE,
        # SQLite cannot ALTER most things in place; batch mode rebuilds tables instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


_run()
