"""Image payloads through the real executable and a real engine (Podman): init, deploy,
quick-deploy, the contract they share with command payloads, access to the engine, timeouts,
cancellation and GPUs."""

from __future__ import annotations

import os
import re
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shepard.runtime.contract import RUNTIME_NAMES
from tests.acceptance.conftest import Cli, parse_env, zip_names, zip_text
from tests.containers import (
    BUSYBOX,
    PYTHON_IMAGE,
    client,
    containers_of,
    require_engine,
    use_test_engine,
)

pytestmark = pytest.mark.acceptance

DUMP = (
    'env -0 > "$ROOT_OUTPUT_NAME/env"; pwd > "$ROOT_OUTPUT_NAME/pwd"; '
    'ls -A "$ROOT_INPUT_NAME" > "$ROOT_OUTPUT_NAME/input"; echo out; echo err >&2; exit "$CODE"'
)


@pytest.fixture(autouse=True)
def engine_running() -> None:
    require_engine(BUSYBOX, PYTHON_IMAGE)


def init_image(cli: Cli, command: str | None, image: str = BUSYBOX, *extra: str) -> None:
    args = ["init", str(cli.flock), "--payload-image", image, "--workers", "2", *extra]
    cli(*args, *(["--payload-command", command] if command is not None else []))
    cli.configure(use_test_engine)


def submitted(text: str) -> str:
    return re.search(r"submitted job (\S+)", text).group(1)  # type: ignore[union-attr]


def zips(cli: Cli, store: str = "outputs") -> list[Path]:
    return sorted((cli.flock / store).glob("*.zip"))


def test_image_and_command_payloads_share_the_contract(cli: Cli) -> None:
    """One flock runs the same jobs first as processes, then in an image: same variables,
    folders, output names and error bundles."""
    cli.init(DUMP)
    cli.configure(use_test_engine)
    seen: dict[str, dict[str, Any]] = {}
    for mode in ("process", "image"):
        if mode == "image":
            cli.configure(lambda d: d["payload"].update(kind="image", image=BUSYBOX))
        good = submitted(cli("submit", "--json", '{"CODE": 0, "TAG": "t"}', "--wait").out)
        bad = submitted(cli("submit", "--json", '{"CODE": 4}', "--wait", ok=False).out)
        [result] = zips(cli)
        [errors] = zips(cli, "errors")
        good_info, bad_info = (cli("show", j, "--json").json() for j in (good, bad))
        seen[mode] = {
            "env": parse_env(zip_text(result, "env")),
            "pwd": zip_text(result, "pwd"),
            "input": zip_text(result, "input"),
            "result": result.name.replace(good, "ID").replace(str(good_info["start_time"]), "T"),
            "members": zip_names(result),
            "bundle": errors.name.replace(bad, "ID").replace(str(bad_info["start_time"]), "T"),
            "bundle_members": sorted(zip_names(errors)),
            "status": [
                line.split(":")[0] for line in zip_text(errors, "exit_status.txt").split("\n")
            ],
            "logs": (zip_text(errors, "stdout.txt"), zip_text(errors, "stderr.txt")),
            "reason": (bad_info["reason"], bad_info["exit_code"]),
            "image": good_info["history"][-1]["detail"],
        }
        for path in (result, errors):
            path.unlink()
    process, image = seen["process"], seen["image"]
    per_job = {"UUID", "START_TIME", "JOB_STATUS", "ROOT_INPUT_NAME", "ROOT_OUTPUT_NAME"}

    def contract(env: dict[str, str]) -> dict[str, str]:
        return {
            k: v for k, v in env.items() if k in RUNTIME_NAMES - per_job or k in ("CODE", "TAG")
        }

    assert contract(image["env"]) == contract(process["env"])
    for ran in (process, image):
        root = ran["pwd"].strip()
        assert ran["env"]["ROOT_INPUT_NAME"] == f"{root}/input"
        assert ran["env"]["ROOT_OUTPUT_NAME"] == f"{root}/output"
        assert Path(root).parent == cli.flock / "work"
    for key in (
        "input",
        "result",
        "members",
        "bundle",
        "bundle_members",
        "status",
        "logs",
        "reason",
    ):
        assert image[key] == process[key], key
    assert process["image"] is None
    assert image["image"].startswith(f"image {BUSYBOX} (id ")


