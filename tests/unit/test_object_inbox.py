"""The inbox on an object store (shepard.triggers.object_inbox), on memory stores: each object
put into inbox/ becomes exactly one job, whatever number of watchers race for it."""

from __future__ import annotations

import contextlib
import io
import json
import os
import threading
import uuid
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shepard.config import FlockConfig, PayloadConfig, StorageConfig
from shepard.flock import Flock
from shepard.model import Job
from shepard.storage import ObjectStore
from shepard.triggers import ObjectInbox, count_rejected, open_inbox
from shepard.triggers.object_inbox import identity, inputs_key


@pytest.fixture
def flock(tmp_path: Path) -> Iterator[Flock]:
    root = f"memory://inbox-{uuid.uuid4().hex}"
    cfg = FlockConfig(
        name="objects", payload=PayloadConfig(command="true"), storage=StorageConfig(root=root)
    )
    f = Flock.create(tmp_path / "flock", cfg)
    yield f
    f.close()


def bundle(params: object, *, extra: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        if params is not None:
            zf.writestr("inputs.json", json.dumps(params))
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buf.getvalue()


def jobs(flock: Flock) -> list[Job]:
    return flock.catalog.page(limit=100_000, newest_first=False)


def inbox_keys(flock: Flock) -> list[str]:
    return list(flock.store("inbox").list())


def test_the_object_inbox_is_chosen_when_a_store_is_not_a_folder(flock: Flock) -> None:
    with contextlib.closing(open_inbox(flock)) as inbox:
        assert isinstance(inbox, ObjectInbox)
        assert inbox.location == flock.store("inbox").location
        assert inbox.interval == 1.0


def test_objects_become_jobs_and_leave_the_inbox(flock: Flock) -> None:
    store = flock.store("inbox")
    names = ["a.zip", "sub/b.zip", "with space é 日本.zip"]
    for i, name in enumerate(names):
        store.put_bytes(name, bundle({"ITEM": i}))
    with ObjectInbox(flock) as inbox:
        result = inbox.scan_once()
    assert result.registered == 3 and not result.rejected
    found = jobs(flock)
    assert sorted(j.params["ITEM"] for j in found) == [0, 1, 2]  # type: ignore[type-var]
    inputs = flock.store("inputs")
    for job in found:
        assert job.bundle_key is not None and job.batch == job.bundle_key
        name = names[int(job.params["ITEM"])]  # type: ignore[arg-type]
        assert inputs.get_bytes(job.bundle_key) == bundle({"ITEM": job.params["ITEM"]})
        assert job.bundle_key.startswith("inbox-")
        assert job.bundle_key.endswith(name.replace("/", "--"))
    assert inbox_keys(flock) == []


def test_bad_objects_go_to_rejected_with_their_reason(flock: Flock) -> None:
    store = flock.store("inbox")
    store.put_bytes("no-inputs.zip", bundle(None, extra={"x.txt": b"x"}))
    store.put_bytes("empty.zip", b"")
    store.put_bytes("notes/readme.txt", b"not a zip")
    store.put_bytes("good.zip", bundle({"ITEM": 1}))
    with ObjectInbox(flock) as inbox:
        result = inbox.scan_once()
        assert result.registered == 1
        assert sorted(r.name for r in result.rejected) == [
            "empty.zip",
            "no-inputs.zip",
            "notes/readme.txt",
        ]
        assert all(r.where.startswith(store.location + "/rejected/") for r in result.rejected)
        assert sorted(inbox_keys(flock)) == [
            "rejected/empty.zip",
            "rejected/empty.zip.reason.txt",
            "rejected/no-inputs.zip",
            "rejected/no-inputs.zip.reason.txt",
            "rejected/notes/readme.txt",
            "rejected/notes/readme.txt.reason.txt",
        ]
        assert b"has no inputs.json" in store.get_bytes("rejected/no-inputs.zip.reason.txt")
        assert b"empty file (0 bytes)" in store.get_bytes("rejected/empty.zip.reason.txt")
        assert count_rejected(flock) == 3
        again = inbox.scan_once()  # rejected/ is not taken again
    assert again.registered == 0 and not again.rejected
    assert len(jobs(flock)) == 1


def test_a_second_rejection_of_one_name_keeps_the_first(flock: Flock) -> None:
    store = flock.store("inbox")
    with ObjectInbox(flock) as inbox:
        for text in (b"one", b"two"):
            store.put_bytes("bad.zip", text)
            inbox.scan_once()
    assert store.get_bytes("rejected/bad.zip") == b"one"
    assert store.get_bytes("rejected/bad-2.zip") == b"two"
    assert store.exists("rejected/bad-2.zip.reason.txt")
    assert count_rejected(flock) == 2


def test_hidden_objects_are_left_alone(flock: Flock) -> None:
    store = flock.store("inbox")
    store.put_bytes(".upload.zip", bundle({"ITEM": 1}))
    store.put_bytes("dir/.part/x.zip", bundle({"ITEM": 2}))
    with ObjectInbox(flock) as inbox:
        result = inbox.scan_once()
    assert result.registered == 0 and not result.rejected
    assert sorted(inbox_keys(flock)) == [".upload.zip", "dir/.part/x.zip"]


def test_objects_named_like_rejected_are_still_taken(flock: Flock) -> None:
    store = flock.store("inbox")
    for name in ("rejected", "rejected.zip", "rejected0/x.zip", "zz.zip"):
        store.put_bytes(name, bundle({"NAME": name}))
    store.put_bytes("rejected/old.zip", b"old")
    with ObjectInbox(flock) as inbox:
        result = inbox.scan_once()
    assert result.registered == 4 and not result.rejected
    assert inbox_keys(flock) == ["rejected/old.zip"]


def test_an_object_that_vanishes_after_the_listing_is_skipped(
    flock: Flock, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = flock.store("inbox")
    store.put_bytes("gone.zip", bundle({"ITEM": 1}))
    store.put_bytes("kept.zip", bundle({"ITEM": 2}))
    get = type(store).get_bytes

    def get_bytes(self: ObjectStore, key: str) -> bytes:
        if key == "gone.zip":
            self.delete(key)  # taken by someone else between the listing and the read
        return get(self, key)  # type: ignore[arg-type]

    monkeypatch.setattr(type(store), "get_bytes", get_bytes)
    with ObjectInbox(flock) as inbox:
        result = inbox.scan_once()
    assert result.registered == 1 and not result.rejected
    assert [j.params["ITEM"] for j in jobs(flock)] == [2]


def test_an_object_replaced_after_the_listing_is_taken_by_the_next_scan(
    flock: Flock, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = flock.store("inbox")
    store.put_bytes("a.zip", bundle({"ITEM": 1}))
    get = type(store).get_bytes
    replaced = bundle({"ITEM": 2}, extra={"more.txt": b"x" * 100})

    def get_bytes(self: ObjectStore, key: str) -> bytes:
        monkeypatch.setattr(type(store), "get_bytes", get)
        self.put_bytes(key, replaced)  # a new put of the key, after it was listed
        return get(self, key)  # type: ignore[arg-type]

    monkeypatch.setattr(type(store), "get_bytes", get_bytes)
    with ObjectInbox(flock) as inbox:
        assert inbox.scan_once().registered == 0
        assert inbox.scan_once().registered == 1
    assert [j.params["ITEM"] for j in jobs(flock)] == [2]


def test_a_watcher_that_died_before_deleting_registers_nothing_twice(
    flock: Flock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = flock.store("inbox")
    for i in range(30):
        store.put_bytes(f"job{i:02}.zip", bundle({"ITEM": i}))

    def die(self: ObjectStore, keys: Iterable[str]) -> None:
        raise RuntimeError("killed")

    with monkeypatch.context() as patch:
        patch.setattr(type(store), "delete_many", die)
        with ObjectInbox(flock) as first, pytest.raises(RuntimeError):
            first.scan_once()
    assert len(jobs(flock)) > 0 and len(inbox_keys(flock)) == 30

    other = Flock.open(flock.dir.folder)  # another process: its own catalog connection
    try:
        with ObjectInbox(other) as second:
            result = second.scan_once()
    finally:
        other.close()
    assert len(jobs(flock)) == 30 and result.recovered + result.registered == 30
    assert sorted(j.params["ITEM"] for j in jobs(flock)) == list(range(30))  # type: ignore[type-var]
    assert inbox_keys(flock) == []


def test_two_watchers_racing_over_200_objects_make_200_jobs(
    flock: Flock, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = flock.store("inbox")
    for i in range(200):
        store.put_bytes(f"race/{i:03}.zip", bundle({"ITEM": i}))
    # Both watchers list everything, then take the same chunk at the same moment, and
    # neither deletes a chunk before both have read it: each object is taken by both, and
    # only the claim keeps it to one job.
    monkeypatch.setattr("shepard.triggers.object_inbox.random.randrange", lambda n: 0)
    together = threading.Barrier(2, timeout=10)
    take, delete_many = ObjectInbox._take, type(store).delete_many

    def take_together(self: ObjectInbox, chunk: Any, result: Any) -> None:
        together.wait()
        take(self, chunk, result)

    def delete_together(self: ObjectStore, keys: Iterable[str]) -> None:
        together.wait()
        delete_many(self, keys)  # type: ignore[arg-type]

    monkeypatch.setattr(ObjectInbox, "_take", take_together)
    monkeypatch.setattr(type(store), "delete_many", delete_together)
    heads = [flock, Flock.open(flock.dir.folder)]
    results: list[Any] = []
    errors: list[BaseException] = []

    def watch(f: Flock) -> None:
        try:
            with ObjectInbox(f, chunk=20) as inbox:
                results.append(inbox.scan_once())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=watch, args=(f,)) for f in heads]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    heads[1].close()
    assert not errors
    found = jobs(flock)
    assert len(found) == 200
    assert sorted(j.params["ITEM"] for j in found) == list(range(200))  # type: ignore[type-var]
    assert len({j.bundle_key for j in found}) == 200
    assert sum(r.registered for r in results) == 200
    assert sum(r.recovered for r in results) == 200  # every object was taken twice
    assert inbox_keys(flock) == []


def test_a_large_object_is_copied_and_checked_by_range_reads(
    flock: Flock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("shepard.triggers.object_inbox.SMALL", 1000)
    store = flock.store("inbox")
    data = bundle({"ITEM": 7}, extra={"blob.bin": os.urandom(3000)})
    assert len(data) > 1000
    store.put_bytes("big.zip", data)
    store.put_bytes("big-bad.zip", b"PK\x03\x04" + b"\x00" * 2000)
    with ObjectInbox(flock) as inbox:
        result = inbox.scan_once()
    assert result.registered == 1 and [r.name for r in result.rejected] == ["big-bad.zip"]
    (job,) = jobs(flock)
    assert job.bundle_key is not None
    assert flock.store("inputs").get_bytes(job.bundle_key) == data


def test_the_same_object_always_gets_the_same_identity_and_key(flock: Flock) -> None:
    store = flock.store("inbox")
    store.put_bytes("x/y.zip", b"data")
    (info,) = store.scan()
    ident = identity(store.url(info.key), info)
    assert ident == identity(store.url(info.key), next(store.scan()))
    key = inputs_key(info, ident)
    assert key == inputs_key(info, ident) and key.endswith("-x--y.zip")
    assert len(key.split("-")[1]) == 32
    other = identity(store.url(info.key) + "2", info)
    assert other != ident


def test_a_folder_inbox_beside_an_s3_like_inputs_store_waits_for_files_to_settle(
    tmp_path: Path,
) -> None:
    cfg = FlockConfig(
        name="mixed",
        payload=PayloadConfig(command="true"),
        storage=StorageConfig(stores={"inputs": f"memory://inputs-{uuid.uuid4().hex}"}),
    )
    f = Flock.create(tmp_path / "flock", cfg)
    now = [100.0]
    try:
        (f.dir.store_path("inbox") / "a.zip").write_bytes(bundle({"ITEM": 1}))
        with contextlib.closing(open_inbox(f)) as inbox:
            assert isinstance(inbox, ObjectInbox) and inbox.settle > 0
            inbox.clock = lambda: now[0]
            assert inbox.scan_once().waiting == 1
            now[0] += 1.0
            assert inbox.scan_once().registered == 1
        assert not (f.dir.store_path("inbox") / "a.zip").exists()
    finally:
        f.close()


def test_reading_errors_leave_the_object_for_the_next_scan(
    flock: Flock, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = flock.store("inbox")
    store.put_bytes("a.zip", bundle({"ITEM": 1}))
    get = type(store).get_bytes

    def failing(self: ObjectStore, key: str) -> bytes:
        from shepard.errors import StorageError

        raise StorageError("the network is down")

    monkeypatch.setattr(type(store), "get_bytes", failing)
    with ObjectInbox(flock) as inbox:
        result = inbox.scan_once()
        assert result.registered == 0 and not result.rejected
        monkeypatch.setattr(type(store), "get_bytes", get)
        assert inbox.scan_once().registered == 1


def test_a_fifo_in_a_folder_inbox_beside_an_s3_like_inputs_store_is_rejected_unopened(
    tmp_path: Path,
) -> None:
    cfg = FlockConfig(
        name="mixed",
        payload=PayloadConfig(command="true"),
        storage=StorageConfig(stores={"inputs": f"memory://inputs-{uuid.uuid4().hex}"}),
    )
    f = Flock.create(tmp_path / "flock", cfg)
    inbox_dir = f.dir.store_path("inbox")
    os.mkfifo(inbox_dir / "pipe.zip")
    (inbox_dir / "ok.zip").write_bytes(bundle({"ITEM": 1}))
    try:
        with ObjectInbox(f, settle=0.0) as inbox:
            result = inbox.scan_once()  # would block for ever reading the fifo
        assert result.registered == 1 and [r.name for r in result.rejected] == ["pipe.zip"]
        assert "not a regular file" in result.rejected[0].reason
        assert (inbox_dir / "rejected" / "pipe.zip.reason.txt").exists()
    finally:
        f.close()
