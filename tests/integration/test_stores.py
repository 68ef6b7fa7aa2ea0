"""The ObjectStore contract, run on every store kind: a folder, S3 (moto's server), memory.

Every test speaks the store API only, so a new store kind passes the same suite. The S3 flavour
gets a fresh bucket per test, and a prefix, so keys outside it must stay invisible; it skips
(locally) or fails (CI) without SHEPARD_TEST_S3 (scripts/services-s3).
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO, cast

import pytest

from shepard.errors import StorageError
from shepard.storage import (
    NoSuchObject,
    ObjectStore,
    StoreOptions,
    open_store,
)
from shepard.storage.rangefile import RangeFile
from tests.services import s3_endpoint

MiB = 1 << 20
SMALL_PARTS = {"multipart_threshold": 5 * MiB, "part_size": 5 * MiB}


def s3_options(endpoint: str, **extra: int) -> StoreOptions:
    return StoreOptions(endpoint_url=endpoint, region="us-east-1", **extra)  # type: ignore[arg-type]


def new_bucket(endpoint: str) -> str:
    """A fresh, empty bucket on the test server."""
    from shepard.storage.s3 import client_for

    bucket = f"test-{uuid.uuid4().hex[:20]}"
    client_for(s3_options(endpoint)).create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture(params=["folder", "s3", "memory"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_store(kind: str, tmp_path: Path) -> Iterator[object]:
    """A factory: make_store(**options) opens a new empty store of the flavour's kind."""

    def make(**options: int) -> ObjectStore:
        if kind == "folder":
            return open_store(str(tmp_path / uuid.uuid4().hex / "store"))
        if kind == "memory":
            return open_store(f"memory://{uuid.uuid4().hex}")
        endpoint = s3_endpoint()
        url = f"s3://{new_bucket(endpoint)}/flocks/f1"
        return open_store(url, options=s3_options(endpoint, **options))

    yield make


@pytest.fixture
def store(make_store: object) -> ObjectStore:
    return make_store()  # type: ignore[operator, no-any-return]


