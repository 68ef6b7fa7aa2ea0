"""On SQLite and PostgreSQL: a database holding no catalog gets one only when asked."""

from __future__ import annotations

import pytest

from shepard.errors import CatalogMissing
from tests.integration.conftest import CatalogFactory


def test_only_create_makes_a_catalog(catalog_factory: CatalogFactory) -> None:
    for _ in range(2):  # refusing leaves nothing behind that a second look would accept
        with pytest.raises(CatalogMissing, match="init --repair"):
            catalog_factory(create=False)
    catalog_factory(create=True).close()
    opened = catalog_factory(create=False)
    assert sum(opened.counts().values()) == 0
    opened.close()
