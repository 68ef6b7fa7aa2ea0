"""Screenshots of every dashboard page from a real run, for docs/dashboard.md.

    scripts/screenshots            (or: .venv/bin/python bench/screenshots.py [OUT])

Makes a flock in a temporary folder, starts `shepard serve` and `shepard up` on it, submits
jobs (some fail, one runs long, one bundle is refused by the inbox), signs in with Debian's
Chromium (SHEPARD_TEST_CHROMIUM, default /usr/bin/chromium) and saves one PNG per page into
OUT (default docs/images/), the overview twice (light and dark).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import shepard

HERE = Path(__file__).resolve().parents[1]
SHEPARD = str(Path(sys.executable).with_name("shepard"))
JOB = """\
case "$NAME" in
  sample-0[37]) echo "reading $NAME"; echo "input file is truncated" >&2; exit 2;;
  long-*) i=0; while [ $i -lt 600 ]; do echo "step $i of 600: ok"; i=$((i+1)); sleep 0.5; done;;
  *) echo "reading $NAME"; sleep 1; echo "wrote result for $NAME";;
esac
"""


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "docs" / "images"
    out.mkdir(parents=True, exist_ok=True)
    chromium = os.environ.get("SHEPARD_TEST_CHROMIUM") or "/usr/bin/chromium"
    root = Path(tempfile.mkdtemp(prefix="shepard-shots-"))
    folder = root / "survey"
    (root / "job.sh").write_text(JOB)
    env = {**os.environ, "SHEPARD_FLOCK": str(folder), "SHEPARD_CONFIG_DIR": str(root / "cfg")}
    subprocess.run(
        [SHEPARD, "init", str(folder), "--payload-command", f"sh {root / 'job.sh'}",
         "--workers", "3"], check=True, env=env, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    flock = shepard.open(folder)
    _view, secret = flock.create_token("alice")
    flock.create_token("viewer", read_only=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    procs = [
        subprocess.Popen([SHEPARD, "serve", "--port", str(port)], env=env, cwd=root),
        subprocess.Popen([SHEPARD, "up"], env=env, cwd=root, stdout=subprocess.DEVNULL),
    ]
    try:
        for _ in range(150):
            try:
                urllib.request.urlopen(url + "/healthz", timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        flock.submit([{"NAME": f"sample-{i:02d}", "REGION": "north"} for i in range(12)],
                     batch="survey-north")  # fmt: skip
        (long_job,) = flock.submit([{"NAME": "long-assembly", "THREADS": 4}]).ids
        flock.submit([{"NAME": f"site-{i:03d}", "REGION": "south"} for i in range(40)],
                     batch="survey-south")  # fmt: skip
        (folder / "inbox" / "notes.zip").write_bytes(b"PK\x05\x06" + bytes(18))  # empty zip
        time.sleep(12)
        shoot(url, secret, chromium, out, long_job)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        flock.close()
    print(f"screenshots in {out}")


def shoot(url: str, secret: str, chromium: str, out: Path, job_id: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium, args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(url + "/signin")
        page.screenshot(path=out / "dashboard-signin.png")
        page.get_by_label("API token").fill(secret)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(url + "/")
        page.wait_for_timeout(1500)
        page.screenshot(path=out / "dashboard-overview.png", full_page=True)
        page.goto(url + "/jobs?limit=25")
        page.screenshot(path=out / "dashboard-jobs.png", full_page=True)
        page.goto(f"{url}/jobs/{job_id}")
        page.wait_for_timeout(2500)
        page.screenshot(path=out / "dashboard-job.png", full_page=True)
        page.goto(url + "/submit")
        page.screenshot(path=out / "dashboard-submit.png", full_page=True)
        page.goto(url + "/flock")
        page.screenshot(path=out / "dashboard-flock.png", full_page=True)
        page.emulate_media(color_scheme="dark")
        page.goto(url + "/")
        page.wait_for_timeout(1000)
        page.screenshot(path=out / "dashboard-overview-dark.png", full_page=True)
        browser.close()


if __name__ == "__main__":
    main()
