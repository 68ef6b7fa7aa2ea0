"""`shepard serve` as a user runs it: one process serving the REST API and running the
flock's jobs, driven over HTTP with httpx as curl would, then stopped with Ctrl-C."""

from __future__ import annotations

import io
import signal
import socket
import ssl
import subprocess
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.conftest import SHEPARD, Cli

httpx = pytest.importorskip("httpx")

pytestmark = pytest.mark.acceptance

JOB = """\
import os, pathlib, time
item = os.environ.get("ITEM", "-")
print("start", item, flush=True)
time.sleep(float(os.environ.get("NAP", "0")))
pathlib.Path(os.environ["ROOT_OUTPUT_NAME"], "r.txt").write_text(f"item {item}\\n")
print("end", item, flush=True)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Served:
    def __init__(self, cli: Cli, proc: subprocess.Popen[str], url: str, token: str) -> None:
        self.cli, self.proc, self.url = cli, proc, url
        self.http = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )

    def wait_until(self, job_id: str, status: str, within: float = 60) -> dict[str, object]:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            job: dict[str, object] = self.http.get(f"/api/v1/jobs/{job_id}").json()["job"]
            if job["status"] == status:
                return job
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} not {status} within {within}s: {job}")


def start_serve(
    cli: Cli, *args: str, scheme: str = "http", verify: ssl.SSLContext | bool = True
) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    proc = subprocess.Popen(
        [SHEPARD, "serve", "--port", str(port), *args],
        cwd=cli.cwd, env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = f"{scheme}://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            if httpx.get(f"{url}/healthz", timeout=1, verify=verify).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("shepard serve did not answer within 30 s")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    (tmp_path / "job.py").write_text(JOB)
    cli = Cli(tmp_path / "flock", tmp_path)
    cli("init", str(tmp_path / "flock"), "--payload-command", f"python3 {tmp_path / 'job.py'}")
    token = cli("token", "create", "ci").out.strip()
    proc, url = start_serve(cli, "--workers", "2")
    s = Served(cli, proc, url, token)
    try:
        yield s
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_submit_run_follow_download_then_stop_cleanly(served: Served) -> None:
    http = served.http
    sub = http.post(
        "/api/v1/jobs", json={"range": {"name": "ITEM", "start": 1, "end": 5}, "params": {}}
    )
    assert sub.status_code == 201, sub.text
    ids = sub.json()["ids"]
    slow = http.post("/api/v1/jobs", json={"params": {"ITEM": "slow", "NAP": 2}}).json()["ids"][0]
    with http.stream("GET", f"/api/v1/jobs/{slow}/logs", params={"follow": "true"}) as log:
        followed = b"".join(log.iter_bytes())
    assert followed == b"start slow\nend slow\n"  # streamed until the attempt's end
    for job_id in ids:
        served.wait_until(job_id, "succeeded")
    (out,) = http.get(f"/api/v1/jobs/{ids[0]}/outputs").json()
    got = http.get(f"/api/v1/jobs/{ids[0]}/outputs/{out['key']}")
    assert got.status_code == 200 and len(got.content) == out["size"]
    with zipfile.ZipFile(io.BytesIO(got.content)) as zf:
        assert zf.read("r.txt") == b"item 1\n"
    assert http.get(f"/api/v1/jobs/{ids[0]}/logs").text == "start 1\nend 1\n"

    bundle = io.BytesIO()
    with zipfile.ZipFile(bundle, "w") as zf:
        zf.writestr("inputs.json", '{"ITEM": "zipped"}')
    up = http.post("/api/v1/bundles", files={"bundle": ("b.zip", bundle.getvalue())})
    assert up.status_code == 201, up.text
    served.wait_until(up.json()["ids"][0], "succeeded")

    metrics = httpx.get(f"{served.url}/metrics").text
    assert 'shepard_jobs{status="succeeded"} 7' in metrics and "shepard_dispatcher_up 1" in metrics

    # a job running when the server is stopped (SIGTERM) is stopped and queued again, as
    # `up` does: not failed, no attempt spent
    long = http.post("/api/v1/jobs", json={"params": {"ITEM": "long", "NAP": 60}}).json()
    served.wait_until(long["ids"][0], "running")
    served.proc.send_signal(signal.SIGTERM)
    out_text, err_text = served.proc.communicate(timeout=60)
    assert served.proc.returncode == 0, err_text
    assert "Traceback" not in err_text
    assert "succeeded" in out_text  # the counts table printed on the way out
    shown = served.cli("show", long["ids"][0], "--json").json()
    assert shown["status"] == "queued"


def test_serve_refuses_plain_http_on_the_network_and_bad_limits(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "flock", tmp_path)
    cli("init", str(tmp_path / "flock"), "--payload-command", "true")
    bare = cli("serve", "--host", "0.0.0.0", ok=False)
    assert bare.code == 2 and "--insecure" in bare.err and "Traceback" not in bare.err
    limit = cli("serve", "--max-body", "lots", ok=False)
    assert limit.code == 2 and "not a size" in limit.err
    (tmp_path / "bad.pem").write_text("not a certificate\n")
    pem = str(tmp_path / "bad.pem")
    tls = cli("serve", "--port", str(free_port()), "--tls-cert", pem, "--tls-key", pem, ok=False)
    assert tls.code == 2 and "cannot serve HTTPS with --tls-cert" in tls.err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = cli("serve", "--port", str(taken.getsockname()[1]), ok=False)
    assert busy.code == 2 and "choose another --port" in busy.err
    assert "Traceback" not in tls.err + busy.err


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_no_dispatch_over_tls_serves_without_running_jobs(tmp_path: Path) -> None:
    cli = Cli(tmp_path / "flock", tmp_path)
    cli("init", str(tmp_path / "flock"), "--payload-command", "true")
    token = cli("token", "create", "ci").out.strip()
    cert, key = self_signed(tmp_path)
    trust = ssl.create_default_context(cafile=str(cert))
    proc, url = start_serve(
        cli, "--no-dispatch", "--tls-cert", str(cert), "--tls-key", str(key),
        scheme="https", verify=trust,
    )  # fmt: skip
    try:
        http = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, verify=trust
        )
        job_id = http.post("/api/v1/jobs", json={"params": {"A": 1}}).json()["ids"][0]
        time.sleep(1.5)
        assert http.get(f"/api/v1/jobs/{job_id}").json()["job"]["status"] == "queued"
        assert "shepard_dispatcher_up 0" in http.get("/metrics").text
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert f"at {url}, not running its jobs" in out  # the start-up line, plain off a terminal
