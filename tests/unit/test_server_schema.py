"""schemathesis against the served OpenAPI document: generated requests (valid and not) on
every /api/v1 route, with a read-write token, over a real flock holding a few jobs in every
status. No answer may be a server error, and every answer must match the schema (status
codes, content types, bodies). The number of examples is bounded so CI stays quick.

It lives in the unit tier (it needs no service) and sorts after the tests that fork runner
processes (test_runner_process.py, test_runtime_*.py): schemathesis's ASGI client leaves a
daemon portal thread in the test process, and a process with threads does not fork runners."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("schemathesis")
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks
from schemathesis.core.result import Ok

import shepard
from shepard.config import FlockConfig, PayloadConfig
from shepard.flock import Flock
from shepard.model import JobStatus, Outcome
from shepard.server.app import create_app

EXAMPLES = 25
"""Generated requests per operation (bounded: the whole test stays under a minute)."""

CHECKS = [
    checks.not_a_server_error,
    checks.response_schema_conformance,
    checks.status_code_conformance,
    checks.content_type_conformance,
]


def _flock(folder: Path) -> Flock:
    Flock.create(folder, FlockConfig(name="schema", payload=PayloadConfig(command="true")))
    flock = shepard.open(folder)
    ids = flock.submit([{"ITEM": i, "TAG": "t"} for i in range(4)]).ids
    flock.store("outputs").put_bytes("r.zip", b"PK")
    for job_id, status in zip(ids[:2], (JobStatus.SUCCEEDED, JobStatus.FAILED), strict=True):
        (job,) = flock.catalog.claim("w:1", now=1.0e9, lease=60, job_ids=[job_id])
        outcome = Outcome(status, outputs=("r.zip",) if status is JobStatus.SUCCEEDED else ())
        flock.catalog.finish(job.id, job.attempt, outcome, now=1.0e9 + 1, retry_at=None)
    return flock


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Flock, str]]:
    flock = _flock(tmp_path_factory.mktemp("schema") / "flock")
    _, secret = flock.create_token("schemathesis")
    yield flock, secret
    flock.close()


def test_api_matches_its_schema(served: tuple[Flock, str]) -> None:
    flock, secret = served
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", create_app(flock))
    auth = {"Authorization": f"Bearer {secret}"}
    tried = 0
    for result in schema.get_all_operations():
        assert isinstance(result, Ok)
        operation = result.ok()
        if operation.method.upper() == "DELETE":
            continue  # would revoke the token the other requests use

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES, deadline=None, derandomize=True,
            suppress_health_check=list(HealthCheck), database=None,
        )  # fmt: skip
        def check(case: schemathesis.Case[Any]) -> None:
            case.call_and_validate(headers=auth, checks=CHECKS)

        check()
        tried += 1
    assert tried >= 12
