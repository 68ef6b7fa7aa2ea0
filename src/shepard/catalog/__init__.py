"""The job catalog: where job state lives (SQLite for one machine, PostgreSQL for a fleet)."""

from shepard.catalog.base import Catalog
from shepard.catalog.sql import SqlCatalog

__all__ = ["Catalog", "SqlCatalog", "open_catalog"]


def open_catalog(url: str, *, create: bool = True) -> SqlCatalog:
    """Open (upgrading its schema if needed) the catalog at `url`.

    With `create`, a database that holds no catalog yet gets an empty one. Without, such a
    database (and a SQLite file that does not exist or is empty) raises CatalogMissing and
    is left as it was: a flock's commands never replace a lost catalog without a word.

    Accepted URLs: `sqlite:///ABSOLUTE/PATH.db`, `sqlite://` (in memory, private to this
    process), `postgresql://USER[:PASSWORD]@HOST[:PORT]/DB` (psycopg 3 is always used) or
    `postgresql+psycopg://...`. Raises CatalogError if the URL is unsupported or the database
    cannot be reached; the message never contains the password.
    """
    return SqlCatalog(url, create=create)