class Pipe(io.RawIOBase):
    """A non-seekable stream of `total` bytes, given out in pieces of at most 1000."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self._data, self._pos = data, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), 1000, len(self._data) - self._pos)
        buffer[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n


# -- writing and reading ---------------------------------------------------------------------


def test_put_and_read_back(store: ObjectStore) -> None:
    store.ensure()
    store.put_bytes("a/b.txt", b"hello world")
    assert store.exists("a/b.txt")
    assert store.get_bytes("a/b.txt") == b"hello world"
    assert store.size("a/b.txt") == 11
    info = store.stat("a/b.txt")
    assert (info.key, info.size) == ("a/b.txt", 11)
    assert info.modified > 1.7e9  # seconds since the epoch, not milliseconds or zero
    with store.open_read("a/b.txt") as fh:
        assert fh.read() == b"hello world"
    with store.open_read("a/b.txt", start=6) as fh:
        assert fh.read() == b"world"
    with store.open_read("a/b.txt", start=11) as fh:
        assert fh.read() == b""


def test_put_replaces_and_files_round_trip(store: ObjectStore, tmp_path: Path) -> None:
    store.put_bytes("k", b"old")
    source = tmp_path / "src.bin"
    source.write_bytes(b"new" * 1000)
    store.put_file("k", source)
    dest = tmp_path / "dest.bin"
    store.get_file("k", dest)
    assert dest.read_bytes() == b"new" * 1000
    store.put_stream("s", cast(BinaryIO, Pipe(b"x" * 12345)))  # a raw binary stream
    assert store.get_bytes("s") == b"x" * 12345


def test_missing_objects_raise_no_such_object_naming_the_key(store: ObjectStore) -> None:
    for read in (
        lambda: store.get_bytes("nope/x.zip"),
        lambda: store.stat("nope/x.zip"),
        lambda: store.size("nope/x.zip"),
        lambda: store.read_range("nope/x.zip", 0, 10),
        lambda: store.open_read("nope/x.zip"),
        lambda: store.move("nope/x.zip", "y"),
    ):
        with pytest.raises(NoSuchObject, match=r"nope/x\.zip"):
            read()
    assert not store.exists("nope/x.zip")
    store.delete("nope/x.zip")  # not an error


def test_range_reads(store: ObjectStore) -> None:
    data = bytes(range(256)) * 40
    store.put_bytes("r.bin", data)
    assert store.read_range("r.bin", 0, 10) == data[:10]
    assert store.read_range("r.bin", 1000, 500) == data[1000:1500]
    assert store.read_range("r.bin", len(data) - 5, 100) == data[-5:]  # short at the end
    assert store.read_range("r.bin", len(data) + 10, 100) == b""  # past the end
    assert store.read_range("r.bin", 5, 0) == b""


def test_zip_central_directory_through_range_reads(store: ObjectStore) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("inputs.json", '{"A": 1}')
        zf.writestr("data/big.bin", os.urandom(300_000))
    store.put_bytes("bundle.zip", buf.getvalue())
    with RangeFile(store, "bundle.zip") as raw, zipfile.ZipFile(raw) as zf:  # type: ignore[arg-type]
        assert zf.read("inputs.json") == b'{"A": 1}'
        assert sorted(zf.namelist()) == ["data/big.bin", "inputs.json"]


def test_keys_are_checked(store: ObjectStore) -> None:
    for bad in ("", "/abs", "a//b", "../up", "a/./b", "back\\slash"):
        with pytest.raises(StorageError, match="invalid object key"):
            store.put_bytes(bad, b"x")


# -- streamed writes -------------------------------------------------------------------------


def test_open_write_streams_an_object_in_pieces(make_store: object) -> None:
    store: ObjectStore = make_store(**SMALL_PARTS)  # type: ignore[operator]
    piece = os.urandom(MiB)
    with store.open_write("out/result.zip") as fh:
        for _ in range(12):  # 12 MiB: three parts of 5, 5 and 2 MiB on S3
            fh.write(piece)
        assert fh.tell() == 12 * MiB
        assert not store.exists("out/result.zip")  # nothing visible before the end
    assert store.size("out/result.zip") == 12 * MiB
    assert store.read_range("out/result.zip", 11 * MiB, 10) == piece[:10]


def test_a_failing_writer_leaves_nothing_and_keeps_the_old_object(make_store: object) -> None:
    store: ObjectStore = make_store(**SMALL_PARTS)  # type: ignore[operator]
    store.put_bytes("k", b"old")
    with pytest.raises(RuntimeError), store.open_write("k") as fh:
        fh.write(b"n" * (6 * MiB))  # past one part: a multipart upload is under way on S3
        raise RuntimeError("the payload's zip failed")
    assert store.get_bytes("k") == b"old"
    with pytest.raises(RuntimeError), store.open_write("fresh") as fh:
        fh.write(b"partial")
        raise RuntimeError("boom")
    assert not store.exists("fresh")
    assert list(store.list()) == ["k"]


def test_an_abandoned_writer_leaves_no_object(make_store: object) -> None:
    store: ObjectStore = make_store(**SMALL_PARTS)  # type: ignore[operator]
    writer = store.open_write("gone.zip")
    fh = writer.__enter__()  # as a process that dies mid-way: the block never ends
    fh.write(b"z" * (6 * MiB))
    assert not store.exists("gone.zip")
    assert list(store.list()) == []
    assert list(store.scan()) == []


def test_partial_writes_are_discarded_only_when_old_enough(make_store: object) -> None:
    store: ObjectStore = make_store(**SMALL_PARTS)  # type: ignore[operator]
    store.put_bytes("whole.zip", b"kept")
    writer = store.open_write("gone.zip")
    writer.__enter__().write(b"z" * (6 * MiB))  # a writer that died mid-way
    if not store.url("x").startswith("s3://"):  # moto dates every upload 2010-11-10
        assert store.discard_partial(older_than=time.time() - 3600) == 0  # may still run
    expected = 0 if store.url("x").startswith("memory://") else 1
    assert store.discard_partial(older_than=time.time() + 5) == expected
    assert store.discard_partial(older_than=time.time() + 5) == 0
    assert list(store.list()) == ["whole.zip"] and store.get_bytes("whole.zip") == b"kept"


def test_large_file_goes_up_in_parts(make_store: object, tmp_path: Path) -> None:
    store: ObjectStore = make_store(**SMALL_PARTS)  # type: ignore[operator]
    big = tmp_path / "big.bin"
    with open(big, "wb") as fh:
        for _ in range(20):
            fh.write(os.urandom(MiB))
    store.put_file("big.bin", big)
    assert store.size("big.bin") == 20 * MiB
    back = tmp_path / "back.bin"
    store.get_file("big.bin", back)
    assert _digest(back.read_bytes()) == _digest(big.read_bytes())
    with store.open_read("big.bin") as stream:
        assert _digest(stream.read()) == _digest(big.read_bytes())
    store.move_in("moved.bin", big)
    assert not big.exists()
    assert store.size("moved.bin") == 20 * MiB


# -- listing ---------------------------------------------------------------------------------


def test_listing_is_sorted_and_filters_by_string_prefix(store: ObjectStore) -> None:
    keys = ["a/b", "a-b", "a0", "a/c/d", "b", "inbox/x.zip", "inbox/rejected/y.zip"]
    for key in keys:
        store.put_bytes(key, key.encode())
    assert list(store.list()) == sorted(keys)
    assert list(store.list("a")) == ["a-b", "a/b", "a/c/d", "a0"]
    assert list(store.list("a/")) == ["a/b", "a/c/d"]
    assert list(store.list("inbox/", recursive=False)) == ["inbox/x.zip"]
    assert list(store.list(start_after="a/b")) == ["a/c/d", "a0", "b", *sorted(keys)[-2:]]
    assert list(store.folders("inbox/")) == ["inbox/rejected/"]
    assert list(store.folders()) == ["a/", "inbox/"]
    assert [(i.key, i.size) for i in store.scan("inbox/")] == [
        ("inbox/rejected/y.zip", 20),
        ("inbox/x.zip", 11),
    ]


def test_listing_pages_through_more_than_a_thousand_keys(store: ObjectStore) -> None:
    keys = [f"many/{i:05d}.zip" for i in range(1205)]  # S3 answers 1,000 keys a page
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: store.put_bytes(k, b"x"), keys))
    listed = store.list("many/")
    assert next(listed) == keys[0]  # lazily: the first key before the rest are fetched
    assert [keys[0], *listed] == keys
    assert list(store.list("many/", start_after=keys[999])) == keys[1000:]
    store.delete_many([*keys[:1100], "many/absent"])
    assert list(store.list()) == keys[1100:]


# -- claims, copies, moves -------------------------------------------------------------------


def test_put_if_absent_creates_once(store: ObjectStore) -> None:
    assert store.put_if_absent("claims/job.zip", b"first")
    assert not store.put_if_absent("claims/job.zip", b"second")
    assert store.get_bytes("claims/job.zip") == b"first"


def test_put_if_absent_race_has_exactly_one_winner(store: ObjectStore) -> None:
    rounds, racers = 20, 6
    wins: list[list[int]] = [[] for _ in range(rounds)]
    barrier = threading.Barrier(racers)

    def race(racer: int) -> None:
        for n in range(rounds):
            barrier.wait()
            if store.put_if_absent(f"claim-{n}", str(racer).encode()):
                wins[n].append(racer)

    threads = [threading.Thread(target=race, args=(r,)) for r in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [len(w) for w in wins] == [1] * rounds
    assert [store.get_bytes(f"claim-{n}") for n in range(rounds)] == [
        str(w[0]).encode() for w in wins
    ]


def test_copy_and_move(store: ObjectStore) -> None:
    store.put_bytes("inbox/job.zip", b"bundle")
    store.copy("inbox/job.zip", "inputs/job.zip")
    store.move("inbox/job.zip", "inbox/rejected/job.zip")
    assert store.get_bytes("inputs/job.zip") == b"bundle"
    assert store.get_bytes("inbox/rejected/job.zip") == b"bundle"
    assert not store.exists("inbox/job.zip")


def test_copy_between_stores_of_any_kind(make_store: Any, tmp_path: Path) -> None:
    store: ObjectStore = make_store()
    folder = open_store(f"file://{tmp_path / 'other'}")
    folder.put_bytes("a.zip", b"from the folder")
    store.copy_from(folder, "a.zip", "in/a.zip")
    folder.copy_from(store, "in/a.zip", "back.zip")
    assert folder.get_bytes("back.zip") == b"from the folder"
    twin = make_store()
    twin.copy_from(store, "in/a.zip", "a.zip")  # S3: another bucket of the same service
    assert twin.get_bytes("a.zip") == b"from the folder"
    with pytest.raises(NoSuchObject):
        folder.copy_from(store, "absent.zip", "x")
    with pytest.raises(NoSuchObject):
        store.copy_from(folder, "absent.zip", "x")


def test_where_objects_live(kind: str, store: ObjectStore) -> None:
    path = store.local_path("a/b.zip")
    if kind == "folder":
        assert path is not None and str(path) == store.url("a/b.zip")
        assert path.name == "b.zip"
    else:
        assert path is None
        assert store.url("a/b.zip") == store.location + "/a/b.zip"
    if kind == "s3":
        assert store.location.startswith("s3://test-") and store.location.endswith("/flocks/f1")


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- S3 only: what a folder cannot get wrong ---------------------------------------------


@pytest.fixture
def endpoint() -> str:
    return s3_endpoint()


def test_s3_prefix_hides_neighbours(endpoint: str) -> None:
    bucket = new_bucket(endpoint)
    options = s3_options(endpoint)
    inner = open_store(f"s3://{bucket}/flocks/a", options=options)
    sibling = open_store(f"s3://{bucket}/flocks/ab", options=options)
    whole = open_store(f"s3://{bucket}", options=options)
    inner.put_bytes("x", b"1")
    sibling.put_bytes("x", b"2")
    assert list(inner.list()) == ["x"]
    assert list(whole.list()) == ["flocks/a/x", "flocks/ab/x"]
    assert list(whole.folders("flocks/")) == ["flocks/a/", "flocks/ab/"]


def test_s3_large_uploads_are_multipart(endpoint: str, tmp_path: Path) -> None:
    from shepard.storage.s3 import S3Store

    store = open_store(
        f"s3://{new_bucket(endpoint)}/p", options=s3_options(endpoint, **SMALL_PARTS)
    )
    assert isinstance(store, S3Store)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(20 * MiB))
    store.put_file("big.bin", big)
    head = store.client.head_object(Bucket=store.bucket, Key="p/big.bin")
    assert head["ETag"].strip('"').endswith("-4")  # a multipart ETag: md5-of-md5s "-" parts


def test_s3_missing_bucket_is_an_actionable_error(endpoint: str) -> None:
    store = open_store("s3://no-such-bucket-here/x", options=s3_options(endpoint))
    for action in (store.ensure, lambda: store.put_bytes("k", b"x"), lambda: list(store.list())):
        with pytest.raises(StorageError, match=r"bucket 'no-such-bucket-here' does not exist"):
            action()


def test_s3_unreachable_endpoint_is_an_actionable_error() -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    dead = f"http://127.0.0.1:{port}"
    store = open_store("s3://some-bucket", options=s3_options(dead))
    with pytest.raises(StorageError, match=rf"endpoint {dead} cannot be reached.*AWS_ENDPOINT_URL"):
        store.put_bytes("k", b"x")


def test_s3_urls_are_checked() -> None:
    for bad in ("s3://", "s3://UpperCase", "s3://a", "s3://bucket/../up", "gs://bucket/x"):
        with pytest.raises(
            StorageError, match=r"bucket name|not a bucket|invalid object key|unsupported"
        ):
            open_store(bad)


def test_init_on_s3_through_the_standard_chain(
    endpoint: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from shepard.cli import main as cli_main
    from shepard.flock import Flock

    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)  # boto3's own setting, nothing of ours
    monkeypatch.delenv("SHEPARD_PROFILE", raising=False)
    folder = tmp_path / "f"
    argv = ["shepard", "init", str(folder), "--storage", "s3://absent-bucket/flocks/f"]
    monkeypatch.setattr("sys.argv", argv)
    assert cli_main.app_main() == 2
    err = capsys.readouterr().err
    assert "bucket 'absent-bucket' does not exist" in err and "[storage] endpoint_url" in err
    assert not (folder / "flock.toml").exists()  # nothing half made

    bucket = new_bucket(endpoint)
    argv[-1] = f"s3://{bucket}/flocks/f"
    assert cli_main.app_main() == 0
    flock = Flock.open(folder)
    flock.store("outputs").put_bytes("r.zip", b"zip")
    whole = open_store(f"s3://{bucket}", options=s3_options(endpoint))
    assert list(whole.list()) == ["flocks/f/outputs/r.zip"]
    flock.close()
