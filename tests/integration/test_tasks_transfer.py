"""The tasks runner's fetch and store steps against the S3 test server (moto), and 7-Zip
archives made by the `7zr` tool and by py7zr, each read by the other."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from shepard.storage import StoreOptions
from shepard.storage.s3 import client_for
from shepard.tasks import sevenzip, transfer
from shepard.tasks.runner import Context, run
from tests.services import require_service, s3_endpoint


@pytest.fixture
def s3() -> tuple[str, Any]:
    """(endpoint, client) of the S3 test server."""
    endpoint = s3_endpoint()
    return endpoint, client_for(StoreOptions(endpoint_url=endpoint, region="us-east-1"))


@pytest.fixture
def bucket(s3: tuple[str, Any]) -> str:
    name = f"cloudburst-test-{uuid.uuid4().hex[:12]}"
    s3[1].create_bucket(Bucket=name)
    return name


def seven_zip_tool() -> str:
    path = os.environ.get("SHEPARD_TEST_7ZR") or shutil.which("7zr")
    require_service("the 7zr tool", None if path else "7zr not found: run scripts/services-7zip")
    assert path is not None
    return path


def run_steps(tmp_path: Path, endpoint: str, **phases: Any) -> tuple[int, list[str]]:
    said: list[str] = []
    doc = {"programName": "p", "itemName": "i", "tasks": [{"name": "t", "command": "true"}]}
    ctx = Context(env={"PATH": os.environ["PATH"]}, cwd=tmp_path, endpoint_url=endpoint,
                  region="us-east-1", say=said.append)  # fmt: skip
    return run({**phases, **doc}, ctx), said


def put(client: Any, bucket: str, *keys: str) -> None:
    for key in keys:
        client.put_object(Bucket=bucket, Key=key, Body=key.encode())


def files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


# -- fetch --------------------------------------------------------------------------------------

FETCH = [
    # (id, objects, key, dest, folders made first, expected local files, exit code)
    ("one object into an existing folder", ["input/a.txt"], "input/a.txt", "here", ["here"],
     ["here/a.txt"], 0),
    ("one object to a path ending with its name", ["input/a.txt"], "input/a", "x/a.txt", [],
     ["x/a.txt"], 0),
    ("the exact key to another file name", ["input/a.txt"], "input/a.txt", "b.dat", [],
     ["b.dat"], 0),
    ("a prefix of one object: dest is a folder", ["input/single.txt"], "input/sing", "three", [],
     ["three/single.txt"], 0),
    ("several objects, key ending with /", ["in/p/1.csv", "in/p/q/2.csv"], "in/p/", "d", [],
     ["d/1.csv", "d/q/2.csv"], 0),
    ("several objects, key without /", ["in/p/1.csv", "in/p/q/2.csv"], "in/p", "d", [],
     ["d/p/1.csv", "d/p/q/2.csv"], 0),
    ("one object to a folder not made yet (the original failed)", ["in/a.txt"], "in/a.txt",
     "new/", [], ["new/a.txt"], 0),
    ("no object: 218", ["in/a.txt"], "nothing/", "d", [], [], 218),
]  # fmt: skip


@pytest.mark.parametrize(("objects", "key", "dest", "made", "expected", "code"),
                         [f[1:] for f in FETCH], ids=[f[0] for f in FETCH])  # fmt: skip
def test_fetch_places_objects_as_the_original(
    tmp_path: Path, s3: tuple[str, Any], bucket: str, objects: list[str], key: str, dest: str,
    made: list[str], expected: list[str], code: int,
) -> None:  # fmt: skip
    put(s3[1], bucket, *objects)
    for folder in made:
        (tmp_path / folder).mkdir()
    step = {"name": "f", "bucket": bucket, "key": key, "dest": dest}
    got, said = run_steps(tmp_path, s3[0], fetch=[step])
    assert got == code, said
    assert [f for f in files(tmp_path) if not f.startswith("logs/")] == expected


def test_fetch_lists_every_page(
    tmp_path: Path, s3: tuple[str, Any], bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transfer, "LIST_PAGE", 2)  # 7 objects: 4 pages
    put(s3[1], bucket, *(f"many/{i:04d}.txt" for i in range(7)))
    step = {"name": "f", "bucket": bucket, "key": "many/", "dest": "d"}
    got, said = run_steps(tmp_path, s3[0], fetch=[step])
    assert got == 0, said
    assert len(files(tmp_path / "d")) == 7


def test_fetch_expands_an_archive_into_its_folder_and_excludes(
    tmp_path: Path, s3: tuple[str, Any], bucket: str
) -> None:
    source = tmp_path / "src" / "Period03"
    source.mkdir(parents=True)
    (source / "haz.in").write_text("h")
    (source / "old.bak").write_text("b")
    sevenzip.compress(tmp_path / "src" / "Period03.7z", source)
    s3[1].upload_file(str(tmp_path / "src" / "Period03.7z"), bucket, "input/Dam001/Period03.7z")
    work = tmp_path / "work"
    work.mkdir()
    step = {"name": "f", "bucket": bucket, "key": "input/Dam001/Period03.7z",
            "dest": "./Sites/Dam001", "expand": True, "excludeFilePattern": ["*.bak"]}  # fmt: skip
    got, said = run_steps(work, s3[0], fetch=[step])
    assert got == 0, said
    assert files(work / "Sites") == ["Dam001/Period03/haz.in"]  # old.bak excluded
    # the cache: an archive already there is not fetched again (the original crashed, code 4)
    sevenzip.compress(work / "Sites/Dam001/Period03.7z", source)
    s3[1].delete_object(Bucket=bucket, Key="input/Dam001/Period03.7z")
    got, said = run_steps(work, s3[0], fetch=[step])
    assert got == 0, said
    assert any("not downloaded again" in m for m in said)


def test_a_corrupt_archive_fails_with_211_not_0(
    tmp_path: Path, s3: tuple[str, Any], bucket: str
) -> None:
    s3[1].put_object(Bucket=bucket, Key="in/bad.7z", Body=b"this is not an archive")
    step = {"name": "f", "bucket": bucket, "key": "in/bad.7z", "dest": "d", "expand": True}
    got, said = run_steps(tmp_path, s3[0], fetch=[step])
    assert got == 211, said


# -- store --------------------------------------------------------------------------------------


def keys(client: Any, bucket: str) -> list[str]:
    listed = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    return sorted(obj["Key"] for obj in listed)


NO_BUCKET = "no-such-bucket-cloudburst"

STORE = [
    # (id, step fields, expected keys, exit code)
    ("a file to a key", {"source": "out/r.txt", "dest": "output/w1/result.txt"},
     ["output/w1/result.txt"], 0),
    ("a file to a folder key", {"source": "out/r.txt", "dest": "output/w1/"},
     ["output/w1/r.txt"], 0),
    ("a folder, file by file", {"source": "./out/", "dest": "output/w1"},
     ["output/w1/d1/f.txt", "output/w1/r.txt"], 0),
    ("a folder compressed to a folder key", {"source": "out", "dest": "output/", "compress": True},
     ["output/out.7z"], 0),
    ("a folder compressed to a key", {"source": "out", "dest": "o/x.7z", "compress": True},
     ["o/x.7z"], 0),
    ("each subfolder compressed", {"source": "out", "dest": "o", "compressSubDirectories": True},
     ["o/d1.7z"], 0),
    ("an empty folder is skipped", {"source": "empty", "dest": "o"}, [], 0),
    ("a missing source: 43", {"source": "nope", "dest": "o"}, [], 43),
    ("a missing bucket: 215", {"source": "out/r.txt", "dest": "o", "bucket": NO_BUCKET}, [], 215),
    ("a folder to a missing bucket: 216", {"source": "out", "dest": "o", "bucket": NO_BUCKET},
     [], 216),
]  # fmt: skip


@pytest.mark.parametrize(("fields", "expected", "code"), [s[1:] for s in STORE],
                         ids=[s[0] for s in STORE])  # fmt: skip
def test_store_puts_objects_where_the_document_says(
    tmp_path: Path, s3: tuple[str, Any], bucket: str, fields: dict[str, Any],
    expected: list[str], code: int,
) -> None:  # fmt: skip
    (tmp_path / "out/d1").mkdir(parents=True)
    (tmp_path / "out/r.txt").write_text("r")
    (tmp_path / "out/d1/f.txt").write_text("f")
    (tmp_path / "out/.DS_Store").write_text("x")
    (tmp_path / "empty").mkdir()
    step = {"name": "s", "bucket": bucket, **fields}
    got, said = run_steps(tmp_path, s3[0], store=[step])
    assert got == code, said
    assert keys(s3[1], bucket) == expected
    assert not list(tmp_path.rglob("*.7z")), "removeOnStore is true by default"


def test_a_stored_archive_holds_its_folder_and_can_be_kept(
    tmp_path: Path, s3: tuple[str, Any], bucket: str
) -> None:
    (tmp_path / "Period03").mkdir()
    (tmp_path / "Period03/r.txt").write_text("r")
    (tmp_path / "Period03.7z").write_bytes(b"a stale archive is replaced, not added to")
    step = {"name": "s", "bucket": bucket, "source": "Period03", "dest": "o/",
            "compress": True, "removeOnStore": False}  # fmt: skip
    got, said = run_steps(tmp_path, s3[0], store=[step])
    assert got == 0, said
    s3[1].download_file(bucket, "o/Period03.7z", str(tmp_path / "got.7z"))
    sevenzip.extract(tmp_path / "got.7z", tmp_path / "x")
    assert files(tmp_path / "x") == ["Period03/r.txt"]
    assert (tmp_path / "Period03.7z").exists()


# -- 7-Zip round trips ------------------------------------------------------------------------


def make_tree(root: Path) -> Path:
    folder = root / "Period03"
    (folder / "sub").mkdir(parents=True)
    (folder / "haz.in").write_text("0\n0\nhaz\n")
    (folder / "sub" / "data.bin").write_bytes(bytes(range(256)) * 40)
    return folder


@pytest.mark.parametrize(("maker", "reader"), [("7zr", "py7zr"), ("py7zr", "7zr")])
def test_archives_round_trip_between_7zr_and_py7zr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, maker: str, reader: str
) -> None:
    tool = seven_zip_tool()
    folder = make_tree(tmp_path / "src")
    archive = tmp_path / "Period03.7z"
    if maker == "7zr":  # as the original's compress_inputs.py makes them
        subprocess.run([tool, "a", "-mx1", str(archive), folder.name], cwd=folder.parent,
                       check=True, capture_output=True)  # fmt: skip
    else:
        monkeypatch.setenv("SHEPARD_7Z", "py7zr")
        sevenzip.compress(archive, folder)
        monkeypatch.delenv("SHEPARD_7Z")
    out = tmp_path / "out"
    if reader == "7zr":
        assert sevenzip.tool() is not None
        sevenzip.extract(archive, out)
        listed = subprocess.run([tool, "l", str(archive)], capture_output=True, text=True)
        assert "Period03/sub/data.bin" in listed.stdout
    else:
        monkeypatch.setenv("SHEPARD_7Z", "py7zr")
        sevenzip.extract(archive, out)
    assert files(out) == ["Period03/haz.in", "Period03/sub/data.bin"]
    assert (out / "Period03/sub/data.bin").read_bytes() == bytes(range(256)) * 40
