"""The flock's CloudFormation template: every option combination renders and is cfn-lint
clean (cfn-lint is in the dev extra; missing, it skips locally and fails in CI), and the
options the CLI refuses exit 2 with one clear message."""

from __future__ import annotations

import itertools
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shepard.aws.template import COMPUTE_TYPES, Options, render
from shepard.catalog.dynamodb.table import INDEXES
from shepard.cli.main import app
from shepard.errors import ShepardError
from tests.services import require_service


def combinations() -> list[Options]:
    found: list[Options] = []
    both = (False, True)
    for compute, gpu, efs, lustre in itertools.product(COMPUTE_TYPES, both, both, both):
        if compute == "FARGATE" and (gpu or lustre):
            continue  # refused (see below)
        found.append(Options(flock="lint", compute=compute, gpu=gpu, efs=efs, lustre=lustre))
    return found


@pytest.mark.timeout(1800)
def test_every_option_combination_is_cfn_lint_clean(tmp_path: Path) -> None:
    lint = shutil.which("cfn-lint") or str(Path(sys.executable).parent / "cfn-lint")
    require_service("cfn-lint", None if Path(lint).exists() else "not installed (dev extra)")
    files = []
    for n, options in enumerate(combinations()):
        path = tmp_path / f"stack-{n}.yaml"
        path.write_text(render(options))
        files.append(str(path))
    assert len(files) == 18
    done = subprocess.run([lint, *files], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr


def test_options_become_parameter_defaults_and_the_table_is_the_catalogs() -> None:
    text = render(Options(flock="demo", compute="SPOT", max_vcpus=64, gpu=True, efs=True))
    for line in ('Default: "demo"', 'Default: "SPOT"', "Default: 64"):
        assert f"\n    {line}\n" in text
    assert text.count('Default: "true"') == 2  # gpu, efs (lustre stays off)
    for name, pk, sk, _projected in INDEXES:
        assert f"IndexName: {name}\n" in text
        assert (
            f"[{{AttributeName: {pk}, KeyType: HASH}}, {{AttributeName: {sk}, KeyType: RANGE}}]"
            in text
        )
    assert "__" not in text  # every placeholder was filled


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--spot", "--fargate"], "exclude each other"),
        (["--fargate", "--gpu"], "--gpu needs EC2"),
        (["--fargate", "--lustre"], "--lustre needs EC2"),
        (["--name", "Bad_Name"], "invalid flock name"),
        (["--max-vcpus", "0"], "--max-vcpus"),
    ],
)
def test_refused_options_exit_2_with_one_message(args: list[str], message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "shepard", "aws", "template", *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == ""


def test_the_cli_prints_the_template() -> None:
    result = CliRunner().invoke(app, ["aws", "template", "--efs", "--name", "demo"])
    assert result.exit_code == 0
    assert result.output == render(Options(flock="demo", efs=True))


def test_bad_worker_env_is_refused() -> None:
    with pytest.raises(ShepardError, match="worker-env"):
        render(Options(worker_env={"1BAD": "x"}))
