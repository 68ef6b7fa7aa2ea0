"""Bring a catalog database to the current schema (Alembic, run from inside the package).

The common case, an up-to-date catalog, costs two small queries and never imports Alembic,
which keeps CLI start-up fast. Otherwise the upgrade runs in one transaction that first takes
a cross-process lock (pg_advisory_xact_lock on PostgreSQL; BEGIN IMMEDIATE on SQLite), then
re-checks the version: when two processes open a new catalog at once, the second one waits
and then finds nothing left to do.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from shepard.catalog.engine import READ_ONLY, missing_catalog
from shepard.catalog.schema import HEAD_REVISION, VERSION_TABLE
from shepard.errors import CatalogError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"

# Any constant works; it only has to be the same in every shepard process ("shep" in ASCII).
_PG_LOCK_KEY = 0x73686570


def ensure_schema(engine: Engine, *, tries: int = 5, create: bool = True) -> None:
    """Upgrade the database behind `engine` to HEAD_REVISION unless it is already there.

    A database holding no catalog at all gets one only with `create`; without, it raises
    CatalogMissing (see shepard.catalog.open_catalog).

    On a brand-new SQLite file, processes racing to switch it to WAL and create the schema
    can deadlock on SQLite's file locks, which SQLite reports at once as "database is
    locked" rather than waiting: that case is retried after a short pause.
    """
    for attempt in range(1, tries + 1):
        try:
            _ensure_schema(engine, create)
            return
        except sa.exc.OperationalError as exc:
            if "database is locked" not in str(exc) or attempt == tries:
                raise
            time.sleep(0.05 * attempt + random.random() * 0.1)


def _ensure_schema(engine: Engine, create: bool) -> None:
    with engine.connect() as conn:
        conn.execution_options(**{READ_ONLY: True})
        found = current_revision(conn)
        if found == HEAD_REVISION:
            return
        if found is None and not create:
            raise missing_catalog(engine.url)
    with engine.begin() as conn:  # on SQLite this BEGIN IMMEDIATE is the lock
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        if current_revision(conn) != HEAD_REVISION:
            _upgrade(conn)


def current_revision(conn: Connection) -> str | None:
    """The revision recorded in the version table, or None for a database never migrated."""
    if not sa.inspect(conn).has_table(VERSION_TABLE):
        return None
    version = sa.table(VERSION_TABLE, sa.column("version_num", sa.String()))
    return conn.execute(sa.select(version.c.version_num)).scalar()


_ALEMBIC = threading.Lock()
"""Alembic's commands work through module-level proxies (`alembic.op`, the migration
context), so two upgrades must never overlap in one process. The database's own lock orders
upgrades of one catalog; this one orders those of different catalogs (e.g. in memory)."""


def _upgrade(conn: Connection) -> None:
    from alembic import command
    from alembic.config import Config
    from alembic.util import CommandError

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn
    try:
        with _ALEMBIC:
            command.upgrade(config, "head")
    except CommandError as exc:
        found = current_revision(conn)
        raise CatalogError(
            f"the catalog's schema is at revision {found!r}, which this shepard does not know "
            f"(it expects {HEAD_REVISION!r}); was it created by a newer shepard? ({exc})"
        ) from exc
