"""Tests of input bundles (shepard.bundle): reading, checking, making and extracting zips."""

from __future__ import annotations

import io
import json
import os
import stat
import zipfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shepard.bundle import (
    extract_bundle,
    make_bundle,
    read_bundle,
    read_bundle_file,
)
from shepard.config import LimitsConfig
from shepard.errors import BundleError, StorageError
from shepard.storage.local import LocalStore
from shepard.storage.rangefile import RangeFile

LIMITS = LimitsConfig()
Entries = dict[str, bytes | str]


class CountingStore(LocalStore):
    """A LocalStore that records range reads and forbids whole-object reads."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.ranges: list[tuple[int, int]] = []

    def read_range(self, key: str, start: int, length: int) -> bytes:
        data = super().read_range(key, start, length)
        self.ranges.append((start, len(data)))
        return data

    def get_bytes(self, key: str) -> bytes:
        raise AssertionError("read_bundle must not read the whole object")

    def get_file(self, key: str, dest: Path) -> None:
        raise AssertionError("read_bundle must not copy the whole object")

    @property
    def bytes_read(self) -> int:
        return sum(length for _, length in self.ranges)


def write_zip(
    path: Path,
    entries: Entries | list[tuple[str | zipfile.ZipInfo, bytes | str]],
    *,
    method: int = zipfile.ZIP_DEFLATED,
    comment: bytes = b"",
) -> Path:
    """Write a zip holding `entries` (name or ZipInfo -> data) to `path`."""
    items = list(entries.items()) if isinstance(entries, dict) else entries
    with zipfile.ZipFile(path, "w", method) as zf:
        for name, data in items:
            zf.writestr(name, data)
        zf.comment = comment
    return path


def inputs(params: object) -> str:
    return json.dumps(params)


@pytest.fixture
def store(tmp_path: Path) -> CountingStore:
    return CountingStore(tmp_path / "store")


def store_zip(store: CountingStore, key: str, entries: Entries, **kwargs: object) -> str:
    path = store.path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_zip(path, entries, **kwargs)  # type: ignore[arg-type]
    return key


def bundle_error(path: Path, limits: LimitsConfig = LIMITS) -> str:
    """The message of the BundleError that reading the bundle at `path` raises."""
    with pytest.raises(BundleError) as exc:
        read_bundle_file(path, limits)
    return str(exc.value)


# --- good bundles ------------------------------------------------------------------------------


def test_good_bundle_from_store(store: CountingStore) -> None:
    key = store_zip(
        store,
        "b/one.zip",
        {"inputs.json": inputs({"A": 1, "B": "x", "C": True, "D": None}), "data/x.csv": "1,2"},
    )
    assert read_bundle(store, key, LIMITS) == {"A": 1, "B": "x", "C": True, "D": "None"}
    assert store.ranges  # read through ranges only (whole-object reads would assert)


def test_good_bundle_from_file(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "b.zip", {"inputs.json": inputs({"X": "y"})})
    assert read_bundle_file(path, LIMITS) == {"X": "y"}


def test_inputs_txt_fallback(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "b.zip", {"inputs.txt": inputs({"T": 1}), "a.txt": "x"})
    assert read_bundle_file(path, LIMITS) == {"T": 1}


def test_inputs_json_wins_over_inputs_txt(tmp_path: Path) -> None:
    txt: tuple[str, str] = ("inputs.txt", inputs({"TXT": 1}))
    json_: tuple[str, str] = ("inputs.json", inputs({"JSON": 1}))
    for entries in ([txt, json_], [json_, txt], [("inputs.txt", "{not json"), json_]):
        path = write_zip(tmp_path / "b.zip", list(entries))
        assert read_bundle_file(path, LIMITS) == {"JSON": 1}


def test_dot_slash_inputs_counts_as_root(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "b.zip", {"./inputs.json": inputs({"A": 1})})
    assert read_bundle_file(path, LIMITS) == {"A": 1}


def test_bom_is_accepted(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "b.zip", {"inputs.json": b'\xef\xbb\xbf{"A": "\xc3\xa9"}'})
    assert read_bundle_file(path, LIMITS) == {"A": "é"}


def test_stored_and_lzma_members_are_read(tmp_path: Path) -> None:
    for method in (zipfile.ZIP_STORED, zipfile.ZIP_LZMA, zipfile.ZIP_BZIP2):
        path = write_zip(tmp_path / "b.zip", {"inputs.json": inputs({"M": method})}, method=method)
        assert read_bundle_file(path, LIMITS) == {"M": method}


@pytest.mark.parametrize("comment_size", [10, 65_000])
def test_zip_with_trailing_comment(store: CountingStore, comment_size: int) -> None:
    key = store_zip(store, "c.zip", {"inputs.json": inputs({"A": 1})}, comment=b"c" * comment_size)
    assert read_bundle(store, key, LIMITS) == {"A": 1}


def test_zip_with_leading_junk_is_still_read(tmp_path: Path) -> None:
    zipped = write_zip(tmp_path / "b.zip", {"inputs.json": inputs({"A": 1})}).read_bytes()
    path = tmp_path / "sfx.zip"
    path.write_bytes(b"#!/bin/sh\nexit 0\n" + zipped)
    assert read_bundle_file(path, LIMITS) == {"A": 1}


# --- not a zip, damaged zips -------------------------------------------------------------------


def test_not_a_zip(tmp_path: Path) -> None:
    path = tmp_path / "b.zip"
    path.write_text('{"A": 1}')
    message = bundle_error(path)
    assert str(path) in message and "is not a zip archive" in message


def test_empty_file(store: CountingStore) -> None:
    store.put_bytes("empty.zip", b"")
    with pytest.raises(BundleError, match=r"bundle 'empty\.zip' is an empty file"):
        read_bundle(store, "empty.zip", LIMITS)


def test_truncated_zip(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "b.zip", {"inputs.json": inputs({"A": 1}), "x": os.urandom(5000)})
    path.write_bytes(path.read_bytes()[:3000])
    assert "truncated or corrupt" in bundle_error(path)


def test_corrupt_central_directory(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "b.zip", {"inputs.json": inputs({"A": 1})})
    data = bytearray(path.read_bytes())
    cd = data.rfind(b"PK\x01\x02")
    data[cd : cd + 4] = b"XXXX"
    path.write_bytes(bytes(data))
    assert "truncated or corrupt" in bundle_error(path)


def test_corrupt_inputs_member(tmp_path: Path) -> None:
    path = write_zip(
        tmp_path / "b.zip", {"inputs.json": inputs({"A": "x" * 200})}, method=zipfile.ZIP_STORED
    )
    data = bytearray(path.read_bytes())
    where = data.find(b"xxxx")
    data[where] = ord("y")  # CRC no longer matches
    path.write_bytes(bytes(data))
    message = bundle_error(path)
    assert "corrupt entry 'inputs.json'" in message


def test_missing_object_is_a_storage_error(store: CountingStore) -> None:
    with pytest.raises(StorageError, match=r"nope\.zip"):
        read_bundle(store, "nope.zip", LIMITS)


def test_missing_local_file(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="cannot open bundle"):
        read_bundle_file(tmp_path / "nope.zip", LIMITS)


# --- inputs file problems ----------------------------------------------------------------------


def test_missing_inputs_file(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "b.zip", {"data.csv": "1", "inputs.jsn": "{}"})
    assert "has no inputs.json or inputs.txt at its root" in bundle_error(path)


def test_inputs_in_subfolder_says_so(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "b.zip", {"folder/": b"", "folder/inputs.json": "{}"})
    message = bundle_error(path)
    assert (
        "found folder/inputs.json: the inputs file must be at the zip's root — zip the "
        "folder's contents, not the folder"
    ) in message


def test_wrong_case_inputs_name_says_so(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "b.zip", {"Inputs.JSON": "{}"})
    assert "Inputs.JSON, but names are case-sensitive" in bundle_error(path)


def test_inputs_directory_entry_is_not_the_inputs_file(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "b.zip", {"inputs.json/": b"", "inputs.json/a": "{}"})
    assert "has no inputs.json or inputs.txt at its root" in bundle_error(path)


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ('{"A": 1,}', "is not valid JSON"),
        ("[1, 2]", "must be a JSON object, got a list"),
        ('{"A": {"B": 1}}', "'A': nested objects are not allowed"),
        ('{"A": [1]}', "'A': arrays are not allowed"),
        ('{"uuid": "x"}', "uuid: these variables are set by the runtime"),
        ('{"A": 1, "A": 2}', "repeats the key(s) 'A'"),
        ("", "is empty"),
    ],
)
def test_bad_inputs_content_names_bundle_and_file(tmp_path: Path, content: str, words: str) -> None:
    path = write_zip(tmp_path / "b.zip", {"inputs.json": content})
    message = bundle_error(path)
    assert words in message
    assert f"inputs.json in bundle {str(path)!r}" in message


def test_inputs_txt_errors_name_inputs_txt(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "b.zip", {"inputs.txt": "nope"})
    assert "inputs.txt in bundle" in bundle_error(path)


def test_inputs_not_utf8(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "b.zip", {"inputs.json": b'{"A": "caf\xe9"}'})
    assert "inputs.json that is not UTF-8 (byte 10)" in bundle_error(path)


def test_inputs_too_big(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "b.zip", {"inputs.json": inputs({"A": "x" * 500})})
    message = bundle_error(path, LimitsConfig(max_inputs_bytes=100))
    assert "more than limits.max_inputs_bytes = 100" in message


def test_inputs_encrypted(tmp_path: Path) -> None:
    path = tmp_path / "b.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("inputs.json", "{}")
        zf.infolist()[0].flag_bits |= 0x1  # central directory says: encrypted
    assert "encrypted entry 'inputs.json'" in bundle_error(path)


# --- unsafe entries ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("/etc/passwd", "absolute path"),
        ("C:/Windows/x", "absolute path"),
        ("c:evil", "absolute path"),
        ("../evil", "'..' segment"),
        ("a/../../evil", "'..' segment"),
        ("a/..", "'..' segment"),
        ("..\\evil", "backslash"),
        ("a\\b", "backslash"),
    ],
)
def test_unsafe_entry_names(tmp_path: Path, name: str, words: str) -> None:
    path = write_zip(tmp_path / "b.zip", [("inputs.json", "{}"), (name, "x")])
    message = bundle_error(path)
    assert words in message and repr(name) in message
    out = tmp_path / "out"
    with pytest.raises(BundleError, match="has an entry"):
        extract_bundle(path, out, LIMITS)
    assert not (tmp_path / "evil").exists()
    assert not out.exists()  # refused before anything was written


def test_symlink_entry(tmp_path: Path) -> None:
    link = zipfile.ZipInfo("link")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    path = write_zip(tmp_path / "b.zip", [("inputs.json", "{}"), (link, "/etc/passwd")])
    assert "'link' that is a symbolic link" in bundle_error(path)
    with pytest.raises(BundleError, match="symbolic link"):
        extract_bundle(path, tmp_path / "out", LIMITS)
    assert not (tmp_path / "out" / "link").exists()


def test_regular_file_mode_bits_are_fine(tmp_path: Path) -> None:
    info = zipfile.ZipInfo("run.sh")
    info.external_attr = (stat.S_IFREG | 0o755) << 16
    path = write_zip(tmp_path / "b.zip", [("inputs.json", "{}"), (info, "#!/bin/sh\n")])
    assert read_bundle_file(path, LIMITS) == {}
    extract_bundle(path, tmp_path / "out", LIMITS)
    assert os.access(tmp_path / "out" / "run.sh", os.X_OK)
    assert not os.access(tmp_path / "out" / "inputs.json", os.X_OK)


def test_duplicate_entries(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "b.zip", [("inputs.json", "{}"), ("a", "1"), ("./a", "2")])
    assert "two entries named './a'" in bundle_error(path)
    with pytest.warns(UserWarning, match="Duplicate name"):
        path = write_zip(tmp_path / "c.zip", [("inputs.json", "{}"), ("a", "1"), ("a", "2")])
    assert "two entries named 'a'" in bundle_error(path)


def test_file_used_as_folder(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "b.zip", [("inputs.json", "{}"), ("a", "1"), ("a/b", "2")])
    assert "a file 'a' and entries inside it" in bundle_error(path)


def test_too_many_entries(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "b.zip", {"inputs.json": "{}", "a": "", "b": "", "c": ""})
    assert "has 4 entries, more than limits.max_entries = 3" in bundle_error(
        path, LimitsConfig(max_entries=3)
    )
    assert read_bundle_file(path, LimitsConfig(max_entries=4)) == {}


def test_total_declared_size_limit(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "b.zip", {"inputs.json": "{}", "a": os.urandom(3000)})
    limits = LimitsConfig(max_bundle_bytes=2000)
    message = bundle_error(path, limits)
    assert "expands to 3002 bytes, more than limits.max_bundle_bytes = 2000" in message
    with pytest.raises(BundleError, match="max_bundle_bytes"):
        extract_bundle(path, tmp_path / "out", limits)


# --- zip bombs and lying sizes -----------------------------------------------------------------


@pytest.fixture(scope="module")
def zeros_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle whose 50 MiB entry of zeros deflates to ~50 KiB (ratio ~1000)."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.zip"
    return write_zip(path, {"inputs.json": "{}", "zeros": bytes(50 << 20)})


def test_zip_bomb_by_ratio(zeros_zip: Path, tmp_path: Path) -> None:
    message = bundle_error(zeros_zip)
    assert "looks like a zip bomb: entry 'zeros' expands" in message
    assert "limits.max_compression_ratio = 200" in message
    with pytest.raises(BundleError, match="zip bomb"):
        extract_bundle(zeros_zip, tmp_path / "out", LIMITS)
    assert not (tmp_path / "out" / "zeros").exists()
    assert read_bundle_file(zeros_zip, LimitsConfig(max_compression_ratio=5000)) == {}


def test_small_compressible_entries_never_trip_the_ratio(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "b.zip", {"inputs.json": "{}", "log.txt": bytes(900_000)})
    assert read_bundle_file(path, LimitsConfig(max_compression_ratio=2)) == {}


def test_total_ratio_catches_many_small_bombs(tmp_path: Path) -> None:
    entries: Entries = {"inputs.json": "{}"}
    entries.update({f"z{i}": bytes(500_000) for i in range(6)})
    path = write_zip(tmp_path / "b.zip", entries)
    assert "zip bomb: the bundle expands" in bundle_error(path)


def test_declared_size_lie_is_caught_while_extracting(tmp_path: Path) -> None:
    liar = tmp_path / "liar.zip"
    with zipfile.ZipFile(liar, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("inputs.json", "{}")
        zf.writestr("zeros", bytes(8 << 20))  # 8 MiB deflating ~1000 times
        zf.getinfo("zeros").file_size = 100_000  # the central directory understates the size
    with zipfile.ZipFile(liar) as check:
        assert check.getinfo("zeros").file_size == 100_000
    assert read_bundle_file(liar, LIMITS) == {}  # declared sizes look harmless
    out = tmp_path / "out"
    with pytest.raises(BundleError, match="corrupt entry 'zeros'"):
        extract_bundle(liar, out, LIMITS)
    assert not (out / "zeros").exists()


def test_overstated_size_is_caught_while_extracting(tmp_path: Path) -> None:
    liar = tmp_path / "liar.zip"
    with zipfile.ZipFile(liar, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("inputs.json", "{}")
        zf.writestr("data", os.urandom(1000))
        zf.getinfo("data").file_size = 2000
    with pytest.raises(BundleError, match="'data'"):
        extract_bundle(liar, tmp_path / "out", LIMITS)
    assert not (tmp_path / "out" / "data").exists()


# --- zip64 -------------------------------------------------------------------------------------


def test_force_zip64_entry(tmp_path: Path) -> None:
    path = tmp_path / "b.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("inputs.json", "w", force_zip64=True) as fh:
            fh.write(inputs({"Z": 64}).encode())
        with zf.open("big", "w", force_zip64=True) as fh:
            fh.write(b"x" * 100)
    assert read_bundle_file(path, LIMITS) == {"Z": 64}
    extract_bundle(path, tmp_path / "out", LIMITS)
    assert (tmp_path / "out" / "big").read_bytes() == b"x" * 100


def test_zip64_archive_with_zip64_end_records(
    store: CountingStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A genuine zip64 archive (zip64 end records and extras), made small by lowering limits."""
    path = store.path("z64.zip")
    path.parent.mkdir(parents=True)
    with monkeypatch.context() as patch:
        patch.setattr(zipfile, "ZIP64_LIMIT", 50)
        patch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 5)
        entries: Entries = {f"f{i}": f"file {i}" * 20 for i in range(10)}
        write_zip(path, {**entries, "inputs.json": inputs({"K": "v" * 80})})
    data = path.read_bytes()
    assert b"PK\x06\x06" in data and b"PK\x06\x07" in data  # zip64 end record and locator
    assert read_bundle(store, "z64.zip", LIMITS) == {"K": "v" * 80}
    extract_bundle(path, path.parent / "out", LIMITS)
    assert (path.parent / "out" / "f3").read_text() == "file 3" * 20


