"""Image payloads without an engine: configuration, container options, GPUs, deployments."""

from __future__ import annotations

import os
import resource
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from shepard import config, deploy
from shepard.catalog import open_catalog
from shepard.config import FlockConfig
from shepard.errors import ConfigError, DeployError, PayloadError, ResourceError
from shepard.flock import Flock
from shepard.model import JobSpec, JobStatus, Outcome
from shepard.payloads import container_engine as engine
from shepard.payloads.container import _check_started
from shepard.payloads.container_options import (
    DOCKER_SOCKET,
    ContainerSpec,
    Mount,
    container_user,
    create_options,
    effective_ulimits,
    host_facts,
    job_labels,
    worker_limits,
    workspace_mounts,
)
from shepard.payloads.image import ImagePayload
from shepard.runtime.workspace import SetupError, plan_workspace
from shepard.storage import LocalStore
from tests.unit.test_runtime_worker import make_ctx, make_job

SPEC = ContainerSpec(image="localhost/tool:1", flock="f")
URL = "unix:///run/engine.sock"


def options(spec: ContainerSpec = SPEC, command: str | None = "echo hi", **kw: Any) -> Any:
    args: dict[str, Any] = {
        "cwd": Path("/w/job"),
        "env": {"A": "1"},
        "mounts": [Mount(Path("/w/job"), False)],
        "labels": job_labels(spec, "job-1", 2),
        "name": "shepard-job-1-2",
        "url": URL,
    }
    return create_options(spec, command, **{**args, **kw})


# -- configuration ---------------------------------------------------------------------------


def parse(**sections: Any) -> FlockConfig:
    return config.parse({"name": "f", **sections})


