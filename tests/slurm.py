"""What tests on the real Slurm cluster share: is it up, a PostgreSQL schema per flock (the
recommended catalog for clusters), making a flock.toml use Slurm, and cleaning up its tasks.

`scripts/services-slurm` starts the single-node cluster; `scripts/services` the PostgreSQL
server (SHEPARD_TEST_POSTGRES). Schemas made here are dropped when the test process exits.
"""

from __future__ import annotations

import atexit
import functools
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from shepard.catalog import open_catalog
from tests.services import require_service

DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
POSTGRES = os.environ.get("SHEPARD_TEST_POSTGRES", DEFAULT_POSTGRES)
_schemas: list[str] = []


@functools.cache
def slurm_problem() -> str | None:
    """None when the cluster answers and its node takes work, else why not."""
    try:
        found = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%t"], capture_output=True, text=True, timeout=20
        )
    except FileNotFoundError:
        return "sinfo not found: Slurm is not installed (run scripts/services-slurm)"
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 20 s (is slurmctld running? scripts/services-slurm)"
    states = found.stdout.split()
    if found.returncode != 0 or not states:
        detail = (found.stderr.strip().splitlines() or ["no node"])[-1]
        return f"the Slurm cluster does not answer (run scripts/services-slurm): {detail}"
    if not any(s.rstrip("*~#") in ("idle", "mix", "alloc") for s in states):
        return f"no Slurm node takes work (node states: {', '.join(states)})"
    return None


@functools.cache
def postgres_problem() -> str | None:
    engine = sa.create_engine(POSTGRES, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:
        first = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        return f"cannot connect to PostgreSQL at {POSTGRES} (set SHEPARD_TEST_POSTGRES): {first}"
    finally:
        engine.dispose()
    return None


def problem() -> str | None:
    """Why the slurm tier cannot run here (None: it can)."""
    return slurm_problem() or postgres_problem()


def require_slurm() -> None:
    """Skip (locally) or fail (CI) unless Slurm and PostgreSQL are both up."""
    require_service("Slurm (with PostgreSQL)", problem())


def fresh_catalog_url() -> str:
    """The URL of a new PostgreSQL schema holding an empty catalog (dropped when the test
    process exits)."""
    schema = f"shepard_slurm_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    finally:
        admin.dispose()
    if not _schemas:
        atexit.register(_drop_schemas)
    _schemas.append(schema)
    url = sa.make_url(POSTGRES).update_query_dict({"options": f"-csearch_path={schema}"})
    rendered = url.render_as_string(hide_password=False)
    open_catalog(rendered, create=True).close()  # as `init` would: commands never make one
    return rendered


def use_slurm(data: dict[str, Any], mode: str = "array", **slurm: Any) -> None:
    """Make a parsed flock.toml run on the test cluster, with a fresh PostgreSQL catalog.

    Reconciling every second and sheep that leave after 1 s idle keep the tests quick.
    """
    backend = data.setdefault("backend", {})
    backend["kind"] = "slurm"
    backend["slurm"] = {"mode": mode, "reconcile": 1.0, "sheep_idle": 1.0, "max_sheep": 2, **slurm}
    data["catalog"] = {"url": fresh_catalog_url()}


def cancel_tasks(flock: Path) -> None:
    """scancel whatever the flock's arrays still have in Slurm (after a test)."""
    from shepard.backends.slurm.backend import names_for
    from shepard.flock import Flock

    if not (flock / "flock.toml").exists():
        return
    opened = Flock.open(flock)
    if opened.config.backend.kind != "slurm":
        return
    names = names_for(opened.config.name, opened.dir.catalog_url)
    subprocess.run(["scancel", f"--name={names.array}"], capture_output=True, timeout=30)
    subprocess.run(["scancel", f"--name={names.sheep}"], capture_output=True, timeout=30)


def squeue(name: str) -> list[tuple[str, str]]:
    """(task, state) of the alive tasks of jobs named `name`, pending ones one per line."""
    found = subprocess.run(
        ["squeue", "-h", "-r", "-n", name, "-o", "%F_%K|%T"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return [
        (task, state) for task, _, state in (line.partition("|") for line in found.stdout.split())
    ]


def _drop_schemas() -> None:
    admin = sa.create_engine(POSTGRES, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            for schema in _schemas:
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    except Exception:  # the server went away: nothing more to do at exit
        pass
    finally:
        admin.dispose()
