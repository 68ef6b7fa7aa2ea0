"""Payload kinds: `[payload] kind` selects a kind from the registry, each kind checks its own
settings, and the runtime runs any registered kind through the protocol alone."""

from __future__ import annotations

import threading
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

import pytest

from shepard import config, deploy
from shepard.config import FlockConfig, PayloadConfig
from shepard.errors import ConfigError
from shepard.flock import Flock
from shepard.model import Job, JobStatus
from shepard.payloads import KINDS, Launch, kind_class
from shepard.payloads.command import CommandPayload
from shepard.payloads.image import ImagePayload
from shepard.payloads.quickdeploy import QuickDeployPayload
from shepard.runtime import AttemptControl, RuntimeContext, log_key, run_attempt
from shepard.runtime.contract import build_env
from shepard.runtime.process import Ending, ProcessResult
from shepard.runtime.workspace import Workspace
from shepard.storage import LocalStore
from tests.unit.test_runtime_worker import make_ctx, make_job

if TYPE_CHECKING:
    from shepard.payloads.base import Payload


def parse(**payload: Any) -> FlockConfig:
    return config.parse({"name": "f", "payload": payload})


# -- choosing the kind -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        ({"command": "python3 job.py"}, "command"),
        ({"image": "localhost/tool:1"}, "image"),
        ({"image": "localhost/tool:1", "command": "run"}, "image"),
        ({}, "quick-deploy"),
        ({"command": "  "}, "quick-deploy"),  # a blank command never ran anything
    ],
)
def test_a_file_without_kind_gets_the_kind_its_keys_meant(
    payload: dict[str, str], kind: str
) -> None:
    assert parse(**payload).payload.kind == kind


def test_new_files_say_their_kind(tmp_path: Path) -> None:
    for name, payload in (("a", PayloadConfig(command="run")), ("b", PayloadConfig())):
        path = config.write(tmp_path / name, FlockConfig(name="f", payload=payload))
        written = tomllib.loads(path.read_text())["payload"]
        assert written["kind"] == payload.kind
        assert config.load(tmp_path / name).config.payload == payload
    assert PayloadConfig().kind == "quick-deploy"


