"""The dashboard's routes without a browser (FastAPI's test client): sessions, CSRF,
read-only tokens, forms, downloads. tests/acceptance/test_dashboard_browser.py drives the
same pages in Chromium against a real server."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import shepard
from shepard.config import FlockConfig, PayloadConfig
from shepard.flock import Flock
from shepard.model import JobStatus
from shepard.server.app import create_app
from shepard.web.live import event
from shepard.web.session import KEY_FILE


@pytest.fixture
def flock(tmp_path: Path) -> Iterator[Flock]:
    Flock.create(tmp_path / "f", FlockConfig(name="web", payload=PayloadConfig(command="true")))
    opened = shepard.open(tmp_path / "f")
    yield opened
    opened.close()


@pytest.fixture
def client(flock: Flock) -> TestClient:
    return TestClient(create_app(flock), follow_redirects=False)


def sign_in(client: TestClient, secret: str) -> str:
    """Sign in; return the session's CSRF value (from a page's form)."""
    form = client.get("/signin")
    nonce = re.search(r'name="nonce" value="([^"]+)"', form.text)
    assert nonce
    done = client.post("/signin", data={"token": secret, "nonce": nonce[1], "next": "/jobs"})
    assert done.status_code == 303 and done.headers["location"] == "/jobs"
    page = client.get("/jobs")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf
    return csrf[1]


def test_pages_need_a_session(client: TestClient, flock: Flock) -> None:
    (job,) = flock.submit([{"A": 1}]).ids
    for path in ("/", "/jobs", f"/jobs/{job}", "/submit", "/flock"):
        answer = client.get(path)
        assert answer.status_code == 303
        assert answer.headers["location"].startswith("/signin?next=")
    assert client.post("/actions/cancel", data={"ids": job}).status_code == 401
    assert client.get("/live/overview").status_code == 401


def test_the_session_cookie_is_signed_and_never_holds_the_token(
    client: TestClient, flock: Flock
) -> None:
    _view, secret = flock.create_token("admin")
    sign_in(client, secret)
    cookie = client.cookies["shepard_session"]
    assert secret not in cookie and secret[4:] not in cookie
    assert (flock.dir.folder / KEY_FILE).stat().st_mode & 0o077 == 0
    client.cookies.set("shepard_session", cookie[:-2] + "xx")  # tampered with
    assert client.get("/jobs").status_code == 303
    client.cookies.set("shepard_session", cookie)
    assert client.get("/jobs").status_code == 200
    flock.revoke_token("admin")  # revoking a token ends its sessions at once
    assert client.get("/jobs").status_code == 303


def test_sign_in_needs_its_own_form(client: TestClient, flock: Flock) -> None:
    _view, secret = flock.create_token("admin")
    answer = client.post("/signin", data={"token": secret, "nonce": "made-up"})
    assert answer.status_code == 303 and answer.headers["location"].startswith("/signin")
    assert "shepard_session" not in answer.cookies


def test_actions_check_csrf_and_read_only_tokens(client: TestClient, flock: Flock) -> None:
    ids = flock.submit([{"A": i} for i in range(3)]).ids
    _v, writer = flock.create_token("writer")
    _v, reader = flock.create_token("reader", read_only=True)
    csrf = sign_in(client, writer)
    assert client.post("/actions/cancel", data={"ids": ids[0], "csrf": "no"}).status_code == 403
    done = client.post(
        "/actions/cancel", data={"ids": ids[:2], "csrf": csrf, "back": "/jobs?status=queued"}
    )
    assert done.status_code == 303 and done.headers["location"] == "/jobs?status=queued"
    assert [flock.get_job(i).status for i in ids] == [JobStatus.CANCELLED] * 2 + [JobStatus.QUEUED]
    assert "Cancelled 2 jobs." in client.get("/jobs").text  # the message, shown once
    retried = client.post(
        "/actions/retry", data={"ids": ids[0], "csrf": csrf}, headers={"accept": "application/json"}
    )
    assert retried.json() == {"action": "retry", "ids": [ids[0]], "count": 1}
    offsite = client.post("/actions/cancel", data={"ids": ids[2], "csrf": csrf, "back": "//x.io"})
    assert offsite.headers["location"] == "/"
    client.cookies.clear()
    csrf = sign_in(client, reader)
    assert client.post("/actions/cancel", data={"ids": ids[2], "csrf": csrf}).status_code == 403
    assert flock.get_job(ids[2]).status is JobStatus.CANCELLED  # by the writer, above
    page = client.get("/jobs").text
    assert "Cancel selected" not in page and "read-only" in page


def test_submit_form_makes_jobs_from_items_or_a_range(client: TestClient, flock: Flock) -> None:
    _v, secret = flock.create_token("admin")
    csrf = sign_in(client, secret)
    form = {"csrf": csrf, "params": "COLOR=red", "items": "a\nb\n", "batch": "picked"}
    answer = client.post("/actions/submit", data=form)
    assert answer.headers["location"] == "/jobs?batch=picked"
    jobs = flock.jobs(batch="picked", newest_first=False).items
    assert [j.params for j in jobs] == [
        {"COLOR": "red", "NAME": "a"},
        {"COLOR": "red", "NAME": "b"},
    ]
    ranged = {"csrf": csrf, "params": '{"X": 1}', "range_name": "I", "range_start": "1",
              "range_end": "3", "batch": "ranged"}  # fmt: skip
    client.post("/actions/submit", data=ranged)
    assert [j.params["I"] for j in flock.jobs(batch="ranged", newest_first=False).items] == [
        1,
        2,
        3,
    ]
    bad = client.post("/actions/submit", data={"csrf": csrf, "params": "no equals sign"})
    assert bad.headers["location"] == "/submit"
    assert "write KEY=VALUE" in client.get("/submit").text
    assert flock.count().total == 5


def test_job_page_and_download(client: TestClient, flock: Flock) -> None:
    (job,) = flock.submit([{"NAME": "one"}]).ids
    _v, secret = flock.create_token("admin")
    sign_in(client, secret)
    page = client.get(f"/jobs/{job}")
    assert page.status_code == 200 and 'Job <span class="item">one</span>' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert client.get("/jobs/nope").status_code == 404
    assert client.get(f"/jobs/{job}/outputs/x.zip").status_code == 404


def test_static_assets_ship_in_the_package(client: TestClient) -> None:
    css = client.get("/static/app.css")
    assert css.status_code == 200 and "prefers-color-scheme: dark" in css.text
    again = client.get("/static/app.css", headers={"if-none-match": css.headers["etag"]})
    assert again.status_code == 304
    assert client.get("/static/../pyproject.toml").status_code == 404


def test_server_sent_events_split_lines() -> None:
    assert event("html", "a\nb") == "event: html\ndata: a\ndata: b\n\n"


def test_flock_page_makes_and_revokes_tokens(client: TestClient, flock: Flock) -> None:
    _v, secret = flock.create_token("admin")
    csrf = sign_in(client, secret)
    page = client.get("/flock")
    assert page.status_code == 200 and "API tokens" in page.text
    made = client.post("/actions/tokens", data={"csrf": csrf, "name": "ci", "read_only": "1"})
    shown = re.search(r'id="new-secret" class="secret">(shp_[^<]+)<', made.text)
    assert shown and flock.verify_token(shown[1]) is not None
    assert [t.name for t in flock.list_tokens() if t.read_only] == ["ci"]
    gone = client.post("/actions/tokens/revoke", data={"csrf": csrf, "name": "ci"})
    assert gone.status_code == 303 and flock.verify_token(shown[1]) is None
    assert shown[1] not in client.get("/flock").text