# --- range reads -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def random_blob() -> bytes:
    return os.urandom(20 << 20)


@pytest.mark.parametrize("inputs_first", [True, False])
def test_reading_inputs_touches_only_a_few_kib(
    store: CountingStore, random_blob: bytes, inputs_first: bool
) -> None:
    path = store.path("big.zip")
    path.parent.mkdir(parents=True)
    parts: list[tuple[str | zipfile.ZipInfo, bytes | str]] = [
        ("inputs.json", inputs({"A": 1})),
        ("random.bin", random_blob),
    ]
    write_zip(path, parts if inputs_first else parts[::-1], method=zipfile.ZIP_STORED)
    assert path.stat().st_size > 20 << 20
    assert read_bundle(store, "big.zip", LIMITS) == {"A": 1}
    assert store.bytes_read < 256 << 10
    assert len(store.ranges) <= 2  # the tail window, plus the inputs member if it is far away


def test_range_file_counts_requests(store: CountingStore) -> None:
    store.put_bytes("k", bytes(range(256)) * 1024)  # 256 KiB
    with RangeFile(store, "k", readahead=4096) as fh:
        assert fh.size == 256 << 10
        assert fh.read(10) == bytes(range(10))
        assert fh.read(10) == bytes(range(10, 20))
        assert fh.requests == 1 and fh.bytes_fetched == 4096
        fh.seek(-5, io.SEEK_END)
        assert fh.read() == bytes(range(251, 256))
        assert fh.requests == 2
        fh.seek(-100, io.SEEK_END)
        assert fh.read(3) == bytes(range(156, 159))  # within the tail window: no new request
        assert fh.requests == 2
        assert fh.read(0) == b""
        fh.seek(10, io.SEEK_SET)
        fh.seek(5, io.SEEK_CUR)
        assert fh.tell() == 15
        assert fh.read(1) == b"\x0f"
    assert fh.closed
    with pytest.raises(ValueError):
        fh.read(1)


