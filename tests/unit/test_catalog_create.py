"""Only a new flock makes a catalog: a lost one is reported, never quietly replaced."""

from __future__ import annotations

from pathlib import Path

import pytest

from shepard.catalog import open_catalog
from shepard.config import FlockConfig
from shepard.errors import CatalogMissing
from shepard.flock import Flock


def test_a_missing_or_empty_sqlite_catalog_is_not_made(tmp_path: Path) -> None:
    path = tmp_path / "catalog.db"
    with pytest.raises(CatalogMissing, match="init --repair"):
        open_catalog(f"sqlite:///{path}", create=False)
    assert not path.exists()
    path.write_bytes(b"")
    with pytest.raises(CatalogMissing):
        open_catalog(f"sqlite:///{path}", create=False)
    assert path.stat().st_size == 0


def test_a_database_without_a_catalog_is_not_given_one(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (x)")
    with pytest.raises(CatalogMissing):
        open_catalog(f"sqlite:///{path}", create=False)


def test_flock_refuses_a_lost_catalog_until_repaired(tmp_path: Path) -> None:
    Flock.create(tmp_path / "f", FlockConfig(name="f")).close()
    (tmp_path / "f" / "catalog.db").unlink()
    flock = Flock.open(tmp_path / "f")
    with pytest.raises(CatalogMissing):
        flock.counts()
    assert not (tmp_path / "f" / "catalog.db").exists()
    assert flock.repair() == [f"an empty catalog {flock.dir.catalog_url}"]
    assert Flock.open(tmp_path / "f").repair() == []
    again = Flock.open(tmp_path / "f")
    assert sum(again.counts().values()) == 0
    again.close()
