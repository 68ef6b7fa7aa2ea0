"""`shepard aws deploy | describe | destroy` and `configure --aws-stack`: what they refuse
before anything reaches AWS (exit code 2, one line, no traceback). The endpoint points at a
closed port, so a command that called AWS anyway would fail with another message."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shepard.aws.head import RECONCILE_EVERY_S, Head
from shepard.config import AwsConfig


def _run(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SHEPARD_"))}
    environ.update(AWS_ENDPOINT_URL="http://127.0.0.1:9", AWS_ACCESS_KEY_ID="x")
    environ.update(AWS_SECRET_ACCESS_KEY="x", SHEPARD_CONFIG_DIR=str(tmp_path / "config"))
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", "shepard", *args], capture_output=True, text=True, timeout=120,
        env=environ, stdin=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["aws", "deploy", "Bad_Name", "--region", "r"], "invalid flock name"),
        (
            ["aws", "deploy", "ok-name", "--region", "r", "--spot", "--fargate"],
            "exclude each other",
        ),
        (["aws", "deploy", "ok-name", "--region", "r", "--fargate", "--gpu"], "--gpu needs EC2"),
        (["aws", "deploy", "ok-name", "--region", "r", "--worker-env", "NOEQUALS"], "KEY=VALUE"),
        (["aws", "deploy", "ok-name", "--region", "r", "--worker-env", "1X=y"], "--worker-env"),
        (["aws", "deploy", "ok-name", "--region", "r", "--lambda-python", "3.9"], "3.11, 3.12"),
        (["aws", "deploy", "ok-name"], "no AWS region"),
        (["aws", "describe", "ok-name"], "no AWS region"),
        (["aws", "destroy", "ok-name", "--region", "r"], "give --yes"),
        (["configure", "p", "--aws-stack", "x", "--flock", "."], "exclude each other"),
        (["configure", "p", "--region", "eu-west-1"], "--region goes with --aws-stack"),
        (["configure", "p", "--aws-stack", "x"], "needs --region"),
    ],
)
def test_refused_before_any_aws_call(args: list[str], message: str, tmp_path: Path) -> None:
    done = _run(args, tmp_path)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_an_unreachable_endpoint_is_one_line_exit_2(tmp_path: Path) -> None:
    done = _run(["aws", "describe", "ok-name", "--region", "us-east-1"], tmp_path,
                AWS_MAX_ATTEMPTS="1")  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "cannot read stack 'ok-name'" in done.stderr and "Traceback" not in done.stderr


def test_up_on_a_serverless_flock_asks_for_here(tmp_path: Path) -> None:
    folder = tmp_path / "flock"
    folder.mkdir()
    (folder / "flock.toml").write_text(
        'name = "sl"\n[catalog]\nurl = "sqlite:///' + str(folder / "c.db") + '"\n'
        '[aws]\nstack = "sl"\nregion = "us-east-1"\n'
    )
    assert _run(["init", str(folder), "--repair"], tmp_path).returncode in (0, 2)
    done = _run(["up", "-f", str(folder)], tmp_path)
    assert done.returncode == 2, done.stderr
    assert "serverless" in done.stderr and "--here" in done.stderr


def test_the_reconciler_is_invoked_at_most_every_few_seconds() -> None:
    now = [100.0]
    calls: list[str] = []

    class Lambda:
        def invoke(self, **kwargs: object) -> None:
            calls.append(str(kwargs["FunctionName"]))

    head = Head(AwsConfig(stack="sl", region="us-east-1"), clock=lambda: now[0])
    head.aws._clients["lambda"] = Lambda()
    assert head.reconcile_soon() is True
    now[0] += RECONCILE_EVERY_S / 2
    assert head.reconcile_soon() is False
    now[0] += RECONCILE_EVERY_S
    assert head.reconcile_soon() is True
    assert calls == ["sl-reconciler", "sl-reconciler"]