def test_an_unknown_kind_is_a_config_error_listing_the_known_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        parse(kind="lambda", command="run")
    message = str(caught.value)
    assert "payload.kind: Value error, unknown payload kind 'lambda'" in message
    assert "known: command, image, quick-deploy" in message


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"kind": "command"}, 'kind "command" needs payload.command'),
        ({"kind": "command", "command": " "}, 'kind "command" needs payload.command'),
        ({"kind": "command", "command": "r", "image": "i:1"}, 'set kind = "image"'),
        ({"kind": "image", "command": "run"}, 'kind "image" needs payload.image'),
        ({"kind": "quick-deploy", "command": "run"}, "remove payload.command"),
    ],
)
def test_each_kind_checks_its_own_settings(payload: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse(**payload)


def test_the_flock_builds_the_payload_of_its_kind(tmp_path: Path) -> None:
    built = {
        "command": Flock.create(tmp_path / "c", parse(command="run")),
        "image": Flock.create(tmp_path / "i", parse(image="localhost/t:1")),
        "quick-deploy": Flock.create(tmp_path / "q", parse()),
    }
    payloads = {kind: flock.runtime_context().payload for kind, flock in built.items()}
    assert payloads["command"] == CommandPayload("run")
    assert isinstance(payloads["image"], ImagePayload) and payloads["image"].command is None
    assert payloads["image"].spec.image == "localhost/t:1"
    assert isinstance(payloads["quick-deploy"], QuickDeployPayload)
    assert {kind: kind_class(kind).kind for kind in KINDS} == {k: k for k in KINDS}


def test_deploying_an_image_makes_the_kind_image() -> None:
    text = 'name = "f"\n\n[payload]\nkind = "command"\ncommand = "run"  # keep me\n'
    edited = deploy.with_payload_image(text, "localhost/f:2")
    loaded = config.parse(tomllib.loads(edited)).payload
    assert (loaded.kind, loaded.image, loaded.command) == ("image", "localhost/f:2", "run")
    assert "# keep me" in edited


# -- a kind of one's own, through the real runtime -------------------------------------------


@dataclass(frozen=True)
class RecordingPayload:
    """A payload kind made in this test: it runs no process, it writes what it was given."""

    exit_code: int = 0
    kind: ClassVar[str] = "recording"

    @classmethod
    def check(cls, payload: PayloadConfig) -> None:
        if payload.command != "record":
            raise ValueError('kind "recording" needs command = "record"')

    @classmethod
    def from_config(cls, config: FlockConfig) -> RecordingPayload:
        return cls()

    def prepare(self, job: Job, ctx: RuntimeContext, ws: Workspace) -> Launch:
        return Launch("recorded", ws.input)

    def environment(
        self,
        job: Job,
        ctx: RuntimeContext,
        *,
        start_time: int,
        ws: Workspace,
        base: Mapping[str, str],
    ) -> dict[str, str]:
        return build_env(job, ctx, start_time=start_time, paths=ws, base={})

    def run(
        self,
        launch: Launch,
        *,
        job: Job,
        ctx: RuntimeContext,
        ws: Workspace,
        env: Mapping[str, str],
        logs: tuple[Path, Path],
        deadline: float | None,
        stop: threading.Event,
        grace: float,
    ) -> ProcessResult:
        logs[0].parent.mkdir(parents=True, exist_ok=True)
        logs[0].write_text(f"{launch.command} in {launch.cwd.name}\n")
        logs[1].write_text("")
        (ws.output / "uuid.txt").write_text(env["UUID"])
        return ProcessResult(Ending.EXITED, self.exit_code, detail="recorded")


@pytest.fixture
def recording_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(KINDS, "recording", f"{__name__}:RecordingPayload")


@pytest.mark.usefixtures("recording_kind")
def test_a_registered_kind_is_chosen_by_the_config_and_run_by_the_runtime(
    tmp_path: Path,
) -> None:
    flock = Flock.create(tmp_path / "f", parse(kind="recording", command="record"))
    ctx = flock.runtime_context()
    assert ctx.payload == RecordingPayload()
    job = make_job()
    outcome = run_attempt(job, ctx, AttemptControl())
    assert outcome.status is JobStatus.SUCCEEDED and outcome.detail == "recorded"
    assert len(outcome.outputs) == 1
    logs = cast(LocalStore, ctx.logs)  # the flock's stores are folders
    stdout = logs.path(log_key(job.id, job.attempt, "stdout")).read_text()
    assert stdout == "recorded in input\n"
    with pytest.raises(ConfigError, match='kind "recording" needs command = "record"'):
        parse(kind="recording", command="other")


def test_the_runtime_judges_the_exit_status_a_kind_reports(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, payload=RecordingPayload(exit_code=3))
    outcome = run_attempt(make_job(), ctx, AttemptControl())
    assert (outcome.status, outcome.reason, outcome.exit_code) == (
        JobStatus.FAILED,
        "exit code 3",
        3,
    )
    assert outcome.error_bundle is not None and outcome.detail == "recorded"


def test_a_stopped_attempt_never_runs_the_payload(tmp_path: Path) -> None:
    ran: list[str] = []

    class Refusing(RecordingPayload):
        def prepare(self, job: Job, ctx: RuntimeContext, ws: Workspace) -> Launch:
            control.stop.set()  # cancelled while the workspace was being filled
            return super().prepare(job, ctx, ws)

        def run(self, launch: Launch, **kw: Any) -> ProcessResult:
            ran.append("run")
            return super().run(launch, **kw)

    control = AttemptControl()
    payload: Payload = Refusing()
    outcome = run_attempt(make_job(), make_ctx(tmp_path, payload=payload), control)
    assert outcome.status is JobStatus.CANCELLED and ran == []


# -- quick deploy ----------------------------------------------------------------------------


def test_the_quick_deploy_kind_needs_each_job_to_name_its_folder(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, payload=QuickDeployPayload())
    ctx.quick_deploy.put_bytes("tool/run.sh", b'echo "$UUID" > "$ROOT_OUTPUT_NAME/id"\n')
    named = make_job(params={"QUICK_DEPLOY_DIRECTORY": "tool"})
    assert run_attempt(named, ctx, AttemptControl()).status is JobStatus.SUCCEEDED
    bare = run_attempt(make_job(), ctx, AttemptControl())
    assert bare.status is JobStatus.FAILED and bare.retryable is False
    assert bare.reason == (
        "setup: no payload command: set payload.command for the flock or give the job a "
        "QUICK_DEPLOY_DIRECTORY"
    )
