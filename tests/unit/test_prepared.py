"""catalog/prepared.py reads what SQLAlchemy's compiler worked out (bind names, their order,
their values); these tests fail when a SQLAlchemy release changes that, by comparing what
`Prepared` runs with what SQLAlchemy itself runs through its public API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from shepard.catalog.prepared import Prepared
from shepard.catalog.schema import job_events, jobs, metadata
from shepard.catalog.statements import (
    CLAIM,
    FACT_COLUMNS,
    FINISH,
    FINISH_FACTS,
    INSERT_EVENT,
    claim_params,
)

FINISHED = {
    "b_id": "j1", "b_attempt": 1, "b_status": "failed", "b_not_before": None,
    "b_finished_at": 5.0, "b_reason": "exit code 3", "b_exit_code": 3, "b_outputs": "[]",
    "b_error_bundle": None,
}  # fmt: skip
EVENT = {"job_id": "j1", "attempt": 1, "status": "failed", "at": 5.0, "detail": "x"}
EVENT_KEYS = tuple(EVENT)
STATEMENTS: list[tuple[sa.Update | sa.Select[Any] | sa.Insert, dict[str, Any]]] = [
    (CLAIM, claim_params("w", now=2.0, lease=60, limit=1)),
    (FINISH_FACTS, {"b_id": "j1"}),
    (FINISH, FINISHED),
    (INSERT_EVENT, EVENT),
]


def _engine(folder: Path) -> sa.Engine:
    folder.mkdir()
    engine = sa.create_engine(f"sqlite:///{folder / 'c.db'}")
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            jobs.insert(),
            [
                {"id": f"j{i}", "status": "queued", "params": "{}", "max_attempts": 2,
                 "submitted_at": 1.0}
                for i in (1, 2)
            ],
        )  # fmt: skip
    return engine


def _state(engine: sa.Engine) -> tuple[list[Any], list[Any]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(jobs).order_by(jobs.c.seq)).all()
        history = conn.execute(sa.select(job_events).order_by(job_events.c.id)).all()
    return [tuple(r) for r in rows], [tuple(r)[1:] for r in history]


def test_prepared_statements_do_what_sqlalchemy_does(tmp_path: Path) -> None:
    ours, theirs = _engine(tmp_path / "a"), _engine(tmp_path / "b")
    raw = ours.raw_connection()
    dialect = ours.dialect
    returned: list[list[dict[str, Any]]] = [[], []]
    with theirs.begin() as conn:
        for stmt, params in STATEMENTS:
            if stmt is INSERT_EVENT:
                Prepared(stmt, dialect, insert_keys=EVENT_KEYS).many(raw, [params])
                conn.execute(stmt, [params])
                continue
            if stmt is CLAIM:
                names = [c.name for c in jobs.c]
            elif stmt is FINISH_FACTS:
                names = [c.name for c in FACT_COLUMNS]
            elif stmt is FINISH:
                names = ["id"]
            else:
                names = []
            returned[0] += Prepared(stmt, dialect, names).rows(raw, params)
            result = conn.execute(stmt, params)
            returned[1] += [dict(r) for r in result.mappings()] if names else []
    raw.commit()
    raw.close()
    assert returned[0] == returned[1] and len(returned[0]) == 3  # claimed, facts, finished
    assert _state(ours) == _state(theirs)


# SQLAlchemy leaves PGDialect_psycopg.__init__ unannotated, hence the ignore
@pytest.mark.parametrize(
    "dialect",
    [sqlite.dialect(), postgresql.psycopg.dialect()],  # type: ignore[no-untyped-call]
)
def test_prepared_arguments_match_the_compilers_public_parameters(dialect: Any) -> None:
    for stmt, params in STATEMENTS:
        keys = EVENT_KEYS if stmt is INSERT_EVENT else None
        prepared = Prepared(stmt, dialect, insert_keys=keys)
        compiled = stmt.compile(dialect=dialect, column_keys=None if keys is None else list(keys))
        assert prepared.sql == compiled.string
        expected = compiled.construct_params(params)
        args = prepared._args(params)
        if dialect.positional:
            assert args == tuple(expected[name] for name in compiled.positiontup or ())
        else:
            assert args == expected
