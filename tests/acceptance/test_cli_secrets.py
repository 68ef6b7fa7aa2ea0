"""`shepard secretify` and the secrets every job finds, through the real executable."""

from __future__ import annotations

import re
import stat
import zipfile
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tests.acceptance.conftest import Cli, zip_text

pytestmark = pytest.mark.acceptance

SECRET_A = "alpha-7f3c2e91-do-not-leak"
SECRET_B = "bravo-0c8d44aa-do-not-leak"
SECRETS = [SECRET_A.encode(), SECRET_B.encode()]
SEE_A = (
    'cat "$ROOT_INPUT_NAME/secrets/a.txt" > "$ROOT_OUTPUT_NAME/seen"; '
    'stat -c "%a %n" "$ROOT_INPUT_NAME/secrets" "$ROOT_INPUT_NAME/secrets/"* '
    '| sed "s|$ROOT_INPUT_NAME/||" > "$ROOT_OUTPUT_NAME/modes"'
)


@pytest.fixture
def scli(cli: Cli, tmp_path: Path) -> Cli:
    """The cli with its own key and its own (empty) user config folder."""
    cli.env["SHEPARD_SECRET_KEY"] = Fernet.generate_key().decode()
    cli.env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
    return cli


def folder_of(tmp_path: Path, name: str, files: dict[str, str]) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for file, text in files.items():
        (folder / file).write_text(text)
    return folder


def job_id(text: str) -> str:
    return re.search(r"submitted job (\S+)", text).group(1)  # type: ignore[union-attr]


def leaks(folder: Path) -> list[str]:
    """Files under `folder` holding a secret, also inside zips (whose members are compressed)."""
    found = []
    for path in folder.rglob("*"):
        if not path.is_file():
            continue
        blobs = [path.read_bytes()]
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                blobs += [zf.read(name) for name in zf.namelist()]
        if any(secret in blob for secret in SECRETS for blob in blobs):
            found.append(str(path))
    return found


def test_jobs_see_their_secrets(scli: Cli, tmp_path: Path) -> None:
    scli.init(SEE_A)
    folder = folder_of(tmp_path, "mysecrets", {"a.txt": SECRET_A, "b.txt": SECRET_B})
    (folder / "nested").mkdir()
    (folder / "nested" / "c.txt").write_text("deep")
    (folder / ".hidden").write_text("hidden")
    done = scli("secretify", str(folder))
    assert "stored 2 secret(s)" in done.out and "a.txt, b.txt" in done.out
    assert "skipped nested/: a folder (secretify does not recurse)" in done.out
    assert "skipped .hidden: a hidden name" in done.out
    assert SECRET_A not in done.out + done.err
    stored = sorted(p.name for p in (scli.flock / "secrets").iterdir())
    assert stored == ["a.txt.fernet", "b.txt.fernet"]
    assert leaks(scli.flock) == [], "secrets must never be stored in plain text"

    run = scli("submit", "--json", "{}", "--wait")
    [zip_path] = (scli.flock / "outputs").glob("*.zip")
    assert zip_text(zip_path, "seen") == SECRET_A
    assert zip_text(zip_path, "modes").splitlines() == [
        "700 secrets",
        "600 secrets/a.txt",
        "600 secrets/b.txt",
    ]
    info = scli("show", job_id(run.out), "--json").json()
    assert info["status"] == "succeeded"


def test_list_shows_names_and_sizes_only(scli: Cli, tmp_path: Path) -> None:
    scli.init("true")
    assert "no secrets" in scli("secretify", "--list").out
    scli("secretify", str(folder_of(tmp_path, "s", {"a.txt": SECRET_A, "b.txt": "xy"})))
    listed = scli("secretify", "--list")
    assert "a.txt" in listed.out and "b.txt" in listed.out
    assert str(len(SECRET_A)) in listed.out
    assert SECRET_A not in listed.out + listed.err
    assert scli("secretify", "--list", "--json").json() == [
        {"name": "a.txt", "size": len(SECRET_A)},
        {"name": "b.txt", "size": 2},
    ]


def test_replace_add_remove(scli: Cli, tmp_path: Path) -> None:
    scli.init("true")

    def names() -> list[str]:
        return [item["name"] for item in scli("secretify", "--list", "--json").json()]

    scli("secretify", str(folder_of(tmp_path, "one", {"a.txt": "a", "b.txt": "b"})))
    replaced = scli("secretify", str(folder_of(tmp_path, "two", {"c.txt": "c"})))
    assert "removed 2 secret(s) not in" in replaced.out and "a.txt, b.txt" in replaced.out
    assert names() == ["c.txt"]
    scli("secretify", "--add", str(folder_of(tmp_path, "three", {"d.txt": "d"})))
    assert names() == ["c.txt", "d.txt"]
    scli("secretify", "--remove", "c.txt")
    assert names() == ["d.txt"]
    missing = scli("secretify", "--remove", "nope", ok=False)
    assert "no secret named 'nope'" in missing.err and "Traceback" not in missing.err
    bad = scli("secretify", "--remove", "../d.txt", ok=False)
    assert "invalid secret name" in bad.err
    assert names() == ["d.txt"]


