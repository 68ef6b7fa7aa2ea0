"""The job catalog: where job state lives (SQLite for one machine, PostgreSQL for a fleet).

Catalogs are opened by URL through `open_catalog`; code above this package speaks the
`Catalog` protocol only (base.py: `JobStore` and `PlacementStore`). A new kind of catalog is
one module with a class that follows `CatalogClass` and one line in CATALOGS; it calls the
state machine (states.py) for every transition and passes the catalog suite by adding one
factory to tests/integration/conftest.py.
"""

from __future__ import annotations

import importlib
import re
from typing import Protocol

from shepard.catalog.base import Catalog, JobStore, PlacementStore
from shepard.errors import CatalogError

__all__ = [
    "CATALOGS",
    "Catalog",
    "CatalogClass",
    "JobStore",
    "PlacementStore",
    "be_patient",
    "check_url",
    "in_process",
    "open_catalog",
]

# URL scheme -> "module:class"; imported on first use, so a catalog's driver loads only when
# a flock uses it.
CATALOGS: dict[str, str] = {
    "sqlite": "shepard.catalog.sql:SqlCatalog",
    "postgresql": "shepard.catalog.sql:SqlCatalog",
    "postgresql+psycopg": "shepard.catalog.sql:SqlCatalog",
    "postgres": "shepard.catalog.sql:SqlCatalog",
    "memory": "shepard.catalog.sql:SqlCatalog",  # SQLite in memory: this process only
    "dynamodb": "shepard.catalog.dynamodb:DynamoCatalog",  # needs the `aws` extra (boto3)
}


class CatalogClass(Protocol):
    """What CATALOGS names: a class that opens, checks and describes its URLs."""

    @classmethod
    def from_url(cls, url: str, *, create: bool, patient: bool) -> Catalog:
        """Open the catalog at `url` (see `open_catalog`)."""
        ...

    @classmethod
    def check_url(cls, url: str) -> None:
        """Raise CatalogError if `url` is malformed, without connecting to anything."""
        ...

    @classmethod
    def in_process(cls, url: str) -> bool:
        """True if the catalog at `url` lives in this process only (other processes, forks
        included, cannot reach it)."""
        ...


def scheme(url: str) -> str:
    """The URL's scheme, lower-cased ("" when there is none)."""
    head, sep, _ = url.partition("://")
    return head.lower() if sep else ""


def catalog_class(url: str) -> CatalogClass:
    """The registered class for `url`'s scheme; CatalogError naming the known schemes if none."""
    target = CATALOGS.get(scheme(url))
    if target is None:
        known = ", ".join(f"{s}://" for s in CATALOGS)
        shown = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)  # never show a password
        raise CatalogError(f"unsupported catalog URL {shown!r}: use one of {known}")
    module, _, name = target.partition(":")
    cls: CatalogClass = getattr(importlib.import_module(module), name)
    return cls


def open_catalog(url: str, *, create: bool = True, patient: bool = False) -> Catalog:
    """Open (upgrading its schema if needed) the catalog at `url`.

    With `create`, a database that holds no catalog yet gets an empty one. Without, such a
    database (and a SQLite file that does not exist or is empty) raises CatalogMissing and
    is left as it was: a flock's commands never replace a lost catalog without a word.

    Accepted URLs (CATALOGS): `sqlite:///ABSOLUTE/PATH.db`, `sqlite://` or `memory://` (in
    memory, private to this process), `postgresql://USER[:PASSWORD]@HOST[:PORT]/DB` (psycopg 3
    is always used) or `postgresql+psycopg://...`. Raises CatalogError if the URL is
    unsupported or the database cannot be reached; the message never contains the password.

    `patient`: for long-running processes (see `Catalog.be_patient`).
    """
    return catalog_class(url).from_url(url, create=create, patient=patient)


def check_url(url: str) -> None:
    """Raise CatalogError if `url` names no catalog Shepard can open (nothing is contacted)."""
    catalog_class(url).check_url(url)


def in_process(url: str) -> bool:
    """True if the catalog at `url` lives in this process only (see CatalogClass)."""
    return catalog_class(url).in_process(url)


def __getattr__(name: str) -> object:
    """`SqlCatalog`, imported on first use (SQLAlchemy loads only when it is needed)."""
    if name == "SqlCatalog":
        from shepard.catalog.sql import SqlCatalog

        return SqlCatalog
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def be_patient(catalog: Catalog) -> None:
    """Make `catalog` wait out another process's long write transaction (logging it) instead
    of failing: for long-running processes (dispatchers, heartbeats, runners), which must
    never die because another command is busy. Short commands keep the clear error."""
    catalog.be_patient()