def test_container_settings_parse_into_numbers() -> None:
    cfg = parse(
        payload={"image": "localhost/tool:1"},
        container={"memory": "512m", "ulimits": {"nofile": "100:200", "core": "unlimited"}},
    )
    assert cfg.payload.image == "localhost/tool:1"
    assert cfg.container.memory_bytes() == 512 << 20
    assert cfg.container.ulimit_pairs() == {"nofile": (100, 200), "core": (-1, -1)}
    assert parse(container={"memory": "2G"}).container.memory_bytes() == 2 << 30
    assert parse(container={"memory": "1000"}).container.memory_bytes() == 1000
    assert parse(container={"gpus": "all"}).container.gpus == "all"
    assert parse().container.allow_docker_access is False


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"container": {"memory": "lots"}}, "container.memory: Value error, 'lots' is not a size"),
        ({"container": {"ulimits": {"nofle": "1"}}}, "unknown ulimit 'nofle'"),
        ({"container": {"ulimits": {"nofile": "1:x"}}}, "use SOFT:HARD or one number"),
        ({"container": {"gpus": -1}}, "container.gpus: Value error, -1: give a number of GPUs"),
        ({"container": {"gpus": True}}, "container.gpus"),
        ({"container": {"pull": "sometimes"}}, "container.pull"),
        ({"container": {"privileged": True}}, "unknown key 'container.privileged'"),
        ({"payload": {"image": "two words"}}, "payload.image: Value error, 'two words' is not"),
    ],
)
def test_bad_container_settings_name_the_key(sections: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse(**sections)


def test_the_flock_turns_its_settings_into_a_container_spec(tmp_path: Path) -> None:
    cfg = parse(
        payload={"image": "localhost/tool:1", "command": "run"},
        container={"cpus": 1.5, "memory": "1g", "gpus": "all", "allow_docker_access": True},
    )
    flock = Flock.create(tmp_path / "f", cfg)
    payload = flock.runtime_context().payload
    assert isinstance(payload, ImagePayload) and payload.command == "run"
    spec = payload.spec
    assert (spec.image, spec.flock, spec.cpus, spec.memory) == (
        "localhost/tool:1",
        "f",
        1.5,
        1 << 30,
    )
    assert spec.gpus == -1 and spec.allow_docker_access
    assert not isinstance(
        Flock.create(tmp_path / "g", parse()).runtime_context().payload, ImagePayload
    )


# -- container options -----------------------------------------------------------------------


def test_a_command_runs_through_sh_in_the_job_folder_unprivileged() -> None:
    opts = options()
    assert opts["entrypoint"] == ["/bin/sh", "-c"] and opts["command"] == ["echo hi"]
    assert opts["working_dir"] == "/w/job" and opts["environment"] == {"A": "1"}
    assert opts["privileged"] is False and opts["init"] is True
    assert opts["volumes"] == {"/w/job": {"bind": "/w/job", "mode": "rw"}}
    assert opts["labels"] == {"shepard.flock": "f", "shepard.job": "job-1", "shepard.attempt": "2"}
    assert opts["user"] == f"{os.getuid()}:{os.getgid()}"
    for absent in ("nano_cpus", "mem_limit", "network_mode", "device_requests"):
        assert absent not in opts


def test_no_command_keeps_the_images_own_entrypoint_and_command() -> None:
    opts = options(command=None)
    assert "entrypoint" not in opts and "command" not in opts


def test_the_engine_socket_is_only_mounted_when_the_flock_allows_it() -> None:
    closed = options()
    assert (
        DOCKER_SOCKET not in str(closed["volumes"]) and "DOCKER_HOST" not in closed["environment"]
    )
    opened = options(replace(SPEC, allow_docker_access=True))
    assert opened["volumes"]["/run/engine.sock"] == {"bind": DOCKER_SOCKET, "mode": "rw"}
    assert opened["environment"]["DOCKER_HOST"] == f"unix://{DOCKER_SOCKET}"
    remote = options(replace(SPEC, allow_docker_access=True), url="tcp://10.0.0.5:2375")
    assert remote["environment"]["DOCKER_HOST"] == "tcp://10.0.0.5:2375"
    assert list(remote["volumes"]) == ["/w/job"]


def test_limits_network_and_gpus_reach_the_engine() -> None:
    spec = replace(SPEC, cpus=1.5, memory=64 << 20, network="none", gpus=2)
    opts = options(spec)
    assert opts["nano_cpus"] == 1_500_000_000 and opts["mem_limit"] == 64 << 20
    assert opts["network_mode"] == "none"
    assert opts["device_requests"] == [{"count": 2, "capabilities": [["gpu"]]}]
    assert options(replace(SPEC, gpus=-1))["device_requests"][0]["count"] == -1


def test_nofile_and_nproc_are_always_given_and_the_flock_overrides_them() -> None:
    names = {u["name"]: (u["soft"], u["hard"]) for u in options()["ulimits"]}
    assert set(names) == {"nofile", "nproc"}
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert names["nofile"] == (soft, hard)
    spec = replace(SPEC, ulimits={"nofile": (64, 128), "core": (0, 0)})
    assert effective_ulimits(spec)["nofile"] == (64, 128)
    assert {u["name"] for u in options(spec)["ulimits"]} == {"nofile", "nproc", "core"}
    assert host_facts(spec).ulimit_fileno == "64"
    assert host_facts(replace(SPEC, ulimits={"nofile": (-1, -1)})).ulimit_fileno == "unlimited"


def test_the_processes_limit_is_capped_at_pid_max() -> None:
    assert worker_limits(pid_max=100)["nproc"] == (100, 100)
    soft, hard = resource.getrlimit(resource.RLIMIT_NPROC)
    big = 1 << 40
    expected = tuple(-1 if v == resource.RLIM_INFINITY else v for v in (soft, hard))
    assert worker_limits(pid_max=big)["nproc"] == expected


def test_the_container_user() -> None:
    assert container_user("host", rootless=False) == f"{os.getuid()}:{os.getgid()}"
    assert container_user("host", rootless=True) == "0:0"  # the engine maps it to the user
    assert container_user("image", rootless=False) is None
    assert container_user("1000:1000", rootless=False) == "1000:1000"
    assert "user" not in options(replace(SPEC, user="image"))


def test_shared_filesystems_are_mounted_read_only_with_the_job_folder_writable(
    tmp_path: Path,
) -> None:
    ctx = make_ctx(tmp_path, efs=tmp_path / "efs", lustre=tmp_path / "lustre")
    ws = plan_workspace(ctx, "job-1")
    assert workspace_mounts(ws, ctx) == [
        Mount(tmp_path / "work" / "job-1", False),
        Mount(tmp_path / "efs", True),
        Mount(tmp_path / "efs" / "job-1", False),
        Mount(tmp_path / "lustre", True),
        Mount(tmp_path / "lustre" / "job-1", False),
    ]


def test_allow_docker_access_is_told_to_the_payload(tmp_path: Path) -> None:
    job = make_job()
    for spec, expected in (
        (None, "False"),
        (SPEC, "False"),
        (replace(SPEC, allow_docker_access=True), "True"),
    ):
        ctx = make_ctx(tmp_path, container=spec)
        ws = plan_workspace(ctx, job.id)
        env = ctx.payload.environment(job, ctx, start_time=1, ws=ws, base={})
        assert env["ALLOW_DOCKER_ACCESS"] == expected


# -- finding the engine ----------------------------------------------------------------------


def test_the_engine_url_comes_from_the_flock_then_docker_host_then_a_socket(tmp_path: Path) -> None:
    assert engine.engine_url("tcp://h:1", {"DOCKER_HOST": "unix:///x"}) == "tcp://h:1"
    assert engine.engine_url(None, {"DOCKER_HOST": "unix:///x"}) == "unix:///x"
    import socket

    runtime = tmp_path / "rt"
    (runtime / "podman").mkdir(parents=True)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(runtime / "podman" / "podman.sock"))
        found = engine.engine_url(None, {"XDG_RUNTIME_DIR": str(runtime)})
    assert found == f"unix://{runtime}/podman/podman.sock"


