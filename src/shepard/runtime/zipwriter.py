"""A zip writer for small outputs, beside `zipfile`: the same bytes, built with a few
struct.pack calls.

Most jobs of a batch leave one tiny file (a number, a status line). For those, `zipfile`'s
own bookkeeping (ZipInfo objects, a file object per member, the zip64 checks, a full-size
zlib state per file) costs more than the compression itself. Measured here (2 shared cores,
one sitting, medians of 5 rounds): `zip_folder` on one 3-byte file takes 53 us of CPU
through this writer against 92 us through `zipfile`, some 7% of a local runner's CPU per
trivial job (about 0.55 ms, bench/runner_phases.py); on 20 files of 87 KB the two are within
10%, on 4.6 MB equal (compression dominates). tests/unit/test_zipwriter.py fails as soon as
the bytes differ from what `zipfile` writes, or `zipfile` or `unzip -t` reads them otherwise.

Limits: no zip64 (at most SMALL_ZIP_ENTRIES entries of IN_MEMORY_ZIP bytes in all, far from
zip64's thresholds whatever the sizes); anything larger goes through `zipfile`
(runtime/outputs.py). Files are DEFLATEd, folders stored, links read through, Unix modes
and times kept, names in UTF-8.
"""

from __future__ import annotations

import os
import stat
import struct
import time
import zipfile
import zlib

IN_MEMORY_ZIP = 4 << 20  # outputs up to this many bytes (and SMALL_ZIP_ENTRIES) are zipped here
SMALL_ZIP_ENTRIES = 1000
TINY = 256  # files shorter than this are compressed with a small zlib state (see deflate)


_LOCAL = struct.Struct("<4s5H3L2H")
_CENTRAL = struct.Struct("<4s6H3L5H2L")
_END = struct.Struct("<4s4H2LH")
_VERSION = 20  # what zipfile writes for DEFLATE and folders
_MADE_BY = 3 << 8 | _VERSION  # Unix
_UTF8_NAME = 0x800


def small_zip(entries: list[tuple[str, os.DirEntry[str]]]) -> bytes:
    """The zip `zipfile` writes for these entries (files DEFLATEd, folders stored, links
    read through, Unix modes and times kept), built with a few struct.pack calls: for a tiny
    output, zipfile's own bookkeeping costs several times the compression. No zip64: for
    at most SMALL_ZIP_ENTRIES entries of IN_MEMORY_ZIP bytes in all: ValueError beyond."""
    if len(entries) > SMALL_ZIP_ENTRIES:
        raise ValueError(f"small_zip: {len(entries)} entries, over {SMALL_ZIP_ENTRIES}")
    parts: list[bytes] = []
    central: list[bytes] = []
    offset = 0
    for arcname, entry in entries:
        info = entry.stat(follow_symlinks=True)  # links kept by output_entries are read through
        name, data, method, attr = _member(arcname, entry, info.st_mode)
        if name is None:
            continue  # FIFOs, sockets, devices
        crc = zlib.crc32(data)
        packed = deflate(data) if method == zipfile.ZIP_DEFLATED else data
        when = _dos_time(info.st_mtime)
        if len(data) * 1.05 > zipfile.ZIP64_LIMIT or offset > zipfile.ZIP64_LIMIT:
            raise ValueError("small_zip: this zip needs zip64 records: write it with zipfile")
        raw = name.encode("utf-8")
        flags = 0 if name.isascii() else _UTF8_NAME
        sizes = (crc, len(packed), len(data), len(raw))
        head = (_VERSION, flags, method, *when, *sizes)
        parts += (_LOCAL.pack(b"PK\x03\x04", *head, 0), raw, packed)
        central += (_CENTRAL.pack(b"PK\x01\x02", _MADE_BY, *head, 0, 0, 0, 0, attr, offset), raw)
        offset += _LOCAL.size + len(raw) + len(packed)
    directory = b"".join(central)
    count = len(central) // 2
    end = _END.pack(b"PK\x05\x06", 0, 0, count, count, len(directory), offset, 0)
    return b"".join(parts) + directory + end


def deflate(data: bytes) -> bytes:
    """Raw DEFLATE of `data` at zlib's default level, as zipfile compresses. Under TINY bytes
    (a job's number or status line), zlib's state is made small: the full-size one (about
    256 KB, set up for every file) takes 30 times longer to prepare than a few bytes take to
    compress. For data this short the output is byte for byte the same (a
    test compares them over many inputs)."""
    if len(data) < TINY:
        compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -9, 2)
    else:
        compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()


def _member(arcname: str, entry: os.DirEntry[str], mode: int) -> tuple[str | None, bytes, int, int]:
    """(name in the zip, content, compression, external attributes) of one entry (`mode`:
    of the file a link points to), as zipfile's `write` makes them."""
    if stat.S_ISDIR(mode):
        return arcname + "/", b"", zipfile.ZIP_STORED, (mode & 0xFFFF) << 16 | 0x10
    if stat.S_ISREG(mode):
        return arcname, _read_all(entry.path), zipfile.ZIP_DEFLATED, (mode & 0xFFFF) << 16
    return None, b"", 0, 0


def _dos_time(mtime: float) -> tuple[int, int]:
    """(time, date) fields of a zip entry, clamped to the years zip can hold."""
    t = time.localtime(mtime)
    if t.tm_year < 1980:
        return 0, 33  # 1980-01-01 00:00:00
    if t.tm_year > 2107:
        return 23 << 11 | 59 << 5 | 29, 127 << 9 | 12 << 5 | 31
    return t.tm_hour << 11 | t.tm_min << 5 | t.tm_sec // 2, (
        (t.tm_year - 1980) << 9 | t.tm_mon << 5 | t.tm_mday
    )


def _read_all(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
