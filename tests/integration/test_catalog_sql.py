"""The SQL catalog itself: its migrations, its failure modes, SQLite in memory."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from shepard.catalog import Catalog, engine, open_catalog
from shepard.catalog.migrate import MIGRATIONS
from shepard.catalog.schema import HEAD_REVISION, VERSION_TABLE, complete_metadata
from shepard.errors import CatalogError
from shepard.model import Ended
from tests.integration.test_catalog import FAILED_3, LEASE, T0, add, specs

pytestmark = pytest.mark.sql_catalog


def test_migrations_build_the_current_schema(catalog: Catalog, catalog_url: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_current_head() == HEAD_REVISION
    db = sa.create_engine(catalog_url)
    try:
        with db.connect() as conn:
            context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
            assert context.get_current_revision() == HEAD_REVISION
            assert compare_metadata(context, complete_metadata()) == []
    finally:
        db.dispose()


# -- not parametrised: failure modes and in-memory SQLite --------------------------------------


def test_unreachable_postgres_raises_a_clear_error_without_password() -> None:
    with pytest.raises(CatalogError) as caught:
        open_catalog("postgresql://shepard:s3cr3t-pw@127.0.0.1:1/catalog")
    message = str(caught.value)
    assert "cannot reach the catalog" in message
    assert "127.0.0.1:1" in message and "connection refused" in message
    assert "s3cr3t-pw" not in message


def test_locked_sqlite_raises_catalog_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine, "SQLITE_BUSY_TIMEOUT_S", 0.2)
    url = f"sqlite:///{tmp_path / 'c.db'}"
    catalog = open_catalog(url)
    holder = sqlite3.connect(tmp_path / "c.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(CatalogError, match=r"locked by another process for more than 0\.2 s"):
            catalog.add_jobs(specs(1), now=T0, default_attempts=1)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        catalog.close()


def test_locked_sqlite_raises_catalog_error_on_the_hot_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine, "SQLITE_BUSY_TIMEOUT_S", 0.2)
    catalog = open_catalog(f"sqlite:///{tmp_path / 'c.db'}")
    add(catalog, 1)
    holder = sqlite3.connect(tmp_path / "c.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(CatalogError, match=r"locked by another process for more than 0\.2 s"):
            catalog.claim("w", now=T0, lease=LEASE)
        with pytest.raises(CatalogError, match="locked"):
            catalog.finish_and_claim([Ended("x", 1, FAILED_3)], now=T0, worker="w", lease=LEASE)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert len(catalog.claim("w", now=T0, lease=LEASE)) == 1  # the connection is still good
    catalog.close()


def test_in_memory_catalog_is_shared_across_threads() -> None:
    catalog = open_catalog("sqlite://")
    ids = catalog.add_jobs(specs(200), now=T0, default_attempts=1)
    claimed: list[str] = []

    def run() -> None:
        while batch := catalog.claim("w", now=T0, lease=LEASE, limit=3):
            claimed.extend(j.id for j in batch)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    catalog.close()
    assert sorted(claimed) == sorted(ids)


def test_unsupported_url_is_refused() -> None:
    with pytest.raises(CatalogError, match="unsupported catalog URL"):
        open_catalog("mysql://root:pw@localhost/db")