PING = (
    'python3 -c "import socket; s = socket.socket(socket.AF_UNIX); '
    "s.connect('/var/run/docker.sock'); s.sendall(b'GET /_ping HTTP/1.0\\r\\n\\r\\n'); "
    'print(s.recv(4096).decode())" > "$ROOT_OUTPUT_NAME/ping" && env -0 > "$ROOT_OUTPUT_NAME/env"'
)


def test_the_engine_is_reachable_only_when_the_flock_opts_in(cli: Cli) -> None:
    init_image(cli, PING, PYTHON_IMAGE)
    job = submitted(cli("submit", "--json", "{}", "--wait", ok=False).out)
    bundle = Path(cli("show", job, "--json").json()["error_bundle"])
    assert "FileNotFoundError" in zip_text(bundle, "stderr.txt")
    cli.configure(lambda d: d["container"].update(allow_docker_access=True))
    cli("submit", "--json", "{}", "--wait")
    [result] = zips(cli)
    assert zip_text(result, "ping").rstrip().endswith("OK")
    env = parse_env(zip_text(result, "env"))
    assert env["ALLOW_DOCKER_ACCESS"] == "True" and env["DOCKER_HOST"].startswith("unix://")


def test_a_timeout_stops_and_removes_the_container(cli: Cli) -> None:
    init_image(cli, "echo started; sleep 60", BUSYBOX, "--timeout", "1")
    began = time.monotonic()
    job = submitted(cli("submit", "--json", "{}", "--wait", ok=False).out)
    assert time.monotonic() - began < 20
    info = cli("show", job, "--json").json()
    assert info["reason"] == "timeout after 1s"
    assert zip_text(Path(info["error_bundle"]), "stdout.txt") == "started\n"
    assert containers_of(job) == []


def test_cancel_stops_and_removes_the_container(cli: Cli) -> None:
    init_image(cli, "echo started; sleep 60")
    up = cli.popen("up", "--no-inbox")
    job = cli("submit", "--json", "{}", "--ids").out.strip()
    _until(lambda: cli("logs", job, ok=None).out == "started\n", 30)
    assert len(containers_of(job)) == 1
    cli("cancel", job)
    _until(lambda: containers_of(job) == [], 15)
    assert cli("show", job, "--json").json()["status"] == "cancelled"
    assert zips(cli) == [] and zips(cli, "errors") == []
    up.terminate()
    up.wait(30)


def test_a_missing_image_fails_the_job_with_the_reason_in_the_error_bundle(cli: Cli) -> None:
    init_image(cli, "true", "localhost/shepard-no-such-image:1")
    job = submitted(cli("submit", "--json", "{}", "--wait", ok=False).out)
    info = cli("show", job, "--json").json()
    assert info["status"] == "failed"
    assert info["reason"].startswith("setup: image localhost/shepard-no-such-image:1 not found")
    assert "pulling it failed" in info["reason"]
    status = zip_text(Path(info["error_bundle"]), "exit_status.txt")
    assert "reason: setup: image localhost/shepard-no-such-image:1 not found" in status


def test_quick_deploy_runs_run_sh_in_the_image(cli: Cli, tmp_path: Path) -> None:
    init_image(cli, "echo the flock command must not run; exit 9")
    tool = tmp_path / "tool"
    tool.mkdir()
    # /bin/sh is busybox in the image and dash on the host: this tells where run.sh ran
    (tool / "run.sh").write_text(
        'readlink /bin/sh > "$ROOT_OUTPUT_NAME/sh"; pwd > "$ROOT_OUTPUT_NAME/pwd"; '
        'cat data.txt > "$ROOT_OUTPUT_NAME/data"\n'
    )
    (tool / "data.txt").write_text("shipped with the tool\n")
    uploaded = cli("quick-deploy", str(tool), "--name", "tools/v1").out
    assert "uploaded 2 file(s) as quick-deploy folder tools/v1" in uploaded
    cli("submit", "--json", '{"QUICK_DEPLOY_DIRECTORY": "tools/v1"}', "--wait")
    [result] = zips(cli)
    assert zip_text(result, "sh") == "busybox\n"
    assert zip_text(result, "data") == "shipped with the tool\n"
    assert zip_text(result, "pwd").strip().endswith("/input/tools/v1")
    assert "has no run.sh" in cli("quick_deploy", str(tmp_path), ok=False).err