def test_no_engine_at_all_is_a_setup_error_saying_what_to_set(tmp_path: Path) -> None:
    with pytest.raises(
        SetupError, match=r"set container\.engine in flock\.toml or DOCKER_HOST"
    ) as err:
        engine.engine_url(None, {"XDG_RUNTIME_DIR": str(tmp_path), "HOME": str(tmp_path)})
    assert err.value.retryable is False


# -- GPUs ------------------------------------------------------------------------------------


def test_gpus_are_counted_from_the_device_files(tmp_path: Path) -> None:
    for name in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm"):
        (tmp_path / name).touch()
    assert engine.host_gpus(tmp_path) == 2
    assert engine.gpu_problem(2, None, tmp_path) is None
    assert engine.gpu_problem("all", None, tmp_path) is None
    assert "has only 2" in str(engine.gpu_problem(3, None, tmp_path))


def test_asking_for_gpus_on_a_host_without_any_says_so(tmp_path: Path) -> None:
    problem = engine.gpu_problem(1, "unix:///s", tmp_path)
    assert problem is not None and "no NVIDIA GPU" in problem and "container.gpus = 0" in problem
    assert engine.gpu_problem(0, None, tmp_path) is None
    assert engine.gpu_problem(1, "tcp://gpu-host:2375", tmp_path) is None  # its own business


def test_submission_is_refused_when_the_gpus_are_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine, "host_gpus", lambda dev=None: 0)
    cfg = parse(payload={"image": "localhost/tool:1"}, container={"gpus": 1})
    flock = Flock.create(tmp_path / "f", cfg)
    with pytest.raises(ResourceError, match="no NVIDIA GPU"):
        flock.submit([{"A": 1}])
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "inputs.json").write_text("{}")
    with pytest.raises(ResourceError):
        flock.batch(bundle)
    assert sum(flock.counts().values()) == 0
    assert list(flock.store("inputs").list()) == []


