"""The inbox trigger (shepard.triggers.inbox): files dropped into inbox/ become exactly one job."""

from __future__ import annotations

import fcntl
import io
import json
import os
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest

from shepard.config import FlockConfig, PayloadConfig
from shepard.flock import Flock
from shepard.model import Job, JobStatus
from shepard.triggers import FolderInbox, ScanResult, count_rejected
from shepard.triggers.arrivals import is_complete_zip
from shepard.triggers.folder_inbox import JOURNAL_NAME, LOCK_NAME


class Clock:
    """A settable monotonic clock, so no test sleeps through the settle time."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float = 1.0) -> None:
        self.now += seconds


@pytest.fixture
def flock(tmp_path: Path) -> Iterator[Flock]:
    cfg = FlockConfig(name="inbox-test", payload=PayloadConfig(command="true"))
    f = Flock.create(tmp_path / "flock", cfg)
    yield f
    f.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def bundle(params: object, *, extra: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        if params is not None:
            zf.writestr("inputs.json", json.dumps(params))
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buf.getvalue()


def inbox(flock: Flock) -> Path:
    return flock.dir.store_path("inbox")


def drop(flock: Flock, name: str, data: bytes) -> Path:
    """Write `data` outside the inbox, then rename it in: the recommended way to drop."""
    stage = flock.dir.folder.parent / "stage"
    stage.mkdir(exist_ok=True)
    tmp = stage / name.replace("/", "_")
    tmp.write_bytes(data)
    dest = inbox(flock) / name
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.rename(tmp, dest)
    return dest


def watcher(flock: Flock, clock: Clock, **kwargs: object) -> FolderInbox:
    return FolderInbox(flock, clock=clock, **kwargs)  # type: ignore[arg-type]


def settle(w: FolderInbox, clock: Clock) -> ScanResult:
    """Two scans a (fake) second apart: what a running watcher does for a new file."""
    w.scan_once()
    clock.advance()
    return w.scan_once()


def all_jobs(flock: Flock) -> list[Job]:
    return flock.catalog.page(limit=100_000, newest_first=False)


def inbox_files(flock: Flock) -> list[str]:
    root = inbox(flock)
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith(".") and "rejected" not in p.parts
    )


def input_keys(flock: Flock) -> list[str]:
    return [k for k in flock.store("inputs").list() if k.startswith("inbox-")]


# -- registration --------------------------------------------------------------------------


def test_dropped_bundles_become_one_job_each(flock: Flock, clock: Clock) -> None:
    drop(flock, "a.zip", bundle({"ITEM": 1}))
    drop(flock, "b.zip", bundle({"ITEM": 2}))
    drop(flock, "sub/dir/c.zip", bundle({"ITEM": 3}))
    drop(flock, ".hidden.zip", bundle({"ITEM": 4}))
    w = watcher(flock, clock)

    first = w.scan_once()
    assert first.registered == 0 and first.waiting == 3, "nothing is taken on first sight"
    clock.advance()
    second = w.scan_once()

    assert second.registered == 3 and not second.rejected
    jobs = all_jobs(flock)
    assert sorted(j.params["ITEM"] for j in jobs) == [1, 2, 3]
    for job in jobs:
        assert job.status is JobStatus.QUEUED
        assert job.bundle_key is not None and job.batch == job.bundle_key
        assert job.bundle_key.startswith("inbox-")
        assert flock.store("inputs").exists(job.bundle_key)
        assert sum(flock.counts(batch=job.batch).values()) == 1
    names = sorted(j.bundle_key.split("-", 2)[2] for j in jobs if j.bundle_key)
    assert names == ["a.zip", "b.zip", "sub--dir--c.zip"], "the dropped name stays readable"
    assert inbox_files(flock) == [], "taken files leave the inbox"
    assert (inbox(flock) / ".hidden.zip").exists(), "hidden files are ignored"
    assert sorted(second.keys) == sorted(cast(str, j.bundle_key) for j in jobs)  # see above

    clock.advance()
    assert w.scan_once().registered == 0
    assert len(all_jobs(flock)) == 3


def test_on_registered_is_called_after_registering(flock: Flock, clock: Clock) -> None:
    woken = threading.Event()
    w = watcher(flock, clock, on_registered=woken.set)
    drop(flock, "a.zip", bundle({"ITEM": 1}))
    w.scan_once()
    assert not woken.is_set()
    clock.advance()
    w.scan_once()
    assert woken.is_set()


def test_many_files_are_registered_in_chunks(flock: Flock, clock: Clock) -> None:
    for i in range(25):
        drop(flock, f"b{i:02}.zip", bundle({"ITEM": i}))
    result = settle(watcher(flock, clock, chunk=10), clock)
    assert result.registered == 25
    assert sorted(j.params["ITEM"] for j in all_jobs(flock)) == list(range(25))


def test_run_registers_until_stopped(flock: Flock) -> None:
    stop, registered = threading.Event(), threading.Event()
    results: list[ScanResult] = []

    def seen(result: ScanResult) -> None:
        results.append(result)
        registered.set()

    w = FolderInbox(flock, settle=0.05, interval=0.02, on_result=seen)
    thread = threading.Thread(target=w.run, args=(stop,))
    thread.start()
    try:
        drop(flock, "a.zip", bundle({"ITEM": 1}))
        assert registered.wait(10)
    finally:
        stop.set()
        thread.join(10)
        w.close()
    assert not thread.is_alive()
    assert sum(r.registered for r in results) == 1


# -- partial files -------------------------------------------------------------------------


def test_a_file_being_written_is_not_taken_until_complete_and_stable(
    flock: Flock, clock: Clock
) -> None:
    data = bundle({"ITEM": 7}, extra={"payload.bin": os.urandom(4000)})
    path = inbox(flock) / "slow.zip"
    w = watcher(flock, clock, give_up=30)

    with open(path, "wb") as fh:
        fh.write(data[: len(data) // 2])
        fh.flush()
        assert settle(w, clock).registered == 0
        clock.advance(10)
        assert w.scan_once().registered == 0, "stable but not a complete zip: still waiting"
        fh.write(data[len(data) // 2 :])
    result = w.scan_once()
    assert result.registered == 0 and result.waiting == 1, "just changed: not stable yet"
    clock.advance(0.2)
    assert w.scan_once().registered == 0, "unchanged for less than the settle time"
    clock.advance(0.5)
    result = w.scan_once()
    assert result.registered == 1 and not result.rejected
    assert all_jobs(flock)[0].params == {"ITEM": 7}


def test_a_complete_zip_that_keeps_changing_is_not_taken(flock: Flock, clock: Clock) -> None:
    path = inbox(flock) / "busy.zip"
    w = watcher(flock, clock)
    for i in range(5):
        path.write_bytes(bundle({"ITEM": i}, extra={"pad": b"x" * i}))
        clock.advance()
        assert w.scan_once().registered == 0
    clock.advance()
    assert w.scan_once().registered == 1
    assert all_jobs(flock)[0].params == {"ITEM": 4}


def test_a_file_rewritten_just_before_the_claim_goes_back_to_the_inbox(
    flock: Flock, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = drop(flock, "a.zip", bundle({"ITEM": 1}))
    w = watcher(flock, clock)
    w.scan_once()
    clock.advance()
    take = FolderInbox._take

    def rewrite_then_take(self: FolderInbox, *args: object) -> None:
        path.write_bytes(bundle({"ITEM": 2}, extra={"more": b"x" * 100}))  # in place
        take(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(FolderInbox, "_take", rewrite_then_take)
    result = w.scan_once()
    monkeypatch.undo()
    assert result.registered == 0 and not result.rejected
    assert inbox_files(flock) == ["a.zip"] and input_keys(flock) == []
    assert settle(w, clock).registered == 1
    assert all_jobs(flock)[0].params == {"ITEM": 2}


def test_complete_zip_check_rejects_every_truncation(tmp_path: Path) -> None:
    data = bundle({"ITEM": 1}, extra={"a.txt": b"hello " * 50, "b/c.txt": b"x"})
    path = tmp_path / "z.zip"
    for n in range(len(data)):
        path.write_bytes(data[:n])
        assert not is_complete_zip(path, path.stat().st_size), (
            f"prefix of {n} bytes taken as complete"
        )
    path.write_bytes(data)
    assert is_complete_zip(path, path.stat().st_size)


def test_complete_zip_check_is_not_fooled_by_a_stored_inner_zip(tmp_path: Path) -> None:
    inner = bundle({"INNER": 1})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("inputs.json", "{}")
        zf.writestr("inner.zip", inner)
    data = buf.getvalue()
    end_of_inner = data.index(inner) + len(inner)
    path = tmp_path / "outer.zip"
    path.write_bytes(data[:end_of_inner])
    assert not is_complete_zip(path, path.stat().st_size), (
        "a partial outer zip ending with a whole inner zip"
    )
    path.write_bytes(data)
    assert is_complete_zip(path, path.stat().st_size)


def test_complete_zip_check_handles_zip64_end_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 1)  # force the zip64 end records
    data = bundle({"ITEM": 1}, extra={"a": b"1", "b": b"2"})
    monkeypatch.undo()
    assert b"PK\x06\x06" in data and b"PK\x06\x07" in data
    path = tmp_path / "z64.zip"
    for n in range(len(data) - 120, len(data)):
        path.write_bytes(data[:n])
        assert not is_complete_zip(path, path.stat().st_size)
    path.write_bytes(data)
    assert is_complete_zip(path, path.stat().st_size)


# -- bad files -----------------------------------------------------------------------------


def test_bad_bundles_are_rejected_with_a_reason_and_do_not_block_the_inbox(
    flock: Flock, clock: Clock
) -> None:
    drop(flock, "good.zip", bundle({"ITEM": 1}))
    drop(flock, "no-inputs.zip", bundle(None, extra={"other.txt": b"x"}))
    drop(flock, "bad-params.zip", bundle([1, 2]))
    drop(flock, "sub/notes.txt", b"this is not a zip at all\n")
    drop(flock, "empty.zip", b"")
    w = watcher(flock, clock, give_up=5)

    result = settle(w, clock)
    assert result.registered == 1
    assert sorted(r.name for r in result.rejected) == ["bad-params.zip", "no-inputs.zip"]
    assert result.waiting == 2, "files that are not complete zips wait for the give-up time"

    clock.advance(5)
    result = w.scan_once()
    assert sorted(r.name for r in result.rejected) == ["empty.zip", "sub/notes.txt"]

    rejected = inbox(flock) / "rejected"
    reasons = {
        p.name.removesuffix(".reason.txt"): p.read_text() for p in rejected.rglob("*.reason.txt")
    }
    assert set(reasons) == {"no-inputs.zip", "bad-params.zip", "notes.txt", "empty.zip"}
    assert "'no-inputs.zip' has no inputs.json" in reasons["no-inputs.zip"]
    assert "inputs/" not in reasons["no-inputs.zip"], "the reason names the dropped file"
    assert "JSON object" in reasons["bad-params.zip"]
    assert "not a zip archive" in reasons["notes.txt"]
    assert "empty file" in reasons["empty.zip"]
    assert (rejected / "sub" / "notes.txt").read_bytes() == b"this is not a zip at all\n"
    assert count_rejected(flock) == 4
    assert input_keys(flock) == [all_jobs(flock)[0].bundle_key], "nothing bad stays in inputs"
    assert inbox_files(flock) == []


def test_a_name_rejected_twice_keeps_both(flock: Flock, clock: Clock) -> None:
    w = watcher(flock, clock)
    drop(flock, "bad.zip", bundle(None))
    settle(w, clock)
    drop(flock, "bad.zip", bundle(None, extra={"x": b"2"}))
    settle(w, clock)
    rejected = inbox(flock) / "rejected"
    assert sorted(p.name for p in rejected.iterdir()) == [
        "bad-2.zip",
        "bad-2.zip.reason.txt",
        "bad.zip",
        "bad.zip.reason.txt",
    ]
    assert count_rejected(flock) == 2


def test_links_and_special_files_are_rejected_without_being_opened(
    flock: Flock, clock: Clock, tmp_path: Path
) -> None:
    target = tmp_path / "elsewhere.zip"
    target.write_bytes(bundle({"ITEM": 1}))
    (inbox(flock) / "link.zip").symlink_to(target)
    os.mkfifo(inbox(flock) / "pipe.zip")
    result = watcher(flock, clock).scan_once()
    assert sorted(r.name for r in result.rejected) == ["link.zip", "pipe.zip"]
    assert "symbolic link" in result.rejected[0].reason
    assert target.exists() and all_jobs(flock) == []


def test_count_rejected_counts_bundles_with_their_reason(flock: Flock) -> None:
    rejected = inbox(flock) / "rejected"
    (rejected / "deep").mkdir(parents=True)
    for name in ("a.zip", "deep/b.zip", "c.reason.txt"):
        (rejected / name).write_text("x")
        (rejected / (name + ".reason.txt")).write_text("why")
    (rejected / "orphan.zip.reason.txt").write_text("bundle removed by hand")
    assert count_rejected(flock) == 3


# -- several watchers ----------------------------------------------------------------------


def test_two_watchers_racing_register_each_file_exactly_once(flock: Flock, clock: Clock) -> None:
    for i in range(200):
        drop(flock, f"b{i:03}.zip", bundle({"ITEM": i}))
    other = Flock.open(flock.dir.folder)  # its own catalog connection, as another process
    watchers = [watcher(flock, clock, chunk=30), watcher(other, clock, chunk=30)]
    for w in watchers:
        w.scan_once()
    clock.advance()
    start = threading.Barrier(2)
    results: list[list[ScanResult]] = [[], []]

    def race(n: int) -> None:
        start.wait()
        for _ in range(5):
            results[n].append(watchers[n].scan_once())

    threads = [threading.Thread(target=race, args=(n,)) for n in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    other.close()

    jobs = all_jobs(flock)
    assert sorted(j.params["ITEM"] for j in jobs) == list(range(200))
    assert len({j.bundle_key for j in jobs}) == 200
    assert sum(r.registered for rs in results for r in rs) == 200
    assert len(input_keys(flock)) == 200 and inbox_files(flock) == []


def test_a_watcher_that_cannot_get_the_lock_takes_nothing(flock: Flock, clock: Clock) -> None:
    drop(flock, "a.zip", bundle({"ITEM": 1}))
    w = watcher(flock, clock)
    w.scan_once()
    clock.advance()
    fd = os.open(inbox(flock) / LOCK_NAME, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        result = w.scan_once()
        assert result.busy and result.registered == 0 and inbox_files(flock) == ["a.zip"]
    finally:
        os.close(fd)
    assert w.scan_once().registered == 1


# -- crash recovery ------------------------------------------------------------------------


class Killed(Exception):
    """Stands for the watcher's process dying at that point."""


