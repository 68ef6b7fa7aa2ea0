"""The small zip writer (runtime/zipwriter.py) against the library it stands in for: every zip
it writes is the very bytes `zipfile` writes for the same entries, reads back identically with
`zipfile` and passes `unzip -t`. These fail as soon as a new Python changes what `zipfile`
writes, which is when the writer must be brought in line (or dropped)."""

from __future__ import annotations

import io
import os
import random
import shutil
import subprocess
import zipfile
import zlib
from pathlib import Path

import pytest

from shepard.runtime.outputs import _write_zip, output_entries, zip_folder
from shepard.runtime.zipwriter import IN_MEMORY_ZIP, SMALL_ZIP_ENTRIES, TINY, deflate, small_zip


def zipfile_bytes(folder: Path) -> bytes:
    reference = io.BytesIO()
    _write_zip(reference, output_entries(folder))
    return reference.getvalue()


def unzip_test(tmp_path: Path, data: bytes) -> None:
    """`unzip -t` accepts the zip (when unzip is installed)."""
    if shutil.which("unzip") is None:
        return
    path = tmp_path / "check.zip"
    path.write_bytes(data)
    result = subprocess.run(["unzip", "-t", str(path)], capture_output=True, check=False)
    assert result.returncode == 0, result.stdout.decode(errors="replace")


def test_small_zip_writes_the_bytes_zipfile_writes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "sub" / "deep").mkdir(parents=True)
    (out / "empty").mkdir()  # a folder: stored
    (out / "a.txt").write_text("hello\n" * 100)  # deflated
    (out / "sub" / "b.bin").write_bytes(os.urandom(3000))  # deflated, bigger than the input
    (out / "sub" / "deep" / "é ü.txt").write_text("x")  # UTF-8 name flag
    (out / "link").symlink_to("a.txt")
    (out / "sub" / "dangling").symlink_to("/nowhere")
    (out / "x").write_text("")
    os.chmod(out / "x", 0o751)
    os.utime(out / "a.txt", (0, 0))  # before 1980: clamped, as zipfile does
    os.utime(out / "sub" / "b.bin", (5e9, 5e9))  # after 2107: clamped too
    os.mkfifo(out / "fifo")
    data = small_zip(output_entries(out))
    assert data == zipfile_bytes(out)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None
        assert zf.read("sub/deep/é ü.txt") == b"x"
        assert zf.getinfo("empty/").compress_type == zipfile.ZIP_STORED
        assert zf.getinfo("a.txt").compress_type == zipfile.ZIP_DEFLATED
    unzip_test(tmp_path, data)


@pytest.mark.parametrize(
    "name",
    [
        "plain.txt",
        "with space and 'quotes'.txt",
        "new\nline",
        "日本語-名前.csv",
        "emoji-🐑.txt",
        os.fsdecode(b"bad-\xff\xfe-bytes"),  # not UTF-8: stored with U+FFFD
        "-leading-dash",
        "x" * 200,
    ],
)
def test_odd_names_read_back_identically(tmp_path: Path, name: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / name).write_bytes(b"content of " + os.fsencode(name))
    data = small_zip(output_entries(out))
    assert data == zipfile_bytes(out)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        (info,) = zf.infolist()
        assert zf.read(info) == b"content of " + os.fsencode(name)
    unzip_test(tmp_path, data)


def test_an_output_at_the_limits_still_matches_zipfile(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    rng = random.Random(3)
    for i in range(SMALL_ZIP_ENTRIES - 1):
        (out / f"f{i:04d}").write_bytes(rng.randbytes(rng.randrange(0, 64)))
    (out / "big.bin").write_bytes(rng.randbytes(IN_MEMORY_ZIP // 2))  # incompressible
    data = small_zip(output_entries(out))
    assert data == zipfile_bytes(out)
    unzip_test(tmp_path, data)


def test_beyond_its_limits_the_writer_refuses_and_outputs_use_zipfile(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    for i in range(SMALL_ZIP_ENTRIES + 1):
        (out / f"f{i:04d}").write_bytes(b"1")
    with pytest.raises(ValueError, match="entries"):
        small_zip(output_entries(out))
    made = zip_folder(out, tmp_path / "r.zip")
    assert made is not None and made.read_bytes() == zipfile_bytes(out)
    unzip_test(tmp_path, made.read_bytes())


def test_tiny_files_deflate_to_the_bytes_of_zlibs_full_state() -> None:
    rng = random.Random(7)
    words = [b"alpha", b"beta", b"0", b"1", b"3.14159", b"\n", b" ", b"result=", b"x" * 20]
    samples = [bytes(TINY - 1), b"", b"a" * (TINY - 1)]
    for size in range(TINY):
        samples.append(rng.randbytes(size))
        samples.append(b"".join(rng.choice(words) for _ in range(size))[:size])
        samples.append(bytes(rng.choice(b"ACGT") for _ in range(size)))
    samples.append(rng.randbytes(5000))  # not tiny: the usual state
    for data in samples:
        full = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
        assert deflate(data) == full.compress(data) + full.flush(), len(data)


def test_the_writer_refuses_where_zipfile_would_write_zip64_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # zip64's real threshold (2 GiB) is lowered so that a test can cross it
    monkeypatch.setattr(zipfile, "ZIP64_LIMIT", 10_000)
    out = tmp_path / "out"
    out.mkdir()
    (out / "under.bin").write_bytes(os.urandom(9_000))
    data = small_zip(output_entries(out))
    assert data == zipfile_bytes(out)  # no zip64 record on either side
    unzip_test(tmp_path, data)
    (out / "over.bin").write_bytes(os.urandom(12_000))
    assert zipfile_bytes(out).count(b"PK\x06\x06") == 1  # zipfile: a zip64 end record
    with pytest.raises(ValueError, match="zip64"):
        small_zip(output_entries(out))
