"""init, submit, batch, query, show, retrieve through the real executable."""

from __future__ import annotations

import re
import time
import zipfile
from pathlib import Path

import pytest

from tests.acceptance.conftest import Cli, parse_env, zip_names, zip_text

pytestmark = pytest.mark.acceptance

ENV_DUMP = (
    'env -0 > "$ROOT_OUTPUT_NAME/env.txt"; ls -A "$ROOT_INPUT_NAME" > "$ROOT_OUTPUT_NAME/input.txt"'
)


def outputs(cli: Cli) -> list[Path]:
    return sorted((cli.flock / "outputs").glob("*.zip"))


def test_init_writes_config_and_stores(cli: Cli) -> None:
    cli.init("true")
    text = (cli.flock / "flock.toml").read_text()
    assert 'name = "flock"' in text and 'command = "true"' in text
    for folder in ("inbox", "inputs", "outputs", "errors", "logs", "quick-deploy", "secrets"):
        assert (cli.flock / folder).is_dir()
    assert (cli.flock / "catalog.db").is_file()
    again = cli("init", str(cli.flock), ok=False)
    assert "already exists" in again.err


def test_bad_config_names_the_key(cli: Cli) -> None:
    cli.init("true")
    path = cli.flock / "flock.toml"
    path.write_text(path.read_text().replace("[backend]\n", "[backend]\nworkerz = 3\n"))
    result = cli("query", ok=False)
    assert "flock.toml" in result.err and "workerz" in result.err
    assert "Traceback" not in result.err


def test_submit_json_runs_with_the_full_environment(cli: Cli) -> None:
    cli.init(ENV_DUMP)
    done = cli("submit", "--json", '{"test1":"test1","test4":0,"Flag":true}', "--wait")
    job_id = re.search(r"submitted job (\S+)", done.out).group(1)  # type: ignore[union-attr]
    [zip_path] = outputs(cli)
    info = cli("show", job_id, "--json").json()
    start = info["start_time"]
    assert zip_path.name == f"result@{job_id}_{start}_root.zip"
    env = parse_env(zip_text(zip_path, "env.txt"))
    assert env["test1"] == "test1" and env["test4"] == "0" and env["Flag"] == "True"
    assert env["UUID"] == job_id and env["START_TIME"] == str(start)
    stamp = time.strftime("%Y/%m/%d-%H:%M:%S", time.gmtime(start))
    assert env["JOB_STATUS"] == f"calling_payload_code {stamp} U.T.C."
    assert env["IS_INVOKED"] == "True" and env["INPUT_ZIP_NAME"] == "None"
    root = Path(env["ROOT_INPUT_NAME"]).parent
    assert root.parent == cli.flock / "work"
    assert env["ROOT_INPUT_NAME"] == f"{root}/input"
    assert env["ROOT_OUTPUT_NAME"] == f"{root}/output"
    assert env["INPUTS_BUCKET"] == str(cli.flock / "inputs")
    assert env["OUTPUTS_BUCKET"] == str(cli.flock / "outputs")
    assert env["ERROR_BUCKET"] == str(cli.flock / "errors")
    assert env["USES_EFS"] == "False" and env["USES_LUSTRE"] == "False"
    assert "EFS_INPUT_NAME" not in env and "LUSTRE_INPUT_NAME" not in env
    assert env["ULIMIT_FILENO"].isdigit() and env["HOSTNAME"]
    assert zip_text(zip_path, "input.txt").split() == ["secrets"]
    assert info["status"] == "succeeded" and info["exit_code"] == 0
    assert [h["status"] for h in info["history"]] == ["queued", "running", "succeeded"]
    assert not any((cli.flock / "work").iterdir()), "workspace must be removed"


def test_batch_folder_copies_the_bundle_and_honours_tag(cli: Cli, tmp_path: Path) -> None:
    cli.init(ENV_DUMP)
    sample = tmp_path / "sample"
    (sample / "data").mkdir(parents=True)
    (sample / "inputs.json").write_text('{"TAG": "run 7/a", "N": 3}')
    (sample / "data" / "x.csv").write_text("1,2\n")
    result = cli("batch", str(sample), "--wait")
    job_id = re.search(r"submitted job (\S+)", result.out).group(1)  # type: ignore[union-attr]
    [zip_path] = outputs(cli)
    assert zip_path.name.startswith(f"run_7_a_result@{job_id}_")
    env = parse_env(zip_text(zip_path, "env.txt"))
    bundle = env["INPUT_ZIP_NAME"]
    assert bundle.endswith(".zip") and env["IS_INVOKED"] == "False"
    assert sorted(zip_text(zip_path, "input.txt").split()) == sorted([bundle, "secrets"])
    stored = cli.flock / "inputs" / bundle
    assert sorted(zip_names(stored)) == ["data/", "data/x.csv", "inputs.json"] or sorted(
        zip_names(stored)
    ) == ["data/x.csv", "inputs.json"]


