"""Catalogs are opened by URL scheme through CATALOGS; an unknown scheme is a clear error."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from shepard import catalog
from shepard.catalog import CATALOGS, Catalog, check_url, in_process, open_catalog
from shepard.catalog.states import MAX_LOST
from shepard.cli import main as cli_main
from shepard.errors import CatalogError
from shepard.model import JobSpec, JobStatus


def test_memory_catalog_runs_jobs_in_this_process() -> None:
    opened = open_catalog("memory://")
    try:
        (job_id,) = opened.add_jobs([JobSpec({})], now=1.0, default_attempts=1)
        for attempt in range(1, MAX_LOST + 1):
            (job,) = opened.claim("w", now=float(attempt), lease=1.0)
            assert (job.id, job.attempt) == (job_id, attempt)
            assert opened.expire_leases(now=attempt + 2.0) == [job_id]
        assert opened.counts()[JobStatus.FAILED] == 1
    finally:
        opened.close()
    assert in_process("memory://") and in_process("sqlite://")
    assert not in_process("sqlite:////tmp/c.db") and not in_process("postgresql://u@h/db")


@pytest.mark.parametrize(
    "url", ["cassandra://table", "mysql://root:s3cret@localhost/db", "catalog.db", ""]
)
def test_an_unknown_scheme_names_the_known_ones(url: str) -> None:
    for attempt in (check_url, open_catalog):
        with pytest.raises(CatalogError, match="unsupported catalog URL") as caught:
            attempt(url)
        message = str(caught.value)
        assert all(f"{scheme}://" in message for scheme in CATALOGS)
        assert "s3cret" not in message


def test_a_registered_scheme_opens_its_class(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(CATALOGS, "fake", "shepard.catalog.sql:SqlCatalog")
    with pytest.raises(CatalogError, match="unsupported catalog URL 'fake://x'"):
        check_url("fake://x")  # registered, but the class refuses what it cannot open
    assert catalog.scheme("SQLite:///x") == "sqlite"


def test_init_refuses_an_unknown_catalog_scheme(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SHEPARD_PROFILE", raising=False)
    folder = tmp_path / "flock"
    argv = ["shepard", "init", str(folder), "--payload-command", "true"]
    monkeypatch.setattr(sys, "argv", [*argv, "--catalog", "cassandra://jobs"])
    assert cli_main.app_main() == 2
    err = capsys.readouterr().err
    assert "unsupported catalog URL 'cassandra://jobs'" in err and "postgresql://" in err
    assert "Traceback" not in err and not folder.exists()


def test_memory_catalogs_opened_by_many_threads_at_once_each_get_a_schema() -> None:
    # each is a database of its own, so no database lock orders their migrations
    start = threading.Barrier(4)
    opened: list[Catalog] = []
    errors: list[BaseException] = []

    def run() -> None:
        start.wait()
        try:
            opened.append(open_catalog("memory://"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for each in opened:
        each.close()
    assert errors == [] and len(opened) == 4


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("dynamodb://ab", "invalid DynamoDB table name"),
        ("dynamodb://jobs?color=red", "unknown option 'color'"),
        ("dynamodb://jobs/extra", "invalid DynamoDB catalog URL"),
    ],
)
def test_a_malformed_dynamodb_url_is_refused_without_contacting_aws(url: str, message: str) -> None:
    with pytest.raises(CatalogError, match=message):
        check_url(url)
    check_url("dynamodb://jobs?region=eu-west-1&endpoint=http://127.0.0.1:1")