def test_empty_folder_changes_nothing(scli: Cli, tmp_path: Path) -> None:
    scli.init("true")
    scli("secretify", str(folder_of(tmp_path, "one", {"a.txt": "a"})))
    empty = scli("secretify", str(folder_of(tmp_path, "empty", {})), ok=False)
    assert "no file to store" in empty.err and "nothing changed" in empty.err
    assert "Traceback" not in empty.err
    assert [i["name"] for i in scli("secretify", "--list", "--json").json()] == ["a.txt"]
    both = scli("secretify", str(tmp_path / "one"), "--list", ok=False)
    assert "exactly one of" in both.err


def test_nothing_leaks_into_outputs_errors_logs_or_show(scli: Cli, tmp_path: Path) -> None:
    command = (
        'ls -l "$ROOT_INPUT_NAME/secrets"; '
        'if [ "$MODE" = fail ]; then echo failing >&2; exit 3; fi; '
        'echo result > "$ROOT_OUTPUT_NAME/out.txt"'
    )
    scli.init(command)
    scli("secretify", str(folder_of(tmp_path, "s", {"a.txt": SECRET_A, "b.txt": SECRET_B})))
    ok = job_id(scli("submit", "--json", '{"MODE": "pass"}', "--wait").out)
    failed = job_id(scli("submit", "--json", '{"MODE": "fail"}', "--wait", ok=None).out)

    assert scli("show", ok, "--json").json()["status"] == "succeeded"
    info = scli("show", failed, "--json")
    assert info.json()["status"] == "failed" and info.json()["reason"] == "exit code 3"
    table = scli("show", failed)
    query = scli("query", "--json")
    for text in (info.out, table.out, query.out, scli("show", ok, "--json").out):
        assert SECRET_A not in text and SECRET_B not in text

    [bundle] = (scli.flock / "errors").glob("log@*.zip")
    with zipfile.ZipFile(bundle) as zf:
        listing = zf.read("workspace.txt").decode()
        assert "a.txt" in listing and "b.txt" in listing  # names only
        assert "failing" in zf.read("stderr.txt").decode()
    assert list((scli.flock / "outputs").glob("*.zip")), "the passing job has an output"
    scli("retrieve", str(tmp_path / "got"), "--unzip", "--errors")
    assert leaks(tmp_path / "got") == []
    assert leaks(scli.flock) == [], "no secret in outputs, error bundles, logs or the catalog"


def test_wrong_key_fails_the_job_clearly(scli: Cli, tmp_path: Path) -> None:
    scli.init(SEE_A, "--attempts", "3")
    scli("secretify", str(folder_of(tmp_path, "s", {"a.txt": SECRET_A})))
    scli.env["SHEPARD_SECRET_KEY"] = Fernet.generate_key().decode()
    done = scli("submit", "--json", "{}", "--wait", ok=False)
    info = scli("show", job_id(done.out), "--json").json()
    assert info["status"] == "failed"
    assert info["attempt"] == 1, "a key problem is not retried"
    reason = info["reason"]
    assert reason.startswith("setup: cannot decrypt the flock's secrets: ")
    assert "set SHEPARD_SECRET_KEY" in reason and SECRET_A not in reason
    assert not list((scli.flock / "outputs").glob("*.zip"))
    assert leaks(scli.flock) == []


def test_key_file_is_made_on_first_use(scli: Cli, tmp_path: Path) -> None:
    """Without SHEPARD_SECRET_KEY, a per-user key file is created and used by local workers."""
    del scli.env["SHEPARD_SECRET_KEY"]
    scli.init(SEE_A)
    folder = folder_of(tmp_path, "s", {"a.txt": SECRET_A})
    first = scli("secretify", str(folder))
    key_file = tmp_path / "xdg" / "shepard" / "secret.key"
    assert f"created a new secret key in {key_file}" in first.out
    assert "SHEPARD_SECRET_KEY" in first.out
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    again = scli("secretify", str(folder))
    assert "created a new secret key" not in again.out
    scli("submit", "--json", "{}", "--wait")
    [zip_path] = (scli.flock / "outputs").glob("*.zip")
    assert zip_text(zip_path, "seen") == SECRET_A
    assert key_file.read_bytes() not in b"".join(
        p.read_bytes() for p in scli.flock.rglob("*") if p.is_file()
    )


def test_payloads_never_see_the_key(scli: Cli) -> None:
    scli.init('env > "$ROOT_OUTPUT_NAME/env.txt"')
    scli("submit", "--json", "{}", "--wait")
    [zip_path] = (scli.flock / "outputs").glob("*.zip")
    env = zip_text(zip_path, "env.txt")
    assert "SHEPARD_SECRET_KEY" not in env
    assert scli.env["SHEPARD_SECRET_KEY"] not in env


def test_rotation(scli: Cli, tmp_path: Path) -> None:
    scli.init(SEE_A)
    old = scli.env["SHEPARD_SECRET_KEY"]
    scli("secretify", str(folder_of(tmp_path, "s", {"a.txt": SECRET_A})))
    new = Fernet.generate_key().decode()
    scli.env["SHEPARD_SECRET_KEY"] = f"{new},{old}"
    assert "re-encrypted 1 secret(s)" in scli("secretify", "--rotate").out
    scli.env["SHEPARD_SECRET_KEY"] = new
    scli("submit", "--json", "{}", "--wait")
    [zip_path] = (scli.flock / "outputs").glob("*.zip")
    assert zip_text(zip_path, "seen") == SECRET_A