# -- the image that ran, in the job's history -------------------------------------------------


def test_an_outcomes_detail_follows_its_reason_in_the_history(tmp_path: Path) -> None:
    catalog = open_catalog(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        ids = catalog.add_jobs([JobSpec({}), JobSpec({})], now=1.0, default_attempts=1)
        catalog.claim("w", now=2.0, lease=60, limit=2)
        ok = Outcome(JobStatus.SUCCEEDED, exit_code=0, detail="image t:1 (id abc)")
        bad = Outcome(JobStatus.FAILED, reason="exit code 3", exit_code=3, detail="image t:1")
        catalog.finish(ids[0], 1, ok, now=3.0)
        catalog.finish(ids[1], 1, bad, now=3.0)
        assert catalog.events(ids[0])[-1].detail == "image t:1 (id abc)"
        assert catalog.events(ids[1])[-1].detail == "exit code 3; image t:1"
        assert catalog.get(ids[1]).reason == "exit code 3"  # type: ignore[union-attr]
    finally:
        catalog.close()


# -- deploy ----------------------------------------------------------------------------------


def test_base_images_skip_stages_scratch_and_build_arguments() -> None:
    text = (
        "ARG V=1\n"
        "FROM --platform=linux/amd64 localhost/base:1 AS build\n"
        "RUN make\n"
        "from build as second\n"
        "FROM scratch\n"
        "FROM python:${V}\n"
        "FROM debian:bookworm\n"
    )
    assert deploy.base_images(text) == [(2, "localhost/base:1"), (7, "debian:bookworm")]


def test_deployment_repositories_are_valid_image_names() -> None:
    assert deploy.repository_name("My_Flock.v2") == "localhost/my-flock-v2"
    assert deploy.repository_name("x") == "localhost/x"


def test_the_dockerfile_may_be_named_dockerfile_txt(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile.txt").write_text("FROM x\n")
    assert deploy.find_dockerfile(tmp_path) == "Dockerfile.txt"
    (tmp_path / "Dockerfile").write_text("FROM x\n")
    assert deploy.find_dockerfile(tmp_path) == "Dockerfile"
    (tmp_path / "empty").mkdir()
    with pytest.raises(DeployError, match="holds no Dockerfile"):
        deploy.find_dockerfile(tmp_path / "empty")
    with pytest.raises(DeployError, match="is not a folder"):
        deploy.find_dockerfile(tmp_path / "missing")


FLOCK_TOML = """\
# my flock
name = "f"

[payload]  # what runs
command = "run"  # keep me
image = "localhost/old:1"

[retry]
attempts = 2
"""


def test_the_payload_image_line_is_replaced_and_comments_kept() -> None:
    edited = deploy.with_payload_image(FLOCK_TOML, "localhost/f:2")
    assert edited == FLOCK_TOML.replace('"localhost/old:1"', '"localhost/f:2"')
    without = FLOCK_TOML.replace('image = "localhost/old:1"\n', "")
    assert 'command = "run"  # keep me' in deploy.with_payload_image(without, "t:1")
    assert deploy.with_payload_image(without, "t:1").index("image") < without.index("[retry]") + 20
    bare = deploy.with_payload_image('name = "f"\n', "t:1")
    assert bare == 'name = "f"\n\n[payload]\nimage = "t:1"\n'


def test_setting_the_payload_image_keeps_the_file_valid(tmp_path: Path) -> None:
    (tmp_path / "flock.toml").write_text(FLOCK_TOML)
    deploy.set_payload_image(config.load(tmp_path), "localhost/f:20260101-000000")
    loaded = config.load(tmp_path).config
    assert loaded.payload.image == "localhost/f:20260101-000000" and loaded.retry.attempts == 2
    assert "# keep me" in (tmp_path / "flock.toml").read_text()
    (tmp_path / "flock.toml").write_text('name = "f"\npayload = { command = "run" }\n')
    deploy.set_payload_image(config.load(tmp_path), "t:1")  # an inline table: rewritten
    loaded = config.load(tmp_path).config
    assert (loaded.payload.image, loaded.payload.command) == ("t:1", "run")


# -- quick deploy ----------------------------------------------------------------------------


def test_quick_deploy_uploads_the_folder_and_drops_files_it_no_longer_has(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    tool = tmp_path / "tool"
    (tool / "lib").mkdir(parents=True)
    (tool / "run.sh").write_text("echo hi\n")
    (tool / "lib" / "a.py").write_text("")
    (tool / "old.txt").write_text("")
    assert deploy.upload_quick_deploy(store, tool) == ("tool", 3)
    (tool / "old.txt").unlink()
    assert deploy.upload_quick_deploy(store, tool, "tools/v2") == ("tools/v2", 2)
    assert deploy.upload_quick_deploy(store, tool) == ("tool", 2)
    assert sorted(store.list()) == [
        "tool/lib/a.py", "tool/run.sh", "tools/v2/lib/a.py", "tools/v2/run.sh",
    ]  # fmt: skip


@pytest.mark.parametrize("name", ["../x", "/abs", "secrets", "secrets/x", "a//b", "."])
def test_quick_deploy_refuses_names_jobs_could_not_use(tmp_path: Path, name: str) -> None:
    (tmp_path / "run.sh").write_text("")
    with pytest.raises(DeployError, match="cannot be a quick-deploy name"):
        deploy.upload_quick_deploy(LocalStore(tmp_path / "store"), tmp_path, name)


def test_quick_deploy_needs_run_sh(tmp_path: Path) -> None:
    with pytest.raises(DeployError, match=r"has no run\.sh"):
        deploy.upload_quick_deploy(LocalStore(tmp_path / "store"), tmp_path)


def test_a_deployment_tag_carries_the_utc_time() -> None:
    class Images:
        def __init__(self, taken: set[str]) -> None:
            self.taken = taken

        def get(self, name: str) -> Any:
            import docker

            if name in self.taken:
                return type("Image", (), {"id": "sha256:1"})()
            raise docker.errors.ImageNotFound(name)

    now = time.mktime((2026, 1, 2, 3, 4, 5, 0, 0, 0)) - time.timezone
    taken = {"localhost/f:20260102-030405", "localhost/f:20260102-030405-2"}
    fake = type("Engine", (), {"client": type("C", (), {"images": Images(taken)})()})()
    assert deploy.new_tag(fake, "F", now) == "localhost/f:20260102-030405-3"


@pytest.mark.parametrize(
    "line",
    [
        "ERROR (catatonit:6): failed to exec pid1: No such file or directory",  # Podman
        "[FATAL tini (7)] exec /app/run failed: No such file or directory",  # Docker
    ],
)
def test_an_init_that_cannot_execute_the_command_means_the_container_never_ran(
    tmp_path: Path, line: str
) -> None:
    stderr = tmp_path / "stderr"
    stderr.write_text(f"{line}\n")
    attrs = {"Config": {"Entrypoint": None, "Cmd": ["/app/run", "-x"]}}
    with pytest.raises(PayloadError) as err:
        _check_started("t:1", attrs, stderr)
    assert str(err.value) == (
        f"cannot start the container of t:1: its command ['/app/run', '-x'] could not be "
        f"executed ({line})"
    )


def test_a_payload_that_prints_errors_itself_is_not_a_start_failure(tmp_path: Path) -> None:
    stderr = tmp_path / "stderr"
    stderr.write_text("ERROR: failed to exec pid1 of my own\nexec x failed: no\n")
    _check_started("t:1", {}, stderr)
    _check_started("t:1", {}, tmp_path / "missing")