def test_quick_deploy_runs_as_a_process_for_a_command_flock(cli: Cli, tmp_path: Path) -> None:
    cli.init("exit 9")
    tool = tmp_path / "tool"
    tool.mkdir()
    (tool / "run.sh").write_text('echo "$QUICK_DEPLOY_DIRECTORY" > "$ROOT_OUTPUT_NAME/q"\n')
    cli("quick-deploy", str(tool))
    cli("submit", "--json", '{"QUICK_DEPLOY_DIRECTORY": "tool"}', "--wait")
    [result] = zips(cli)
    assert zip_text(result, "q") == "tool\n"


@pytest.fixture
def deploy_name() -> Iterator[str]:
    """A flock name for deploy tests; the images deployed under it are removed afterwards."""
    name = f"shepard-deploy-test-{os.getpid()}"
    yield name
    for image in client().images.list(name=f"localhost/{name}"):
        client().images.remove(image.id, force=True)


def test_deploy_builds_from_a_local_base_and_show_tells_which_image_ran(
    cli: Cli, tmp_path: Path, deploy_name: str
) -> None:
    init_image(cli, None, BUSYBOX, "--name", deploy_name)
    code = tmp_path / "code"
    code.mkdir()
    ran = {}
    for version in ("v1", "v2"):
        (code / "Dockerfile.txt").write_text(
            f"FROM {BUSYBOX}\nRUN echo {version} > /version\n"
            'CMD ["/bin/sh", "-c", "cat /version > $ROOT_OUTPUT_NAME/version"]\n'
        )
        out = cli("deploy", str(code), "--quiet").out
        tag = re.search(r"deployed (\S+) \(id (\w+)\)", out)
        assert tag is not None and tag.group(1).startswith(f"localhost/{deploy_name}:")
        assert tomllib.loads((cli.flock / "flock.toml").read_text())["payload"]["image"] == tag[1]
        job = submitted(cli("submit", "--json", "{}", "--wait").out)
        [result] = zips(cli)
        assert zip_text(result, "version") == f"{version}\n"
        result.unlink()
        history = cli("show", job).out
        assert f"image {tag[1]} (id {tag[2]})" in " ".join(history.split())
        ran[version] = tag[1]
    assert ran["v1"] != ran["v2"]


def test_deploy_says_when_a_base_image_cannot_be_pulled(cli: Cli, tmp_path: Path) -> None:
    init_image(cli, "true")
    before = (cli.flock / "flock.toml").read_text()
    code = tmp_path / "code"
    code.mkdir()
    (code / "Dockerfile").write_text("FROM registry.invalid/nothing/here:1\nRUN true\n")
    result = cli("deploy", str(code), "--quiet", ok=False)
    message = " ".join(result.err.split())
    assert "registry.invalid/nothing/here:1 (Dockerfile line 1)" in message
    assert "no registry is reachable" in message
    assert (cli.flock / "flock.toml").read_text() == before
    assert "holds no Dockerfile" in cli("deploy", str(tmp_path / "code" / ".."), ok=False).err


def test_gpus_the_host_does_not_have_are_refused_at_submission(cli: Cli, tmp_path: Path) -> None:
    if any(p.name.removeprefix("nvidia").isdigit() for p in Path("/dev").glob("nvidia*")):
        pytest.skip("this host has NVIDIA GPUs")
    init_image(cli, "true")
    cli.configure(lambda d: d["container"].update(gpus=1))
    refused = cli("submit", "--json", "{}", "--wait", ok=False)
    assert refused.code == 2 and "no NVIDIA GPU" in refused.err
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "inputs.json").write_text("{}")
    assert "no NVIDIA GPU" in cli("batch", str(tmp_path / "b"), ok=False).err
    assert sum(cli("query", "--json").json()["counts"].values()) == 0


def _until(condition: Any, seconds: float) -> None:
    end = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < end, "timed out waiting"
        time.sleep(0.2)