def test_range_file_edges(store: CountingStore) -> None:
    store.put_bytes("k", b"0123456789")
    fh = RangeFile(store, "k")
    assert fh.readable() and fh.seekable() and not fh.writable()
    fh.seek(100)
    assert fh.read(5) == b""
    with pytest.raises(OSError, match="negative seek"):
        fh.seek(-1)
    with pytest.raises(ValueError, match="whence"):
        fh.seek(0, 7)
    fh.seek(0)
    assert fh.read() == b"0123456789"
    assert fh.requests == 1


@given(
    st.binary(min_size=0, max_size=3000),
    st.lists(st.tuples(st.integers(0, 3100), st.integers(0, 1500)), max_size=8),
    st.integers(1, 700),
)
def test_range_file_reads_like_a_bytes_file(
    data: bytes, reads: list[tuple[int, int]], readahead: int
) -> None:
    store = _MemoryStore(data)
    fh = RangeFile(store, "k", readahead=readahead)  # type: ignore[arg-type]
    for offset, length in reads:
        fh.seek(offset)
        assert fh.read(length) == data[offset : offset + length]
        assert fh.tell() == offset + len(data[offset : offset + length])


class _MemoryStore:
    """Just enough of an ObjectStore for RangeFile."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def size(self, key: str) -> int:
        return len(self.data)

    def read_range(self, key: str, start: int, length: int) -> bytes:
        return self.data[start : start + length]


# --- make_bundle -------------------------------------------------------------------------------


def _folder(root: Path, files: dict[str, bytes | str]) -> Path:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            path.write_text(data)
        else:
            path.write_bytes(data)
    return root


def _tree(root: Path) -> dict[str, bytes | None]:
    return {
        p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


def test_make_bundle_round_trip(tmp_path: Path) -> None:
    folder = _folder(
        tmp_path / "job",
        {"inputs.json": inputs({"A": 1, "S": "x"}), "sub/d.bin": os.urandom(2000), "t.txt": "t"},
    )
    (folder / "empty").mkdir()
    (folder / "link.txt").symlink_to("t.txt")
    dest = make_bundle(folder, tmp_path / "out" / "job.zip", LIMITS)
    assert dest == tmp_path / "out" / "job.zip"
    assert read_bundle_file(dest, LIMITS) == {"A": 1, "S": "x"}
    with zipfile.ZipFile(dest) as zf:
        names = set(zf.namelist())
        assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in zf.infolist() if i.file_size)
        link_mode = zf.getinfo("link.txt").external_attr >> 16
    assert names == {"inputs.json", "sub/d.bin", "t.txt", "link.txt", "empty/"}
    assert not stat.S_ISLNK(link_mode)
    extract_bundle(dest, tmp_path / "x", LIMITS)
    expected = _tree(folder)
    expected["link.txt"] = b"t"
    assert _tree(tmp_path / "x") == expected
    assert list((tmp_path / "out").iterdir()) == [dest]  # no temporary files left


def test_make_bundle_with_inputs_txt_and_dest_inside_folder(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "job", {"inputs.txt": inputs({"A": 1})})
    dest = folder / "job.zip"
    make_bundle(folder, dest, LIMITS)
    make_bundle(folder, dest, LIMITS)  # the old bundle is not zipped into the new one
    with zipfile.ZipFile(dest) as zf:
        assert zf.namelist() == ["inputs.txt"]


@pytest.mark.parametrize(
    ("files", "words"),
    [
        ({"data.csv": "1"}, "has no inputs.json or inputs.txt"),
        ({"sub/inputs.json": "{}"}, "has no inputs.json or inputs.txt"),
        ({"inputs.json": "{nope"}, "is not valid JSON"),
        ({"inputs.json": "[]"}, "got a list"),
        ({"inputs.json": '{"PATH": "/x"}'}, "set by the runtime"),
        ({"inputs.json": b"\xff\xfe"}, "is not UTF-8"),
    ],
)
def test_make_bundle_refuses_bad_folder(
    tmp_path: Path, files: dict[str, bytes | str], words: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _folder(tmp_path / "job", {**files, "big.bin": b"x" * 1000})
    written: list[object] = []
    monkeypatch.setattr(zipfile.ZipFile, "write", lambda *a, **k: written.append(a))
    dest = tmp_path / "out" / "job.zip"
    with pytest.raises(BundleError, match=words):
        make_bundle(folder, dest, LIMITS)
    assert not dest.exists()
    assert written == []  # refused before zipping anything


def test_make_bundle_refuses_links_outside_and_lists_them_all(tmp_path: Path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("s")
    folder = _folder(tmp_path / "job", {"inputs.json": "{}", "sub/a.txt": "a"})
    (folder / "out_link").symlink_to(outside)
    (folder / "dangling").symlink_to(folder / "missing")
    (folder / "dir_link").symlink_to(folder / "sub")
    dest = tmp_path / "job.zip"
    with pytest.raises(BundleError) as exc:
        make_bundle(folder, dest, LIMITS)
    message = str(exc.value)
    assert "out_link is a symlink to" in message and "outside the folder" in message
    assert "dangling is a dangling or looping symlink" in message
    assert "dir_link is a symlink to a folder" in message
    assert not dest.exists()


def test_make_bundle_refuses_special_files(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "job", {"inputs.json": "{}"})
    os.mkfifo(folder / "pipe")
    with pytest.raises(BundleError, match="pipe is not a regular file"):
        make_bundle(folder, tmp_path / "job.zip", LIMITS)


def test_make_bundle_limits(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "job", {"inputs.json": "{}", "a": "1", "b": "2"})
    dest = tmp_path / "job.zip"
    with pytest.raises(BundleError, match=r"3 entries, more than limits\.max_entries = 2"):
        make_bundle(folder, dest, LimitsConfig(max_entries=2))
    with pytest.raises(BundleError, match=r"4 bytes, more than limits\.max_bundle_bytes = 3"):
        make_bundle(folder, dest, LimitsConfig(max_bundle_bytes=3))
    _folder(folder, {"zeros": bytes(2 << 20)})
    with pytest.raises(BundleError, match="zip bomb"):
        make_bundle(folder, dest, LimitsConfig(max_compression_ratio=10))
    assert not dest.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["job"]  # temporary zip removed


def test_make_bundle_refuses_non_folder_and_folder_dest(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not a folder"):
        make_bundle(tmp_path / "missing", tmp_path / "x.zip", LIMITS)
    folder = _folder(tmp_path / "job", {"inputs.json": "{}"})
    with pytest.raises(BundleError, match="it is a folder"):
        make_bundle(folder, tmp_path, LIMITS)


# --- extract_bundle ----------------------------------------------------------------------------


def test_extract_bundle_writes_only_inside_dest(tmp_path: Path) -> None:
    path = write_zip(
        tmp_path / "b.zip", {"inputs.json": "{}", "a/b/c.txt": "c", "d/": b"", "./e": "e"}
    )
    dest = tmp_path / "dest"
    extract_bundle(path, dest, LIMITS)
    assert _tree(dest) == {
        "a": None,
        "a/b": None,
        "a/b/c.txt": b"c",
        "d": None,
        "e": b"e",
        "inputs.json": b"{}",
    }


def test_extract_bundle_does_not_follow_existing_links(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "a").symlink_to(outside)
    path = write_zip(tmp_path / "b.zip", {"a/x": "x"})
    with pytest.raises(BundleError, match="outside"):
        extract_bundle(path, dest, LIMITS)
    assert not (outside / "x").exists()


def test_extract_bundle_needs_no_inputs_file(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "b.zip", {"only.txt": "o"})
    extract_bundle(path, tmp_path / "dest", LIMITS)
    assert (tmp_path / "dest" / "only.txt").read_text() == "o"


def test_extract_not_a_zip(tmp_path: Path) -> None:
    path = tmp_path / "b.zip"
    path.write_bytes(b"")
    with pytest.raises(BundleError, match="is not a zip archive"):
        extract_bundle(path, tmp_path / "dest", LIMITS)