def test_failing_payload_leaves_an_error_bundle_and_no_output(cli: Cli) -> None:
    cli.init('echo to-out; echo to-err >&2; echo partial > "$ROOT_OUTPUT_NAME/p.txt"; exit 3')
    result = cli("submit", "--json", '{"A": 1}', "--wait", ok=False)
    assert result.code == 1
    job_id = re.search(r"submitted job (\S+)", result.out).group(1)  # type: ignore[union-attr]
    assert outputs(cli) == []
    info = cli("show", job_id, "--json").json()
    assert info["status"] == "failed" and info["exit_code"] == 3
    assert "exit code 3" in info["reason"]
    bundle = Path(info["error_bundle"])
    assert bundle.name == f"log@{job_id}_{info['start_time']}.zip"
    names = zip_names(bundle)
    assert {"stdout.txt", "stderr.txt", "exit_status.txt", "workspace.txt"} <= set(names)
    assert "to-out" in zip_text(bundle, "stdout.txt")
    assert "to-err" in zip_text(bundle, "stderr.txt")
    assert "3" in zip_text(bundle, "exit_status.txt")
    assert "p.txt" in zip_text(bundle, "workspace.txt")
    retrieved = cli.cwd / "got"
    cli("retrieve", str(retrieved), "--errors")
    assert (retrieved / "errors" / bundle.name).is_file()


def test_query_show_and_retrieve(cli: Cli) -> None:
    cli.init('echo "$ITEM" > "$ROOT_OUTPUT_NAME/o.txt"')
    cli("submit", "--range", "ITEM=1-12", "--wait")
    counts = cli("query", "--json").json()["counts"]
    assert counts["succeeded"] == 12 and counts["queued"] == 0
    table = cli("query").out
    assert "succeeded" in table and "12" in table
    dest = cli.cwd / "results"
    cli("retrieve", str(dest), "--unzip")
    values = sorted(int(p.read_text()) for p in dest.glob("*/o.txt"))
    assert values == list(range(1, 13))
    assert len(list(dest.glob("result@*_root.zip"))) == 12


def test_show_unknown_job_is_a_clear_error(cli: Cli) -> None:
    cli.init("true")
    result = cli("show", "no-such-job", ok=False)
    assert "no job 'no-such-job'" in result.err and "Traceback" not in result.err


@pytest.mark.parametrize("alias", ["batch_via_api", "batch-via-api"])
def test_shepard_aliases_of_submit(cli: Cli, alias: str) -> None:
    cli.init("true")
    cli(alias, "--json", '{"X": "y"}')
    assert cli("query", "--json").json()["counts"]["queued"] == 1


def test_bad_parameters_register_nothing(cli: Cli) -> None:
    cli.init("true")
    for bad, words in [
        ('{"uuid": 1}', "reserved"),
        ('{"A": [1]}', "A"),
        ('{"A": {"b": 1}}', "A"),
        ('{"1A": 1}', "1A"),
        ('{"A": 1.5}', "A"),
        ("[1, 2]", "object"),
        ("{nope", "JSON"),
    ]:
        result = cli("submit", "--json", bad, ok=False)
        assert words in result.err, (bad, result.err)
        assert "Traceback" not in result.err
    assert sum(cli("query", "--json").json()["counts"].values()) == 0


def make_zip(path: Path, entries: dict[str, bytes], **symlinks: str) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        for name, target in symlinks.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o120777 << 16
            zf.writestr(info, target)
    return path


GOOD = b'{"A": 1}'


@pytest.mark.parametrize(
    ("entries", "symlinks", "words"),
    [
        ({"readme.txt": b"x"}, {}, "inputs.json"),
        ({"inputs.json": b"{bad"}, {}, "JSON"),
        ({"inputs.json": b"[1]"}, {}, "object"),
        ({"inputs.json": b'{"A": {"n": 1}}'}, {}, "A"),
        ({"inputs.json": b'{"Path": "x"}'}, {}, "reserved"),
        ({"inputs.json": b'{"A-B": "x"}'}, {}, "A-B"),
        ({"inputs.json": GOOD, "/etc/evil": b"x"}, {}, "/etc/evil"),
        ({"inputs.json": GOOD, "../evil": b"x"}, {}, "../evil"),
        ({"inputs.json": GOOD}, {"link": "/etc/passwd"}, "link"),
        ({"job/inputs.json": GOOD}, {}, "root"),
    ],
)
def test_bad_bundles_are_refused_and_register_nothing(
    cli: Cli, tmp_path: Path, entries: dict[str, bytes], symlinks: dict[str, str], words: str
) -> None:
    cli.init("true")
    bundle = make_zip(tmp_path / "b.zip", entries, **symlinks)
    result = cli("batch", str(bundle), ok=False)
    assert words in result.err, result.err
    assert "Traceback" not in result.err
    assert sum(cli("query", "--json").json()["counts"].values()) == 0
    assert list((cli.flock / "inputs").iterdir()) == []


def test_not_a_zip_and_zip_bomb_are_refused(cli: Cli, tmp_path: Path) -> None:
    cli.init("true")
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"this is not a zip at all")
    assert "not a zip" in cli("batch", str(junk), ok=False).err
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("inputs.json", GOOD)
        zf.writestr("zeros.bin", b"\0" * (64 << 20))
    result = cli("batch", str(bomb), ok=False)
    assert "ratio" in result.err or "bomb" in result.err, result.err
    assert sum(cli("query", "--json").json()["counts"].values()) == 0


def test_folder_without_inputs_file_is_refused(cli: Cli, tmp_path: Path) -> None:
    cli.init("true")
    folder = tmp_path / "empty"
    folder.mkdir()
    result = cli("batch", str(folder), ok=False)
    assert "inputs.json" in result.err
    assert sum(cli("query", "--json").json()["counts"].values()) == 0
