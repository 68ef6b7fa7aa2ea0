"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against
`shepard serve` with `shepard up` running the jobs beside it, as a user would run them.

One flock, server and browser serve the whole module (starting them is most of the cost);
each test has a fresh browser context (no cookies) and jobs of its own.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import shepard
from shepard.flock import Flock
from tests.acceptance.conftest import SHEPARD, Cli
from tests.services import chromium_path

pytestmark = pytest.mark.acceptance

JOB = """\
case "$NAME" in
  bad*) echo "failing on purpose" >&2; exit 3;;
  slow*) i=0; while [ $i -lt 300 ]; do echo "tick $i"; i=$((i+1)); sleep 0.2; done;;
  *) sleep 0.3; echo "done $NAME";;
esac
"""
WAIT = 20_000  # ms a page may take to show what a test expects


@dataclass
class Site:
    url: str
    cli: Cli
    admin: str
    viewer: str
    browser: Any
    flock: Flock
    contexts: list[Any] = field(default_factory=list)

    def page(self, token: str | None = None) -> Any:
        """A page in a fresh context (no cookies), signed in with `token` if given."""
        context = self.browser.new_context(viewport={"width": 1366, "height": 900})
        self.contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(WAIT)
        if token is not None:
            sign_in(page, self.url, token)
        return page

    # the Python API rather than the CLI, which takes seconds to start on a loaded machine

    def submit(self, params: dict[str, Any]) -> str:
        (job_id,) = self.flock.submit([params]).ids
        return job_id

    def status(self, job_id: str) -> str:
        return self.flock.get_job(job_id).status.value

    def wait_status(self, job_id: str, wanted: set[str], timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while (found := self.status(job_id)) not in wanted:
            assert time.monotonic() < deadline, f"job {job_id} still {found}, not {wanted}"
            time.sleep(0.2)
        return found


def sign_in(page: Any, url: str, token: str) -> None:
    page.goto(url + "/signin")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(url + "/")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(cli: Cli, logs: Path, *args: str) -> subprocess.Popen[bytes]:
    out = (logs / f"{args[0]}.log").open("wb")
    proc = subprocess.Popen(
        [SHEPARD, *args], cwd=cli.cwd, env=cli.env, stdout=out, stderr=subprocess.STDOUT
    )
    out.close()
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def token(cli: Cli, name: str, *extra: str) -> str:
    out = cli("token", "create", name, *extra).out
    found: list[str] = re.findall(r"shp_[A-Za-z0-9_-]{43}", out)
    assert found, out
    return found[-1]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    chromium = chromium_path()
    from playwright.sync_api import sync_playwright

    root = tmp_path_factory.mktemp("dashboard")
    cli = Cli(root / "flock", root)
    (root / "job.sh").write_text(JOB)
    cli("init", str(cli.flock), "--payload-command", f"sh {root / 'job.sh'}", "--workers", "3")
    admin = token(cli, "admin")  # the CLI once; the Python API is quicker to start
    maker = shepard.open(cli.flock)
    try:
        viewer = maker.create_token("viewer", read_only=True)[1]
    finally:
        maker.close()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start(cli, root, "serve", "--port", str(port))
    worker = start(cli, root, "up")
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=2):
                    break
            except OSError:
                assert server.poll() is None, (root / "serve.log").read_text()
                assert time.monotonic() < deadline, "shepard serve did not answer in 30 s"
                time.sleep(0.2)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=chromium,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                      "--disable-component-update", "--disable-sync", "--no-first-run"],
            )  # fmt: skip
            flock = shepard.open(cli.flock)
            try:
                yield Site(url, cli, admin, viewer, browser, flock)
            finally:
                browser.close()
                flock.close()
    finally:
        stop(server)
        stop(worker)


@pytest.fixture(autouse=True)
def _close_pages(site: Site) -> Iterator[None]:
    """Close each test's browser contexts: their live streams would load the server."""
    yield
    while site.contexts:
        site.contexts.pop().close()


def test_without_a_session_every_page_sends_to_sign_in(site: Site) -> None:
    job = site.submit({"NAME": "anon-1"})
    page = site.page()
    for path in ("/", "/jobs", f"/jobs/{job}", "/submit", "/flock"):
        page.goto(site.url + path)
        assert page.url.startswith(site.url + "/signin?next="), path
        assert page.get_by_label("API token").is_visible()
    answer = page.request.post(site.url + "/actions/cancel", form={"ids": job})
    assert answer.status == 401
    assert page.request.get(site.url + "/live/overview").status == 401


