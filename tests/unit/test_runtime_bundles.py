"""Result zips, error bundles, secrets placement and workspace removal, piece by piece."""

from __future__ import annotations

import io
import os
import stat
import zipfile
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from shepard.keys import ENV_VAR
from shepard.runtime.errorbundle import (
    AttemptReport,
    describe_returncode,
    exit_status_text,
    workspace_listing,
    write_error_bundle,
)
from shepard.runtime.outputs import MAX_TAG, sanitize_tag, zip_folder
from shepard.runtime.secrets import place_secrets
from shepard.runtime.workspace import remove_tree
from shepard.secrets import SecretStore
from shepard.storage import LocalStore


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("run1", "run1"),
        ("../../x y", "_.._x_y"),
        ("--.hidden", "hidden"),
        ("a/b\\c:d", "a_b_c_d"),
        ("été", "_t_"),
        ("", ""),
        ("...", ""),
        ("x" * 150, "x" * MAX_TAG),
    ],
)
def test_sanitize_tag(raw: str, clean: str) -> None:
    assert sanitize_tag(raw) == clean


def test_zip_folder_stores_links_inside_as_files_and_leaves_out_the_others(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    (out / "d").mkdir(parents=True)
    (out / "d" / "f.txt").write_text("f")
    (out / "inside").symlink_to("d/f.txt")
    (out / "d" / "up").symlink_to("../d/f.txt")
    (out / "outside").symlink_to("/etc/passwd")
    (out / "escape").symlink_to("../../" + tmp_path.name)
    (out / "dangling").symlink_to("nowhere")
    (out / "folder").symlink_to("d")
    os.mkfifo(out / "fifo")
    notes: list[str] = []
    path = zip_folder(out, tmp_path / "r.zip", warn=notes.append)
    assert path == tmp_path / "r.zip"
    with zipfile.ZipFile(path) as zf:
        assert sorted(zf.namelist()) == ["d/", "d/f.txt", "d/up", "inside"]
        for name in ("inside", "d/up"):
            assert stat.S_ISREG(zf.getinfo(name).external_attr >> 16)
            assert zf.read(name) == b"f"
    said = "\n".join(notes)
    assert len(notes) == 4
    assert "'outside', a symbolic link to '/etc/passwd', outside the output folder" in said
    assert "'dangling', a symbolic link to 'nowhere', which does not exist" in said
    assert "'folder'" in said and "'escape'" in said


def test_only_links_to_outside_give_no_zip(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "link").symlink_to("/etc/passwd")
    assert zip_folder(tmp_path / "out", tmp_path / "r.zip") is None


def test_zip_folder_without_files_gives_nothing(tmp_path: Path) -> None:
    (tmp_path / "out" / "a" / "b").mkdir(parents=True)
    assert zip_folder(tmp_path / "out", tmp_path / "r.zip") is None
    assert not (tmp_path / "r.zip").exists()


def test_zip_folder_does_not_clobber_an_existing_file(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("x")
    (tmp_path / "r.zip").write_text("the payload's own file")
    path = zip_folder(tmp_path / "out", tmp_path / "r.zip")
    assert path is not None and path != tmp_path / "r.zip"
    assert (tmp_path / "r.zip").read_text() == "the payload's own file"


def report(**kw: object) -> AttemptReport:
    values: dict[str, object] = {
        "job_id": "j",
        "attempt": 1,
        "start_time": 0,
        "end_time": 61.0,
        "reason": "exit code 1",
        "returncode": 1,
    }
    values.update(kw)
    return AttemptReport(**values)  # type: ignore[arg-type]


def test_error_bundle_keeps_the_tail_of_long_logs(tmp_path: Path) -> None:
    out, err = tmp_path / "o", tmp_path / "e"
    out.write_bytes(b"A" * 100 + b"B" * 50)
    err.write_bytes(b"short")
    store = LocalStore(tmp_path / "errors")
    write_error_bundle(
        store, "log.zip", report(), logs=(out, err), folders=(), secrets=tmp_path, cap=50
    )
    with zipfile.ZipFile(io.BytesIO(store.get_bytes("log.zip"))) as zf:
        stdout = zf.read("stdout.txt")
        assert stdout.startswith(b"[truncated: the first 100 bytes are left out")
        assert stdout.endswith(b"\n" + b"B" * 50)
        assert zf.read("stderr.txt") == b"short"


def test_error_bundle_without_logs(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "errors")
    write_error_bundle(
        store, "k.zip", report(returncode=None), logs=None, folders=(), secrets=tmp_path
    )
    with zipfile.ZipFile(io.BytesIO(store.get_bytes("k.zip"))) as zf:
        assert b"did not start" in zf.read("stdout.txt")
        assert b"exit: none (the payload did not run)" in zf.read("exit_status.txt")


def test_exit_status_text() -> None:
    text = exit_status_text(report(returncode=-15, reason="timeout after 2s", detail="tb\n"))
    assert text == (
        "job: j\nattempt: 1\nexit: signal SIGTERM (15)\nreason: timeout after 2s\n"
        "start: 1970/01/01-00:00:00 U.T.C. (START_TIME 0)\nend: 1970/01/01-00:01:01 U.T.C.\n"
        "\ntb\n"
    )
    assert describe_returncode(0) == "exit code 0"


def test_workspace_listing(tmp_path: Path) -> None:
    root = tmp_path / "job"
    (root / "input" / "secrets").mkdir(parents=True)
    (root / "input" / "secrets" / "k.pem").write_text("secret")
    (root / "input" / "b.zip").write_bytes(b"123")
    (root / "output").mkdir()
    (root / "output" / "ln").symlink_to("../input/b.zip")
    listing = workspace_listing((root, tmp_path / "gone"), root / "input" / "secrets")
    assert listing.splitlines() == [
        f"{root}/",
        "  input/",
        "    b.zip  3 bytes",
        "    secrets/",
        "      k.pem",
        "  output/",
        "    ln -> ../input/b.zip",
        f"{tmp_path / 'gone'}/ (missing)",
    ]


def test_place_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, Fernet.generate_key().decode())
    src = tmp_path / "src"
    SecretStore(src).put_all({"a": b"A", "b": b"B"})
    (src / "sub").mkdir()
    (src / "plain").write_text("P")  # not encrypted: ignored
    place_secrets(LocalStore(src), tmp_path / "dest")
    dest = tmp_path / "dest"
    assert stat.S_IMODE(dest.stat().st_mode) == 0o700
    assert sorted(p.name for p in dest.iterdir()) == ["a", "b"]
    assert (dest / "a").read_text() == "A" and (dest / "b").read_text() == "B"
    assert {stat.S_IMODE(p.stat().st_mode) for p in dest.iterdir()} == {0o600}
    place_secrets(LocalStore(tmp_path / "missing"), tmp_path / "dest2")
    assert list((tmp_path / "dest2").iterdir()) == []


def test_remove_tree_handles_read_only_folders_and_links(tmp_path: Path) -> None:
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "k").write_text("k")
    root = tmp_path / "root"
    (root / "ro" / "deep").mkdir(parents=True)
    (root / "ro" / "deep" / "f").write_text("f")
    (root / "to-keep").symlink_to(keep)
    (root / "ro" / "deep").chmod(0o500)
    (root / "ro").chmod(0o000)
    remove_tree(root)
    assert not root.exists()
    assert (keep / "k").read_text() == "k"
    remove_tree(root)  # a missing tree is not an error


@pytest.mark.parametrize("in_memory_limit", [0, 1 << 20])
def test_zip_folder_streams_large_outputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_memory_limit: int
) -> None:
    monkeypatch.setattr("shepard.runtime.outputs.IN_MEMORY_ZIP", in_memory_limit)
    (tmp_path / "out" / "sub").mkdir(parents=True)
    data = os.urandom(300_000)
    (tmp_path / "out" / "sub" / "big.bin").write_bytes(data)
    path = zip_folder(tmp_path / "out", tmp_path / "r.zip")
    assert path is not None
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist() == ["sub/", "sub/big.bin"]
        assert zf.read("sub/big.bin") == data
