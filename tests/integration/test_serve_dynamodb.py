"""`shepard serve` over a flock whose catalog is a DynamoDB table (on the emulator): its API
tokens, an authenticated API call and the dashboard's pages, through FastAPI's test client."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from shepard.config import CatalogConfig, FlockConfig, PayloadConfig
from shepard.flock import Flock
from shepard.model import JobStatus, Outcome
from tests.integration.conftest import dynamodb_catalog

pytest.importorskip("fastapi")
pytest.importorskip("boto3")
from fastapi.testclient import TestClient

from shepard.server.app import create_app

pytestmark = pytest.mark.dynamodb


@pytest.fixture
def flock(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Flock]:
    with dynamodb_catalog(request, tmp_path) as url:  # type: ignore[arg-type]
        cfg = FlockConfig(
            name="ddb", payload=PayloadConfig(command="true"), catalog=CatalogConfig(url=url)
        )
        made = Flock.create(tmp_path / "f", cfg)
        yield made
        made.close()


def test_serve_answers_tokens_api_and_dashboard_on_dynamodb(flock: Flock) -> None:
    ids = flock.submit([{"NAME": "alpha"}, {"NAME": "beta"}], batch="nightly").ids
    (job,) = flock.catalog.claim("w", now=flock.clock(), lease=60, job_ids=[ids[0]])
    flock.catalog.finish(job.id, job.attempt, Outcome(JobStatus.SUCCEEDED), now=flock.clock())
    _view, secret = flock.create_token("ci")
    client = TestClient(create_app(flock), follow_redirects=False)

    assert client.get("/api/v1/jobs").status_code == 401
    answer = client.get("/api/v1/jobs", headers={"Authorization": f"Bearer {secret}"})
    assert answer.status_code == 200
    assert {j["id"]: j["status"] for j in answer.json()["items"]} == {
        ids[0]: "succeeded",
        ids[1]: "queued",
    }
    assert client.get("/api/v1/jobs", headers={"Authorization": "Bearer shp_x"}).status_code == 401

    form = client.get("/signin")
    nonce = re.search(r'name="nonce" value="([^"]+)"', form.text)
    assert nonce
    signed = client.post("/signin", data={"token": secret, "nonce": nonce[1], "next": "/"})
    assert signed.status_code == 303
    overview = client.get("/")
    assert overview.status_code == 200 and "nightly" in overview.text
    found = client.get("/jobs", params={"q": "BET"})
    assert found.status_code == 200 and ids[1] in found.text and ids[0] not in found.text
    found = client.get("/jobs", params={"item": "name=ALPHA"})
    assert found.status_code == 200 and ids[0] in found.text and ids[1] not in found.text
    flock.catalog.filter_budget = 1  # type: ignore[attr-defined]
    stretch = client.get("/jobs", params={"q": "nowhere"})  # one job read, then it stops
    assert stretch.status_code == 200 and "the next page reads on" in stretch.text
    assert 'id="next-page"' in stretch.text
    assert [t.name for t in flock.catalog.tokens()] == ["ci"]
    flock.revoke_token("ci")
    assert flock.catalog.tokens() == []
