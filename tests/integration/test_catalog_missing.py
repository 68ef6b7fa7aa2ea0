"""On SQLite and PostgreSQL: a database holding no catalog gets one only when asked."""

from __future__ import annotations

import pytest

from shepard.catalog import open_catalog
from shepard.errors import CatalogMissing


def test_only_create_makes_a_catalog(catalog_url: str) -> None:
    for _ in range(2):  # refusing leaves nothing behind that a second look would accept
        with pytest.raises(CatalogMissing, match="init --repair"):
            open_catalog(catalog_url, create=False)
    open_catalog(catalog_url, create=True).close()
    opened = open_catalog(catalog_url, create=False)
    assert sum(opened.counts().values()) == 0
    opened.close()
