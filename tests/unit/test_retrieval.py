"""Unzipping result zips on retrieval (shepard.retrieval): lenient, but never outside the folder."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

from shepard.retrieval import Retrieval, extract_results, retrieve_store
from shepard.storage import LocalStore


def make_zip(path: Path, entries: dict[str, str], links: dict[str, str] | None = None) -> Path:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in entries.items():
            zf.writestr(name, text)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    path.write_bytes(buf.getvalue())
    return path


def test_odd_names_are_cleaned_and_hostile_ones_left_out(tmp_path: Path) -> None:
    zipped = make_zip(
        tmp_path / "r.zip",
        {
            "ok/a.txt": "a",
            "back\\slash.txt": "b",
            "new\nline.txt": "n",
            "../up.txt": "no",
            "/abs.txt": "no",
            "C:/drive.txt": "no",
            "ok/a.txt/inside": "no: a.txt is a file",
        },
        links={"link": "/etc/passwd"},
    )
    dest = tmp_path / "out"
    notes = extract_results(zipped, dest)
    assert (dest / "ok" / "a.txt").read_text() == "a"
    assert (dest / "back_slash.txt").read_text() == "b"
    assert (dest / "new_line.txt").read_text() == "n"
    assert sorted(p.name for p in dest.iterdir()) == ["back_slash.txt", "new_line.txt", "ok"]
    assert not (tmp_path / "up.txt").exists()
    text = "\n".join(notes)
    assert "'back\\\\slash.txt': written as 'back_slash.txt'" in text
    for left_out in ("'../up.txt'", "'/abs.txt'", "'C:/drive.txt'", "'link'", "'ok/a.txt/inside'"):
        assert f"{left_out}: left out" in text, left_out
    assert len(notes) == 7


def test_links_already_in_the_destination_are_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "sub").symlink_to(outside)
    (dest / "file.txt").symlink_to(outside / "victim.txt")
    zipped = make_zip(tmp_path / "r.zip", {"sub/x.txt": "x", "file.txt": "y", "fine": "z"})
    notes = extract_results(zipped, dest)
    assert list(outside.iterdir()) == []
    assert (dest / "fine").read_text() == "z"
    assert len(notes) == 2 and all("left out" in n for n in notes)


def test_one_bad_object_does_not_stop_the_others(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    (tmp_path / "store").mkdir()
    make_zip(tmp_path / "store" / "a.zip", {"a": "1"})
    (tmp_path / "store" / "b.zip").write_bytes(b"not a zip")
    make_zip(tmp_path / "store" / "c.zip", {"c": "3"})
    result = Retrieval()
    retrieve_store(store, tmp_path / "dest", result, unzip=True)
    assert [p.name for p in result.files] == ["a.zip", "b.zip", "c.zip"]
    assert (tmp_path / "dest" / "c" / "c").read_text() == "3"
    assert len(result.failed) == 1 and result.failed[0].startswith("b.zip: copied but not unzipped")
    assert not result.ok