def test_claimed_but_unregistered_bundles_are_registered_at_next_start(
    flock: Flock, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(5):
        drop(flock, f"b{i}.zip", bundle({"ITEM": i}))
    drop(flock, "bad.zip", bundle(None))
    first = watcher(flock, clock)
    first.scan_once()
    clock.advance()

    def die(*args: object, **kwargs: object) -> list[str]:
        raise Killed

    monkeypatch.setattr(flock.catalog, "add_jobs", die)
    with pytest.raises(Killed):
        first.scan_once()
    first.close()
    monkeypatch.undo()
    assert inbox_files(flock) == [] and len(input_keys(flock)) == 6, "claimed, not registered"
    assert all_jobs(flock) == [] and (inbox(flock) / JOURNAL_NAME).exists()

    restarted = Flock.open(flock.dir.folder)
    result = FolderInbox(restarted, clock=clock).scan_once()
    restarted.close()

    assert result.recovered == 6 and result.registered == 5
    assert [r.name for r in result.rejected] == ["bad.zip"]
    assert sorted(j.params["ITEM"] for j in all_jobs(flock)) == list(range(5))
    assert not (inbox(flock) / JOURNAL_NAME).exists()
    assert watcher(flock, clock).scan_once().registered == 0


def test_registered_bundles_are_not_registered_again_after_a_crash(
    flock: Flock, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(5):
        drop(flock, f"b{i}.zip", bundle({"ITEM": i}))
    first = watcher(flock, clock)
    first.scan_once()
    clock.advance()
    registered = FolderInbox._settle

    def settle_then_die(self: FolderInbox, *args: object, **kwargs: object) -> None:
        registered(self, *args, **kwargs)  # type: ignore[arg-type]
        raise Killed  # after the commit, before the journal is deleted

    monkeypatch.setattr(FolderInbox, "_settle", settle_then_die)
    with pytest.raises(Killed):
        first.scan_once()
    monkeypatch.undo()
    assert len(all_jobs(flock)) == 5 and (inbox(flock) / JOURNAL_NAME).exists()

    result = watcher(flock, clock).scan_once()
    assert result.recovered == 0 and result.registered == 0
    assert len(all_jobs(flock)) == 5
    assert not (inbox(flock) / JOURNAL_NAME).exists()


def test_a_crash_in_the_middle_of_claiming_loses_and_repeats_nothing(
    flock: Flock, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(6):
        drop(flock, f"b{i}.zip", bundle({"ITEM": i}))
    first = watcher(flock, clock)
    first.scan_once()
    clock.advance()
    claim, calls = FolderInbox._claim, [0]

    def claim_then_die(self: FolderInbox, rel: str, key: str, sig: tuple[int, int, int]) -> bool:
        calls[0] += 1
        if calls[0] > 2:
            raise Killed
        return claim(self, rel, key, sig)

    monkeypatch.setattr(FolderInbox, "_claim", claim_then_die)
    with pytest.raises(Killed):
        first.scan_once()
    monkeypatch.undo()
    assert len(input_keys(flock)) == 2 and len(inbox_files(flock)) == 4

    second = watcher(flock, clock)
    assert second.scan_once().recovered == 2, "the two claimed files are registered at once"
    clock.advance()
    assert second.scan_once().registered == 4, "the others are taken as usual"
    assert sorted(j.params["ITEM"] for j in all_jobs(flock)) == list(range(6))


def test_a_torn_journal_line_is_ignored(flock: Flock, clock: Clock) -> None:
    (inbox(flock) / JOURNAL_NAME).write_text('["a.zip", "inbox-0001-a.zip"]\n["b.zi')
    result = watcher(flock, clock).scan_once()
    assert result.recovered == 0 and not (inbox(flock) / JOURNAL_NAME).exists()


def test_keys_keep_names_readable_and_safe(flock: Flock, clock: Clock) -> None:
    drop(flock, "odd\nname\\x.zip", bundle({"ITEM": 1}))
    assert settle(watcher(flock, clock), clock).registered == 1
    key = all_jobs(flock)[0].bundle_key
    assert key is not None and key.endswith("-odd_name_x.zip")


def test_long_names_fit_in_a_key(flock: Flock, clock: Clock) -> None:
    name = "x" * 240 + ".zip"
    drop(flock, name, bundle({"ITEM": 1}))
    assert settle(watcher(flock, clock), clock).registered == 1
    key = all_jobs(flock)[0].bundle_key
    assert key is not None and len(key.encode()) <= 255 and key.endswith("xx.zip")


# -- odd content never jams the inbox -------------------------------------------------------


def test_a_file_named_rejected_does_not_jam_the_inbox(flock: Flock, clock: Clock) -> None:
    (inbox(flock) / "rejected").write_text("mine")
    drop(flock, "bad.zip", bundle(None))
    drop(flock, "good.zip", bundle({"ITEM": 1}))
    w = watcher(flock, clock)
    result = settle(w, clock)
    assert result.registered == 1 and [r.name for r in result.rejected] == ["bad.zip"]
    folder = inbox(flock) / "rejected"
    assert folder.is_dir() and (folder / "bad.zip").exists()
    assert (folder / "rejected").read_text() == "mine", "the user's file is kept, as rejected"
    assert "in its way" in (folder / "rejected.reason.txt").read_text()
    assert input_keys(flock) == [all_jobs(flock)[0].bundle_key], "nothing bad stays in inputs"
    drop(flock, "later.zip", bundle({"ITEM": 2}))
    assert settle(w, clock).registered == 1


def test_a_link_named_rejected_never_sends_files_out_of_the_inbox(
    flock: Flock, clock: Clock, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (inbox(flock) / "rejected").symlink_to(outside)
    drop(flock, "bad.zip", bundle(None))
    result = settle(watcher(flock, clock), clock)
    assert [r.name for r in result.rejected] == ["bad.zip"]
    assert list(outside.iterdir()) == []
    assert (inbox(flock) / "rejected" / "bad.zip").is_file()


def test_a_folder_in_place_of_the_journal_does_not_jam_the_inbox(
    flock: Flock, clock: Clock
) -> None:
    (inbox(flock) / JOURNAL_NAME).mkdir()
    drop(flock, "good.zip", bundle({"ITEM": 1}))
    assert settle(watcher(flock, clock), clock).registered == 1
    assert (inbox(flock) / JOURNAL_NAME).exists() is False


def test_a_folder_named_like_a_zip_and_a_rejected_subfolder_file_are_handled(
    flock: Flock, clock: Clock
) -> None:
    drop(flock, "dir.zip/inner.zip", bundle({"ITEM": 1}))
    drop(flock, "sub", bundle(None))  # rejected as rejected/sub, a file ...
    w = watcher(flock, clock)
    assert settle(w, clock).registered == 1
    drop(flock, "sub/x.zip", bundle(None))  # ... so rejected/sub/ cannot be a folder
    result = settle(w, clock)
    assert [r.name for r in result.rejected] == ["sub/x.zip"]
    assert (inbox(flock) / "rejected" / "sub--x.zip").is_file()


def test_a_name_too_long_for_its_reason_file_is_still_rejected(flock: Flock, clock: Clock) -> None:
    name = "y" * 250 + ".zip"
    drop(flock, name, bundle(None))
    drop(flock, "good.zip", bundle({"ITEM": 1}))
    result = settle(watcher(flock, clock), clock)
    assert result.registered == 1 and [r.name for r in result.rejected] == [name]
    assert len(Path(result.rejected[0].where).name.encode()) <= 210
    assert input_keys(flock) == [all_jobs(flock)[0].bundle_key], "nothing bad stays in inputs"


def test_claims_with_odd_names_are_settled_after_a_crash(
    flock: Flock, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    drop(flock, "back\\slash\nnew.zip", bundle(None))
    first = watcher(flock, clock)
    first.scan_once()
    clock.advance()

    def die(*args: object, **kwargs: object) -> None:
        raise Killed

    monkeypatch.setattr(FolderInbox, "_settle", die)
    with pytest.raises(Killed):
        first.scan_once()
    first.close()
    monkeypatch.undo()
    result = watcher(flock, clock).scan_once()
    assert result.recovered == 1 and [r.name for r in result.rejected] == ["back\\slash\nnew.zip"]
    assert input_keys(flock) == []


def test_a_bundle_whose_environment_is_too_large_is_rejected(flock: Flock, clock: Clock) -> None:
    drop(flock, "huge.zip", bundle({"DATA": "x" * (128 << 10)}))
    result = settle(watcher(flock, clock), clock)
    assert [r.name for r in result.rejected] == ["huge.zip"]
    assert "131,072 bytes (128 KiB) per variable" in result.rejected[0].reason


def test_a_folder_or_link_in_place_of_the_lock_file_is_moved_aside(
    flock: Flock, clock: Clock, tmp_path: Path
) -> None:
    (inbox(flock) / LOCK_NAME).mkdir()
    drop(flock, "good.zip", bundle({"ITEM": 1}))
    with watcher(flock, clock) as w:
        assert settle(w, clock).registered == 1
    assert (inbox(flock) / LOCK_NAME).is_file()
    (inbox(flock) / LOCK_NAME).unlink()
    (inbox(flock) / LOCK_NAME).symlink_to(tmp_path / "elsewhere.lock")
    with watcher(flock, clock):
        assert not (tmp_path / "elsewhere.lock").exists()


def test_undecodable_names_are_taken_or_rejected(flock: Flock, clock: Clock) -> None:
    root = os.fsencode(inbox(flock))
    for name, data in ((b"good-\xff.zip", bundle({"ITEM": 1})), (b"bad-\xfe.zip", bundle(None))):
        with open(os.path.join(root, name), "wb") as fh:
            fh.write(data)
    result = settle(watcher(flock, clock), clock)
    assert result.registered == 1 and len(result.rejected) == 1
    rejected = sorted(os.listdir(os.path.join(root, b"rejected")))
    assert rejected == [b"bad-\xfe.zip", b"bad-\xfe.zip.reason.txt"]
