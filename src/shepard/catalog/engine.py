"""Engines for catalog URLs, and the translation of database failures into CatalogError.

Everything dialect-specific about *connecting* lives here, so `sql.py` has a single code path:
- SQLite files use WAL (readers never block the writer), synchronous=NORMAL (durable across
  process crashes, cheap commits) and write transactions that start with BEGIN IMMEDIATE, so
  concurrent writers queue on the busy timeout instead of failing with "database is locked".
- PostgreSQL always goes through psycopg 3, with a connect timeout and pre-ping, so a daemon
  survives a server restart and an unreachable host fails fast with a readable message.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine
from sqlalchemy.pool import StaticPool

from shepard.errors import CatalogError, CatalogMissing

SQLITE_BUSY_TIMEOUT_S = 30.0
"""How long a SQLite writer waits for another process's write transaction before giving up
(or, in a patient catalog, before it logs that it is waiting and goes on waiting)."""

log = logging.getLogger(__name__)

PG_CONNECT_TIMEOUT_S = 10
READ_ONLY = "shepard_read_only"
"""Execution option: the transaction only reads, so SQLite may start it with a plain BEGIN."""

_USAGE = (
    "use sqlite:///ABSOLUTE/PATH.db, sqlite:// or memory:// (in memory) or "
    "postgresql://USER@HOST/DB"
)


def memory_as_sqlite(url: str) -> str:
    """`memory://` (the registry's in-memory catalog) is SQLite in memory: `sqlite://`."""
    return "sqlite://" if url.lower().rstrip("/") in ("memory:", "memory:/") else url


def parse_url(url: str) -> URL:
    """Parse a catalog URL; plain `postgresql://` is pinned to the psycopg 3 driver."""
    try:
        parsed = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError) as exc:
        shown = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)  # hide a password
        raise CatalogError(f"invalid catalog URL {shown!r}: {_USAGE}") from exc
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    try:  # a driver name SQLAlchemy does not know fails while looking for its module
        kind = (parsed.get_backend_name(), parsed.get_driver_name())
    except sa.exc.ArgumentError:
        kind = ("", "")
    if kind not in (("sqlite", "pysqlite"), ("postgresql", "psycopg")):
        shown = parsed.render_as_string(hide_password=True)
        raise CatalogError(f"unsupported catalog URL {shown!r}: {_USAGE}")
    return parsed


def is_memory(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def check_exists(url: URL) -> None:
    """Raise CatalogMissing when `url` is a SQLite file that does not exist or is empty
    (connecting would quietly make a new, empty database there)."""
    if url.get_backend_name() != "sqlite" or is_memory(url):
        return
    path = Path(str(url.database))
    if not path.is_file() or path.stat().st_size == 0:
        raise missing_catalog(url)


def missing_catalog(url: URL) -> CatalogMissing:
    """The error for a flock whose catalog is gone (deleted, emptied, never made)."""
    shown = url.render_as_string(hide_password=True)
    return CatalogMissing(
        f"the flock's catalog {shown} is missing or empty, so the history of its jobs is "
        "gone (was it deleted?); commands refuse to run without it. If it cannot be brought "
        "back, `shepard init --repair FLOCK_FOLDER` creates a new, empty one"
    )


def create_engine(url: URL, *, patient: Callable[[], bool] = bool) -> Engine:
    """An Engine for a URL from `parse_url`, configured as the module docstring describes.

    `patient()`, asked at each write transaction: True when a SQLite write transaction that
    finds the catalog locked for longer than SQLITE_BUSY_TIMEOUT_S must keep waiting (see
    `begin_immediate`) instead of failing.
    """
    if url.get_backend_name() == "postgresql":
        connect_args: dict[str, Any] = {}
        if "connect_timeout" not in url.query:
            connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT_S
        return sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args)
    if is_memory(url):
        # One connection shared by every thread: the catalog serialises its transactions.
        engine = sa.create_engine(
            url, poolclass=StaticPool, connect_args={"check_same_thread": False}
        )
    else:
        engine = sa.create_engine(
            url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False}
        )
    _configure_sqlite(engine, wal=not is_memory(url), patient=patient)
    return engine


def _configure_sqlite(engine: Engine, *, wal: bool, patient: Callable[[], bool]) -> None:
    """SQLAlchemy's documented recipe for explicit SQLite transactions, plus our pragmas."""
    name = engine.url.render_as_string(hide_password=True)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Stop the sqlite3 module from issuing its own (deferred) BEGIN; `_on_begin` does it.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # busy_timeout first: switching to WAL needs a lock another process may hold.
        cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        if wal:
            cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        # IMMEDIATE takes the write lock up front: a writer that would otherwise upgrade a
        # read lock mid-transaction can deadlock and fail at once, ignoring busy_timeout.
        if conn.get_execution_options().get(READ_ONLY, False):
            conn.exec_driver_sql("BEGIN")
        else:
            # On the DBAPI connection itself: a failed BEGIN must not go through SQLAlchemy's
            # error handling, which would end the transaction it is opening.
            try:
                begin_immediate(conn.connection.driver_connection, patient=patient(), name=name)
            except sqlite3.Error as exc:  # wrapped as SQLAlchemy would have done
                raise sa.exc.DBAPIError.instance(
                    "BEGIN IMMEDIATE", None, exc, sqlite3.Error
                ) from exc