def test_sign_in_then_sign_out(site: Site) -> None:
    page = site.page()
    page.goto(site.url + "/jobs")
    page.get_by_label("API token").fill("shp_" + "x" * 43)
    page.get_by_role("button", name="Sign in").click()
    assert "Unknown or revoked token" in page.get_by_role("alert").inner_text()
    page.get_by_label("API token").fill(site.admin)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(site.url + "/jobs")  # back where the user was going
    (cookie,) = [c for c in page.context.cookies() if c["name"] == "shepard_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert site.admin not in cookie["value"] and site.admin[4:] not in cookie["value"]
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(site.url + "/signin")
    page.goto(site.url + "/")
    assert page.url.startswith(site.url + "/signin")


def test_counts_change_while_jobs_run(site: Site) -> None:
    page = site.page(site.admin)
    succeeded = page.locator("#count-succeeded")
    before = int(succeeded.inner_text().replace(",", ""))
    site.flock.submit([{"NAME": f"count-{n}"} for n in range(4)])
    # no reload: the server-sent events bring the new counts
    page.wait_for_function(
        f"() => Number(document.querySelector('#count-succeeded').textContent"
        f".replace(/,/g, '')) >= {before + 4}"
    )
    assert (page.locator("svg.chart title").first.text_content() or "").startswith(
        "Jobs ended per minute"
    )
    assert page.get_by_role("heading", name="Recent batches").is_visible()


def test_filter_jobs(site: Site) -> None:
    alpha = site.submit({"NAME": "alpha-7", "COLOR": "teal"})
    site.submit({"NAME": "beta-7", "COLOR": "plum"})
    failed = site.submit({"NAME": "bad-filter"})
    site.wait_status(failed, {"failed"})
    page = site.page(site.admin)
    page.goto(site.url + "/jobs")
    page.get_by_label("Work item").fill("alpha-7")
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("table.jobs tbody tr")
    assert rows.count() == 1 and "alpha-7" in rows.first.inner_text()
    page.goto(site.url + "/jobs?q=PLUM")
    assert rows.count() == 1 and "beta-7" in rows.first.inner_text()
    page.goto(site.url + "/jobs")
    page.get_by_label("Status").select_option("failed")
    page.get_by_role("button", name="Filter").click()
    texts = rows.all_inner_texts()
    assert texts and all("failed" in t for t in texts)
    assert any("bad-filter" in t for t in texts)
    page.goto(f"{site.url}/jobs?item=COLOR%3Dteal")
    assert rows.count() == 1
    page.get_by_role("link", name="alpha-7").click()
    page.wait_for_url(f"{site.url}/jobs/{alpha}")


def test_log_tail_grows_then_cancel(site: Site) -> None:
    job = site.submit({"NAME": "slow-1"})
    page = site.page(site.admin)
    page.goto(f"{site.url}/jobs/{job}")
    log = page.locator("#log-stdout")
    log.filter(has_text="tick 2").wait_for()
    log.filter(has_text="tick 6").wait_for()  # grew, without a reload
    assert site.status(job) == "running"
    page.locator("#cancel-job").click()
    page.get_by_role("status").filter(has_text="Cancelled 1 job").wait_for()
    assert site.status(job) == "cancelled"
    page.locator("#job-status").filter(has_text="cancelled").wait_for()


def test_retry_a_failed_job(site: Site) -> None:
    job = site.submit({"NAME": "bad-retry"})
    site.wait_status(job, {"failed"})
    page = site.page(site.admin)
    page.goto(f"{site.url}/jobs/{job}")
    page.locator("#log-stderr").filter(has_text="failing on purpose").wait_for()
    page.locator("#retry-job").click()
    page.get_by_role("status").filter(has_text="Queued 1 job again").wait_for()
    site.wait_status(job, {"failed"})
    page.locator("table >> text=2").first.wait_for()  # the second attempt, live
    assert site.flock.get_job(job).attempt == 2


def test_upload_a_bundle(site: Site, tmp_path: Path) -> None:
    bundle = tmp_path / "sample.zip"
    with zipfile.ZipFile(bundle, "w") as zf:
        zf.writestr("inputs.json", json.dumps({"NAME": "bundled-1"}))
        zf.writestr("data.txt", "hello\n")
    page = site.page(site.admin)
    page.goto(site.url + "/submit")
    page.locator("#u-bundle").set_input_files(str(bundle))
    page.locator("#upload-bundle").click()
    page.wait_for_url(re.compile(re.escape(site.url) + r"/jobs/[0-9a-f-]{36}$"))
    job = page.url.rsplit("/", 1)[-1]
    assert page.locator("h1").inner_text().startswith("Job bundled-1")
    assert site.wait_status(job, {"succeeded"}) == "succeeded"
    page.goto(site.url + "/submit")
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not a zip at all")
    page.locator("#u-bundle").set_input_files(str(junk))
    page.locator("#upload-bundle").click()
    assert page.get_by_role("alert").is_visible()


def test_submit_form(site: Site) -> None:
    page = site.page(site.admin)
    page.goto(site.url + "/submit")
    page.get_by_label("Parameters every job gets").fill("COLOR=red")
    page.get_by_label("Work item (one a line)").fill("form-a\nform-b\n")
    page.get_by_label("Batch label").first.fill("from-the-form")
    page.locator("#submit-jobs").click()
    page.get_by_role("status").filter(has_text="Submitted 2 jobs as from-the-form").wait_for()
    assert page.locator("table.jobs tbody tr").count() == 2


def test_a_read_only_token_cannot_act(site: Site) -> None:
    job = site.submit({"NAME": "slow-ro"})
    site.wait_status(job, {"running"})
    page = site.page(site.viewer)
    page.goto(site.url + "/jobs")
    assert page.locator("#cancel-selected").count() == 0
    assert page.locator('input[name="ids"]').count() == 0
    page.goto(f"{site.url}/jobs/{job}")
    page.locator("#log-stdout").filter(has_text="tick 1").wait_for()
    assert page.locator("#cancel-job").count() == 0
    page.goto(site.url + "/submit")
    assert "read-only" in page.locator("main").inner_text()
    page.goto(site.url + "/flock")
    assert page.get_by_role("heading", name="API tokens").count() == 0
    # the server refuses it too, whatever the page shows
    answer = page.request.post(site.url + "/actions/cancel", form={"ids": job, "csrf": "x"})
    assert answer.status == 403
    assert site.status(job) == "running"
    site.flock.cancel_jobs([job])


def test_actions_need_the_sessions_csrf_value(site: Site) -> None:
    job = site.submit({"NAME": "slow-csrf"})
    page = site.page(site.admin)
    answer = page.request.post(site.url + "/actions/cancel", form={"ids": job, "csrf": "forged"})
    assert answer.status == 403
    assert site.status(job) in {"queued", "running"}
    site.flock.cancel_jobs([job])


def test_flock_page_hides_secrets_and_lists_rejected_bundles(site: Site) -> None:
    inbox = site.cli.flock / "inbox"
    (inbox / "broken.zip").write_bytes(b"PK\x05\x06" + b"\x00" * 18)  # an empty zip
    page = site.page(site.admin)
    deadline = time.monotonic() + 20
    while True:
        page.goto(site.url + "/flock")
        if page.locator("table.rejected").filter(has_text="broken.zip").count():
            break
        assert time.monotonic() < deadline, "the rejected bundle never showed"
        time.sleep(0.5)
    assert page.locator("table.rejected td.reason").first.inner_text().strip()
    tokens = page.locator("table").filter(has_text="read-write").inner_text()
    assert "admin" in tokens and "viewer" in tokens
    assert site.admin not in page.content()


def test_static_assets_are_small_and_local(site: Site) -> None:
    page = site.page(site.admin)
    seen: list[str] = []
    page.on("request", lambda r: seen.append(r.url))
    page.goto(site.url + "/")
    page.wait_for_load_state("load")
    assert seen and all(u.startswith(site.url) for u in seen)
    static = Path(__file__).parents[2] / "src" / "shepard" / "web" / "static"
    assert sum(p.stat().st_size for p in static.iterdir()) < 200_000
    assert os.environ.get("SHEPARD_TEST_CHROMIUM")


UNLABELLED = """() => Array.from(document.querySelectorAll('input, select, textarea, button'))
  .filter((el) => el.type !== 'hidden')
  .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                  && !(el.tagName === 'BUTTON' && el.textContent.trim()))
  .map((el) => el.outerHTML)"""


def test_every_control_has_a_label_and_takes_the_keyboard(site: Site) -> None:
    (job,) = site.flock.submit([{"NAME": "a11y"}]).ids
    page = site.page(site.admin)
    for path in ("/", "/jobs", f"/jobs/{job}", "/submit", "/flock"):
        page.goto(site.url + path)
        assert page.evaluate(UNLABELLED) == [], path
    page.goto(site.url + "/jobs")
    page.keyboard.press("Tab")  # the skip link comes first
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("location.hash") == "#main"
