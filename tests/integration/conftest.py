"""Fixtures for the catalog suite: each test gets an empty catalog on SQLite and on PostgreSQL.

PostgreSQL isolation: each test gets its own schema, reached through the URL's
`options=-csearch_path=<schema>`, and the schema is dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from shepard.catalog import SqlCatalog, open_catalog
from tests.services import require_service

DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The server to test against (env SHEPARD_TEST_POSTGRES), without a schema chosen."""
    return os.environ.get("SHEPARD_TEST_POSTGRES", DEFAULT_POSTGRES)


@pytest.fixture(scope="session")
def postgres_problem(postgres_url: str) -> str | None:
    """None if the PostgreSQL server answers, else why not (checked once per session)."""
    engine = sa.create_engine(postgres_url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:
        shown = sa.make_url(postgres_url).render_as_string(hide_password=True)
        first_line = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        return f"cannot connect to {shown} (set SHEPARD_TEST_POSTGRES): {first_line}"
    finally:
        engine.dispose()
    return None


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a new, empty (never opened) catalog database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'catalog.db'}"
        return
    require_service("PostgreSQL", request.getfixturevalue("postgres_problem"))
    server = sa.make_url(request.getfixturevalue("postgres_url"))
    schema = f"shepard_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        url = server.update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    finally:
        admin.dispose()


@pytest.fixture
def catalog(catalog_url: str) -> Iterator[SqlCatalog]:
    """An opened catalog on a fresh database; closed after the test."""
    opened = open_catalog(catalog_url)
    yield opened
    opened.close()
