"""The registry of backend kinds: config sections validated by the class each kind registers,
`init --backend` choices, the narrow context backends are built from, and the `logs` contract."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, Field

import shepard
from shepard import backends, config
from shepard.backends.base import BackendContext, payload_logs
from shepard.backends.local import LocalBackend
from shepard.backends.slurm.config import SlurmConfig
from shepard.cli import main as cli_main
from shepard.config import BackendConfig, FlockConfig, PayloadConfig
from shepard.errors import ConfigError
from shepard.flock import Flock
from shepard.model import JobStatus
from shepard.runtime import log_key

SRC = Path(shepard.__file__).parent


class QueueConfig(BaseModel):
    """A section of a backend kind that exists only in this test."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    queue: str = "default"
    size: int = Field(default=1, ge=1)


@pytest.fixture
def queue_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    kind = backends.Kind("tests.x:Nothing", f"{__name__}:QueueConfig", "a test queue")
    monkeypatch.setitem(backends.KINDS, "queue", kind)


def test_a_registered_kind_brings_its_own_section(queue_kind: None) -> None:
    cfg = config.parse({"name": "f", "backend": {"kind": "queue", "queue": {"queue": "fast"}}})
    assert cfg.backend.section() == QueueConfig(queue="fast")
    assert cfg.backend.section("slurm") == SlurmConfig(), "other kinds' sections: defaults"
    with pytest.raises(ConfigError, match=r"backend\.queue\.size"):
        config.parse({"name": "f", "backend": {"kind": "queue", "queue": {"size": 0}}})
    with pytest.raises(ConfigError, match=r"unknown key 'backend\.queue\.sise'"):
        config.parse({"name": "f", "backend": {"queue": {"sise": 2}}})


def test_unknown_kinds_and_sections_are_refused_naming_the_known_ones() -> None:
    with pytest.raises(
        ConfigError, match=r"backend\.kind: .*'k8s'; known: aws-batch, local, slurm"
    ):
        config.parse({"name": "f", "backend": {"kind": "k8s"}})
    with pytest.raises(ConfigError, match=r"unknown key 'backend\.k8s'"):
        config.parse({"name": "f", "backend": {"k8s": {}}})


def test_todays_flock_toml_keys_stay_valid_and_are_written_back_the_same(tmp_path: Path) -> None:
    text = (
        'name = "f"\n\n[backend]\nkind = "slurm"\nworkers = 2\nlease = 30.0\n\n'
        '[backend.slurm]\nmode = "sheep"\npartition = "short"\nmemory = "2G"\n'
    )
    (tmp_path / "flock.toml").write_text(text)
    loaded = config.load(tmp_path).config
    assert loaded.backend.section() == SlurmConfig(mode="sheep", partition="short", memory="2G")
    config.write(tmp_path / "again", loaded)
    assert config.load(tmp_path / "again").config == loaded
    config.write(tmp_path / "plain", FlockConfig(name="f", backend=BackendConfig(workers=2)))
    assert "[backend.local]" not in (tmp_path / "plain" / "flock.toml").read_text()


def test_init_offers_the_registered_kinds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SHEPARD_PROFILE", raising=False)
    folder = tmp_path / "flock"
    argv = ["shepard", "init", str(folder), "--payload-command", "true", "--backend", "k8s"]
    monkeypatch.setattr(sys, "argv", argv)
    assert cli_main.app_main() == 2
    err = capsys.readouterr().err
    assert "'k8s' is not a backend" in err and "slurm" in err and "Traceback" not in err
    assert not folder.exists()
    monkeypatch.setattr(sys, "argv", [*argv[:-1], "slurm"])
    assert cli_main.app_main() == 0
    assert config.load(folder).config.backend.kind == "slurm"


def test_backends_and_task_code_never_import_the_flock_facade() -> None:
    modules = [*SRC.joinpath("backends").rglob("*.py"), SRC / "scheduler_task.py", SRC / "sheep.py"]
    for path in modules:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = (
                [node.module or ""] if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names] if isinstance(node, ast.Import) else []
            )  # fmt: skip
            assert "shepard.flock" not in names, f"{path} imports shepard.flock"


def test_a_backend_is_built_from_its_context_alone(tmp_path: Path) -> None:
    flock = Flock.create(
        tmp_path / "flock",
        FlockConfig(name="f", payload=PayloadConfig(command="echo hi"),
                    backend=BackendConfig(workers=1)),
    )  # fmt: skip
    ctx = flock.backend_context(worker="me")
    assert isinstance(ctx, BackendContext) and ctx.settings == backends.config_class("local")()
    assert (ctx.workers, ctx.lease, ctx.worker_id) == (1, 60.0, "me")
    (job_id,) = flock.submit([{"A": 1}]).ids
    assert flock.run_job(job_id) is JobStatus.SUCCEEDED
    backend = LocalBackend.from_context(ctx)
    try:
        job = flock.job(job_id)
        stdout, stderr = backend.logs(job, 1)
        assert (stdout.label, stderr.label) == ("stdout", "stderr")
        assert stdout.key == log_key(job_id, 1, "stdout")
        assert stdout.store.get_bytes(stdout.key) == b"hi\n"
        assert payload_logs(stdout.store, job, 2) == [], "no second attempt, no logs"
    finally:
        backend.shutdown(kill=True)
        flock.close()
