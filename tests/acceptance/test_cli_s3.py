"""A flock whose stores are in S3, driven as a user would (against the S3 test server).

The user exports AWS_ENDPOINT_URL (boto3's usual variable) and names a bucket with
`--storage`; nothing else changes: bundles, result zips, error bundles, logs and secrets are
objects in the bucket, jobs run here, `logs`, `show`, `retrieve` and `secretify` work as on
folders. Skips (locally) or fails (CI) without the server (SHEPARD_TEST_S3).
"""

from __future__ import annotations

import re
import uuid
import zipfile
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from shepard.storage import StoreOptions, open_store
from tests.acceptance.conftest import Cli
from tests.services import s3_endpoint

JOB_PY = """\
import os, pathlib, sys
item = os.environ.get("ITEM", "-")
out = pathlib.Path(os.environ["ROOT_OUTPUT_NAME"])
(out / "result.txt").write_text(f"item {item}\\n")
print("done", item)
print("to stderr", item, file=sys.stderr)
secret = pathlib.Path(os.environ["ROOT_INPUT_NAME"], "secrets", "api.txt")
if secret.exists():
    (out / "secret.txt").write_text(secret.read_text())
sys.exit(3 if item == "bad" else 0)
"""


def job_id(text: str) -> str:
    return re.search(r"submitted job (\S+)", text).group(1)  # type: ignore[union-attr]


@pytest.fixture
def s3cli(tmp_path: Path) -> tuple[Cli, str]:
    """A user in `tmp_path` (job.py written there) with AWS_ENDPOINT_URL set, and the URL
    of the flock's storage in a fresh bucket."""
    endpoint = s3_endpoint()
    from shepard.storage.s3 import client_for

    bucket = f"accept-{uuid.uuid4().hex[:16]}"
    client_for(StoreOptions(endpoint_url=endpoint, region="us-east-1")).create_bucket(Bucket=bucket)
    cli = Cli(tmp_path / "myflock", tmp_path)
    cli.env["AWS_ENDPOINT_URL"] = endpoint
    cli.env["SHEPARD_SECRET_KEY"] = Fernet.generate_key().decode()
    cli.env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
    (tmp_path / "job.py").write_text(JOB_PY)
    return cli, f"s3://{bucket}/flocks/myflock"


def objects(url: str, store: str, endpoint: str) -> list[str]:
    return list(open_store(f"{url}/{store}", options=StoreOptions(endpoint_url=endpoint)).list())


def test_a_user_session_on_s3(s3cli: tuple[Cli, str], tmp_path: Path) -> None:
    cli, url = s3cli
    endpoint = cli.env["AWS_ENDPOINT_URL"]
    cli("init", "myflock", "--storage", url, "--payload-command", "python3 job.py")
    assert not (tmp_path / "myflock" / "outputs").exists()  # no store is a folder here

    sample = tmp_path / "sample"
    sample.mkdir()
    (sample / "inputs.json").write_text('{"ITEM": "from-bundle"}')
    first = job_id(cli("batch", "./sample", "--wait").out)
    [bundle] = objects(url, "inputs", endpoint)  # the bundle is stored in S3
    assert bundle.endswith(".zip")
    [result] = objects(url, "outputs", endpoint)  # and so is the result zip
    assert result.startswith(f"result@{first}_")

    cli("submit", "--range", "ITEM=1-3", "--wait")
    assert len(objects(url, "outputs", endpoint)) == 4
    failed = cli("submit", "--json", '{"ITEM": "bad"}', "--wait", ok=False)
    assert failed.code == 1
    bad = job_id(failed.out)

    assert cli("logs", first).out == "done from-bundle\n"
    assert cli("logs", first, "--stderr").out == "to stderr from-bundle\n"
    info = cli("show", bad, "--json").json()
    assert info["error_bundle"].startswith(f"{url}/errors/log@{bad}_")
    [logs] = info["logs"]
    assert logs["stdout"] == f"{url}/logs/{bad[:8]}/{bad}.1.stdout"

    got = cli("retrieve", "./results", "--unzip", "--errors")
    assert "error" not in got.err.lower()
    texts = sorted(p.read_text() for p in (tmp_path / "results").rglob("result.txt"))
    assert texts == ["item 1\n", "item 2\n", "item 3\n", "item from-bundle\n"]
    [error_zip] = (tmp_path / "results" / "errors").glob("log@*.zip")
    with zipfile.ZipFile(error_zip) as zf:
        assert zf.read("stdout.txt") == b"done bad\n"


def test_secretify_on_s3_reaches_the_job(s3cli: tuple[Cli, str], tmp_path: Path) -> None:
    cli, url = s3cli
    endpoint = cli.env["AWS_ENDPOINT_URL"]
    cli("init", "myflock", "--storage", url, "--payload-command", "python3 job.py")
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "api.txt").write_text("token-4f1c")
    cli("secretify", "secrets", "--flock", "myflock")
    assert objects(url, "secrets", endpoint) == ["api.txt.fernet"]
    stored = open_store(f"{url}/secrets", options=StoreOptions(endpoint_url=endpoint))
    assert b"token-4f1c" not in stored.get_bytes("api.txt.fernet")  # encrypted at rest
    listed = cli("secretify", "--list", "--json", "--flock", "myflock").json()
    assert listed == [{"name": "api.txt", "size": len("token-4f1c")}]

    cli("submit", "--json", '{"ITEM": 1}', "--wait", "--flock", "myflock")
    cli("retrieve", "./results", "--unzip", "--flock", "myflock")
    [seen] = (tmp_path / "results").rglob("secret.txt")
    assert seen.read_text() == "token-4f1c"


def test_a_job_that_prints_nothing_stores_no_log(s3cli: tuple[Cli, str]) -> None:
    """An empty stream is never uploaded; `logs` (plain and `-f`) read the missing log of a
    finished attempt as empty."""
    cli, url = s3cli
    endpoint = cli.env["AWS_ENDPOINT_URL"]
    cli("init", "myflock", "--storage", url, "--payload-command", 'echo x > "$ROOT_OUTPUT_NAME/o"')
    job = job_id(cli("submit", "--json", "{}", "--wait").out)
    assert len(objects(url, "outputs", endpoint)) == 1
    assert objects(url, "logs", endpoint) == []  # no request was spent on an empty log
    assert cli("logs", job).out == ""
    assert cli("logs", job, "--stderr", "--attempt", "1").out == ""
    followed = cli("logs", job, "--follow")
    assert followed.out == "" and "succeeded" in followed.err
    [logs] = cli("show", job, "--json").json()["logs"]
    assert logs == {
        "attempt": 1,
        "stdout": f"{url}/logs/{job[:8]}/{job}.1.stdout",
        "stderr": f"{url}/logs/{job[:8]}/{job}.1.stderr",
    }
    missing = cli("logs", job, "--attempt", "2", ok=False)
    assert missing.code == 2 and "has no attempt 2" in missing.err
