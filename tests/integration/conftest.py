"""Fixtures for the catalog suite: each test gets an empty catalog of every registered kind.

The suite takes a factory (`catalog_factory`): a new, empty catalog per test, of which each
call opens one more handle (as another process would). FACTORIES makes those catalogs, one
entry per implementation: SQLite (a file), PostgreSQL (env SHEPARD_TEST_POSTGRES; skipped
locally and failing in CI when the server does not answer), DynamoDB (moto's server, env
SHEPARD_TEST_S3; likewise). A new catalog implementation runs
the whole suite by adding its entry.

PostgreSQL isolation: each test gets its own schema, reached through the URL's
`options=-csearch_path=<schema>`, and the schema is dropped afterwards.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from shepard.catalog import Catalog, open_catalog
from tests.services import require_service, s3_endpoint

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


@contextlib.contextmanager
def sqlite_catalog(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A SQLite file that does not exist yet."""
    yield f"sqlite:///{tmp_path / 'catalog.db'}"


@contextlib.contextmanager
def postgres_catalog(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A schema of its own on the test server, dropped afterwards."""
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


@contextlib.contextmanager
def dynamodb_catalog(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A table of its own on the emulated DynamoDB (moto, env SHEPARD_TEST_S3: it serves
    DynamoDB at the same endpoint), deleted afterwards; the server is never reset."""
    endpoint = s3_endpoint()
    name = f"shepard-test-{uuid.uuid4().hex[:12]}"
    yield f"dynamodb://{name}?region=us-east-1&endpoint={endpoint}"
    import boto3

    db = boto3.session.Session().client("dynamodb", region_name="us-east-1", endpoint_url=endpoint)
    with contextlib.suppress(db.exceptions.ResourceNotFoundException):
        db.delete_table(TableName=name)


FACTORIES: dict[
    str, Callable[[pytest.FixtureRequest, Path], contextlib.AbstractContextManager[str]]
] = {
    "sqlite": sqlite_catalog,
    "postgres": postgres_catalog,
    "dynamodb": dynamodb_catalog,
}
"""Implementation name -> a context that yields the URL of a new, empty (never opened)
catalog and removes it afterwards."""

_MARKS = {"postgres": pytest.mark.postgres, "dynamodb": pytest.mark.dynamodb}
SQL_KINDS = {"sqlite", "postgres"}
"""The factories of the SQL catalog (sql.py), the only ones tests marked `sql_catalog` use."""


EMULATOR_LIMITS = {
    "test_concurrent_claimers_never_share_a_job": "moto",
    "test_concurrent_placers_take_disjoint_jobs": "moto",
}
"""Tests of many threads racing conditional writes on the same items: moto's threaded server
checks a condition and writes in separate steps (and restores a whole-table copy when a
transaction fails), so it cannot show that DynamoDB's atomic conditional writes keep racing
claimers apart (docs/dynamodb.md)."""


@dataclass(frozen=True)
class CatalogFactory:
    """Opens handles on one new catalog: each call is one more connection to the same jobs,
    standing in for another process (close what you open)."""

    kind: str
    url: str

    def __call__(self, *, create: bool = True) -> Catalog:
        return open_catalog(self.url, create=create)


@pytest.fixture(params=[pytest.param(k, marks=_MARKS.get(k, ())) for k in FACTORIES])
def catalog_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CatalogFactory]:
    """A factory for a new, empty catalog of each registered implementation (of the SQL
    catalog only, for tests marked `sql_catalog`)."""
    if request.param not in SQL_KINDS and request.node.get_closest_marker("sql_catalog"):
        pytest.skip(f"a test of the SQL catalog: not for {request.param}")
    if request.param == "dynamodb" and request.node.originalname in EMULATOR_LIMITS:
        pytest.skip("racing conditional writes on one item are not atomic in moto's server")
    with FACTORIES[request.param](request, tmp_path) as url:
        yield CatalogFactory(request.param, url)


@pytest.fixture
def catalog_url(catalog_factory: CatalogFactory) -> str:
    """The URL of the new catalog (for the tests of the SQL implementation itself)."""
    return catalog_factory.url


@pytest.fixture
def catalog(catalog_factory: CatalogFactory) -> Iterator[Catalog]:
    """An opened catalog on a fresh database; closed after the test."""
    opened = catalog_factory()
    yield opened
    opened.close()
