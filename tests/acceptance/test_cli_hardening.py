"""Bad input at the door: messages and exit code 2, never a traceback nor a half-made flock;
a lost catalog is reported, not replaced; the README's first session runs as written."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import typer

from shepard.cli.main import app
from tests.acceptance.conftest import SHEPARD, Cli

pytestmark = pytest.mark.acceptance

README = Path(__file__).resolve().parents[2] / "README.md"


def refused(result_err: str, *needles: str) -> None:
    assert "Traceback" not in result_err, result_err
    for needle in needles:
        assert needle in result_err, f"{needle!r} not in {result_err!r}"


def test_readme_first_session_runs_as_written(tmp_path: Path) -> None:
    section = README.read_text().split("## Using it", 1)[1]
    script = re.search(r"```bash\n(.*?)```", section, re.S)
    assert script is not None, "the README's 'Using it' section has no bash block"
    env = {k: v for k, v in os.environ.items() if k not in ("SHEPARD_FLOCK", "SHEPARD_PROFILE")}
    env["PATH"] = f"{Path(SHEPARD).parent}:{env.get('PATH', '')}"
    env["SHEPARD_CONFIG_DIR"] = str(tmp_path / "config")
    env["COLUMNS"] = "200"
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script.group(1)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert re.search(r"^ *failed +0 *$", proc.stdout, re.M), "piped tables are plain lines"
    assert "done 23" in proc.stdout
    results = sorted((tmp_path / "results").glob("*.zip"))
    assert len(results) == 26  # 2 bundles, 1 --json, 20 --range, 2 --json-file, 1 retried
    assert all((tmp_path / "results" / r.stem / "result.txt").is_file() for r in results)


@pytest.mark.parametrize(
    ("where", "options", "needle"),
    [
        ("/proc/x", (), "cannot create the flock in /proc/x"),
        ("a-file", (), "exists and is not a folder"),
        ("a-file/below", (), "is not a folder"),
        ("new", ("--attempts", "0"), "give a number from 1 to 100"),
        ("new", ("--workers", "0"), "give a number from 1 to 4096"),
        ("new", ("--timeout", "nan"), "number of seconds"),
        ("new", ("--timeout", "inf"), "number of seconds"),
        ("new", ("--catalog", "bogus://x"), "unsupported catalog URL"),
        ("new/deeper", ("--catalog", "postgresql://nobody@127.0.0.1:1/x"), "cannot reach"),
    ],
)
def test_failed_init_says_why_and_leaves_nothing(
    cli: Cli, where: str, options: tuple[str, ...], needle: str
) -> None:
    (cli.cwd / "a-file").write_text("not a folder")
    before = sorted(p.name for p in cli.cwd.iterdir())
    result = cli("init", where, *options, ok=False)
    assert result.code == 2
    refused(result.err, needle)
    assert sorted(p.name for p in cli.cwd.iterdir()) == before


def test_failed_init_in_an_existing_folder_removes_only_what_it_made(cli: Cli) -> None:
    cli.flock.mkdir()
    (cli.flock / "mine.txt").write_text("keep")
    result = cli("init", str(cli.flock), "--catalog", "postgresql://u@127.0.0.1:1/x", ok=False)
    refused(result.err, "cannot reach")
    assert [p.name for p in cli.flock.iterdir()] == ["mine.txt"]


def test_values_out_of_range_are_refused_with_the_range(cli: Cli) -> None:
    cli.init("true")
    for args, needle in [
        (("submit", "--json", "{}", "--attempts", "0"), "from 1 to 100"),
        (("submit", "--json", "{}", "--attempts", "-1"), "from 1 to 100"),
        (("submit", "--json", "{}", "--timeout", "0"), "> 0"),
        (("submit", "--json", "{}", "--timeout", "-1"), "> 0"),
        (("submit", "--json", "{}", "--timeout", "nan"), "> 0"),
        (("submit", "--json", "{}", "--timeout", "inf"), "> 0"),
        (("up", "--workers", "0"), "from 1 to 4096"),
    ]:
        result = cli(*args, ok=False)
        assert result.code == 2, args
        refused(result.err, needle)
    assert cli("query", "--json").json()["counts"]["queued"] == 0


@pytest.mark.parametrize("name", ["PATH", "UUID", "root_output_name", "not a name"])
def test_payload_env_may_not_set_reserved_or_bad_names(cli: Cli, name: str) -> None:
    cli.init("true")
    cli.configure(lambda data: data["payload"].update(env={name: "x"}))
    result = cli("submit", "--json", "{}", ok=False)
    assert result.code == 2
    refused(result.err, "payload.env", name)


def test_json_file_that_cannot_be_read_is_a_message(cli: Cli) -> None:
    cli.init("true")
    (cli.cwd / "latin1.jsonl").write_bytes(b'{"A": "\xe9"}\n')
    (cli.cwd / "deep.json").write_text("[" * 100_000)
    (cli.cwd / "deep.jsonl").write_text('{"A": ' + "[" * 100_000 + "\n")
    for path, needle in [
        ("missing.jsonl", "No such file"),
        (".", "is a folder"),
        ("latin1.jsonl", "not UTF-8"),
        ("deep.json", "nested too deeply"),
        ("deep.jsonl", "nested too deeply"),
    ]:
        result = cli("submit", "--json-file", path, ok=False)
        assert result.code == 2, path
        refused(result.err, needle)
    result = cli("submit", "--json", "[" * 100_000, ok=False)
    refused(result.err, "nested too deeply")


def test_bundle_nested_too_deeply_is_a_message(cli: Cli) -> None:
    cli.init("true")
    (cli.cwd / "b").mkdir()
    (cli.cwd / "b" / "inputs.json").write_text("[" * 100_000)
    result = cli("batch", "b", ok=False)
    assert result.code == 2
    refused(result.err, "nested too deeply")


def test_json_file_reports_every_bad_line_and_submits_nothing(cli: Cli) -> None:
    cli.init("true")
    lines = ['{"A": 1}', "{bad", '{"A": [1]}', "", '{"PATH": "x"}', '{"A": 2}']
    (cli.cwd / "jobs.jsonl").write_text("\n".join(lines) + "\n")
    result = cli("submit", "--json-file", "jobs.jsonl", ok=False)
    refused(result.err, "3 bad line(s)", "line 2", "line 3", "line 5")
    assert "line 1" not in result.err and "line 6" not in result.err
    assert cli("query", "--json").json()["counts"]["queued"] == 0


def test_json_file_takes_a_bom_and_json_as_defaults(cli: Cli) -> None:
    cli.init("true")
    (cli.cwd / "jobs.jsonl").write_bytes('\ufeff{"A": 1}\n{"A": 2, "B": "mine"}\n'.encode())
    ids = cli("submit", "--json-file", "jobs.jsonl", "--json", '{"B": "x", "C": 3}', "--ids")
    assert len(ids.out.split()) == 2, "--json adds defaults to every line, not a job of its own"
    params = sorted(
        (cli("show", job_id, "--json").json()["params"] for job_id in ids.out.split()),
        key=lambda p: p["A"],
    )
    assert params == [{"B": "x", "C": 3, "A": 1}, {"B": "mine", "C": 3, "A": 2}]


def test_lost_catalog_is_reported_until_repaired(cli: Cli) -> None:
    cli.init("true")
    cli("submit", "--json", "{}")
    for db in cli.flock.glob("catalog.db*"):
        db.unlink()
    for command in (("query",), ("submit", "--json", "{}"), ("up", "--no-inbox")):
        result = cli(*command, ok=False)
        assert result.code == 2
        refused(result.err, "missing or empty", "init --repair")
    assert not (cli.flock / "catalog.db").exists(), "no command but init makes a catalog"
    (cli.flock / "catalog.db").write_bytes(b"")
    refused(cli("query", ok=False).err, "missing or empty")
    (cli.flock / "catalog.db").unlink()
    (cli.flock / "outputs").rmdir()
    repaired = cli("init", str(cli.flock), "--repair")
    assert "empty catalog" in repaired.out and "outputs" in repaired.out
    assert cli("query", "--json").json()["counts"]["queued"] == 0
    assert "nothing to repair" in cli("init", str(cli.flock), "--repair").out
    refused(cli("init", str(cli.flock), "--repair", "--workers", "3", ok=False).err, "no options")


def test_help_shows_no_type_for_flags(cli: Cli) -> None:
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    names = [[name] for name in group.commands if name not in ("worker",)]
    names += [["worker", "run"], ["worker", "serve"], []]
    for name in names:
        result = cli(*name, "--help")
        assert "<bool>" not in result.out, f"shepard {' '.join(name)} --help:\n{result.out}"
    assert "--no-wait" in cli("submit", "--help").out
