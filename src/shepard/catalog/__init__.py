"""The job catalog: where job state lives (SQLite for one machine, PostgreSQL for a fleet)."""

from shepard.catalog.base import Catalog
from shepard.catalog.sql import SqlCatalog

__all__ = ["Catalog", "SqlCatalog", "be_patient", "open_catalog"]


def open_catalog(url: str, *, create: bool = True, patient: bool = False) -> SqlCatalog:
    """Open (upgrading its schema if needed) the catalog at `url`.

    With `create`, a database that holds no catalog yet gets an empty one. Without, such a
    database (and a SQLite file that does not exist or is empty) raises CatalogMissing and
    is left as it was: a flock's commands never replace a lost catalog without a word.

    Accepted URLs: `sqlite:///ABSOLUTE/PATH.db`, `sqlite://` (in memory, private to this
    process), `postgresql://USER[:PASSWORD]@HOST[:PORT]/DB` (psycopg 3 is always used) or
    `postgresql+psycopg://...`. Raises CatalogError if the URL is unsupported or the database
    cannot be reached; the message never contains the password.

    `patient`: for long-running processes, which must outlast another process holding the
    SQLite write lock for long: they wait (and log it) instead of raising CatalogError.
    """
    return SqlCatalog(url, create=create, patient=patient)


def be_patient(catalog: Catalog) -> None:
    """Make `catalog` wait out another process's long write transaction (logging it) instead
    of failing: for long-running processes (dispatchers, heartbeats, runners), which must
    never die because another command is busy. Short commands keep the clear error."""
    if isinstance(catalog, SqlCatalog):
        catalog.patient = True