def begin_immediate(dbapi_connection: Any, *, patient: bool, name: str) -> None:
    """Open a SQLite write transaction on a bare sqlite3 connection.

    SQLite itself waits up to SQLITE_BUSY_TIMEOUT_S for another process's write transaction.
    Beyond that, an impatient caller gets sqlite3.OperationalError ("database is locked"; see
    `describe`); a patient one (a long-running process: `up`, a runner, a sheep) logs once
    that it is waiting, tries again until the lock is free, and logs once when it goes on.
    """
    waiting_since: float | None = None
    while True:
        try:
            dbapi_connection.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if not patient or "locked" not in str(exc).lower():
                raise
            if waiting_since is None:
                waiting_since = time.monotonic() - SQLITE_BUSY_TIMEOUT_S
                log.warning(
                    "the catalog %s has been locked by another process for %g s; waiting",
                    name,
                    SQLITE_BUSY_TIMEOUT_S,
                )
            continue
        if waiting_since is not None:
            log.warning(
                "the catalog %s is free again after %.0f s; going on",
                name,
                time.monotonic() - waiting_since,
            )
        return


def driver_errors(engine: Engine) -> type[Exception]:
    """The base class of the errors the engine's DBAPI driver raises itself."""
    error: type[Exception] = engine.dialect.loaded_dbapi.Error
    return error


@contextlib.contextmanager
def catalog_errors(url: URL, driver: type[Exception] | None = None) -> Iterator[None]:
    """Turn database failures raised inside the block into CatalogError with a usable message.

    `driver`: also translate that class of raw driver errors (statements run on a bare
    DBAPI connection, which SQLAlchemy does not wrap).
    """
    try:
        yield
    except sa.exc.DBAPIError as exc:
        raise CatalogError(_scrub(describe(exc, url), url)) from exc
    except Exception as exc:
        if driver is None or not isinstance(exc, driver):
            raise
        wrapped = sa.exc.DBAPIError.instance(None, None, exc, driver)
        if not isinstance(wrapped, sa.exc.DBAPIError):
            raise
        raise CatalogError(_scrub(describe(wrapped, url), url)) from exc
    except sa.exc.TimeoutError as exc:  # the connection pool stayed exhausted
        shown = url.render_as_string(hide_password=True)
        raise CatalogError(f"no free connection to the catalog at {shown}: {exc}") from exc


def describe(exc: sa.exc.DBAPIError, url: URL) -> str:
    """A one-line explanation of a database failure, never including the password."""
    shown = url.render_as_string(hide_password=True)
    detail = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc).__name__
    lowered = detail.lower()
    if url.get_backend_name() == "sqlite":
        if "locked" in lowered:
            return (
                f"the catalog {shown} is locked by another process for more than "
                f"{SQLITE_BUSY_TIMEOUT_S:g} s; is another shepard command holding it?"
            )
        if "unable to open" in lowered:
            return (
                f"cannot open the catalog {shown}: {detail}; "
                "does its folder exist and is it writable?"
            )
    elif _unreachable(exc):
        # psycopg says 'connection failed: connection to server at "h", port 1 failed: WHY'
        reason = detail.rsplit("failed:", 1)[-1].strip().rstrip(".")
        reason = re.sub(r"^(FATAL|ERROR):\s+", "", reason)
        if reason[:1].isupper() and reason[1:2].islower():
            reason = reason[0].lower() + reason[1:]
        return f"cannot reach the catalog at {shown}: {reason}{_hint(lowered)}"
    return f"the catalog at {shown} failed: {detail}"


def _unreachable(exc: sa.exc.DBAPIError) -> bool:
    """True for connection-level failures (no SQLSTATE, class 08, or server shutting down)."""
    if exc.connection_invalidated:
        return True
    sqlstate = getattr(exc.orig, "sqlstate", None)
    return sqlstate is None or sqlstate.startswith("08") or sqlstate in ("57P01", "57P02", "57P03")


def _hint(message: str) -> str:
    if any(s in message for s in ("refused", "timeout", "timed out", "no route")):
        return "; is PostgreSQL running there?"
    if any(s in message for s in ("resolve", "translate host")):
        return "; check the host name"
    return ""


def _scrub(message: str, url: URL) -> str:
    """Belt and braces: a driver message must never leak the password."""
    if url.password:
        message = message.replace(str(url.password), "***")
    return message
