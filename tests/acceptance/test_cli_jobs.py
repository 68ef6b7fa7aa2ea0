"""init, submit, batch, query, show, retrieve through the real executable."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from tests.acceptance.conftest import Cli

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


def test_query_show_and_retrieve(cli: Cli) -> None:
    cli.init('echo "$ITEM" > "$ROOT_OUTPUT_NAME/o.txt"')
    cli("submit", "--range", "ITEM=1-12", "--wait")
    # the command closed its catalog before leaving: SQLite removes the write-ahead log
    # when its last connection closes, never when a process just ends
    assert not (cli.flock / "catalog.db-wal").exists()
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
